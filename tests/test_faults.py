"""Fault injection (issue 6): a flush or commit that fails part-way leaves no trace.

One program runs a multi-statement flush on two related tables: key pre-allocation, a
set-based UPDATE of parents, a multi-row INSERT of new parents, DELETEs of children and of a
parent, a single-row UPDATE of a child and a COPY of 72 new children. Faults are injected

- at every statement boundary of that flush: a statement hook raises, or terminates the
  session's own backend (`pg_terminate_backend`), just before statement k; the same inside a
  SAVEPOINT, and once in an autoflush,
- between the flush and COMMIT (the backend is terminated),
- from the session's event listeners,
- by the server in the middle of a batched statement: unique, foreign key, check and not-null
  violations in COPY, multi-row INSERT, set-based UPDATE and DELETE; serialization failures
  (REPEATABLE READ, and SERIALIZABLE at COMMIT); a row deleted by another transaction under a
  batched UPDATE or DELETE.

After every fault: the database holds exactly what it held before (read through a separate
connection), no lock is left behind, the session raises the original error and then
`PendingRollbackError` until `rollback()`; after `rollback()` new objects are transient,
persistent ones are intact and reload their committed values, the connection is back in the
pool, and the same work (with the bad value fixed, for server errors) commits.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from retort import (
    CheckConstraint,
    DeclarativeBase,
    ForeignKey,
    Identity,
    Mapped,
    Session,
    String,
    event,
    exc,
    inspect,
    mapped_column,
    relationship,
    select,
    selectinload,
)
from retort.engine import Engine
from tests.fix_db import checked_out

Conn = psycopg.Connection[Any]

# Keys start high so that a key found in an error message cannot be a row count or an index.
PARENT_KEY_START = 7_100_001
CHILD_KEY_START = 8_200_001


class Base(DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(Identity(start=PARENT_KEY_START), primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    note: Mapped[str | None]
    children: Mapped[list[Child]] = relationship(
        back_populates="parent", cascade="all, delete-orphan"
    )


class Child(Base):
    __tablename__ = "children"
    id: Mapped[int] = mapped_column(Identity(start=CHILD_KEY_START), primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("parents.id"))
    label: Mapped[str] = mapped_column(String(50), unique=True)
    qty: Mapped[int]
    parent: Mapped[Parent] = relationship(back_populates="children")
    __table_args__ = (CheckConstraint("qty >= 0", name="qty_not_negative"),)


# --------------------------------------------------------------------------------------------
# the program

SEED = {f"p{i}": [f"c{i}_{j}" for j in range(3)] for i in range(4)}  # child c{i}_{j} has qty j
NEW_KIDS = {"n0": 70, "n1": 2, "n2": 0, "n3": 0, "n4": 0, "n5": 0}  # 72 new children: COPY
SMALL_N0 = 10  # with n0 this small, the 12 new children go through a multi-row INSERT
NOTED = ("p0", "p1")  # set-based UPDATE of parents
RELABELLED = {"c2_0": "c2_0x"}  # single-row UPDATE of a child
REMOVED = ("c1_0", "c1_1")  # orphans deleted, with p3's children, by one DELETE = ANY
DELETED = "p3"

# statement shapes (a table name may come schema-qualified and quoted)
COPY = r'COPY \S*\b{}"? '
MULTIROW_INSERT = r'INSERT INTO \S*\b{}"? .*VALUES \(.*\), \('
SET_UPDATE = r'UPDATE \S*\b{}"? SET .* FROM unnest\('
DELETE = r'DELETE FROM \S*\b{}"? '

# A flush of the program runs, in order: key allocation for parents and for children, UPDATE
# parents, INSERT parents, DELETE children, UPDATE children, COPY (or with SMALL_N0 a multi-row
# INSERT of) children, DELETE parents. Before its first COPY into a table, a connection looks up
# the table's column types (for binary COPY): one statement more. test_clean_run_statements
# checks these counts; update them if the flush changes shape.
N_STATEMENTS = {"copy": 9, "multirow": 8}
FAULT_POINTS = [(size, k) for size, n in N_STATEMENTS.items() for k in range(n)]

# the new children's INSERT: a COPY, or a multi-row INSERT
SIZES = {"copy": NEW_KIDS["n0"], "multirow": SMALL_N0}
NEW_CHILDREN_INSERT = {"copy": COPY, "multirow": MULTIROW_INSERT}


def _qty(j: int) -> int:
    return j % 5


@dataclass
class Work:
    """The objects of one run of the program, kept across the fault and the retry."""

    parents: dict[str, Parent]  # loaded (seeded) parents by name
    children: dict[str, Child]  # loaded (seeded) children by label
    new_parents: list[Parent]
    extra: list[Any] = field(default_factory=list)  # objects added on their own

    @property
    def new_children(self) -> list[Child]:
        return [c for p in self.new_parents for c in p.children]

    def new_child(self, label: str) -> Child:
        return next(c for c in self.new_children if c.label == label)


def _seed(engine: Engine) -> None:
    with Session(engine) as s:
        for name, labels in SEED.items():
            s.add(
                Parent(name=name, children=[Child(label=lb, qty=j) for j, lb in enumerate(labels)])
            )
        s.commit()


def _load(s: Session, n0_kids: int = NEW_KIDS["n0"]) -> Work:
    parents = s.scalars(select(Parent).options(selectinload(Parent.children))).all()
    kids = dict(NEW_KIDS, n0=n0_kids)
    new = [
        Parent(name=name, children=[Child(label=f"{name}_{j}", qty=_qty(j)) for j in range(n)])
        for name, n in kids.items()
    ]
    return Work(
        parents={p.name: p for p in parents},
        children={c.label: c for p in parents for c in p.children},
        new_parents=new,
    )


def _apply(s: Session, w: Work) -> None:
    """The program's changes; run again on the same objects for the retry."""
    for name in NOTED:
        if name in w.parents:  # (not when another transaction deleted it)
            w.parents[name].note = "changed"
    for old, new in RELABELLED.items():
        w.children[old].label = new
    p1 = w.parents["p1"]
    for c in [c for c in p1.children if c.label in REMOVED]:
        p1.children.remove(c)
    s.delete(w.parents[DELETED])
    s.add_all(w.new_parents)
    s.add_all(w.extra)


