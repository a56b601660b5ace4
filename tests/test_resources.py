"""Resources: memory stays bounded under churn, nothing leaks through reference cycles, and
connections go back to the pool whatever goes wrong.

Memory churn: 1,000,000 objects go through 100 rounds of 10,000. In each round one session
builds and inserts them (`add_all`, `commit`: COPY with pre-allocated keys) and a second
session loads them all back, changes every fourth, commits (one set UPDATE), deletes them all
and commits (one DELETE). So every one of the million objects is flushed as an INSERT and as a
DELETE, and 250,000 of them as an UPDATE, all through the database (about 25 s here). The
resident set size (RSS, from /proc/self/statm) is taken after ten warm-up rounds (the
allocator's pools still grow during the first rounds) and at the end, each time after a full
garbage collection; it may grow by less than 5 %. No instance of the model and no session may
be alive at the end either.

Reference cycles: sessions dropped without close() while their core holds new, dirty and
deleted objects that refer back to the session; parent/children graphs with back_populates;
event listeners and `info` entries that close over the session; a flush context (with its
flush plan) kept by a listener; a committed value that refers to its own object. Everything
must be freed by `gc.collect()`, including the core's own objects (`SessionCore`,
`InstanceState`, counted through `gc.get_objects()`), and nothing may end in `gc.garbage`.

Connections: after a failed flush, a failed commit (in the flush and at COMMIT itself), a
stale UPDATE, a backend killed with `pg_terminate_backend` (inside a transaction and while
idle in the pool), exceptions inside `with Session(...)`, `sessionmaker.begin()`,
`session.begin()` and `begin_nested()` blocks, a listener that raises, and a session dropped
without close(), the pool's checked-out count (`pool_size - pool_available` of psycopg_pool's
`get_stats()`) returns to where it started, no backend is left idle in a transaction, and the
pool still hands out working connections. A killed connection is replaced by the pool in a
background thread, so those counts are polled (up to 10 s) rather than read once.
"""

from __future__ import annotations

import gc
import os
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from retort import (
    DeclarativeBase,
    ForeignKey,
    Mapped,
    Session,
    event,
    exc,
    func,
    inspect,
    mapped_column,
    relationship,
    select,
    sessionmaker,
    text,
)
from retort.engine import Engine
from tests.fix_db import checked_out

Conn = psycopg.Connection[Any]
Collected = Callable[..., None]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    qty: Mapped[int]


