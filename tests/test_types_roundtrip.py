"""Every column type survives a flush and a fresh load in a new session, value and type exact."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from retort import (
    BigInteger,
    DateTime,
    DeclarativeBase,
    Mapped,
    Numeric,
    Session,
    SmallInteger,
    String,
    Text,
    exc,
    mapped_column,
    select,
)
from retort.engine import Engine


class Mood(enum.Enum):
    HAPPY = "h"
    SAD = "s"
    MEH = 3  # a non-string value: stored by name


class Base(DeclarativeBase):
    pass


class Sample(Base):
    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    i: Mapped[int | None]
    big: Mapped[int | None] = mapped_column(BigInteger)
    small: Mapped[int | None] = mapped_column(SmallInteger)
    s: Mapped[str | None]
    s10: Mapped[str | None] = mapped_column(String(10))
    txt: Mapped[str | None] = mapped_column(Text)
    f: Mapped[float | None]
    b: Mapped[bool | None]
    money: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    dec: Mapped[Decimal | None]
    aware: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    naive: Mapped[dt.datetime | None]
    day: Mapped[dt.date | None]
    tm: Mapped[dt.time | None]
    td: Mapped[dt.timedelta | None]
    raw: Mapped[bytes | None]
    u: Mapped[uuid.UUID | None]
    doc: Mapped[dict[str, Any] | None]
    items: Mapped[list[Any] | None]
    mood: Mapped[Mood | None]


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


_TZ = dt.timezone(dt.timedelta(hours=5, minutes=30))

CASES: dict[str, list[Any]] = {
    "i": [0, 1, -1, 2**31 - 1, -(2**31)],
    "big": [2**63 - 1, -(2**63), 0, 2**40 + 7],
    "small": [32767, -32768, 0],
    "s": ["", "plain", "ünïcødé ✓ 🎉", "quote ' and \" and \\ and %s and :name", "x" * 5000],
    "s10": ["abcdefghij", "é" * 10, ""],
    "txt": ["line1\nline2\ttab", "y" * 100_000, ""],
    "f": [0.1, 1 / 3, -2.5e-300, 1.7976931348623157e308, 0.0, float("inf"), float("-inf")],
    "b": [True, False],
    "money": [Decimal("12345678.90"), Decimal("-0.01"), Decimal("0.00"), Decimal("99999999.99")],
    "dec": [
        Decimal("1.000000000000000000000000000001"),
        Decimal("-123456789012345678901234567890.5"),
        Decimal("0"),
        Decimal("1E-20"),
    ],
    "aware": [
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(1999, 12, 31, 12, 0, tzinfo=_TZ),
        dt.datetime(1, 1, 1, 0, 0, tzinfo=dt.UTC),
    ],
    "naive": [
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        dt.datetime(1970, 1, 1),
        dt.datetime(9999, 12, 31, 23, 59, 59),
    ],
    "day": [dt.date(2024, 2, 29), dt.date(1, 1, 1), dt.date(9999, 12, 31)],
    "tm": [dt.time(0, 0), dt.time(23, 59, 59, 999999), dt.time(12, 30, 1, 5)],
    "td": [
        dt.timedelta(0),
        dt.timedelta(days=3, seconds=5, microseconds=7),
        dt.timedelta(days=-1, seconds=10),
        dt.timedelta(days=400, hours=25),
        dt.timedelta(microseconds=-1),
    ],
    "raw": [b"", bytes(range(256)), b"\x00" * 1000],
    "u": [uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)],
    "doc": [
        {},
        {"a": [1, 2, {"b": None}], "c": "ü", "d": True, "e": 1.5},
        {"nested": {"deep": {"deeper": [[], {}]}}, "n": -7},
    ],
    "items": [[], [1, "x", None, {"k": []}], ["only"], [[1, [2, [3]]]]],
    "mood": [Mood.HAPPY, Mood.SAD, Mood.MEH],
}


def _same(expected: Any, got: Any) -> bool:
    if type(expected) is not type(got):
        return False
    if isinstance(expected, dt.datetime) and expected.tzinfo is not None:
        # same instant; PostgreSQL hands back the session's time zone
        return got.tzinfo is not None and got == expected
    if isinstance(expected, Decimal):
        return got == expected and got.as_tuple().exponent == expected.as_tuple().exponent
    return bool(got == expected)


@pytest.mark.parametrize("attr", list(CASES))
def test_value_round_trips_through_flush_and_fresh_load(db: Engine, attr: str) -> None:
    values = CASES[attr]
    with Session(db) as s:
        objs = [Sample(**{attr: v}) for v in values]
        s.add_all(objs)
        s.commit()
        ids = [o.id for o in objs]
    with Session(db) as s:
        loaded = [s.get(Sample, i) for i in ids]
        got = [getattr(o, attr) for o in loaded if o is not None]
    assert len(got) == len(values)
    for expected, actual in zip(values, got, strict=True):
        assert _same(expected, actual), f"{attr}: wrote {expected!r}, read back {actual!r}"


@pytest.mark.parametrize("attr", list(CASES))
def test_value_round_trips_through_a_query(db: Engine, attr: str) -> None:
    values = CASES[attr]
    with Session(db) as s:
        s.add_all([Sample(**{attr: v}) for v in values])
        s.commit()
    with Session(db) as s:
        rows = s.execute(select(Sample.id, getattr(Sample, attr)).order_by(Sample.id)).all()
    assert len(rows) == len(values)
    for expected, row in zip(values, rows, strict=True):
        assert _same(expected, row[1]), f"{attr}: wrote {expected!r}, selected {row[1]!r}"


@pytest.mark.parametrize("attr", list(CASES))
def test_value_round_trips_through_an_update(db: Engine, attr: str) -> None:
    values = CASES[attr]
    with Session(db) as s:
        objs = [Sample() for _ in values]
        s.add_all(objs)
        s.commit()
        ids = [o.id for o in objs]
    # several rows with the same changed column: the set-based UPDATE path with casts
    with Session(db) as s:
        for i, v in zip(ids, values, strict=True):
            obj = s.get(Sample, i)
            assert obj is not None
            setattr(obj, attr, v)
        s.commit()
    # and one row on its own: the single-row UPDATE path
    with Session(db) as s:
        obj = s.get(Sample, ids[0])
        assert obj is not None
        setattr(obj, attr, values[-1])
        s.commit()
    expected = [values[-1], *values[1:]]
    with Session(db) as s:
        got = [getattr(s.get(Sample, i), attr) for i in ids]
    for e, g in zip(expected, got, strict=True):
        assert _same(e, g), f"{attr}: updated to {e!r}, read back {g!r}"


@pytest.mark.parametrize("attr", list(CASES))
def test_none_round_trips_as_sql_null(
    db: Engine, attr: str, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with Session(db) as s:
        obj = Sample(**{attr: CASES[attr][0]})
        s.add(obj)
        s.commit()
        oid = obj.id
        obj = s.get(Sample, oid)
        assert obj is not None
        setattr(obj, attr, None)
        s.commit()
    column = Sample.__table__.c[attr].name
    row = admin_conn.execute(
        f"SELECT {column} IS NULL FROM {schema}.samples WHERE id = %s", (oid,)
    ).fetchone()
    assert row == (True,)  # SQL NULL, not a JSON 'null'
    with Session(db) as s:
        fresh = s.get(Sample, oid)
        assert fresh is not None
        assert getattr(fresh, attr) is None


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("mood", Mood.SAD),
        ("u", uuid.UUID("12345678-1234-5678-1234-567812345678")),
        ("money", Decimal("10.50")),
        ("naive", dt.datetime(2020, 5, 5, 5, 5, 5)),
        ("td", dt.timedelta(hours=36)),
        ("raw", b"\x00\xff"),
        ("b", False),
    ],
)
def test_values_can_be_compared_in_where(db: Engine, attr: str, value: Any) -> None:
    with Session(db) as s:
        s.add_all([Sample(**{attr: value}), Sample(**{attr: None}), Sample(**{attr: value})])
        s.add(Sample(**{attr: next(v for v in CASES[attr] if v != value)}))
        s.commit()
    with Session(db) as s:
        found = s.scalars(select(Sample).where(getattr(Sample, attr) == value)).all()
        assert len(found) == 2
        assert all(getattr(o, attr) == value for o in found)


def test_enum_is_stored_by_member_name(
    db: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with Session(db) as s:
        s.add_all([Sample(mood=Mood.HAPPY), Sample(mood=Mood.MEH)])
        s.commit()
    rows = admin_conn.execute(f"SELECT mood FROM {schema}.samples ORDER BY id").fetchall()
    assert rows == [("HAPPY",), ("MEH",)]


def test_json_is_stored_as_jsonb_values(
    db: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with Session(db) as s:
        s.add(Sample(doc={"k": [1, 2]}, items=["a", {"b": 1}]))
        s.commit()
    row = admin_conn.execute(
        f"SELECT doc -> 'k' ->> 1, jsonb_typeof(items), items -> 1 ->> 'b' FROM {schema}.samples"
    ).fetchone()
    assert row == ("2", "array", "1")


def test_all_columns_of_one_row_round_trip_together(db: Engine) -> None:
    values = {attr: vals[-1] for attr, vals in CASES.items()}
    with Session(db) as s:
        obj = Sample(**values)
        s.add(obj)
        s.commit()
        oid = obj.id
    with Session(db) as s:
        fresh = s.scalars(select(Sample).where(Sample.id == oid)).one()
        for attr, expected in values.items():
            got = getattr(fresh, attr)
            assert _same(expected, got), f"{attr}: wrote {expected!r}, read back {got!r}"
        # a freshly loaded object is clean: round-tripped values compare equal to themselves
        assert not s.is_modified(fresh)
        assert fresh not in s.dirty


def _row(k: int) -> dict[str, Any]:
    return {attr: vals[k % len(vals)] for attr, vals in CASES.items()}


def test_every_type_round_trips_through_copy_and_set_based_update(
    db: Engine, sql_log: list[tuple[str, Any]]
) -> None:
    # Enough rows that the insert goes through COPY and the update through unnest() arrays.
    n = 80
    with Session(db) as s:
        objs = [Sample(**_row(k)) for k in range(n)]
        s.add_all(objs)
        sql_log.clear()
        s.flush()
        assert any(sql.startswith("COPY") for sql, _ in sql_log), sql_log
        s.commit()
        ids = [o.id for o in objs]
    with Session(db) as s:
        loaded = {o.id: o for o in s.scalars(select(Sample))}
        for k, oid in enumerate(ids):
            for attr, expected in _row(k).items():
                got = getattr(loaded[oid], attr)
                assert _same(expected, got), f"row {k} {attr}: {expected!r} != {got!r}"
        for k, oid in enumerate(ids):
            for attr, value in _row(k + 1).items():
                setattr(loaded[oid], attr, value)
        sql_log.clear()
        s.commit()
        updates = [sql for sql, _ in sql_log if sql.startswith("UPDATE")]
        assert updates and all("unnest(" in sql for sql in updates), updates
    with Session(db) as s:
        loaded = {o.id: o for o in s.scalars(select(Sample))}
        for k, oid in enumerate(ids):
            for attr, expected in _row(k + 1).items():
                got = getattr(loaded[oid], attr)
                assert _same(expected, got), f"row {k} {attr}: {expected!r} != {got!r}"


# Values whose text is hardest to get right when the core encodes COPY data itself.
_COPY_EXTRA: dict[str, list[Any]] = {
    "s": ["\\N", "a\tb\nc\rd\\e", "\\.", "tab\t", " lead and trail "],
    "f": [float("nan"), 5e-324, 1e300, -0.0, 123456789.125],
    "big": [2**53 + 1, -(2**53) - 1],
}
# Values the core leaves to psycopg's adapters (the whole batch is then written by psycopg).
_LEFT_TO_PSYCOPG = {"td", "doc", "items"}


def _same_or_nan(expected: Any, got: Any) -> bool:
    if isinstance(expected, float) and expected != expected:
        return isinstance(got, float) and got != got
    if isinstance(expected, float) and expected == 0.0:
        return got == 0.0 and str(got) == str(expected)  # keeps the sign of -0.0
    return _same(expected, got)


@pytest.mark.parametrize("attr", list(CASES))
def test_copy_data_encoded_by_the_core_round_trips(db: Engine, attr: str) -> None:
    values = CASES[attr] + _COPY_EXTRA.get(attr, [])
    n = 64 + len(values)  # enough for COPY
    expected = [values[k % len(values)] for k in range(n)]
    with Session(db) as s:
        objs = [Sample(**{attr: v}) for v in expected]
        s.add_all(objs)
        plan = s._core.plan()
        encoded = [b.copy_text() for b in plan.batches if b.op == "insert"]
        assert len(encoded) == 1
        assert (encoded[0] is None) == (attr in _LEFT_TO_PSYCOPG)
        del plan
        s.commit()
        ids = [o.id for o in objs]
    with Session(db) as s:
        loaded = {o.id: o for o in s.scalars(select(Sample))}
        for k, oid in enumerate(ids):
            got = getattr(loaded[oid], attr)
            assert _same_or_nan(expected[k], got), f"row {k}: {expected[k]!r} != {got!r}"


def test_a_nul_in_text_is_left_to_psycopg_and_nothing_is_written(db: Engine) -> None:
    with Session(db) as s:
        s.add_all([Sample(s="ok") for _ in range(70)] + [Sample(s="nul\x00byte")])
        with pytest.raises(exc.DataError, match=r"NUL|0x00"):
            s.flush()
        s.rollback()
        assert s.scalars(select(Sample)).all() == []


@pytest.mark.parametrize("attr", list(CASES))
def test_array_literals_encoded_by_the_core_round_trip_through_update(
    db: Engine, attr: str
) -> None:
    values = CASES[attr] + _COPY_EXTRA.get(attr, []) + [None]
    n = len(values) + 3
    with Session(db) as s:
        objs = [Sample() for _ in range(n)]
        s.add_all(objs)
        s.commit()
        ids = [o.id for o in objs]
    expected = {oid: values[k % len(values)] for k, oid in enumerate(ids)}
    with Session(db) as s:
        for o in s.scalars(select(Sample)):
            setattr(o, attr, expected[o.id])
        plan = s._core.plan()
        (batch,) = [b for b in plan.batches if b.op == "update"]
        literals = batch.array_literals()
        assert (literals is None) == (attr in _LEFT_TO_PSYCOPG)
        del plan, batch
        s.commit()
    with Session(db) as s:
        for o in s.scalars(select(Sample)):
            want = expected[o.id]
            got = getattr(o, attr)
            assert (want is None and got is None) or _same_or_nan(want, got), (o.id, want, got)
