"""Binary COPY encoded by the core (`Batch.copy_binary`, rust/py/copybin.rs).

The oracle is the multi-row INSERT path: the same rows are written once through a COPY-sized
batch and once in INSERT-sized chunks, and PostgreSQL's text output of every column is compared
row by row in a separate query. Values the binary encoder cannot reproduce exactly make the
batch go through text COPY, with the errors of before.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from retort import (
    JSON,
    BigInteger,
    DateTime,
    DeclarativeBase,
    Float,
    Mapped,
    Numeric,
    Session,
    SmallInteger,
    String,
    Text,
    Time,
    Uuid,
    exc,
    mapped_column,
    select,
)
from retort.engine import Engine
from retort.flush import COPY_MIN_ROWS

Log = list[tuple[str, Any]]
Conn = psycopg.Connection[Any]


class Mood(enum.Enum):
    HAPPY = "h"
    SAD = "s"
    MEH = 3


class Base(DeclarativeBase):
    pass


class Rec(Base):
    __tablename__ = "recs"
    id: Mapped[int] = mapped_column(primary_key=True)
    how: Mapped[str] = mapped_column(String(8))  # "copy" or "insert"
    seq: Mapped[int]
    i: Mapped[int | None]
    big: Mapped[int | None] = mapped_column(BigInteger)
    small: Mapped[int | None] = mapped_column(SmallInteger)
    s: Mapped[str | None]
    s10: Mapped[str | None] = mapped_column(String(10))
    txt: Mapped[str | None] = mapped_column(Text)
    f: Mapped[float | None]
    f4: Mapped[float | None] = mapped_column(Float(precision=10))  # real
    b: Mapped[bool | None]
    money: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    dec: Mapped[Decimal | None]
    aware: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    naive: Mapped[dt.datetime | None]
    day: Mapped[dt.date | None]
    tm: Mapped[dt.time | None]
    tmz: Mapped[dt.time | None] = mapped_column(Time(timezone=True))
    td: Mapped[dt.timedelta | None]
    raw: Mapped[bytes | None]
    u: Mapped[uuid.UUID | None]
    us: Mapped[str | None] = mapped_column(Uuid(as_uuid=False))
    doc: Mapped[dict[str, Any] | None]
    items: Mapped[list[Any] | None]
    mood: Mapped[Mood | None]


COLUMNS = [c.name for c in Rec.__table__.columns if c.name not in ("id", "how", "seq")]


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


UTC = dt.UTC
NY = zoneinfo.ZoneInfo("America/New_York")
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")


def _tz(**kw: int) -> dt.timezone:
    return dt.timezone(dt.timedelta(**kw))


# Per column: values the binary encoder must write exactly as the INSERT path stores them.
EDGE: dict[str, list[Any]] = {
    "i": [0, 1, -1, 2**31 - 1, -(2**31)],
    "big": [2**63 - 1, -(2**63), 0, 2**53 + 1, -(2**53) - 1],
    "small": [32767, -32768, 0, 1],
    "s": [
        "",
        "plain",
        "ünïcødé ✓ 🎉 \u2028",
        "\\N",
        "a\tb\nc\rd\\e",
        "\\.",
        "quote ' and \" and %s and :name",
        " lead and trail ",
        "x" * 5000,
    ],
    "s10": ["abcdefghij", "é" * 10, "", "🎉" * 10],
    "txt": ["y" * 100_000, "line1\nline2", ""],
    "f": [
        0.1,
        1 / 3,
        -2.5e-300,
        1.7976931348623157e308,
        0.0,
        -0.0,
        float("inf"),
        float("-inf"),
        float("nan"),
        5e-324,
        123456789.125,
        7,  # ints into a float column
        2**53 + 1,
        -(2**63),
    ],
    "f4": [
        0.1,
        1 / 3,
        3.4028234663852886e38,  # largest real
        1.1754943508222875e-38,  # smallest normal real
        16777217.0,  # rounds to even in real
        -0.0,
        0.0,
        2.5,
        1e-3,
        float("inf"),
        float("-inf"),
        float("nan"),
        3,
        16777217,
    ],
    "b": [True, False],
    "money": [
        Decimal("12345678.90"),
        Decimal("-0.01"),
        Decimal("0.00"),
        Decimal("99999999.99"),
        Decimal("5"),
        Decimal("1E+2"),
        Decimal("0.1"),
        7,
    ],
    "dec": [
        Decimal("1.000000000000000000000000000001"),
        Decimal("-123456789012345678901234567890.5"),
        Decimal("0"),
        Decimal("0.000"),
        Decimal("-0"),
        Decimal("-0.00"),
        Decimal("0E-7"),
        Decimal("1E-20"),
        Decimal("1E+5"),
        Decimal("-1.5E+3"),
        Decimal("1.5E-7"),
        Decimal("123.4500"),
        Decimal("9999.9999"),
        Decimal("10000"),
        Decimal("10000.0001"),
        Decimal("0.00001"),
        Decimal("1E+30"),
        Decimal("NaN"),
        Decimal("3.14159265358979323846264338327950288419716939937510582097494459"),
        Decimal("-" + "9" * 200 + "." + "9" * 200),
        2**70,
        -(2**63),
        0,
    ],
    "aware": [
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(2000, 1, 1, tzinfo=UTC),
        dt.datetime(1999, 12, 31, 12, 0, tzinfo=_tz(hours=5, minutes=30)),
        dt.datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=_tz(hours=-9, minutes=-30)),
        dt.datetime(2030, 5, 1, 8, 0, tzinfo=_tz(hours=5, minutes=30, seconds=15)),
        dt.datetime(2021, 11, 7, 1, 30, tzinfo=NY),  # ambiguous: EDT
        dt.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=NY),  # ambiguous: EST
        dt.datetime(2021, 3, 14, 2, 30, tzinfo=NY),  # in the spring gap
        dt.datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=KOLKATA),  # local mean time offset
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(1, 1, 1, 3, 0, tzinfo=_tz(hours=5)),  # before year 1 in UTC
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=_tz(hours=-10)),  # 10000 in UTC
    ],
    "naive": [
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        dt.datetime(1970, 1, 1),
        dt.datetime(2000, 1, 1),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
        dt.datetime(1900, 3, 1, 0, 0, 0, 1),
        dt.datetime(1, 1, 1),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
    ],
    "day": [
        dt.date(2024, 2, 29),
        dt.date(2000, 1, 1),
        dt.date(1999, 12, 31),
        dt.date(1900, 2, 28),
        dt.date(2100, 3, 1),
        dt.date(1, 1, 1),
        dt.date(9999, 12, 31),
    ],
    "tm": [dt.time(0, 0), dt.time(23, 59, 59, 999999), dt.time(12, 30, 1, 5)],
    "tmz": [
        dt.time(10, 0, tzinfo=UTC),
        dt.time(23, 59, 59, 999999, tzinfo=_tz(hours=-5)),
        dt.time(0, 0, 0, 1, tzinfo=_tz(hours=5, minutes=30, seconds=15)),
        dt.time(12, 0, tzinfo=_tz(hours=15, minutes=59)),
        dt.time(12, 0, tzinfo=_tz(hours=-15, minutes=-59, seconds=-59)),
    ],
    "td": [
        dt.timedelta(0),
        dt.timedelta(days=3, seconds=5, microseconds=7),
        dt.timedelta(days=-1, seconds=10),
        dt.timedelta(days=400, hours=25),
        dt.timedelta(microseconds=-1),
        dt.timedelta(days=-999999999),
        dt.timedelta(days=999999999, seconds=86399, microseconds=999999),
    ],
    "raw": [b"", bytes(range(256)), b"\x00" * 1000, b"\\x41", bytearray(b"ab\x00")],
    "u": [
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        uuid.UUID(int=0),
        uuid.UUID(int=2**128 - 1),
    ],
    "us": [
        "12345678-1234-5678-1234-567812345678",
        "ABCDEF00-0000-0000-0000-00000000000A",
        "abcdef000000000000000000000000ff",
    ],
    "doc": [
        {},
        {"a": [1, 2, {"b": None}], "c": "ü", "d": True, "e": 1.5},
        {"nested": {"deep": {"deeper": [[], {}]}}, "n": -7},
        {"esc": '\u2028 \\ " \n \t', "big": 2**70, "f": 1e300},
        JSON.NULL,
    ],
    "items": [[], [1, "x", None, {"k": []}], ["only"], [[1, [2, [3]]]]],
    "mood": [Mood.HAPPY, Mood.SAD, Mood.MEH],
}


def _rows(attr: str, values: list[Any]) -> list[dict[str, Any]]:
    """At least a COPY batch of rows cycling through `values` (and NULL)."""
    cycle = [*values, None]
    n = max(COPY_MIN_ROWS, 2 * len(cycle))
    return [{attr: cycle[k % len(cycle)]} for k in range(n)]


def _write(db: Engine, sql_log: Log, rows: list[dict[str, Any]], *, binary: bool = True) -> None:
    """The rows once through one COPY and once through multi-row INSERTs."""
    with Session(db) as s:
        s.add_all([Rec(how="copy", seq=k, **r) for k, r in enumerate(rows)])
        sql_log.clear()
        s.flush()
        copies = [q for q, _ in sql_log if q.startswith("COPY")]
        assert len(copies) == 1, sql_log
        assert copies[0].endswith("(FORMAT BINARY)") == binary, copies
        chunk = COPY_MIN_ROWS // 2
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            s.add_all([Rec(how="insert", seq=start + k, **r) for k, r in enumerate(part)])
            sql_log.clear()
            s.flush()
            assert [q.split()[0] for q, _ in sql_log if not q.startswith("SELECT")] == ["INSERT"], (
                sql_log
            )
        s.commit()


def _differences(admin: Conn, schema: str, columns: list[str]) -> list[Any]:
    """Rows whose column differs (as PostgreSQL prints it) between the COPY and the INSERT."""
    out = []
    for col in columns:
        rows = admin.execute(
            f"SELECT c.seq, c.{col}::text, i.{col}::text FROM {schema}.recs c "
            f"JOIN {schema}.recs i ON c.seq = i.seq AND c.how = 'copy' AND i.how = 'insert' "
            f"WHERE c.{col}::text IS DISTINCT FROM i.{col}::text ORDER BY c.seq"
        ).fetchall()
        out.extend((col, *r) for r in rows)
    return out


def _counts(admin: Conn, schema: str) -> list[Any]:
    return admin.execute(
        f"SELECT how, count(*) FROM {schema}.recs GROUP BY how ORDER BY how"
    ).fetchall()


@pytest.mark.parametrize("attr", list(EDGE))
def test_binary_copy_stores_what_insert_stores(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str, attr: str
) -> None:
    rows = _rows(attr, EDGE[attr])
    _write(db, sql_log, rows)
    assert _counts(admin_conn, schema) == [("copy", len(rows)), ("insert", len(rows))]
    assert _differences(admin_conn, schema, COLUMNS) == []
    # and the values are there (not, say, NULL on both sides)
    stored = admin_conn.execute(
        f"SELECT count({attr}) FROM {schema}.recs WHERE how = 'copy'"
    ).fetchone()
    assert stored == (sum(r[attr] is not None for r in rows),)


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, float) and expected != expected:
        return isinstance(got, float) and got != got
    if isinstance(expected, float):
        return isinstance(got, float) and got == expected and str(got) == str(expected)
    if isinstance(expected, Decimal):
        if expected.is_nan():
            return isinstance(got, Decimal) and got.is_nan()
        return got == expected and got.as_tuple().exponent == expected.as_tuple().exponent
    return bool(got == expected) and type(got) is type(expected)


def test_all_columns_of_a_binary_copy_load_back(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    """Every column at once, loaded back through retort, value and type exact."""
    picks = {
        "i": -7,
        "big": 2**62,
        "small": -2,
        "s": "ü\t\\",
        "s10": "ten chars!",
        "txt": "",
        "f": -0.0,
        "f4": 0.5,
        "b": False,
        "money": Decimal("-12.30"),
        "dec": Decimal("1.50E-7"),
        "aware": dt.datetime(1999, 12, 31, 23, 0, 0, 5, tzinfo=_tz(hours=-3)),
        "naive": dt.datetime(1950, 6, 15, 1, 2, 3, 456789),
        "day": dt.date(1950, 6, 15),
        "tm": dt.time(1, 2, 3, 4),
        "tmz": dt.time(1, 2, 3, 4, tzinfo=_tz(hours=2)),
        "td": dt.timedelta(days=-3, microseconds=1),
        "raw": b"\x00\xff",
        "u": uuid.UUID(int=42),
        "us": "00000000-0000-0000-0000-00000000002a",
        "doc": {"k": [1, {"x": None}]},
        "items": [1, "two"],
        "mood": Mood.MEH,
    }
    assert set(picks) == set(COLUMNS)
    rows = [dict(picks) for _ in range(COPY_MIN_ROWS)]
    _write(db, sql_log, rows)
    assert _differences(admin_conn, schema, COLUMNS) == []
    with Session(db) as s:
        loaded = s.scalars(select(Rec).where(Rec.how == "copy")).all()
        assert len(loaded) == len(rows)
        for obj in loaded:
            for attr, want in picks.items():
                got = getattr(obj, attr)
                assert _same(want, got), (attr, want, got)


def test_copy_binary_data_layout(db: Engine) -> None:
    """Header, per row a field count and length-prefixed fields (-1 for NULL), trailer."""
    with Session(db) as s:
        s.add_all([Rec(how="copy", seq=k, small=k - 1) for k in range(COPY_MIN_ROWS)])
        plan = s._core.plan()
        (batch,) = plan.batches
        kinds = _kinds(batch)
        data = batch.copy_binary(kinds)
        assert data is not None
        assert data[:19] == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
        pos, rows, fields = 19, 0, []
        while True:
            count = int.from_bytes(data[pos : pos + 2], "big", signed=True)
            pos += 2
            if count == -1:
                break
            assert count == len(kinds)
            row = []
            for _ in range(count):
                size = int.from_bytes(data[pos : pos + 4], "big", signed=True)
                pos += 4
                row.append(None if size == -1 else data[pos : pos + size])
                pos += max(size, 0)
            fields.append(row)
            rows += 1
        assert pos == len(data) and rows == COPY_MIN_ROWS
        names = [str(Rec.__mapper__.columns[i].name) for i in _cols(batch)]
        third = dict(zip(names, fields[2], strict=True))
        assert third["how"] == b"copy"
        assert third["seq"] == (2).to_bytes(4, "big")
        assert third["small"] == (1).to_bytes(2, "big")
        assert third["s"] is None
        with pytest.raises(ValueError, match="column kinds"):
            batch.copy_binary(kinds[:-1])
        with pytest.raises(ValueError, match="column kinds"):
            batch.copy_binary([0] * len(kinds))
        del plan, batch


def _cols(batch: Any) -> list[int]:
    return ([batch.gen_key] if batch.has_keys else []) + list(batch.cols)


def _kinds(batch: Any) -> list[int]:
    """The kinds flush.py gives the batch's COPY columns."""
    from retort.flush import _type_kind

    return [_type_kind(Rec.__mapper__.columns[i].type) for i in _cols(batch)]