class Node(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Parent(Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    children: Mapped[list[Child]] = relationship(back_populates="parent")


class Child(Base):
    __tablename__ = "children"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("parents.id"))
    parent: Mapped[Parent | None] = relationship(back_populates="children")


class Tag(str):
    """A str that refers to an object: as a column value it closes a cycle through the
    object's state (its committed snapshot) once the value is replaced."""

    owner: Any = None


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


# -- memory churn -----------------------------------------------------------------------------

ROUNDS = 100
PER_ROUND = 10_000
WARM_UP = 10
MAX_GROWTH = 0.05


def _rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _settled_rss() -> int:
    for _ in range(3):
        gc.collect()
    return _rss()


def _live(cls: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def _churn_round(maker: sessionmaker, r: int, sessions: list[weakref.ref[Session]]) -> None:
    """Insert PER_ROUND new objects in one session; load them in another, change every
    fourth, commit, delete them all and commit."""
    with maker() as s:
        sessions.append(weakref.ref(s))
        s.add_all([Item(name=f"r{r}-{i}", qty=i) for i in range(PER_ROUND)])
        s.commit()
    with maker() as s:
        sessions.append(weakref.ref(s))
        items = s.scalars(select(Item)).all()
        assert len(items) == PER_ROUND
        for item in items[::4]:
            item.qty = -item.qty - 1
        s.commit()
        for item in items:
            s.delete(item)
        s.commit()


def test_churning_a_million_objects_keeps_memory_bounded(db: Engine) -> None:
    maker = sessionmaker(db)
    sessions: list[weakref.ref[Session]] = []
    baseline = 0
    for r in range(ROUNDS):
        if r == WARM_UP:
            baseline = _settled_rss()
        _churn_round(maker, r, sessions)
    final = _settled_rss()
    growth = (final - baseline) / baseline
    print(
        f"\nRSS after {WARM_UP} warm-up rounds: {baseline / 2**20:.1f} MiB; after "
        f"{ROUNDS * PER_ROUND:,} objects: {final / 2**20:.1f} MiB ({growth:+.2%})"
    )
    assert growth < MAX_GROWTH, (
        f"RSS grew by {growth:.1%} ({baseline / 2**20:.1f} -> {final / 2**20:.1f} MiB)"
    )
    # nothing of the churn is alive: no model instance, no session
    assert _live(Item) == 0
    assert [r for r in sessions if r() is not None] == []
    # and it all went through the database: every key was drawn once, every row deleted
    with maker() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 0
        assert s.scalar(text("SELECT last_value FROM items_id_seq")) >= ROUNDS * PER_ROUND


# -- reference cycles through the core --------------------------------------------------------


def _core_objects() -> dict[str, int]:
    """Live instances of the core's own classes."""
    counts = {"SessionCore": 0, "InstanceState": 0}
    for o in gc.get_objects():
        name = type(o).__name__
        if name in counts and type(o).__module__ == "retort._core":
            counts[name] += 1
    return counts


@pytest.fixture
def no_leaks(assert_collected: Collected) -> Iterator[Callable[..., None]]:
    """`no_leaks(*weakrefs)`: the referents are freed by gc.collect(), the core holds no more
    sessions or object states than before the test, and nothing is uncollectable."""
    for _ in range(3):
        gc.collect()
    garbage_before = len(gc.garbage)
    before = _core_objects()

    def check(*refs: weakref.ref[Any]) -> None:
        assert_collected(*refs)
        after = _core_objects()
        leaked = {k: after[k] - before[k] for k in after if after[k] > before[k]}
        assert leaked == {}, f"core objects still alive: before {before}, after {after}"
        assert gc.garbage[garbage_before:] == []

    yield check
    assert gc.garbage[garbage_before:] == []


def _seed_nodes(engine: Engine, n: int = 4) -> None:
    with Session(engine) as s:
        s.add_all([Node(name=f"n{i}") for i in range(n)])
        s.commit()


def test_dropped_session_with_objects_that_refer_to_it_is_collected(
    db: Engine, no_leaks: Callable[..., None]
) -> None:
    _seed_nodes(db)
    s = Session(db, expire_on_commit=False)
    loaded = s.scalars(select(Node).order_by(Node.id)).all()
    s.commit()  # no connection is held from here on; the changes below stay in memory
    dirty, deleted, clean = loaded[0], loaded[1], loaded[2]
    dirty.name = "changed"
    s.delete(deleted)
    new = Node(name="new")
    s.add(new)
    assert s.dirty and s.deleted and s.new
    # each object refers back to the session: the core (holding them strongly as new, dirty
    # and deleted) is part of every cycle
    for obj in (dirty, deleted, clean, new):
        obj.session = s  # type: ignore[attr-defined]
        obj.again = lambda obj=obj: obj  # type: ignore[attr-defined]  # a cycle via a function
    s.info["everything"] = [*loaded, new, s]
    refs = [weakref.ref(x) for x in (s, dirty, deleted, clean, new, *loaded)]
    del s, loaded, dirty, deleted, clean, new, obj
    no_leaks(*refs)


def test_dropped_and_closed_sessions_with_relationship_graphs_are_collected(
    db: Engine, no_leaks: Callable[..., None]
) -> None:
    with Session(db) as s:
        s.add_all(
            [
                Parent(name=f"p{i}", children=[Child(name=f"c{i}.{j}") for j in range(3)])
                for i in range(3)
            ]
        )
        s.commit()
    refs: list[weakref.ref[Any]] = []

    # a persistent graph, loaded lazily in both directions, with changes not yet flushed
    s = Session(db, expire_on_commit=False)
    parents = s.scalars(select(Parent).order_by(Parent.id)).all()
    kids = [c for p in parents for c in p.children]
    assert all(c.parent is not None for c in kids)
    s.commit()
    parents[0].children.append(Child(name="pending"))  # pending through the cascade
    kids[0].parent = parents[1]  # moved: both collections change
    parents[2].name = "renamed"
    refs += [weakref.ref(x) for x in (s, *parents, *kids)]
    del s, parents, kids

    # a pending graph in a session that is closed
    with Session(db) as s2:
        p = Parent(name="new", children=[Child(name="a"), Child(name="b")])
        s2.add(p)
        assert len(s2.new) == 3
        refs += [weakref.ref(x) for x in (s2, p, *p.children)]
    del s2, p
    no_leaks(*refs)


def _session_held_by_its_listeners(engine: Engine) -> list[weakref.ref[Any]]:
    """A session (and its sessionmaker) that listeners, `info` entries and objects refer to,
    through closures whose cells outlive this frame; weak references to all of it."""
    maker = sessionmaker(engine)
    seen: list[str] = []

    def on_maker_commit(session: Session) -> None:
        # closes over the sessionmaker, which its sessions refer to
        seen.append(f"commit by {maker!r:.20}")

    event.listen(maker, "after_commit", on_maker_commit)
    s = maker()

    def keep_context(session: Session, flush_context: Any) -> None:
        # keeps the flush context (the session, its transaction, the flush plan and through
        # its batches the flushed objects) in the session that made it
        s.info.setdefault("contexts", []).append(flush_context)

    event.listen(s, "after_flush", keep_context)
    event.listen(s, "before_commit", lambda session: seen.append(f"before {s!r:.10}"))
    s.info["self"] = lambda: s
    node = s.scalars(select(Node).limit(1)).one()
    node.name = "flushed"
    node.session = s  # type: ignore[attr-defined]
    extra = Node(name="extra")
    s.add(extra)
    s.commit()
    assert len(s.info["contexts"]) == 1 and s.info["contexts"][0].plan is not None
    assert len(seen) == 2
    return [weakref.ref(x) for x in (s, node, extra, maker, keep_context, on_maker_commit)]


def test_listeners_info_and_flush_contexts_holding_the_session_are_collected(
    db: Engine, no_leaks: Callable[..., None]
) -> None:
    _seed_nodes(db)
    refs = _session_held_by_its_listeners(db)
    no_leaks(*refs)


def test_a_committed_value_that_refers_to_its_object_is_collected(
    db: Engine, no_leaks: Callable[..., None]
) -> None:
    # the old value of a changed attribute lives in the object's state (its committed
    # snapshot): object -> __dict__ -> state -> snapshot -> value -> object
    s = Session(db, expire_on_commit=False)
    node = Node(name="x")
    s.add(node)
    s.commit()
    tag = Tag("tagged")
    tag.owner = node
    node.name = tag
    s.commit()
    node.name = "replaced"  # the snapshot now holds the Tag, which holds the node
    assert node in s.dirty
    assert inspect(node).attrs["name"].history.deleted[0] is tag
    node.session = s  # type: ignore[attr-defined]
    refs = [weakref.ref(node), weakref.ref(s)]
    del s, node, tag
    no_leaks(*refs)


# -- connections go back to the pool ---------------------------------------------------------


@pytest.fixture
def small(engine_factory: Callable[..., Engine]) -> Engine:
    """An engine whose pool has room for two connections: a leak soon makes checkouts fail."""
    eng = engine_factory(pool_size=2, max_overflow=0, pool_timeout=5)
    Base.metadata.create_all(eng)
    with Session(eng) as s:
        s.add_all([Node(name=f"n{i}") for i in range(3)])
        s.commit()
    return eng


def _idle_in_transaction(admin: Conn, schema: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
        "AND state LIKE 'idle in transaction%%'",
        (schema,),
    ).fetchone()
    return int(row[0]) if row else 0


def _backend_pids(admin: Conn, schema: str) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
        (schema,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def _assert_all_returned(engine: Engine, admin: Conn, schema: str) -> None:
    """Nothing is checked out (waiting up to 10 s for the pool's background threads), no
    backend sits in a transaction, and both pooled connections work."""
    deadline = time.monotonic() + 10
    while checked_out(engine) != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert checked_out(engine) == 0
    assert _idle_in_transaction(admin, schema) == 0
    with Session(engine) as a, Session(engine) as b:
        assert a.scalar(select(func.count()).select_from(Node)) == _count(admin, schema)
        assert b.scalar(text("SELECT 1")) == 1
        assert checked_out(engine) == 2
    assert checked_out(engine) == 0


def _count(admin: Conn, schema: str, table: str = "nodes") -> int:
    row = admin.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()
    return int(row[0]) if row else -1


def test_failed_flush_returns_the_connection(small: Engine, admin_conn: Conn, schema: str) -> None:
    start = checked_out(small)
    s = Session(small)
    s.add(Node(id=1, name="duplicate key"))
    with pytest.raises(exc.IntegrityError):
        s.flush()
    s.rollback()
    assert checked_out(small) == start
    # and inside a with block, without rollback()
    with pytest.raises(exc.IntegrityError), Session(small) as s2:
        s2.add(Node(id=2, name="duplicate key"))
        s2.flush()
    assert checked_out(small) == start
    # the first session goes on
    s.add(Node(name="fine"))
    s.commit()
    s.close()
    assert _count(admin_conn, schema) == 4
    _assert_all_returned(small, admin_conn, schema)


def test_failed_commit_returns_the_connection(small: Engine, admin_conn: Conn, schema: str) -> None:
    # the flush inside commit() fails
    s = Session(small)
    s.add(Node(id=3, name="duplicate key"))
    with pytest.raises(exc.IntegrityError):
        s.commit()
    s.rollback()
    assert checked_out(small) == 0
    s.close()
    # COMMIT itself fails (a deferred constraint): the session gives the connection back
    # at once, without close()
    admin_conn.execute(
        f"ALTER TABLE {schema}.nodes ADD CONSTRAINT nodes_name_key UNIQUE (name) "
        "DEFERRABLE INITIALLY DEFERRED"
    )
    s = Session(small)
    s.add_all([Node(name="twin"), Node(name="twin")])
    s.flush()
    with pytest.raises(exc.IntegrityError):
        s.commit()
    assert checked_out(small) == 0
    with pytest.raises(exc.PendingRollbackError):  # until the failure is acknowledged
        s.commit()
    s.rollback()
    s.add(Node(name="single"))
    s.commit()
    s.close()
    assert _count(admin_conn, schema) == 4
    admin_conn.execute(f"ALTER TABLE {schema}.nodes DROP CONSTRAINT nodes_name_key")
    admin_conn.execute(f"DELETE FROM {schema}.nodes WHERE name = 'single'")
    _assert_all_returned(small, admin_conn, schema)


def test_stale_update_returns_the_connection(small: Engine, admin_conn: Conn, schema: str) -> None:
    with Session(small) as s:
        node = s.get(Node, 1)
        assert node is not None
        admin_conn.execute(f"DELETE FROM {schema}.nodes WHERE id = 1")
        node.name = "gone"
        with pytest.raises(exc.StaleDataError):
            s.commit()
    admin_conn.execute(f"INSERT INTO {schema}.nodes (id, name) VALUES (1, 'n0')")
    _assert_all_returned(small, admin_conn, schema)


def test_killed_connection_inside_a_transaction_is_returned(
    small: Engine, admin_conn: Conn, schema: str
) -> None:
    s = Session(small)
    try:
        node = s.get(Node, 1)
        assert node is not None
        pid = s.scalar(text("SELECT pg_backend_pid()"))
        admin_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        node.name = "lost"
        with pytest.raises(exc.OperationalError):
            s.commit()
        s.rollback()
        # the session goes on, on a new connection
        node = s.get(Node, 1)
        assert node is not None and node.name == "n0"
        assert s.scalar(text("SELECT pg_backend_pid()")) != pid
        node.name = "kept"
        s.commit()
    finally:
        s.close()
    with Session(small) as s:
        assert s.get(Node, 1).name == "kept"  # type: ignore[union-attr]
        s.get(Node, 1).name = "n0"  # type: ignore[union-attr]
        s.commit()
    _assert_all_returned(small, admin_conn, schema)


def test_killed_idle_pooled_connections_are_not_leaked(
    small: Engine, admin_conn: Conn, schema: str
) -> None:
    # both pooled connections are idle in the pool when their backends are killed
    with Session(small) as a, Session(small) as b:
        a.scalar(text("SELECT 1"))
        b.scalar(text("SELECT 1"))
    assert checked_out(small) == 0
    killed = _backend_pids(admin_conn, schema)
    assert len(killed) == 2
    for pid in killed:
        admin_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # a session that gets a dead connection fails with a retort error (or works, if the
    # engine checks connections on checkout); either way the dead connection is discarded,
    # so each can fail one session at most, and nothing stays checked out
    failures = 0
    for _ in range(4):
        try:
            with Session(small) as s:
                assert s.scalar(text("SELECT 1")) == 1
        except exc.OperationalError:
            failures += 1
    assert failures <= len(killed)
    _assert_all_returned(small, admin_conn, schema)
    assert not set(killed) & set(_backend_pids(admin_conn, schema))


class Boom(Exception):
    pass


def test_exceptions_inside_with_blocks_return_the_connection(
    small: Engine, admin_conn: Conn, schema: str
) -> None:
    maker = sessionmaker(small)

    with pytest.raises(Boom), Session(small) as s:
        s.get(Node, 1).name = "x"  # type: ignore[union-attr]
        s.flush()
        raise Boom
    assert checked_out(small) == 0

    with pytest.raises(Boom), maker.begin() as s:
        s.add(Node(name="never"))
        s.flush()
        raise Boom
    assert checked_out(small) == 0

    with pytest.raises(Boom), Session(small) as s, s.begin():
        s.add(Node(name="never"))
        s.flush()
        raise Boom
    assert checked_out(small) == 0

    with Session(small) as s:
        with pytest.raises(Boom), s.begin_nested():
            s.add(Node(name="never"))
            s.flush()
            raise Boom
        assert s.in_transaction()
        with pytest.raises(Boom):
            with s.begin_nested():
                s.add(Node(name="never"))
            raise Boom
    assert checked_out(small) == 0

    def refuse(session: Session) -> None:
        raise Boom

    s = maker()
    event.listen(s, "before_commit", refuse)
    with pytest.raises(Boom), s:
        s.add(Node(name="never"))
        s.flush()
        s.commit()
    assert checked_out(small) == 0
    assert _count(admin_conn, schema) == 3
    assert admin_conn.execute(f"SELECT name FROM {schema}.nodes WHERE id = 1").fetchone() == ("n0",)
    _assert_all_returned(small, admin_conn, schema)


def test_a_session_dropped_inside_a_transaction_gives_its_connection_back(
    small: Engine, admin_conn: Conn, schema: str
) -> None:
    s = Session(small)
    s.get(Node, 1).name = "dropped"  # type: ignore[union-attr]
    s.flush()
    assert checked_out(small) == 1
    with warnings.catch_warnings():
        # the engine may warn that a connection was collected without being closed
        warnings.simplefilter("ignore", ResourceWarning)
        del s
        gc.collect()
    _assert_all_returned(small, admin_conn, schema)
    assert admin_conn.execute(f"SELECT name FROM {schema}.nodes WHERE id = 1").fetchone() == ("n0",)
