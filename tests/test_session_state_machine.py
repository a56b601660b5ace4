"""One Session driven through random transaction and lifecycle steps, checked against a model.

The steps: add a new object (natural key), re-add a transient one, load a row with get(), set a
column, delete, flush, commit, rollback, begin_nested, release or roll back the innermost
SAVEPOINT, expire_all, expunge. The pure-Python model keeps the committed rows, the rows as the
open transaction sees them (flushed but uncommitted work included), a snapshot of those rows per
open SAVEPOINT, and per object its expected lifecycle and the values it must show when read
(reloading them where they are expired).

After every step: each object's `inspect()` state, `session.new/dirty/deleted` and the committed
rows (read through a separate autocommit connection, which sees only committed data) agree with
the model. Flushes compare the rows the transaction sees; rollbacks (of the transaction or of a
SAVEPOINT) check that added objects became transient, deleted ones persistent again and loaded
ones show the values of the restored rows.

Settings: the "ci" profile by default; `HYPOTHESIS_PROFILE=nightly` runs many more examples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from retort import DeclarativeBase, Mapped, Session, inspect, mapped_column
from retort.engine import Engine

settings.register_profile(
    "ci",
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "nightly",
    max_examples=2000,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _profile() -> settings:
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    return settings.get_profile(name if name in ("ci", "nightly") else "ci")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str]
    qty: Mapped[int]


ATTRS = ("name", "qty")
VALUES: dict[str, list[Any]] = {"name": ["a", "b", "c"], "qty": [0, 1, 2]}
IDS = range(1, 9)
# rows committed before each example's session starts (loaded with get())
INITIAL = {1: ("a", 0), 2: ("b", 1), 3: ("c", 2)}
MAX_SAVEPOINTS = 3

Row = tuple[str, int]

# expected lifecycles; "marked" is persistent and in session.deleted (delete() not flushed yet)
IN_SESSION = ("pending", "persistent", "marked")


@dataclass(eq=False)
class Tracked:
    obj: Item
    id: int
    state: str
    # what reading each attribute must give (for an expired one: what a reload gives)
    values: dict[str, Any]
    # attributes that may be expired on the object (a superset: they are not read when the
    # object is outside the session, where retort and SQLAlchemy differ)
    expired: set[str] = field(default_factory=set)
    # attributes set while expired: the object counts as changed even if the value is equal
    blind: set[str] = field(default_factory=set)
    # SAVEPOINT depth (0: the transaction itself) at which the INSERT / DELETE was flushed
    ins_level: int | None = None
    del_level: int | None = None

    def row(self) -> Row:
        return (self.values["name"], self.values["qty"])


def test_session_matches_a_transaction_model(
    engine: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    Base.metadata.create_all(engine)
    table = f"{schema}.items"

    def committed_rows() -> dict[int, Row]:
        rows = admin_conn.execute(f"SELECT id, name, qty FROM {table} ORDER BY id").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    class SessionMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            admin_conn.execute(f"TRUNCATE {table}")
            for pk, (name, qty) in INITIAL.items():
                admin_conn.execute(f"INSERT INTO {table} VALUES (%s, %s, %s)", (pk, name, qty))
            self.session = Session(engine)
            self.objs: list[Tracked] = []
            self.committed: dict[int, Row] = dict(INITIAL)
            self.flushed: dict[int, Row] = dict(INITIAL)
            # per open SAVEPOINT: its SessionTransaction and the rows when it began
            self.savepoints: list[dict[int, Row]] = []
            self.sp_txs: list[Any] = []
            # ids whose object was expunged in this transaction: a get() would load a second
            # instance of a row the first one may still change (kept out of the model)
            self.tainted: set[int] = set()

        def teardown(self) -> None:
            self.session.close()

        # -- model helpers --------------------------------------------------------------------

        @property
        def depth(self) -> int:
            return len(self.savepoints)

        def in_session(self) -> list[Tracked]:
            return [t for t in self.objs if t.state in IN_SESSION]

        def taken(self) -> set[int]:
            """Ids that a new object may not use: rows of the transaction, and objects of the
            session (pending, or deleted by a flush of this transaction)."""
            ids = set(self.flushed)
            ids.update(t.id for t in self.objs if t.state in (*IN_SESSION, "deleted"))
            return ids

        def model_flush(self) -> None:
            for t in self.objs:
                if t.state == "pending":
                    t.state = "persistent"
                    t.ins_level = self.depth
                    self.flushed[t.id] = t.row()
                elif t.state == "marked":
                    t.state = "deleted"
                    t.del_level = self.depth
                    del self.flushed[t.id]
                elif t.state == "persistent":
                    self.flushed[t.id] = t.row()
                t.blind.clear()

        def expire(self, t: Tracked, rows: dict[int, Row]) -> None:
            t.values = dict(zip(ATTRS, rows[t.id], strict=True))
            t.expired = set(ATTRS)
            t.blind.clear()

        def check_values(self, which: list[Tracked]) -> None:
            with self.session.no_autoflush:
                for t in which:
                    if t.state in IN_SESSION:
                        # reading reloads what is expired
                        got = {a: getattr(t.obj, a) for a in ATTRS}
                        assert got == t.values, (t.id, t.state, got, t.values)
                        t.expired.clear()
                    elif t.state in ("transient", "detached"):
                        for a in ATTRS:
                            if a not in t.expired:
                                assert getattr(t.obj, a) == t.values[a], (t.id, t.state, a)

        def check_transaction_rows(self) -> None:
            rows = (
                self.session.connection()
                .exec_driver_sql("SELECT id, name, qty FROM items ORDER BY id")
                .all()
            )
            assert {r[0]: (r[1], r[2]) for r in rows} == self.flushed

        # -- steps ----------------------------------------------------------------------------

        @rule(
            pk=st.sampled_from(IDS),
            name=st.sampled_from(VALUES["name"]),
            qty=st.sampled_from(VALUES["qty"]),
        )
        def add_new(self, pk: int, name: str, qty: int) -> None:
            if pk in self.taken():
                return
            obj = Item(id=pk, name=name, qty=qty)
            self.session.add(obj)
            self.objs.append(Tracked(obj, pk, "pending", {"name": name, "qty": qty}))

        @rule(data=st.data())
        def add_transient_again(self, data: st.DataObject) -> None:
            taken = self.taken()
            choices = [
                t
                for t in self.objs
                if t.state == "transient" and not t.expired and t.id not in taken
            ]
            if not choices:
                return
            t = data.draw(st.sampled_from(choices), label="transient")
            self.session.add(t.obj)
            t.state = "pending"
            t.ins_level = t.del_level = None

        @rule(pk=st.sampled_from(IDS))
        def get(self, pk: int) -> None:
            known = [t for t in self.in_session() if t.id == pk]
            if known:
                if known[0].state != "persistent":
                    return
                # identity map hit: the same instance (reloading expired attributes would
                # autoflush, as attribute loads do)
                with self.session.no_autoflush:
                    assert self.session.get(Item, pk) is known[0].obj
                return
            if pk not in self.flushed or pk in self.tainted:
                return
            # identity map miss: autoflush, then SELECT
            self.model_flush()
            obj = self.session.get(Item, pk)
            assert obj is not None
            assert pk in self.flushed
            self.objs.append(
                Tracked(obj, pk, "persistent", dict(zip(ATTRS, self.flushed[pk], strict=True)))
            )

        @rule(data=st.data(), attr=st.sampled_from(ATTRS))
        def set_attr(self, data: st.DataObject, attr: str) -> None:
            choices = [t for t in self.objs if t.state in ("pending", "persistent")]
            if not choices:
                return
            t = data.draw(st.sampled_from(choices), label="object")
            value = data.draw(st.sampled_from(VALUES[attr]), label="value")
            setattr(t.obj, attr, value)
            t.values[attr] = value
            if attr in t.expired:
                t.expired.discard(attr)
                t.blind.add(attr)

        @rule(data=st.data())
        def delete(self, data: st.DataObject) -> None:
            choices = [t for t in self.objs if t.state == "persistent"]
            if not choices:
                return
            t = data.draw(st.sampled_from(choices), label="object")
            self.session.delete(t.obj)
            t.state = "marked"

        @rule()
        def flush(self) -> None:
            self.session.flush()
            self.model_flush()
            self.check_transaction_rows()

        @rule(check=st.booleans())
        def commit(self, check: bool) -> None:
            self.session.commit()
            self.model_flush()
            self.savepoints.clear()
            self.sp_txs.clear()
            self.committed = dict(self.flushed)
            self.tainted.clear()
            for t in self.objs:
                t.ins_level = t.del_level = None
                if t.state == "deleted":
                    t.state = "detached"
                elif t.state == "persistent":
                    self.expire(t, self.flushed)  # expire_on_commit
            assert committed_rows() == self.committed
            if check:
                self.check_values(self.objs)

        @rule(check=st.booleans())
        def rollback(self, check: bool) -> None:
            self.session.rollback()
            self.savepoints.clear()
            self.sp_txs.clear()
            self.flushed = dict(self.committed)
            self.tainted.clear()
            for t in self.objs:
                if t.state == "pending" or t.ins_level is not None:
                    # added in the transaction (even if expunged since): transient again
                    t.state = "transient"
                elif t.state in ("marked", "deleted"):
                    t.state = "persistent"
                t.ins_level = t.del_level = None
                if t.state == "persistent":
                    self.expire(t, self.committed)
            if check:
                self.check_values(self.objs)

        @precondition(lambda self: len(self.savepoints) < MAX_SAVEPOINTS)
        @rule()
        def begin_nested(self) -> None:
            self.sp_txs.append(self.session.begin_nested())  # flushes first
            self.model_flush()
            self.savepoints.append(dict(self.flushed))
            assert self.session.in_nested_transaction()

        @precondition(lambda self: len(self.savepoints) > 0)
        @rule()
        def release_savepoint(self) -> None:
            self.sp_txs.pop().commit()  # flushes first
            self.model_flush()
            level = self.depth
            self.savepoints.pop()
            for t in self.objs:
                if t.ins_level == level:
                    t.ins_level = level - 1
                if t.del_level == level:
                    t.del_level = level - 1
            self.check_transaction_rows()

        @precondition(lambda self: len(self.savepoints) > 0)
        @rule(check=st.booleans())
        def rollback_savepoint(self, check: bool) -> None:
            self.sp_txs.pop().rollback()
            level = self.depth
            self.flushed = self.savepoints.pop()
            for t in self.objs:
                if t.state == "pending" or (t.ins_level is not None and t.ins_level >= level):
                    t.state = "transient"
                    t.ins_level = t.del_level = None
                elif t.state == "marked" or (
                    t.state == "deleted" and t.del_level is not None and t.del_level >= level
                ):
                    t.state = "persistent"
                    t.del_level = None
                if t.state == "persistent":
                    # changed inside: expired, reloads the row as it was at the SAVEPOINT
                    self.expire(t, self.flushed)
            self.check_transaction_rows()
            if check:
                self.check_values(self.objs)

        @rule()
        def expire_all(self) -> None:
            self.session.expire_all()
            for t in self.objs:
                if t.state in ("persistent", "marked"):
                    self.expire(t, self.flushed)

        @rule(data=st.data())
        def expunge(self, data: st.DataObject) -> None:
            choices = self.in_session()
            if not choices:
                return
            t = data.draw(st.sampled_from(choices), label="object")
            self.session.expunge(t.obj)
            t.state = "transient" if t.state == "pending" else "detached"
            self.tainted.add(t.id)

        @rule()
        def read_values(self) -> None:
            self.check_values(self.objs)

        # -- checks after every step ----------------------------------------------------------

        @invariant()
        def lifecycles_agree(self) -> None:
            for t in self.objs:
                state = inspect(t.obj)
                want = "persistent" if t.state == "marked" else t.state
                got = [
                    s
                    for s in ("transient", "pending", "persistent", "deleted", "detached")
                    if getattr(state, s)
                ]
                assert got == [want], (t.id, t.state, got)
                assert (t.obj in self.session) == (t.state in IN_SESSION), (t.id, t.state)

        @invariant()
        def new_dirty_deleted_agree(self) -> None:
            s = self.session
            with s.no_autoflush:
                assert {id(o) for o in s.new} == {
                    id(t.obj) for t in self.objs if t.state == "pending"
                }
                assert {id(o) for o in s.deleted} == {
                    id(t.obj) for t in self.objs if t.state == "marked"
                }
                dirty = {id(o) for o in s.dirty}
                for t in self.objs:
                    if t.state != "persistent":
                        assert id(t.obj) not in dirty, (t.id, t.state)
                    elif t.row() != self.flushed[t.id]:
                        assert id(t.obj) in dirty, (t.id, t.values, self.flushed[t.id])
                    elif not t.blind:
                        assert id(t.obj) not in dirty, (t.id, t.values)
                known = {id(t.obj) for t in self.objs}
                assert dirty <= known

        @invariant()
        def committed_rows_agree(self) -> None:
            # the autocommit connection sees only committed data
            assert committed_rows() == self.committed
            assert self.session.in_nested_transaction() == bool(self.savepoints)

    run_state_machine_as_test(SessionMachine, settings=_profile())
