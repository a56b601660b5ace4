"""The exact SQL a flush sends: batching, changed columns only, no-ops and table order."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from retort import (
    DeclarativeBase,
    ForeignKey,
    Integer,
    Mapped,
    Session,
    _core,
    exc,
    mapped_column,
    select,
)
from retort.engine import Engine
from retort.sql.types import ARRAY

Log = list[tuple[str, Any]]
Conn = psycopg.Connection[Any]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    qty: Mapped[int] = mapped_column(default=0)
    note: Mapped[str | None]


class Code(Base):
    __tablename__ = "codes"
    code: Mapped[str] = mapped_column(primary_key=True)
    label: Mapped[str]


class Pair(Base):
    __tablename__ = "pairs"
    a: Mapped[int] = mapped_column(primary_key=True)
    b: Mapped[int] = mapped_column(primary_key=True)
    v: Mapped[str | None]


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


@pytest.fixture
def fk_models(engine: Engine) -> tuple[type[Any], type[Any]]:
    """Two tables joined by a foreign key, with client-given keys and no relationship()."""

    class FkBase(DeclarativeBase):
        pass

    # the child is declared first so that declaration order cannot explain a correct order
    class Child(FkBase):
        __tablename__ = "children"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        parent_id: Mapped[int] = mapped_column(ForeignKey("parents.id"))

    class Parent(FkBase):
        __tablename__ = "parents"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        name: Mapped[str | None]

    FkBase.metadata.create_all(engine)
    return Parent, Child


def _statements(log: Log) -> list[str]:
    return [sql for sql, _ in log]


def _verbs(log: Log) -> list[str]:
    return [sql.split(None, 1)[0].upper() for sql, _ in log]


def _set_columns(sql: str) -> list[str]:
    m = re.search(r"\bSET (.*?) (?:FROM|WHERE)\b", sql, re.S)
    assert m, f"not an UPDATE with SET: {sql}"
    return [part.split("=")[0].strip().strip('"') for part in m.group(1).split(", ")]


def _array(param: Any) -> list[Any]:
    """An array parameter: a list, or the array literal the core encoded (integers here)."""
    if isinstance(param, str):
        assert param[0] == "{" and param[-1] == "}", param
        return [int(v) for v in param[1:-1].split(",")] if len(param) > 2 else []
    return list(param)


def _table_of(sql: str) -> str:
    m = re.match(r"\s*(?:INSERT INTO|UPDATE|DELETE FROM)\s+(\S+)", sql)
    assert m, sql
    return m.group(1).strip('"').split(".")[-1]


def _loaded(engine: Engine, n: int) -> tuple[Session, list[Item]]:
    with Session(engine) as s:
        s.add_all([Item(name=f"i{k}", qty=k) for k in range(n)])
        s.commit()
    s = Session(engine)
    items = list(s.scalars(select(Item).order_by(Item.id)).all())
    return s, items


# --------------------------------------------------------------------------------------------
# INSERT


@pytest.mark.parametrize("n", [3, 100])  # multi-row VALUES, COPY
def test_keys_from_a_sequence_with_gaps_are_used_as_drawn(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str, n: int
) -> None:
    # consecutive keys come back as a range; with gaps (here INCREMENT BY 3, as when other
    # sessions draw from the sequence at the same time) as the list of values drawn
    admin_conn.execute(f"ALTER SEQUENCE {schema}.items_id_seq INCREMENT BY 3 RESTART WITH 10")
    with Session(db) as s:
        items = [Item(name=f"n{k}", qty=k) for k in range(n)]
        s.add_all(items)
        s.flush()
        expected = sorted((i.id, i.name) for i in items)
        s.commit()
    assert [k for k, _ in expected] == list(range(10, 10 + 3 * n, 3))
    rows = admin_conn.execute(f"SELECT id, name FROM {schema}.items ORDER BY id").fetchall()
    assert rows == expected


def test_three_inserts_with_generated_keys_are_one_key_select_and_one_insert(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        items = [Item(name=f"n{k}", qty=k) for k in range(3)]
        s.add_all(items)
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["SELECT", "INSERT"]
        key_sql, insert_sql = _statements(sql_log)
        assert "nextval" in key_sql
        assert _table_of(insert_sql) == "items"
        assert insert_sql.count("(%s") == 3  # three rows in one VALUES list
        ids = [i.id for i in items]
        assert len(set(ids)) == 3 and all(isinstance(i, int) for i in ids)
        # the pre-allocated keys are the ones written, row for row
        params = list(sql_log[1][1])
        for item in items:
            assert item.id in params
        s.commit()
    rows = admin_conn.execute(f"SELECT id, name, qty FROM {schema}.items ORDER BY id").fetchall()
    assert sorted(rows) == sorted((i.id, f"n{k}", k) for k, i in enumerate(items))


def test_keys_drawn_while_planning_a_flush_that_fails_leave_the_session_usable(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    # the key SELECT goes out before the core plans the flush (flush.prefetch_keys); when the
    # plan then refuses an object, its answer is read and dropped before the error is raised
    with Session(db) as s:
        old = Item(name="old")
        s.add(old)
        s.flush()
        pid = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        s.expire(old)
        s.rollback()  # old is transient again, its columns expired
        s.add_all([old, Item(name="n1"), Item(name="n2")])
        sql_log.clear()
        with pytest.raises(exc.InvalidRequestError, match="expired"):
            s.flush()
        assert _verbs(sql_log) == ["SELECT"]
        assert "nextval" in sql_log[0][0]
        s.rollback()
        # the same database connection, in a clean state (not one replaced after an error)
        assert s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar() == pid
        s.add_all([Item(name="n3"), Item(name="n4")])
        s.commit()
    rows = admin_conn.execute(f"SELECT name FROM {schema}.items ORDER BY id").fetchall()
    assert rows == [("n3",), ("n4",)]


def test_one_insert_with_generated_key_uses_returning(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        item = Item(name="solo")
        s.add(item)
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["INSERT"]
        assert "RETURNING" in sql_log[0][0]
        assert "nextval" not in sql_log[0][0]
        assert isinstance(item.id, int)
        assert item.qty == 0  # the Python default was sent


def test_inserts_with_natural_keys_need_no_key_select(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        s.add_all([Code(code=c, label=c.upper()) for c in "abcd"])
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["INSERT"]
        assert sql_log[0][0].count("(%s") == 4
        assert "nextval" not in sql_log[0][0]


def test_insert_params_carry_the_values(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        s.add(Code(code="k", label="value with ' quote"))
        sql_log.clear()
        s.flush()
        ((sql, params),) = sql_log
        assert list(params) == ["k", "value with ' quote"]
        assert "value with" not in sql  # values are bound, never inlined


# --------------------------------------------------------------------------------------------
# UPDATE


def test_same_column_set_on_several_objects_is_one_update(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    s, items = _loaded(db, 4)
    try:
        for k, item in enumerate(items[:3]):
            item.qty = 100 + k
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["UPDATE"]
        assert _set_columns(sql_log[0][0]) == ["qty"]
        s.commit()
    finally:
        s.close()
    rows = admin_conn.execute(f"SELECT name, qty FROM {schema}.items ORDER BY id").fetchall()
    assert rows == [("i0", 100), ("i1", 101), ("i2", 102), ("i3", 3)]


def test_different_column_sets_are_separate_updates(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    s, items = _loaded(db, 4)
    try:
        items[0].qty = 10
        items[1].qty = 11
        items[2].name = "renamed"
        items[3].name = "both"
        items[3].note = "n"
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["UPDATE", "UPDATE", "UPDATE"]
        column_sets = sorted(sorted(_set_columns(sql)) for sql in _statements(sql_log))
        assert column_sets == [["name"], ["name", "note"], ["qty"]]
        s.commit()
    finally:
        s.close()
    rows = admin_conn.execute(f"SELECT name, qty, note FROM {schema}.items ORDER BY id").fetchall()
    assert rows == [("i0", 10, None), ("i1", 11, None), ("renamed", 2, None), ("both", 3, "n")]


def test_update_sets_only_the_changed_columns(db: Engine, sql_log: Log) -> None:
    s, (item,) = _loaded(db, 1)
    try:
        item.note = "hello"
        sql_log.clear()
        s.flush()
        ((sql, params),) = sql_log
        assert sql.startswith("UPDATE")
        assert _set_columns(sql) == ["note"]
        assert list(params) == ["hello", item.id]
    finally:
        s.close()


def test_setting_a_value_back_to_the_original_sends_nothing(db: Engine, sql_log: Log) -> None:
    s, items = _loaded(db, 2)
    try:
        items[0].name = "temporary"
        items[0].name = "i0"
        items[1].qty = 50
        items[1].qty = 1
        items[1].note = "x"
        items[1].note = None
        sql_log.clear()
        s.flush()
        assert sql_log == []
        s.commit()
        assert sql_log == []
    finally:
        s.close()


def test_only_the_net_changed_column_of_several_is_updated(db: Engine, sql_log: Log) -> None:
    s, (item,) = _loaded(db, 1)
    try:
        item.name = "other"
        item.qty = 99
        item.name = "i0"  # back again
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["UPDATE"]
        assert _set_columns(sql_log[0][0]) == ["qty"]
    finally:
        s.close()


def test_updates_of_composite_key_rows(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        s.add_all([Pair(a=1, b=1), Pair(a=1, b=2), Pair(a=2, b=1)])
        s.commit()
    with Session(db) as s:
        pairs = s.scalars(select(Pair).order_by(Pair.a, Pair.b)).all()
        for p in pairs:
            p.v = f"{p.a}-{p.b}"
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["UPDATE"]
        s.commit()
    rows = admin_conn.execute(f"SELECT a, b, v FROM {schema}.pairs ORDER BY a, b").fetchall()
    assert rows == [(1, 1, "1-1"), (1, 2, "1-2"), (2, 1, "2-1")]


# --------------------------------------------------------------------------------------------
# DELETE


def test_deletes_of_several_objects_are_one_delete_any(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    s, items = _loaded(db, 5)
    try:
        for item in items[1:4]:
            s.delete(item)
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["DELETE"]
        ((sql, params),) = sql_log
        assert "= ANY" in sql
        assert sorted(_array(params[0])) == sorted(i.id for i in items[1:4])
        s.commit()
    finally:
        s.close()
    rows = admin_conn.execute(f"SELECT name FROM {schema}.items ORDER BY id").fetchall()
    assert rows == [("i0",), ("i4",)]


def test_deletes_of_composite_key_rows_are_one_statement(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        s.add_all([Pair(a=1, b=1), Pair(a=1, b=2), Pair(a=2, b=1)])
        s.commit()
    with Session(db) as s:
        for key in [(1, 2), (2, 1)]:
            s.delete(s.get(Pair, key))
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["DELETE"]
        s.commit()
    assert admin_conn.execute(f"SELECT a, b FROM {schema}.pairs").fetchall() == [(1, 1)]


def test_expired_composite_key_rows_load_in_one_select_before_their_delete(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    # the flush loads expired objects it deletes (they stay readable), one statement per
    # table whatever the number of keys: one array per key column
    with Session(db) as s:
        s.add_all([Pair(a=1, b=1, v="x"), Pair(a=1, b=2, v="y"), Pair(a=2, b=1, v="z")])
        s.commit()
    with Session(db) as s:
        gone = [s.get(Pair, key) for key in [(1, 2), (2, 1)]]
        s.commit()  # expires them
        for p in gone:
            s.delete(p)
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["SELECT", "DELETE"]
        assert "unnest(" in sql_log[0][0]
        assert [p.v for p in gone] == ["y", "z"]
        s.commit()
    assert admin_conn.execute(f"SELECT a, b FROM {schema}.pairs").fetchall() == [(1, 1)]


def test_array_literals_round_trip_through_unnest(admin_conn: Conn) -> None:
    # the core's column arrays (association rows, composite keys) read back as the values
    # they came from; a value it leaves to psycopg gives None (the caller then sends lists)
    rows = [
        ("a,b", 1, None),
        ('q"uote', -2, "NULL"),
        ("back\\slash", 3, "{}"),
        (None, None, " padded "),
        ("", 2**40, "ünïcode"),
    ]
    literals = _core.array_literals(rows, 3)
    assert literals is not None and len(literals) == 3
    back = admin_conn.execute(
        "SELECT * FROM unnest(%s::text[], %s::int8[], %s::text[])", literals
    ).fetchall()
    assert back == rows
    assert _core.array_literals([(object(),)], 1) is None
    with pytest.raises(ValueError):
        _core.array_literals([(1, 2), (3,)], 2)


# --------------------------------------------------------------------------------------------
# no-op flushes


def test_noop_flush_sends_nothing(db: Engine, sql_log: Log) -> None:
    s, items = _loaded(db, 3)
    try:
        _ = [(i.name, i.qty, i.note) for i in items]
        sql_log.clear()
        s.flush()
        s.flush()
        assert sql_log == []
        assert s.flush_plan() == []
    finally:
        s.close()
    with Session(db) as empty:
        sql_log.clear()
        empty.flush()
        empty.commit()
        assert sql_log == []


def test_added_then_expunged_object_is_not_written(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        item = Item(name="gone")
        s.add(item)
        s.expunge(item)
        sql_log.clear()
        s.flush()
        assert sql_log == []


# --------------------------------------------------------------------------------------------
# table order


def test_inserts_go_parent_table_first(
    fk_models: tuple[type[Any], type[Any]],
    engine: Engine,
    sql_log: Log,
    admin_conn: Conn,
    schema: str,
) -> None:
    Parent, Child = fk_models
    with Session(engine) as s:
        # children added before their parents
        s.add_all([Child(id=1, parent_id=10), Child(id=2, parent_id=20)])
        s.add_all([Parent(id=10), Parent(id=20)])
        sql_log.clear()
        s.flush()
        assert [(_verbs([e])[0], _table_of(e[0])) for e in sql_log] == [
            ("INSERT", "parents"),
            ("INSERT", "children"),
        ]
        s.commit()
    assert admin_conn.execute(f"SELECT count(*) FROM {schema}.children").fetchone() == (2,)


def test_deletes_go_child_table_first(
    fk_models: tuple[type[Any], type[Any]],
    engine: Engine,
    sql_log: Log,
    admin_conn: Conn,
    schema: str,
) -> None:
    Parent, Child = fk_models
    with Session(engine) as s:
        s.add_all([Parent(id=10), Parent(id=20)])
        s.flush()
        s.add_all([Child(id=1, parent_id=10), Child(id=2, parent_id=20)])
        s.commit()
    with Session(engine) as s:
        parents = s.scalars(select(Parent)).all()
        children = s.scalars(select(Child)).all()
        for p in parents:  # parents marked first
            s.delete(p)
        for c in children:
            s.delete(c)
        sql_log.clear()
        s.flush()
        assert [(_verbs([e])[0], _table_of(e[0])) for e in sql_log] == [
            ("DELETE", "children"),
            ("DELETE", "parents"),
        ]
        s.commit()
    assert admin_conn.execute(f"SELECT count(*) FROM {schema}.parents").fetchone() == (0,)


def test_mixed_flush_inserts_parents_before_children_and_updates_both(
    fk_models: tuple[type[Any], type[Any]],
    engine: Engine,
    sql_log: Log,
    admin_conn: Conn,
    schema: str,
) -> None:
    Parent, Child = fk_models
    with Session(engine) as s:
        s.add(Parent(id=1, name="one"))
        s.commit()
    with Session(engine) as s:
        one = s.get(Parent, 1)
        assert one is not None
        one.name = "uno"
        s.add(Child(id=5, parent_id=2))
        s.add(Parent(id=2, name="two"))
        sql_log.clear()
        s.flush()
        ops = [(_verbs([e])[0], _table_of(e[0])) for e in sql_log]
        assert sorted(ops) == [("INSERT", "children"), ("INSERT", "parents"), ("UPDATE", "parents")]
        assert ops.index(("INSERT", "parents")) < ops.index(("INSERT", "children"))
        s.commit()
    rows = admin_conn.execute(f"SELECT id, name FROM {schema}.parents ORDER BY id").fetchall()
    assert rows == [(1, "uno"), (2, "two")]


# --------------------------------------------------------------------------------------------
# large batches and unique keys


def test_large_insert_is_one_key_select_and_one_copy(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    n = 2500
    with Session(db) as s:
        items = [Item(name=f"bulk{k}", qty=k) for k in range(n)]
        s.add_all(items)
        sql_log.clear()
        s.flush()
        verbs = _verbs(sql_log)
        # keys from the sequence, the table's column types (first COPY into it on this
        # connection), then one binary COPY
        assert verbs == ["SELECT", "SELECT", "COPY"]
        assert "nextval" in sql_log[0][0]
        assert "pg_attribute" in sql_log[1][0]
        assert sql_log[2][0] == ("COPY items (id, name, qty, note) FROM STDIN (FORMAT BINARY)")
        assert len(sql_log[2][1]) == n  # every row in the one COPY
        ids = [i.id for i in items]
        assert len(set(ids)) == n
        more = [Item(name=f"more{k}", qty=k) for k in range(100)]
        s.add_all(more)
        sql_log.clear()
        s.flush()  # the column types are known now
        assert _verbs(sql_log) == ["SELECT", "COPY"]
        assert sql_log[1][0].endswith("(FORMAT BINARY)")
        s.commit()
    rows = admin_conn.execute(f"SELECT id, qty FROM {schema}.items").fetchall()
    assert sorted(rows) == sorted(
        zip(ids + [i.id for i in more], [*range(n), *range(100)], strict=True)
    )


def test_copy_is_text_when_the_table_types_differ_from_the_mapping(
    engine: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    """Integer mapped onto a BIGINT column: binary COPY would send 4-byte values PostgreSQL
    refuses, so the COPY is in text format, and the rows are stored."""

    class OBase(DeclarativeBase):
        pass

    class Wide(OBase):
        __tablename__ = "wide"
        id: Mapped[int] = mapped_column(primary_key=True)
        n: Mapped[int]
        label: Mapped[str]

    admin_conn.execute(
        f"CREATE TABLE {schema}.wide (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
        "n bigint NOT NULL, label text NOT NULL)"
    )
    admin_conn.commit()
    with Session(engine) as s:
        s.add_all([Wide(n=2**31 - 1 - k, label=f"w{k}") for k in range(100)])
        sql_log.clear()
        s.flush()
        copies = [q for q, _ in sql_log if q.startswith("COPY")]
        assert copies == ["COPY wide (id, n, label) FROM STDIN"]
        s.commit()
    rows = admin_conn.execute(f"SELECT n, label FROM {schema}.wide ORDER BY n").fetchall()
    assert rows == sorted((2**31 - 1 - k, f"w{k}") for k in range(100))


def test_copy_is_text_for_a_column_type_without_a_binary_encoder(
    engine: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    class ABase(DeclarativeBase):
        pass

    class Tagged(ABase):
        __tablename__ = "tagged"
        id: Mapped[int] = mapped_column(primary_key=True)
        tags: Mapped[list[int]] = mapped_column(ARRAY(Integer))

    ABase.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Tagged(tags=[k, k + 1]) for k in range(100)])
        sql_log.clear()
        s.flush()
        copies = [q for q, _ in sql_log if q.startswith("COPY")]
        assert copies == ["COPY tagged (id, tags) FROM STDIN"]
        assert not any("pg_attribute" in q for q, _ in sql_log)  # no lookup needed
        s.commit()
    rows = admin_conn.execute(f"SELECT tags FROM {schema}.tagged ORDER BY id").fetchall()
    assert rows == [([k, k + 1],) for k in range(100)]


def test_large_update_and_delete_are_few_statements(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    s, items = _loaded(db, 2500)
    try:
        for item in items[:2000]:
            item.qty = -item.qty
        for item in items[2000:]:
            s.delete(item)
        sql_log.clear()
        s.flush()
        verbs = _verbs(sql_log)
        assert set(verbs) == {"UPDATE", "DELETE"}
        assert len(verbs) <= 6
        s.commit()
    finally:
        s.close()
    assert admin_conn.execute(f"SELECT count(*), sum(qty) FROM {schema}.items").fetchone() == (
        2000,
        -sum(range(2000)),
    )


def test_delete_that_frees_a_unique_key_runs_before_the_insert_taking_it(
    engine: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    class UBase(DeclarativeBase):
        pass

    class Account(UBase):
        __tablename__ = "accounts"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(unique=True)

    UBase.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Account(email="a@x"))
        s.commit()
    with Session(engine) as s:
        old = s.scalars(select(Account)).one()
        s.add(Account(email="a@x"))  # added before the delete is even marked
        s.delete(old)
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["DELETE", "INSERT"]
        s.commit()
    assert admin_conn.execute(f"SELECT email FROM {schema}.accounts").fetchall() == [("a@x",)]


@pytest.mark.parametrize(
    ("setup", "expected", "statement"),
    [
        ("insert 100", "COPY", "COPY"),
        ("insert 3", "multi-row INSERT", "INSERT"),
        ("insert 1", "INSERT ... RETURNING", "INSERT"),
        ("update 5", "UPDATE ... FROM unnest", "UPDATE"),
        ("update 1", "UPDATE", "UPDATE"),
        ("delete 5", "DELETE = ANY", "DELETE"),
        ("delete 1", "DELETE", "DELETE"),
    ],
)
def test_flush_plan_names_the_method_the_flush_uses(
    db: Engine, sql_log: Log, setup: str, expected: str, statement: str
) -> None:
    op, count = setup.split()
    n = int(count)
    s, items = _loaded(db, 0 if op == "insert" else n)
    try:
        if op == "insert":
            s.add_all([Item(name=f"n{k}") for k in range(n)])
        for item in items:
            if op == "update":
                item.qty += 1
            else:
                s.delete(item)
        (step,) = s.flush_plan()
        assert (step["operation"], step["rows"], step["method"]) == (op, n, expected)
        sql_log.clear()
        s.flush()
        sql = [q for q, _ in sql_log if not q.startswith("SELECT")]
        assert len(sql) == 1 and sql[0].split()[0] == statement, sql
        if op == "insert":  # (batched UPDATE and DELETE return their keys, for errors)
            assert ("RETURNING" in sql[0]) == expected.endswith("RETURNING")
        assert ("unnest" in sql[0]) == ("unnest" in expected)
        assert ("= ANY" in sql[0]) == ("= ANY" in expected)
        s.rollback()
    finally:
        s.close()