# --------------------------------------------------------------------------------------------
# values left to the text path: the same stored results and the same errors as before


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        pytest.param("i", "42", id="str-into-integer"),
        pytest.param("f", Decimal("1.5"), id="decimal-into-float"),
        pytest.param("money", 1.25, id="float-into-numeric"),
        pytest.param("dec", Decimal("Infinity"), id="numeric-infinity"),
        pytest.param("dec", Decimal("-Infinity"), id="numeric-minus-infinity"),
        pytest.param("dec", Decimal("sNaN"), id="numeric-snan"),
        pytest.param("dec", 10**1500, id="numeric-beyond-the-binary-limits"),
        pytest.param("b", 1, id="int-into-boolean"),
        pytest.param("day", dt.datetime(2020, 1, 2, 3, 4), id="datetime-into-date"),
        pytest.param("naive", dt.date(2020, 1, 2), id="date-into-timestamp"),
        pytest.param("us", "{12345678-1234-5678-1234-567812345678}", id="uuid-in-braces"),
        pytest.param("f4", 1e-40, id="subnormal-real"),
        pytest.param("tmz", dt.time(12, tzinfo=_tz(seconds=1, microseconds=5)), id="tz-usecs"),
        pytest.param("tmz", dt.time(12), id="naive-into-timetz"),
        pytest.param("tm", dt.time(12, tzinfo=UTC), id="aware-into-time"),
        pytest.param("s", "\ud800", id="lone-surrogate"),
        pytest.param("raw", memoryview(b"abc"), id="memoryview"),
    ],
)
def test_values_without_an_exact_binary_form_go_through_text_copy(
    db: Engine, sql_log: Log, attr: str, value: Any
) -> None:
    """The core gives up on the batch, and the flush runs the text COPY of before (whose
    result, stored value or error, is therefore unchanged)."""
    rows = _rows(attr, [value, EDGE[attr][0]])
    with Session(db) as s:
        s.add_all([Rec(how="copy", seq=k, **r) for k, r in enumerate(rows)])
        try:
            plan = s._core.plan()
        except exc.RetortError:
            return  # refused before any COPY (a bind check)
        (batch,) = plan.batches
        assert batch.copy_binary(_kinds(batch), lambda v: b"{}") is None
        del plan, batch
        sql_log.clear()
        try:
            s.flush()
        except (exc.RetortError, UnicodeError):
            pass
        copies = [q for q, _ in sql_log if q.startswith("COPY")]
        # (a str the text encoder cannot encode raises before its COPY starts, as before)
        assert len(copies) == (0 if attr == "s" else 1), copies
        assert not any(q.endswith("(FORMAT BINARY)") for q in copies), copies


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        pytest.param("small", 2**15, id="smallint-max+1"),
        pytest.param("small", -(2**15) - 1, id="smallint-min-1"),
        pytest.param("i", 2**31, id="integer-max+1"),
        pytest.param("i", -(2**31) - 1, id="integer-min-1"),
        pytest.param("big", 2**63, id="bigint-max+1"),
        pytest.param("big", -(2**63) - 1, id="bigint-min-1"),
        pytest.param("big", 10**40, id="bigint-far-beyond"),
        pytest.param("f4", 1e39, id="beyond-real"),
        pytest.param("s", "nul\x00byte", id="nul-in-text"),
    ],
)
def test_values_the_column_cannot_hold_raise_as_before_and_write_nothing(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str, attr: str, value: Any
) -> None:
    """Out-of-range ints are not truncated and a NUL is not sent: the batch goes through text
    COPY, which raises what it raised before (DataError), as the INSERT path does."""
    rows = [{attr: 1 if attr != "s" else "ok"} for _ in range(COPY_MIN_ROWS)] + [{attr: value}]
    with Session(db) as s:
        s.add_all([Rec(how="copy", seq=k, **r) for k, r in enumerate(rows)])
        plan = s._core.plan()
        (batch,) = plan.batches
        assert batch.copy_binary(_kinds(batch)) is None
        del plan, batch
        sql_log.clear()
        with pytest.raises(exc.DataError) as copied:
            s.flush()
        copies = [q for q, _ in sql_log if q.startswith("COPY")]
        assert copies and not copies[0].endswith("(FORMAT BINARY)"), copies
        s.rollback()
    with Session(db) as s:
        s.add_all([Rec(how="insert", seq=0, **rows[-1])])
        with pytest.raises(exc.DataError) as inserted:
            s.flush()
    assert type(copied.value.orig) is type(inserted.value.orig)
    assert _counts(admin_conn, schema) == []


