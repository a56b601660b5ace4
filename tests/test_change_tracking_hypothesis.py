"""Change tracking against a reference model: random attribute sets (often back to the loaded
value), flushes, commits and rollbacks on loaded objects.

The model keeps, per object and attribute, the value the database holds in the session's
transaction (`flushed`), the value last committed (`committed`) and the value on the object
(`current`). After every step `session.dirty`, `is_modified()` and attribute history must agree
with it; after a flush the rows must equal it and the UPDATEs must have set exactly the changed
columns (with the new values) and nothing else.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from retort import DeclarativeBase, Mapped, Session, inspect, mapped_column, select, text
from retort.engine import Engine
from retort.inspection import History


class Base(DeclarativeBase):
    pass


class Rec(Base):
    __tablename__ = "recs"
    id: Mapped[int] = mapped_column(primary_key=True)
    a: Mapped[int]
    b: Mapped[str]
    c: Mapped[str | None]


ATTRS = ("a", "b", "c")
POOL: dict[str, list[Any]] = {"a": [0, 1, 2, -5], "b": ["x", "y", "", "zz"], "c": [None, "p", "q"]}
INITIAL = [
    {"a": 0, "b": "x", "c": None},
    {"a": 1, "b": "y", "c": "p"},
    {"a": 2, "b": "", "c": "q"},
]
N = len(INITIAL)

_SET = re.compile(r"\bSET (.*?) (?:FROM|WHERE)\b", re.S)


def _array(literal: str) -> list[Any]:
    """A one-dimensional PostgreSQL array literal: unquoted elements are integers or NULL,
    quoted ones strings (with backslash escapes)."""
    assert literal.startswith("{") and literal.endswith("}"), literal
    out: list[Any] = []
    body, i = literal[1:-1], 0
    while i < len(body):
        if body[i] == '"':
            chars, i = [], i + 1
            while body[i] != '"':
                if body[i] == "\\":
                    i += 1
                chars.append(body[i])
                i += 1
            out.append("".join(chars))
            i += 2  # the closing quote and the comma
        else:
            end = body.find(",", i)
            end = len(body) if end < 0 else end
            token = body[i:end]
            out.append(None if token == "NULL" else int(token))
            i = end + 1
    return out


def _updates(log: list[tuple[str, Any]]) -> dict[tuple[int, str], Any]:
    """(primary key, column) -> value written, from the UPDATE statements in `log`.

    A flush UPDATE binds, per row, the new values of its SET columns followed by the key.
    """
    written: dict[tuple[int, str], Any] = {}
    for sql, params in log:
        assert sql.startswith("UPDATE"), f"a flush of changed loaded rows ran {sql!r}"
        m = _SET.search(sql)
        assert m, sql
        cols = [p.split("=")[0].strip().strip('"') for p in m.group(1).split(", ")]
        width = len(cols) + 1
        if "unnest(" in sql:
            # set-based form: one array per column (SET columns, then the key), as lists or
            # as the array literals retort's core encodes
            assert len(params) == width, (sql, params)
            arrays = [_array(p) if isinstance(p, str) else p for p in params]
            rows = [list(r) for r in zip(*arrays, strict=True)]
        else:
            values = list(params)
            assert len(values) % width == 0, (sql, values)
            rows = [values[start : start + width] for start in range(0, len(values), width)]
        for row in rows:
            pk = row[-1]
            for col, value in zip(cols, row[:-1], strict=True):
                assert (pk, col) not in written, f"{pk}.{col} updated twice in one flush"
                written[(pk, col)] = value
    return written


def test_change_tracking_matches_a_reference_model(
    engine: Engine,
    sql_log: list[tuple[str, Any]],
    admin_conn: psycopg.Connection[Any],
    schema: str,
) -> None:
    Base.metadata.create_all(engine)

    class ChangeTracking(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.session: Session | None = None
            self.objs: list[Rec] = []
            self.ids: list[int] = []
            self.current: list[dict[str, Any]] = []
            self.flushed: list[dict[str, Any]] = []
            self.committed: list[dict[str, Any]] = []

        @initialize()
        def load(self) -> None:
            with Session(engine) as s:
                s.execute(text("DELETE FROM recs"))
                recs = [Rec(**values) for values in INITIAL]
                s.add_all(recs)
                s.commit()
                self.ids = [r.id for r in recs]
            self.session = Session(engine, expire_on_commit=False)
            by_id = {r.id: r for r in self.session.scalars(select(Rec)).all()}
            self.objs = [by_id[i] for i in self.ids]
            self.current = [dict(v) for v in INITIAL]
            self.flushed = [dict(v) for v in INITIAL]
            self.committed = [dict(v) for v in INITIAL]

        def teardown(self) -> None:
            if self.session is not None:
                self.session.close()

        # -- steps ----------------------------------------------------------------------------

        @rule(i=st.integers(0, N - 1), attr=st.sampled_from(ATTRS), data=st.data())
        def set_value(self, i: int, attr: str, data: st.DataObject) -> None:
            value = data.draw(st.sampled_from(POOL[attr]), label="value")
            setattr(self.objs[i], attr, value)
            self.current[i][attr] = value

        @rule(i=st.integers(0, N - 1), attr=st.sampled_from(ATTRS))
        def set_back(self, i: int, attr: str) -> None:
            value = self.flushed[i][attr]
            setattr(self.objs[i], attr, value)
            self.current[i][attr] = value

        @rule(i=st.integers(0, N - 1), attr=st.sampled_from((None, *ATTRS)))
        def expire(self, i: int, attr: str | None) -> None:
            assert self.session is not None
            self.session.expire(self.objs[i], None if attr is None else [attr])
            for a in ATTRS if attr is None else (attr,):
                self.current[i][a] = self.flushed[i][a]  # unflushed change discarded

        @rule(i=st.integers(0, N - 1))
        def refresh(self, i: int) -> None:
            assert self.session is not None
            self.session.refresh(self.objs[i])
            # SQLAlchemy 2.x order: expire the object (its own changes are discarded), then
            # autoflush (every other object's changes are written), then reload it
            self.current[i] = dict(self.flushed[i])
            self.flushed = [dict(v) for v in self.current]

        @rule()
        def flush(self) -> None:
            assert self.session is not None
            expected = {
                (self.ids[i], attr): self.current[i][attr]
                for i in range(N)
                for attr in ATTRS
                if self.current[i][attr] != self.flushed[i][attr]
            }
            sql_log.clear()
            self.session.flush()
            assert _updates(sql_log) == expected
            if not expected:
                assert sql_log == []
            self.flushed = [dict(v) for v in self.current]
            rows = (
                self.session.connection()
                .exec_driver_sql("SELECT id, a, b, c FROM recs ORDER BY id")
                .all()
            )
            assert [tuple(r) for r in rows] == sorted(
                (self.ids[i], v["a"], v["b"], v["c"]) for i, v in enumerate(self.flushed)
            )

        @rule()
        def commit(self) -> None:
            assert self.session is not None
            self.session.commit()
            self.flushed = [dict(v) for v in self.current]
            self.committed = [dict(v) for v in self.current]
            rows = admin_conn.execute(f"SELECT id, a, b, c FROM {schema}.recs ORDER BY id")
            assert [tuple(r) for r in rows] == sorted(
                (self.ids[i], v["a"], v["b"], v["c"]) for i, v in enumerate(self.committed)
            )

        @rule()
        def rollback(self) -> None:
            assert self.session is not None
            self.session.rollback()
            self.current = [dict(v) for v in self.committed]
            self.flushed = [dict(v) for v in self.committed]
            for obj, values in zip(self.objs, self.committed, strict=True):
                assert {a: getattr(obj, a) for a in ATTRS} == values

        # -- checks after every step -------------------------------------------------------

        @invariant()
        def tracking_agrees_with_the_model(self) -> None:
            s = self.session
            if s is None:
                return
            with s.no_autoflush:
                for i, obj in enumerate(self.objs):
                    changed = [a for a in ATTRS if self.current[i][a] != self.flushed[i][a]]
                    assert (obj in s.dirty) == bool(changed), (i, changed)
                    assert s.is_modified(obj) == bool(changed), (i, changed)
                    state = inspect(obj)
                    assert state.persistent
                    for a in ATTRS:
                        # reading the value may reload it after a rollback: do it first
                        assert getattr(obj, a) == self.current[i][a]
                        hist = state.attrs[a].history
                        if a in changed:
                            want = History((self.current[i][a],), (), (self.flushed[i][a],))
                        else:
                            want = History((), (self.current[i][a],), ())
                        assert hist == want, (i, a, hist, want)

    run_state_machine_as_test(
        ChangeTracking,
        settings=settings(
            max_examples=100,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
