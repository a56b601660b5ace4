"""Column types: DDL spelling, cast names, processors, annotation mapping, and round trips."""

from __future__ import annotations

import datetime as dt
import enum
import typing
import uuid
from decimal import Decimal
from typing import Any, Literal, Optional

import pytest
from psycopg.types.json import Jsonb

from retort import exc
from retort.sql import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    Time,
    Uuid,
    bindparam,
    insert,
    select,
    text,
    type_for_python,
    update,
)
from retort.sql.types import TypeEngine


class Status(enum.Enum):
    ACTIVE = "a"
    BANNED = "b"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@pytest.mark.parametrize(
    ("type_", "ddl", "cast"),
    [
        (Integer(), "INTEGER", "int4"),
        (BigInteger(), "BIGINT", "int8"),
        (SmallInteger(), "SMALLINT", "int2"),
        (String(), "VARCHAR", "varchar"),
        (String(30), "VARCHAR(30)", "varchar"),
        (Text(), "TEXT", "text"),
        (Boolean(), "BOOLEAN", "bool"),
        (Float(), "DOUBLE PRECISION", "float8"),
        (Numeric(), "NUMERIC", "numeric"),
        (Numeric(12, 2), "NUMERIC(12, 2)", "numeric"),
        (Date(), "DATE", "date"),
        (DateTime(), "TIMESTAMP WITHOUT TIME ZONE", "timestamp"),
        (DateTime(timezone=True), "TIMESTAMP WITH TIME ZONE", "timestamptz"),
        (Time(), "TIME WITHOUT TIME ZONE", "time"),
        (Time(timezone=True), "TIME WITH TIME ZONE", "timetz"),
        (Interval(), "INTERVAL", "interval"),
        (LargeBinary(), "BYTEA", "bytea"),
        (Uuid(), "UUID", "uuid"),
        (JSON(), "JSONB", "jsonb"),
        (Enum(Status), "VARCHAR(6)", "varchar"),
        (Enum("x", "yyy"), "VARCHAR(3)", "varchar"),
        (Enum(Status, length=20), "VARCHAR(20)", "varchar"),
        (ARRAY(Integer), "INTEGER[]", "int4[]"),
        (ARRAY(String(5)), "VARCHAR(5)[]", "varchar[]"),
    ],
)
def test_ddl_and_cast_names(type_: TypeEngine, ddl: str, cast: str) -> None:
    assert type_.ddl() == ddl
    assert type_.sql_cast() == cast


def test_processors_are_none_where_psycopg_is_exact() -> None:
    for t in (Integer(), String(5), Text(), Boolean(), Float(), Numeric(), Date(), DateTime()):
        assert t.bind_processor() is None
        assert t.result_processor() is None
    assert Uuid().result_processor() is None


def test_mutable_only_for_json() -> None:
    assert JSON().mutable and JSON.mutable
    assert not Integer().mutable and not Enum(Status).mutable


def test_type_equality() -> None:
    assert String(5) == String(5)
    assert String(5) != String(6)
    assert Integer() != BigInteger()
    assert Enum(Status) == Enum(Status)
    assert Enum(Status) != Enum(Status, values_callable=lambda c: [m.value for m in c])
    assert len({String(5), String(5), Text()}) == 2


def test_json_bind() -> None:
    bind = JSON().bind_processor()
    assert bind is not None
    assert bind(None) is None
    wrapped = bind({"a": [1, 2]})
    assert isinstance(wrapped, Jsonb) and wrapped.obj == {"a": [1, 2]}
    assert bind([1]).obj == [1]
    assert bind(JSON.NULL).obj is None  # JSON null, not SQL NULL


def test_enum_bind_and_result() -> None:
    t = Enum(Status)
    bind, result = t.bind_processor(), t.result_processor()
    assert bind is not None and result is not None
    assert bind(Status.ACTIVE) == "ACTIVE"
    assert bind("BANNED") == "BANNED"
    assert bind(None) is None
    with pytest.raises(exc.ArgumentError, match=r"'a' is not a valid value for Enum 'status'"):
        bind("a")  # a value, not a name
    with pytest.raises(exc.ArgumentError, match="not a valid value"):
        bind(Level.LOW)
    assert result("BANNED") is Status.BANNED
    assert result(None) is None
    with pytest.raises(exc.ArgumentError, match="database holds 'GONE'"):
        result("GONE")
    assert t.python_type is Status


def test_string_enum() -> None:
    t = Enum("red", "green")
    assert t.bind_processor()("red") == "red"  # type: ignore[misc]
    assert t.result_processor()("green") == "green"  # type: ignore[misc]
    with pytest.raises(exc.ArgumentError, match="one of"):
        t.bind_processor()("blue")  # type: ignore[misc]
    assert t.python_type is str