def test_a_json_wrapper_with_its_own_dumps_is_honoured(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    def dumps(obj: Any) -> str:
        return json.dumps({"wrapped": obj})

    rows = [{"doc": Jsonb({"n": k}, dumps=dumps)} for k in range(COPY_MIN_ROWS)]
    _write(db, sql_log, rows)
    assert _differences(admin_conn, schema, ["doc"]) == []
    got = admin_conn.execute(
        f"SELECT doc FROM {schema}.recs WHERE how = 'copy' ORDER BY seq LIMIT 1"
    ).fetchone()
    assert got == ({"wrapped": {"n": 0}},)


def test_a_table_altered_under_a_live_connection(
    engine_factory: Any, admin_conn: Conn, schema: str
) -> None:
    """The column types are looked up once per connection; when the table changes type
    afterwards, the binary COPY fails with PostgreSQL's error, and the next flush looks the
    types up again and uses text COPY."""
    engine = engine_factory(pool_size=1, max_overflow=0)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Rec(how="copy", seq=k, small=k) for k in range(COPY_MIN_ROWS)])
        s.commit()
    admin_conn.execute(f"ALTER TABLE {schema}.recs ALTER COLUMN small TYPE bigint")
    with Session(engine) as s:
        s.add_all([Rec(how="copy", seq=k, small=k) for k in range(COPY_MIN_ROWS)])
        with pytest.raises(exc.DBAPIError) as info:
            s.flush()
        # "insufficient data left in message": 2 bytes where bigint takes 8
        assert info.value.orig.sqlstate in ("08P01", "22P03"), info.value.orig
        s.rollback()
        log: Log = []
        engine._statement_hooks.append(lambda q, p: log.append((q, p)))
        s.add_all([Rec(how="copy", seq=k, small=k) for k in range(COPY_MIN_ROWS)])
        s.commit()
        copies = [q for q, _ in log if q.startswith("COPY")]
        assert copies and not copies[0].endswith("(FORMAT BINARY)"), copies
    assert _counts(admin_conn, schema) == [("copy", 2 * COPY_MIN_ROWS)]