State = dict[str, tuple[str | None, dict[str, int]]]


def _state(admin: Conn, schema: str) -> State:
    """Parents by name: (note, {child label: qty}), read outside the engine."""
    out: State = {}
    ids: dict[int, str] = {}
    for pid, name, note in admin.execute(f"SELECT id, name, note FROM {schema}.parents"):
        out[name] = (note, {})
        ids[pid] = name
    for pid, label, qty in admin.execute(f"SELECT parent_id, label, qty FROM {schema}.children"):
        out[ids[pid]][1][label] = qty
    return out


def _expected(before: State, n0_kids: int = NEW_KIDS["n0"]) -> State:
    """What the program makes of `before`."""
    out = {name: (note, dict(kids)) for name, (note, kids) in before.items()}
    for name in NOTED:
        if name in out:
            out[name] = ("changed", out[name][1])
    for _, kids in out.values():
        for old, new in RELABELLED.items():
            if old in kids:
                kids[new] = kids.pop(old)
    for label in REMOVED:
        out["p1"][1].pop(label, None)
    del out[DELETED]
    for name, n in dict(NEW_KIDS, n0=n0_kids).items():
        out[name] = (None, {f"{name}_{j}": _qty(j) for j in range(n)})
    return out


def _rows(admin: Conn, schema: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every row of both tables, keys included."""
    return (
        admin.execute(f"SELECT * FROM {schema}.parents ORDER BY id").fetchall(),
        admin.execute(f"SELECT * FROM {schema}.children ORDER BY id").fetchall(),
    )


# --------------------------------------------------------------------------------------------
# fixtures and checks


class InjectedFault(Exception):
    pass


@dataclass
class World:
    engine: Engine
    admin: Conn
    schema: str

    def rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        return _rows(self.admin, self.schema)

    def state(self) -> State:
        return _state(self.admin, self.schema)

    def kill(self, pid: int) -> None:
        row = self.admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
        assert row == (True,), f"backend {pid} was not terminated"


def _make_world(engine: Engine, admin: Conn, schema: str) -> World:
    Base.metadata.create_all(engine)
    _seed(engine)
    return World(engine, admin, schema)


@pytest.fixture
def world(engine_factory: Callable[..., Engine], admin_conn: Conn, schema: str) -> World:
    # a single pooled connection: a connection kept or lost by a failed session makes the next
    # checkout fail (after pool_timeout) instead of quietly opening another one
    engine = engine_factory(pool_size=1, max_overflow=0, pool_timeout=5)
    return _make_world(engine, admin_conn, schema)


@pytest.fixture
def world2(engine_factory: Callable[..., Engine], admin_conn: Conn, schema: str) -> World:
    """Two pooled connections, for two sessions at once."""
    engine = engine_factory(pool_size=2, max_overflow=0, pool_timeout=5)
    return _make_world(engine, admin_conn, schema)


class Injector:
    """A statement hook that runs `action` just before one statement: the one with index
    `at`, or the first whose SQL starts with `at`."""

    def __init__(self, at: int | str, action: Callable[[], None]) -> None:
        self.at = at
        self.action = action
        self.count = 0
        self.fired: str | None = None
        self.statements: list[str] = []

    def __call__(self, sql: str, params: Any) -> None:
        k = self.count
        self.count += 1
        self.statements.append(sql)
        hit = k == self.at if isinstance(self.at, int) else sql.startswith(self.at)
        if hit and self.fired is None:
            self.fired = sql
            self.action()


@contextlib.contextmanager
def _hooked(engine: Engine, hook: Callable[[str, Any], None]) -> Iterator[None]:
    engine._statement_hooks.append(hook)
    try:
        yield
    finally:
        engine._statement_hooks.remove(hook)


def _pid(s: Session) -> int:
    return int(s.connection().driver_connection.info.backend_pid)


def _lifecycle(obj: Any) -> str:
    st = inspect(obj)
    for name in ("transient", "pending", "persistent", "deleted", "detached"):
        if getattr(st, name):
            return name
    raise AssertionError(f"{obj!r} is in no state")


def _assert_no_locks(w: World) -> None:
    """The failed transaction is over on the server: nothing holds a lock on the tables."""
    with w.admin.transaction():
        w.admin.execute(f"LOCK TABLE {w.schema}.parents, {w.schema}.children NOWAIT")


def _assert_failed(
    s: Session, w: Work, world: World, before: Any, *, check_states: bool = True
) -> None:
    """Right after the fault: nothing was written, and the session refuses to go on."""
    assert world.rows() == before
    _assert_no_locks(world)
    # flush() with nothing left to flush returns, as in SQLAlchemy
    attempts = [s.commit, lambda: s.execute(select(Parent))]
    if s.new or s.dirty or s.deleted:
        attempts.append(s.flush)
    for attempt in attempts:
        with pytest.raises(exc.PendingRollbackError, match="rollback"):
            attempt()
    if check_states:
        _assert_not_persistent(w)
    assert world.rows() == before


def _assert_not_persistent(w: Work) -> None:
    for obj in (*w.new_parents, *w.new_children, *w.extra):
        # pending as before the flush, or already transient (SQLAlchemy): never persistent,
        # since the transaction that inserted it is gone
        assert _lifecycle(obj) in ("pending", "transient"), obj


def _assert_consistent(s: Session, w: Work, world: World) -> None:
    """After rollback(): new objects are transient, loaded ones persistent with the values the
    database holds, and the identity map has nothing of the rolled-back work."""
    assert not s.new and not s.dirty and not s.deleted
    for obj in (*w.new_parents, *w.new_children, *w.extra):
        assert _lifecycle(obj) == "transient", obj
        assert obj not in s
    parents = {
        r[0]: r[1:]
        for r in world.admin.execute(f"SELECT id, name, note FROM {world.schema}.parents")
    }
    children = {
        r[0]: r[1:]
        for r in world.admin.execute(
            f"SELECT id, parent_id, label, qty FROM {world.schema}.children"
        )
    }
    for p in w.parents.values():
        assert _lifecycle(p) == "persistent", p
        key = inspect(p).identity[0]
        assert s.get(Parent, key) is p
        assert (p.id, p.name, p.note) == (key, *parents[key])
        kids = sorted(c.label for c in p.children)
        assert kids == sorted(lb for (pid, lb, _) in children.values() if pid == key)
    for c in w.children.values():
        assert _lifecycle(c) == "persistent", c
        key = inspect(c).identity[0]
        if key not in children:  # deleted by another transaction meanwhile
            with pytest.raises(exc.ObjectDeletedError):
                _ = c.label
            continue
        assert s.get(Child, key) is c
        assert (c.parent_id, c.label, c.qty) == children[key]
        assert c.parent is s.get(Parent, c.parent_id)
    # a key the rolled-back flush gave a new object is not in the identity map
    for obj in (*w.new_parents, *w.new_children):
        key = obj.__dict__.get("id")
        if key is not None:
            assert s.get(type(obj), key) is None


def _assert_pool_intact(engine: Engine, lost: int) -> None:
    """The session's connection went back to the pool (a lost one discarded there): the one
    pooled connection can be checked out and works, and none is left checked out."""
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert checked_out(engine) == 0
    assert engine._pool is not None
    stats = engine._pool.get_stats()
    assert stats.get("returns_bad", 0) == lost, stats


def _retry(s: Session, w: Work, world: World, expected: State) -> None:
    """The same work, on the same objects, commits in full."""
    _apply(s, w)
    s.commit()
    assert world.state() == expected
    ids = {
        name: pid
        for pid, name in world.admin.execute(f"SELECT id, name FROM {world.schema}.parents")
    }
    for p in w.new_parents:
        assert _lifecycle(p) == "persistent"
        assert p.id == ids[p.name]
        assert s.get(Parent, p.id) is p
        for c in p.children:
            assert _lifecycle(c) == "persistent" and c.parent_id == p.id


# --------------------------------------------------------------------------------------------
# the clean run


@pytest.mark.parametrize("size", list(SIZES))
def test_clean_run_statements(world: World, size: str) -> None:
    """The program without faults: the statement count the fault tests are parametrized by,
    and the oracle `_expected`."""
    with Session(world.engine) as s:
        w = _load(s, SIZES[size])
        _apply(s, w)
        before = world.state()
        counter = Injector(-1, lambda: None)
        with _hooked(world.engine, counter):
            s.commit()
        assert world.state() == _expected(before, SIZES[size])
        _assert_consistent_after_commit(s, w)
    statements = counter.statements
    assert counter.count == N_STATEMENTS[size], "\n".join(statements)
    for shape in (
        SET_UPDATE.format("parents"),
        MULTIROW_INSERT.format("parents"),
        DELETE.format("children"),
        NEW_CHILDREN_INSERT[size].format("children"),
        DELETE.format("parents"),
    ):
        assert any(re.match(shape, sql) for sql in statements), (shape, statements)


def _assert_consistent_after_commit(s: Session, w: Work) -> None:
    for obj in (*w.new_parents, *w.new_children):
        assert _lifecycle(obj) == "persistent"
    assert _lifecycle(w.parents[DELETED]) == "detached"


# --------------------------------------------------------------------------------------------
# a fault before each statement of the flush


@pytest.mark.parametrize(("size", "k"), FAULT_POINTS)
def test_hook_raises_before_statement(world: World, k: int, size: str) -> None:
    error = InjectedFault(f"before statement {k}")

    def fail() -> None:
        raise error

    with Session(world.engine) as s:
        w = _load(s, SIZES[size])
        _apply(s, w)
        before, state = world.rows(), world.state()
        injector = Injector(k, fail)
        with _hooked(world.engine, injector), pytest.raises(InjectedFault) as info:
            s.commit()
        assert injector.fired is not None, f"the flush ran only {injector.count} statements"
        assert info.value is error
        _assert_failed(s, w, world, before)
        s.rollback()
        _assert_pool_intact(world.engine, lost=0)
        _assert_consistent(s, w, world)
        _retry(s, w, world, _expected(state, SIZES[size]))
    _assert_pool_intact(world.engine, lost=0)


@pytest.mark.parametrize(("size", "k"), FAULT_POINTS)
def test_backend_killed_before_statement(world: World, k: int, size: str) -> None:
    with Session(world.engine) as s:
        w = _load(s, SIZES[size])
        pid = _pid(s)
        _apply(s, w)
        before, state = world.rows(), world.state()
        injector = Injector(k, lambda: world.kill(pid))
        with _hooked(world.engine, injector), pytest.raises(exc.OperationalError) as info:
            s.commit()
        assert injector.fired is not None, f"the flush ran only {injector.count} statements"
        assert isinstance(info.value.orig, psycopg.OperationalError)
        assert info.value.statement is not None
        assert info.value.statement.split()[0] == injector.fired.split()[0]
        _assert_failed(s, w, world, before)
        s.rollback()
        _assert_pool_intact(world.engine, lost=1)
        assert _pid(s) != pid  # a new database connection
        _assert_consistent(s, w, world)
        _retry(s, w, world, _expected(state, SIZES[size]))
    _assert_pool_intact(world.engine, lost=1)


@pytest.mark.parametrize("fault", ["raise", "kill"])
def test_fault_during_autoflush(world: World, fault: str) -> None:
    """A query's autoflush fails at the COPY: the query raises the flush's error."""
    error = InjectedFault("before COPY")

    def fail() -> None:
        raise error

    with Session(world.engine) as s:
        w = _load(s)
        pid = _pid(s)
        _apply(s, w)
        before, state = world.rows(), world.state()
        injector = Injector("COPY", fail if fault == "raise" else lambda: world.kill(pid))
        expected_error = InjectedFault if fault == "raise" else exc.OperationalError
        with _hooked(world.engine, injector), pytest.raises(expected_error) as info:
            s.execute(select(Child).where(Child.label == "n0_1"))
        assert injector.fired is not None and injector.fired.startswith("COPY")
        if fault == "raise":
            assert info.value is error
        _assert_failed(s, w, world, before)
        s.rollback()
        _assert_pool_intact(world.engine, lost=int(fault == "kill"))
        _assert_consistent(s, w, world)
        _retry(s, w, world, _expected(state))


def test_backend_killed_between_flush_and_commit(world: World) -> None:
    with Session(world.engine) as s:
        w = _load(s)
        pid = _pid(s)
        _apply(s, w)
        before, state = world.rows(), world.state()
        s.flush()
        world.kill(pid)
        with pytest.raises(exc.OperationalError) as info:
            s.commit()
        assert isinstance(info.value.orig, psycopg.OperationalError)
        assert world.rows() == before
        _assert_no_locks(world)
        s.rollback()
        _assert_pool_intact(world.engine, lost=1)
        _assert_consistent(s, w, world)
        _retry(s, w, world, _expected(state))
    _assert_pool_intact(world.engine, lost=1)


def test_failed_commit_needs_rollback(world: World) -> None:
    with Session(world.engine) as s:
        w = _load(s)
        pid = _pid(s)
        _apply(s, w)
        s.flush()
        world.kill(pid)
        with pytest.raises(exc.OperationalError):
            s.commit()
        with pytest.raises(exc.InvalidRequestError, match="rollback"):
            s.commit()
        s.rollback()


# --------------------------------------------------------------------------------------------
# event listeners that raise

# listeners that run after the flush's statements, inside the flush
IN_FLUSH_EVENTS = [
    "after_flush",
    "after_flush_postexec",
    "pending_to_persistent",
    "persistent_to_deleted",
]


@pytest.mark.parametrize("name", IN_FLUSH_EVENTS)
def test_listener_inside_the_flush_raises(world: World, name: str) -> None:
    error = InjectedFault(name)

    def fail(session: Session, *args: Any) -> None:
        raise error

    with Session(world.engine) as s:
        w = _load(s)
        _apply(s, w)
        before, state = world.rows(), world.state()
        event.listen(s, name, fail)
        with pytest.raises(InjectedFault) as info:
            s.commit()
        assert info.value is error
        event.remove(s, name, fail)
        # (what the objects say before rollback(): test_listener_failure_leaves_no_persistent)
        _assert_failed(s, w, world, before, check_states=False)
        s.rollback()
        _assert_pool_intact(world.engine, lost=0)
        _assert_consistent(s, w, world)
        _retry(s, w, world, _expected(state))


@pytest.mark.parametrize("name", ["before_flush", "before_commit"])
def test_listener_before_the_flush_raises(world: World, name: str) -> None:
    """As in SQLAlchemy, nothing has run yet: the session keeps its changes and can go on
    without a rollback."""
    error = InjectedFault(name)

    def fail(session: Session, *args: Any) -> None:
        raise error

    with Session(world.engine) as s:
        w = _load(s)
        _apply(s, w)
        before, state = world.rows(), world.state()
        event.listen(s, name, fail)
        with pytest.raises(InjectedFault) as info:
            s.commit()
        assert info.value is error
        event.remove(s, name, fail)
        assert world.rows() == before
        assert all(_lifecycle(o) == "pending" for o in (*w.new_parents, *w.new_children))
        assert _lifecycle(w.parents[DELETED]) == "persistent" and w.parents[DELETED] in s.deleted
        assert {w.parents[n] for n in NOTED} <= set(s.dirty)
        s.commit()
        assert world.state() == _expected(state)
        _assert_consistent_after_commit(s, w)
    _assert_pool_intact(world.engine, lost=0)


# --------------------------------------------------------------------------------------------
# the server refuses a row in the middle of a batch


@dataclass
class BadRow:
    """A change that makes one batch of the program fail on the server, and its repair."""

    error: type[psycopg.Error]
    statement: str  # a pattern the failing statement matches
    spoil: Callable[[Session, Work, World], None]
    repair: Callable[[Work], None]
    names: Callable[[Work], str]  # a value only a message naming the offending row contains
    n0_kids: int = NEW_KIDS["n0"]


def _set(obj: Any, attr: str, value: Any) -> None:
    setattr(obj, attr, value)


def _set_qtys(w: Work, qtys: tuple[int | None, ...]) -> None:
    """A set-based UPDATE of p0's children, c0_1 getting the second value."""
    for j, q in enumerate(qtys):
        _set(w.children[f"c0_{j}"], "qty", q)  # None on purpose: a NOT NULL violation


def _spoil_concurrent_child(s: Session, w: Work, world: World) -> None:
    """Another transaction adds a child to the parent the program deletes."""
    pid = w.parents[DELETED].id
    world.admin.execute(
        f"INSERT INTO {world.schema}.children (parent_id, label, qty) VALUES (%s, 'late', 1)",
        (pid,),
    )


def _stray_child(s: Session, w: Work, world: World) -> None:
    """A new child whose parent does not exist, added after 72 others (COPY)."""
    w.extra.append(Child(label="stray", qty=1, parent_id=9_876_543))
    s.add_all(w.extra)


BAD_ROWS = {
    "unique-multirow-insert": BadRow(
        psycopg.errors.UniqueViolation,
        MULTIROW_INSERT.format("parents"),
        lambda s, w, _: _set(w.new_parents[-1], "name", "p2"),
        lambda w: _set(w.new_parents[-1], "name", "n5"),
        lambda w: "(name)=(p2)",
    ),
    "unique-copy": BadRow(
        psycopg.errors.UniqueViolation,
        COPY.format("children"),
        lambda s, w, _: _set(w.new_child("n0_50"), "label", "c0_1"),
        lambda w: _set(w.new_child("c0_1"), "label", "n0_50"),
        lambda w: "(label)=(c0_1)",
    ),
    "unique-set-update": BadRow(
        psycopg.errors.UniqueViolation,
        SET_UPDATE.format("children"),
        lambda s, w, _: _set(w.children["c2_1"], "label", "c0_0"),
        lambda w: None,  # rollback restored the label; the retry leaves it alone
        lambda w: "(label)=(c0_0)",
    ),
    "foreign-key-copy": BadRow(
        psycopg.errors.ForeignKeyViolation,
        COPY.format("children"),
        _stray_child,
        lambda w: w.extra.clear(),
        lambda w: "(parent_id)=(9876543)",
    ),
    "foreign-key-delete": BadRow(
        psycopg.errors.ForeignKeyViolation,
        DELETE.format("parents"),
        _spoil_concurrent_child,
        lambda w: None,  # p3 reloads its children, the late one included, and deletes them
        lambda w: f"(id)=({w.parents[DELETED].id})",
    ),
    "check-copy": BadRow(
        psycopg.errors.CheckViolation,
        COPY.format("children"),
        lambda s, w, _: _set(w.new_child("n0_50"), "qty", -7),
        lambda w: _set(w.new_child("n0_50"), "qty", _qty(50)),
        lambda w: "n0_50",
    ),
    "check-multirow-insert": BadRow(
        psycopg.errors.CheckViolation,
        MULTIROW_INSERT.format("children"),
        lambda s, w, _: _set(w.new_child("n0_8"), "qty", -7),
        lambda w: _set(w.new_child("n0_8"), "qty", _qty(8)),
        lambda w: "n0_8",
        n0_kids=SMALL_N0,
    ),
    "check-set-update": BadRow(
        psycopg.errors.CheckViolation,
        SET_UPDATE.format("children"),
        lambda s, w, _: _set_qtys(w, (4, -1, 4)),
        lambda w: None,
        lambda w: "c0_1",
    ),
    "not-null-copy": BadRow(
        psycopg.errors.NotNullViolation,
        COPY.format("children"),
        lambda s, w, _: _set(w.new_child("n0_50"), "qty", None),
        lambda w: _set(w.new_child("n0_50"), "qty", _qty(50)),
        lambda w: "n0_50",
    ),
    "not-null-multirow-insert": BadRow(
        psycopg.errors.NotNullViolation,
        MULTIROW_INSERT.format("children"),
        lambda s, w, _: _set(w.new_child("n0_8"), "qty", None),
        lambda w: _set(w.new_child("n0_8"), "qty", _qty(8)),
        lambda w: "n0_8",
        n0_kids=SMALL_N0,
    ),
    "not-null-set-update": BadRow(
        psycopg.errors.NotNullViolation,
        SET_UPDATE.format("children"),
        lambda s, w, _: _set_qtys(w, (4, None, 4)),
        lambda w: None,
        lambda w: "c0_1",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_server_refuses_a_row_in_a_batch(world: World, case: str) -> None:
    bad = BAD_ROWS[case]
    with Session(world.engine) as s:
        w = _load(s, bad.n0_kids)
        _apply(s, w)
        bad.spoil(s, w, world)
        before, state = world.rows(), world.state()
        with pytest.raises(exc.IntegrityError) as info:
            s.commit()
        err = info.value
        assert isinstance(err.orig, bad.error), repr(err.orig)
        assert err.statement is not None and re.match(bad.statement, err.statement), err.statement
        # the error names the offending row (PostgreSQL's detail, kept in the message)
        assert bad.names(w) in str(err), str(err)
        _assert_failed(s, w, world, before)
        s.rollback()
        _assert_pool_intact(world.engine, lost=0)
        _assert_consistent(s, w, world)
        bad.repair(w)
        _retry(s, w, world, _expected(state, bad.n0_kids))
    _assert_pool_intact(world.engine, lost=0)


# --------------------------------------------------------------------------------------------
# what the objects say right after a failed flush


@pytest.mark.parametrize("name", IN_FLUSH_EVENTS)
def test_listener_failure_leaves_no_persistent_object(world: World, name: str) -> None:
    def fail(session: Session, *args: Any) -> None:
        raise InjectedFault(name)

    with Session(world.engine) as s:
        w = _load(s)
        _apply(s, w)
        event.listen(s, name, fail)
        with pytest.raises(InjectedFault):
            s.commit()
        _assert_not_persistent(w)
        assert _lifecycle(w.parents[DELETED]) == "persistent"  # its DELETE was rolled back
        s.rollback()


# --------------------------------------------------------------------------------------------
# concurrent transactions


def _isolation(s: Session, level: str) -> None:
    s.connection().exec_driver_sql(f"SET TRANSACTION ISOLATION LEVEL {level}")


def test_serialization_failure_in_a_batched_update(world: World) -> None:
    """REPEATABLE READ: another transaction updates p1 after this one loaded it; the set-based
    UPDATE of p0 and p1 fails on p1."""
    with Session(world.engine) as s:
        _isolation(s, "REPEATABLE READ")
        w = _load(s)
        _apply(s, w)
        world.admin.execute(
            f"UPDATE {world.schema}.parents SET note = 'concurrent' WHERE name = 'p1'"
        )
        before, state = world.rows(), world.state()
        with pytest.raises(exc.OperationalError) as info:
            s.commit()
        err = info.value
        assert isinstance(err.orig, psycopg.errors.SerializationFailure), repr(err.orig)
        assert err.statement is not None and err.statement.startswith("UPDATE")
        assert "parents" in err.statement.split("SET")[0]
        _assert_failed(s, w, world, before)
        s.rollback()
        _assert_pool_intact(world.engine, lost=0)
        _assert_consistent(s, w, world)
        assert w.parents["p1"].note == "concurrent"
        _retry(s, w, world, _expected(state))
    _assert_pool_intact(world.engine, lost=0)


def test_serialization_failure_at_commit(world2: World) -> None:
    """SERIALIZABLE write skew: both sessions read the children, both write children; the one
    committing second fails at COMMIT, after its whole flush ran."""
    world = world2
    with Session(world.engine) as s1, Session(world.engine) as s2:
        _isolation(s1, "SERIALIZABLE")
        _isolation(s2, "SERIALIZABLE")
        p0 = s1.scalars(select(Parent).where(Parent.name == "p0")).one()
        assert len(s1.scalars(select(Child)).all()) == sum(len(v) for v in SEED.values())
        w = _load(s2)
        _apply(s2, w)
        s1.add(Child(label="s1", qty=1, parent_id=p0.id))
        s1.flush()
        s2.flush()
        s1.commit()
        before, state = world.rows(), world.state()
        assert "s1" in state["p0"][1]
        with pytest.raises(exc.OperationalError) as info:
            s2.commit()
        assert isinstance(info.value.orig, psycopg.errors.SerializationFailure)
        assert world.rows() == before
        _assert_no_locks(world)
        s2.rollback()
        _assert_consistent(s2, w, world)
        _retry(s2, w, world, _expected(state))
    _assert_pool_intact(world.engine, lost=0)


def _stale_delete(w: Work, world: World) -> Child:
    """Another transaction deletes c1_0, which the program's batched DELETE removes too."""
    gone = w.children["c1_0"]
    world.admin.execute(f"DELETE FROM {world.schema}.children WHERE id = %s", (gone.id,))
    return gone


def _stale_update(w: Work, world: World) -> Parent:
    """Another transaction deletes p0 (and its children), which the batched UPDATE changes."""
    gone = w.parents["p0"]
    world.admin.execute(f"DELETE FROM {world.schema}.children WHERE parent_id = %s", (gone.id,))
    world.admin.execute(f"DELETE FROM {world.schema}.parents WHERE id = %s", (gone.id,))
    return gone


STALE: dict[str, Callable[[Work, World], Parent | Child]] = {
    "batched-delete": _stale_delete,
    "batched-update": _stale_update,
}


@pytest.mark.parametrize("case", list(STALE))
def test_row_deleted_by_another_transaction_under_a_batch(world: World, case: str) -> None:
    with Session(world.engine) as s:
        w = _load(s)
        _apply(s, w)
        STALE[case](w, world)
        before, state = world.rows(), world.state()
        with pytest.raises(exc.StaleDataError):
            s.commit()
        _assert_failed(s, w, world, before)
        s.rollback()
        _assert_pool_intact(world.engine, lost=0)
        if case == "batched-update":
            # p0 is gone: the retry changes only what is left
            with pytest.raises(exc.ObjectDeletedError):
                _ = w.parents.pop("p0").note
            for label in [label for label in w.children if label.startswith("c0_")]:
                with pytest.raises(exc.ObjectDeletedError):
                    _ = w.children.pop(label).qty
        _assert_consistent(s, w, world)
        _retry(s, w, world, _expected(state))


@pytest.mark.parametrize("case", list(STALE))
def test_stale_data_error_names_the_row(world: World, case: str) -> None:
    with Session(world.engine) as s:
        w = _load(s)
        _apply(s, w)
        gone = STALE[case](w, world)
        key = gone.id
        with pytest.raises(exc.StaleDataError) as info:
            s.commit()
        assert re.search(rf"\b{key}\b", str(info.value)), str(info.value)
        s.rollback()


# --------------------------------------------------------------------------------------------
# a fault inside a SAVEPOINT

# The savepoint's statements: SAVEPOINT (opened at its first statement), the flush, RELEASE.
SAVEPOINT_STATEMENTS = N_STATEMENTS["copy"] + 2


@pytest.mark.parametrize("fault", ["raise", "kill"])
@pytest.mark.parametrize("k", range(SAVEPOINT_STATEMENTS))
def test_fault_inside_a_savepoint(world: World, k: int, fault: str) -> None:
    """A raise loses only the savepoint's work: once the savepoint is rolled back the
    enclosing transaction goes on. A lost connection loses the whole transaction."""
    error = InjectedFault(f"before savepoint statement {k}")

    def fail() -> None:
        raise error

    with Session(world.engine) as s:
        w = _load(s)
        pid = _pid(s)
        outer = Parent(name="outer")
        s.add(outer)
        s.flush()
        before, state = world.rows(), world.state()
        sp = s.begin_nested()
        _apply(s, w)
        injector = Injector(k, fail if fault == "raise" else lambda: world.kill(pid))
        expected_error = InjectedFault if fault == "raise" else exc.OperationalError
        with _hooked(world.engine, injector), pytest.raises(expected_error) as info:
            sp.commit()
        assert injector.fired is not None, f"the savepoint ran only {injector.count} statements"
        if fault == "raise":
            assert info.value is error
        if fault == "kill" or k < SAVEPOINT_STATEMENTS - 1:  # the flush failed
            with pytest.raises(exc.PendingRollbackError):
                s.execute(select(Parent))
        sp.rollback()
        assert not s.in_nested_transaction()
        assert world.rows() == before
        if fault == "kill":
            _assert_no_locks(world)
            with pytest.raises(exc.PendingRollbackError):
                s.execute(select(Parent))
            s.rollback()
            assert _lifecycle(outer) == "transient"
            w.extra.append(outer)
        else:
            assert _lifecycle(outer) == "persistent"
        _assert_consistent(s, w, world)
        s.commit()
        _assert_pool_intact(world.engine, lost=int(fault == "kill"))
        if fault == "raise":
            assert world.state() == dict(state, outer=(None, {}))
        _retry(s, w, world, dict(_expected(state), outer=(None, {})))


def test_failed_flush_at_the_end_of_a_savepoint_block(world: World) -> None:
    with Session(world.engine) as s:
        outer = Parent(name="outer")
        s.add(outer)
        s.flush()
        bad = Parent(name="p0")
        with pytest.raises(exc.IntegrityError), s.begin_nested():
            s.add(bad)
        assert not s.in_nested_transaction()
        assert _lifecycle(bad) == "transient" and _lifecycle(outer) == "persistent"
        s.commit()
    assert "outer" in world.state()