def test_bad_type_arguments() -> None:
    with pytest.raises(exc.ArgumentError):
        String(0)
    with pytest.raises(exc.ArgumentError):
        Enum()
    with pytest.raises(exc.ArgumentError):
        Enum(1, 2)
    with pytest.raises(exc.ArgumentError, match="shorter"):
        Enum(Status, length=2)
    with pytest.raises(exc.ArgumentError, match="column type"):
        Column("x", int)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, Integer()),
        (str, String()),
        (float, Float()),
        (bool, Boolean()),
        (Decimal, Numeric()),
        (dt.datetime, DateTime()),
        (dt.date, Date()),
        (dt.time, Time()),
        (dt.timedelta, Interval()),
        (bytes, LargeBinary()),
        (uuid.UUID, Uuid()),
        (dict, JSON()),
        (list, JSON()),
        (dict[str, Any], JSON()),
        (list[int], JSON()),
        (typing.Dict[str, int], JSON()),  # noqa: UP006
        (Status, Enum(Status)),
        (Level, Enum(Level)),
        (Optional[int], Integer()),  # noqa: UP045
        (int | None, Integer()),
        (Literal["a", "b"], Enum("a", "b")),
    ],
)
def test_type_for_python(annotation: Any, expected: TypeEngine) -> None:
    assert type_for_python(annotation) == expected


@pytest.mark.parametrize("annotation", [object, set, complex, tuple[int, int], int | str])
def test_type_for_python_unknown(annotation: Any) -> None:
    with pytest.raises(exc.ArgumentError, match="supported types are int, str"):
        type_for_python(annotation)


# -- round trips through PostgreSQL -----------------------------------------------------------

UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))

VALUES: dict[str, tuple[TypeEngine, Any]] = {
    "i": (Integer(), 2_000_000_000),
    "bi": (BigInteger(), 9_000_000_000_000),
    "si": (SmallInteger(), -300),
    "s": (String(20), "héllo 'quoted' %s"),
    "t": (Text(), "x" * 5000),
    "b": (Boolean(), True),
    "f": (Float(), 1.5e300),
    "n": (Numeric(20, 6), Decimal("12345678901234.123456")),
    "nf": (Numeric(10, 2, asdecimal=False), 3.25),
    "d": (Date(), dt.date(1999, 12, 31)),
    "dtn": (DateTime(), dt.datetime(2024, 2, 29, 23, 59, 59, 123456)),
    "dtz": (DateTime(timezone=True), dt.datetime(2024, 1, 1, 12, 0, tzinfo=PLUS2)),
    "tm": (Time(), dt.time(13, 14, 15, 16)),
    "iv": (Interval(), dt.timedelta(days=3, seconds=7, microseconds=9)),
    "lb": (LargeBinary(), b"\x00\x01\xffbytes"),
    "u": (Uuid(), uuid.UUID("12345678-1234-5678-1234-567812345678")),
    "us": (Uuid(as_uuid=False), "87654321-4321-8765-4321-876543218765"),
    "jd": (JSON(), {"a": [1, 2, {"b": None}], "c": "ü"}),
    "jl": (JSON(), [1, "two", 3.5, True]),
    "e": (Enum(Status), Status.BANNED),
    "es": (Enum("red", "green"), "green"),
    "ev": (Enum(Status, values_callable=lambda cls: [m.value for m in cls]), Status.BANNED),
    "ai": (ARRAY(Integer), [1, 2, 3]),
    "ae": (ARRAY(Enum(Status)), [Status.ACTIVE, Status.BANNED]),
}


@pytest.fixture
def everything(engine: Any) -> Table:
    m = MetaData()
    t = Table(
        "everything",
        m,
        Column("id", Integer, primary_key=True),
        *(Column(name, type_) for name, (type_, _v) in VALUES.items()),
    )
    m.create_all(engine)
    return t


def test_round_trip_every_type(engine: Any, everything: Table) -> None:
    row_in = {name: value for name, (_t, value) in VALUES.items()}
    with engine.begin() as conn:
        conn.execute(insert(everything).values(**row_in))
        conn.execute(insert(everything).values(id=100))  # all NULL
        row = conn.execute(select(everything).where(everything.c.id == 1)).one()
        nulls = conn.execute(select(everything).where(everything.c.id == 100)).one()
    got = row._mapping
    for name, (_t, value) in VALUES.items():
        assert got[name] == value, name
        assert type(got[name]) is type(value), name
    assert got["dtz"].utcoffset() is not None
    assert all(nulls._mapping[name] is None for name in VALUES)