# --------------------------------------------------------------------------------------------
# property: random rows through binary COPY and through INSERT are stored alike

_PROFILES = {
    "ci": settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    ),
    "nightly": settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    ),
}
_PROFILE = _PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), _PROFILES["ci"])

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)
_offsets = st.integers(-(15 * 3600 + 59 * 60 + 59), 15 * 3600 + 59 * 60 + 59).map(
    lambda sec: _tz(seconds=sec)
)
_COLUMN_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "i": st.integers(-(2**31), 2**31 - 1),
    "big": st.integers(-(2**63), 2**63 - 1),
    "small": st.integers(-(2**15), 2**15 - 1),
    "s": _text,
    "s10": st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=10
    ),
    "txt": _text,
    "f": st.floats() | st.integers(-(2**63), 2**63 - 1),
    "f4": st.floats(width=32, allow_subnormal=False),
    "b": st.booleans(),
    "money": st.decimals(
        min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"), places=2
    ),
    "dec": st.decimals(allow_nan=False, allow_infinity=False)
    | st.just(Decimal("NaN"))
    | st.integers(-(10**100), 10**100),
    "aware": st.datetimes(timezones=st.timezones() | _offsets),
    "naive": st.datetimes(),
    "day": st.dates(),
    "tm": st.times(),
    "tmz": st.times(timezones=_offsets),
    "td": st.timedeltas(),
    "raw": st.binary(max_size=40),
    "u": st.uuids(),
    "us": st.uuids().map(str),
    "doc": st.dictionaries(_text, _json, max_size=4),
    "items": st.lists(_json, max_size=4),
    "mood": st.sampled_from(Mood),
}
_row = st.fixed_dictionaries({}, optional=_COLUMN_VALUES)


@given(distinct=st.lists(_row, min_size=1, max_size=10))
@_PROFILE
def test_property_binary_copy_stores_what_insert_stores(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str, distinct: list[dict[str, Any]]
) -> None:
    # a few random rows, repeated up to a COPY batch
    rows = [distinct[k % len(distinct)] for k in range(COPY_MIN_ROWS)]
    admin_conn.execute(f"TRUNCATE {schema}.recs")
    _write(db, sql_log, rows)
    assert _differences(admin_conn, schema, COLUMNS) == []