def test_where_on_enum_and_json_columns(engine: Any, everything: Table) -> None:
    t = everything
    with engine.begin() as conn:
        conn.execute(
            insert(t),
            [
                {"e": Status.ACTIVE, "jd": {"k": 1}},
                {"e": "BANNED", "jd": {"k": 2}},
                {"e": None, "jd": None},
            ],
        )
        ids = conn.execute(select(t.c.id).where(t.c.e == Status.BANNED)).scalars().all()
        assert ids == [2]
        ids = conn.execute(select(t.c.id).where(t.c.jd == {"k": 1})).scalars().all()
        assert ids == [1]
        ids = conn.execute(select(t.c.id).where(t.c.e.in_([Status.ACTIVE, Status.BANNED])))
        assert sorted(ids.scalars().all()) == [1, 2]
        ids = conn.execute(select(t.c.id).where(t.c.jd.is_(None))).scalars().all()
        assert ids == [3]
        conn.execute(
            update(t).where(t.c.id == bindparam("pk")).values(e=bindparam("new")),
            [{"pk": 1, "new": Status.BANNED}, {"pk": 3, "new": "ACTIVE"}],
        )
        rows = conn.execute(select(t.c.id, t.c.e).order_by(t.c.id)).all()
    assert [tuple(r) for r in rows] == [(1, Status.BANNED), (2, Status.BANNED), (3, Status.ACTIVE)]


def test_bad_enum_value_changes_nothing(engine: Any, everything: Table) -> None:
    with pytest.raises(exc.ArgumentError, match="'PURPLE'"), engine.begin() as conn:
        conn.execute(insert(everything).values(e="PURPLE"))
    with engine.connect() as conn:
        assert conn.execute(select(everything.c.id)).all() == []


def test_casts_in_set_based_statements(engine: Any, everything: Table) -> None:
    """The cast names work for unnest-style statements the flush builds."""
    t = everything
    cols = ["n", "dtz", "jd", "u", "e"]
    rows = [
        (
            Decimal("1.5"),
            dt.datetime(2020, 1, 1, tzinfo=UTC),
            {"x": 1},
            uuid.uuid4(),
            Status.ACTIVE,
        ),
        (Decimal("2.5"), dt.datetime(2021, 1, 1, tzinfo=UTC), [1], uuid.uuid4(), Status.BANNED),
    ]
    arrays = []
    for i, name in enumerate(cols):
        type_ = t.c[name].type
        proc = type_.bind_processor()
        arrays.append([proc(r[i]) if proc else r[i] for r in rows])
    select_list = ", ".join(f"%s::{t.c[name].type.sql_cast()}[]" for name in cols)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO everything ({', '.join(cols)}) SELECT * FROM unnest({select_list})",
            arrays,
        )
        got = conn.execute(select(*(t.c[c] for c in cols)).order_by(t.c.id)).all()
    assert [tuple(r) for r in got] == rows


def test_text_with_typed_columns(engine: Any) -> None:
    stmt = text("SELECT 'BANNED' AS status, :n::int + 1 AS n").columns(
        status=Enum(Status), n=Integer
    )
    with engine.connect() as conn:
        row = conn.execute(stmt, {"n": 41}).one()
    assert row.status is Status.BANNED and row.n == 42


def test_enum_values_callable_and_check_constraint(engine: Any) -> None:
    m = MetaData()
    t = Table(
        "st",
        m,
        Column("id", Integer, primary_key=True),
        Column(
            "s",
            Enum(Status, values_callable=lambda c: [x.value for x in c], create_constraint=True),
        ),
    )
    from retort.sql.ddl import create_table_sql

    assert "s VARCHAR(1) CHECK (s IN ('a', 'b'))" in create_table_sql(t)
    m.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(t).values(s=Status.BANNED))
        assert conn.exec_driver_sql("SELECT s FROM st").scalar() == "b"
        assert conn.execute(select(t.c.s)).scalar() is Status.BANNED
    with pytest.raises(exc.IntegrityError, match="check"), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO st (s) VALUES ('z')")


def test_json_paths_and_any_against_the_database(engine: Any, everything: Table) -> None:
    t = everything
    with engine.begin() as conn:
        conn.execute(
            insert(t),
            [
                {"jd": {"a": {"b": "x"}, "n": 5}, "e": Status.ACTIVE, "ai": [1, 2]},
                {"jd": {"a": {"b": "y"}, "n": 1}, "e": Status.BANNED, "ai": [3]},
            ],
        )

        def ids(*crit: Any, **params: Any) -> list[int]:
            stmt = select(t.c.id).where(*crit).order_by(t.c.id)
            return list(conn.execute(stmt, params or None).scalars().all())

        assert ids(t.c.jd["a"]["b"].astext == "y") == [2]
        assert ids(t.c.jd["n"].as_integer() > 2) == [1]
        assert ids(t.c.jd["n"] == 1) == [2]
        assert ids(t.c.jd.contains({"a": {"b": "x"}})) == [1]
        assert ids(t.c.ai.contains([3])) == [2]
        assert ids(t.c.e.in_(bindparam("es")), es=[Status.BANNED, "ACTIVE"]) == [1, 2]
        assert ids(t.c.id.in_(bindparam("ids")), ids=[]) == []
        assert ids(t.c.id.not_in(bindparam("ids")), ids=[]) == [1, 2]
        assert ids(t.c.id.in_([])) == []
        assert ids(t.c.id.not_in([2])) == [1]
