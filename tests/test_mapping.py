"""Declarative models: registries, column types and options, keys and DDL, on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import uuid
from decimal import Decimal
from typing import Any, Optional

import psycopg
import pytest

from retort import (
    BigInteger,
    DateTime,
    DeclarativeBase,
    ForeignKey,
    Integer,
    Mapped,
    MetaData,
    Numeric,
    Session,
    String,
    Table,
    Text,
    exc,
    inspect,
    mapped_column,
    mapping,
    relationship,
    select,
    text,
)
from retort.engine import Engine

Conn = psycopg.Connection[Any]


# --------------------------------------------------------------------------------------------
# helpers: what the database itself says


def _columns(admin: Conn, schema: str, table: str) -> dict[str, tuple[str, bool, str | None, bool]]:
    """column name -> (data_type, nullable, column_default, is_identity)."""
    rows = admin.execute(
        "SELECT column_name, data_type, is_nullable, column_default, is_identity "
        "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return {r[0]: (r[1], r[2] == "YES", r[3], r[4] == "YES") for r in rows}


def _tables(admin: Conn, schema: str) -> set[str]:
    rows = admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    ).fetchall()
    return {r[0] for r in rows}


def _unique_column_sets(admin: Conn, schema: str, table: str) -> set[frozenset[str]]:
    """Column sets covered by a unique constraint or a unique index (not the primary key)."""
    rows = admin.execute(
        "SELECT i.indexrelid, a.attname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND NOT i.indisprimary",
        (schema, table),
    ).fetchall()
    by_index: dict[int, set[str]] = {}
    for oid, col in rows:
        by_index.setdefault(oid, set()).add(col)
    return {frozenset(v) for v in by_index.values()}


def _indexed_columns(admin: Conn, schema: str, table: str) -> set[str]:
    """Columns with a non-unique, non-primary single-column index."""
    rows = admin.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
        "WHERE n.nspname = %s AND c.relname = %s AND NOT i.indisprimary AND i.indnatts = 1",
        (schema, table),
    ).fetchall()
    return {r[0] for r in rows}


def _primary_key(admin: Conn, schema: str, table: str) -> list[str]:
    rows = admin.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary ORDER BY k.ord",
        (schema, table),
    ).fetchall()
    return [r[0] for r in rows]


def _foreign_keys(admin: Conn, schema: str) -> set[tuple[str, str]]:
    """(from table, to table) of every foreign key constraint in the schema."""
    rows = admin.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s AND c.contype = 'f'",
        (schema,),
    ).fetchall()
    return {(r[0].split(".")[-1], r[1].split(".")[-1]) for r in rows}


def _ddl(log: list[tuple[str, Any]]) -> list[str]:
    return [sql for sql, _ in log if sql.lstrip().upper().startswith(("CREATE", "DROP", "ALTER"))]


def _first_index(statements: list[str], prefix: str) -> int:
    for i, sql in enumerate(statements):
        if sql.startswith(prefix):
            return i
    raise AssertionError(f"no statement starts with {prefix!r}: {statements}")


# --------------------------------------------------------------------------------------------
# registries


def test_each_direct_subclass_of_declarative_base_has_its_own_registry() -> None:
    class BaseA(DeclarativeBase):
        pass

    class BaseB(DeclarativeBase):
        pass

    class A1(BaseA):
        __tablename__ = "a1"
        id: Mapped[int] = mapped_column(primary_key=True)

    class B1(BaseB):
        __tablename__ = "b1"
        id: Mapped[int] = mapped_column(primary_key=True)

    assert isinstance(BaseA.metadata, MetaData)
    assert BaseA.metadata is not BaseB.metadata
    assert BaseA.registry is not BaseB.registry
    assert A1.metadata is BaseA.metadata
    assert set(BaseA.metadata.tables) == {"a1"}
    assert set(BaseB.metadata.tables) == {"b1"}
    assert [m.class_ for m in BaseA.registry.mappers] == [A1]
    assert [m.class_ for m in BaseB.registry.mappers] == [B1]
    assert A1.__table__ is BaseA.metadata.tables["a1"]
    assert inspect(A1) is A1.__mapper__


def test_same_table_name_in_two_registries_is_allowed() -> None:
    class BaseA(DeclarativeBase):
        pass

    class BaseB(DeclarativeBase):
        pass

    class X1(BaseA):
        __tablename__ = "things"
        id: Mapped[int] = mapped_column(primary_key=True)

    class X2(BaseB):
        __tablename__ = "things"
        id: Mapped[int] = mapped_column(primary_key=True)
        extra: Mapped[str]

    assert list(X1.__table__.c.keys()) == ["id"]
    assert list(X2.__table__.c.keys()) == ["id", "extra"]


def test_a_given_metadata_is_used_by_the_base() -> None:
    md = MetaData()

    class Base(DeclarativeBase):
        metadata = md

    class M(Base):
        __tablename__ = "m"
        id: Mapped[int] = mapped_column(primary_key=True)

    assert Base.metadata is md
    assert md.tables["m"] is M.__table__


def test_same_table_name_twice_in_one_registry_is_an_error() -> None:
    class Base(DeclarativeBase):
        pass

    class M1(Base):
        __tablename__ = "dup"
        id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(exc.ArgumentError, match="dup"):

        class M2(Base):
            __tablename__ = "dup"
            id: Mapped[int] = mapped_column(primary_key=True)


def test_model_without_primary_key_is_an_argument_error() -> None:
    class Base(DeclarativeBase):
        pass

    with pytest.raises(exc.ArgumentError, match="primary key"):

        class NoPk(Base):
            __tablename__ = "nopk"
            name: Mapped[str]


def test_abstract_mixin_columns_are_inherited() -> None:
    class Base(DeclarativeBase):
        pass

    class Stamped(Base):
        __abstract__ = True
        id: Mapped[int] = mapped_column(primary_key=True)
        created: Mapped[str | None]

    class Doc(Stamped):
        __tablename__ = "docs"
        title: Mapped[str]

    assert list(Doc.__table__.c.keys()) == ["id", "created", "title"]
    assert [c.key for c in Doc.__mapper__.primary_key] == ["id"]


# --------------------------------------------------------------------------------------------
# annotations -> column types and nullability


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


def test_annotation_types_become_column_types(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    class Base(DeclarativeBase):
        pass

    class AllTypes(Base):
        __tablename__ = "all_types"
        id: Mapped[int] = mapped_column(primary_key=True)
        i: Mapped[int]
        s: Mapped[str]
        f: Mapped[float]
        b: Mapped[bool]
        d: Mapped[Decimal]
        ts: Mapped[dt.datetime]
        day: Mapped[dt.date]
        tm: Mapped[dt.time]
        td: Mapped[dt.timedelta]
        raw: Mapped[bytes]
        u: Mapped[uuid.UUID]
        doc: Mapped[dict[str, Any]]
        items: Mapped[list[Any]]
        color: Mapped[Color]
        big: Mapped[int] = mapped_column(BigInteger)
        txt: Mapped[str] = mapped_column(Text)
        short: Mapped[str] = mapped_column(String(12))
        money: Mapped[Decimal] = mapped_column(Numeric(10, 2))
        aware: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    Base.metadata.create_all(engine)
    cols = _columns(admin_conn, schema, "all_types")
    types = {name: info[0] for name, info in cols.items()}
    assert types == {
        "id": "integer",
        "i": "integer",
        "s": "character varying",
        "f": "double precision",
        "b": "boolean",
        "d": "numeric",
        "ts": "timestamp without time zone",
        "day": "date",
        "tm": "time without time zone",
        "td": "interval",
        "raw": "bytea",
        "u": "uuid",
        "doc": "jsonb",
        "items": "jsonb",
        "color": "character varying",
        "big": "bigint",
        "txt": "text",
        "short": "character varying",
        "money": "numeric",
        "aware": "timestamp with time zone",
    }
    lengths = dict(
        admin_conn.execute(
            "SELECT column_name, character_maximum_length FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'all_types' AND column_name = 'short'",
            (schema,),
        ).fetchall()
    )
    assert lengths == {"short": 12}
    precision = admin_conn.execute(
        "SELECT numeric_precision, numeric_scale FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'all_types' AND column_name = 'money'",
        (schema,),
    ).fetchone()
    assert precision == (10, 2)
    # every one of them is NOT NULL: none of the annotations allows None
    assert [name for name, info in cols.items() if info[1]] == []


def test_optional_and_none_union_make_nullable_columns(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    class Base(DeclarativeBase):
        pass

    class N(Base):
        __tablename__ = "n"
        id: Mapped[int] = mapped_column(primary_key=True)
        required: Mapped[str]
        opt_typing: Mapped[Optional[str]]  # noqa: UP045 - the typing spelling is the point
        opt_union: Mapped[int | None]
        opt_with_column: Mapped[str | None] = mapped_column(String(20))
        forced_nullable: Mapped[str] = mapped_column(nullable=True)
        forced_not_null: Mapped[str | None] = mapped_column(nullable=False)

    assert N.__table__.c.opt_typing.nullable is True
    assert N.__table__.c.required.nullable is False
    Base.metadata.create_all(engine)
    nullable = {k: v[1] for k, v in _columns(admin_conn, schema, "n").items()}
    assert nullable == {
        "id": False,
        "required": False,
        "opt_typing": True,
        "opt_union": True,
        "opt_with_column": True,
        "forced_nullable": True,
        "forced_not_null": False,
    }


def test_string_annotations_are_resolved(engine: Engine, admin_conn: Conn, schema: str) -> None:
    class Base(DeclarativeBase):
        pass

    class S(Base):
        __tablename__ = "s"
        # with `from __future__ import annotations` every annotation here is a string
        id: Mapped[int] = mapped_column(primary_key=True)
        when: Mapped[dt.date | None]
        amount: Mapped[Decimal]

    Base.metadata.create_all(engine)
    cols = _columns(admin_conn, schema, "s")
    assert cols["when"][:2] == ("date", True)
    assert cols["amount"][:2] == ("numeric", False)


def test_mapped_column_without_mapped_annotation_is_rejected() -> None:
    class Base(DeclarativeBase):
        pass

    with pytest.raises(exc.ArgumentError, match="Mapped"):

        class Bad(Base):
            __tablename__ = "bad"
            id: int = mapped_column(primary_key=True)


def test_unsupported_annotation_type_is_rejected() -> None:
    class Base(DeclarativeBase):
        pass

    class Weird:
        pass

    with pytest.raises(exc.ArgumentError, match=r"Bad\.thing"):

        class Bad(Base):
            __tablename__ = "bad"
            id: Mapped[int] = mapped_column(primary_key=True)
            thing: Mapped[Weird]


# --------------------------------------------------------------------------------------------
# mapped_column options


def test_unique_and_index_options_create_constraints(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    class Base(DeclarativeBase):
        pass

    class U(Base):
        __tablename__ = "u"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(unique=True)
        city: Mapped[str] = mapped_column(index=True)
        code: Mapped[str] = mapped_column(unique=True, index=True)
        plain: Mapped[str]

    Base.metadata.create_all(engine)
    assert _unique_column_sets(admin_conn, schema, "u") == {
        frozenset({"email"}),
        frozenset({"code"}),
    }
    assert _indexed_columns(admin_conn, schema, "u") == {"email", "city", "code"}
    with Session(engine) as s:
        s.add(U(email="a@x", city="c", code="k1", plain="p"))
        s.commit()
    with Session(engine) as s:
        s.add(U(email="a@x", city="c", code="k2", plain="p"))
        with pytest.raises(exc.IntegrityError):
            s.flush()


def test_scalar_and_callable_defaults_are_applied_at_flush(engine: Engine) -> None:
    counter = itertools.count(100)

    class Base(DeclarativeBase):
        pass

    class D(Base):
        __tablename__ = "d"
        id: Mapped[int] = mapped_column(primary_key=True)
        status: Mapped[str] = mapped_column(default="new")
        seq: Mapped[int] = mapped_column(default=lambda: next(counter))
        note: Mapped[str | None]

    Base.metadata.create_all(engine)
    with Session(engine) as s:
        a, b, explicit = D(), D(), D(status="old", seq=7)
        s.add_all([a, b, explicit])
        s.flush()
        assert (a.status, b.status, explicit.status) == ("new", "new", "old")
        assert sorted([a.seq, b.seq]) == [100, 101]  # called once per row
        assert explicit.seq == 7
        ids = (a.id, b.id, explicit.id)
        seqs = (a.seq, b.seq)
        s.commit()
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT id, status, seq FROM d")).all()]
    assert sorted(rows) == sorted(
        [(ids[0], "new", seqs[0]), (ids[1], "new", seqs[1]), (ids[2], "old", 7)]
    )


def test_server_default_is_in_the_ddl_and_loaded_back(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    class Base(DeclarativeBase):
        pass

    class SD(Base):
        __tablename__ = "sd"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column(server_default="unnamed")
        score: Mapped[int] = mapped_column(server_default=text("42"))

    Base.metadata.create_all(engine)
    cols = _columns(admin_conn, schema, "sd")
    assert cols["label"][2] is not None and "unnamed" in cols["label"][2]
    assert cols["score"][2] == "42"
    with Session(engine) as s:
        obj = SD()
        given = SD(label="mine", score=1)
        s.add_all([obj, given])
        s.flush()
        # the value the database chose is visible on the object (fetched or loaded on access)
        assert obj.label == "unnamed"
        assert obj.score == 42
        assert (given.label, given.score) == ("mine", 1)
        s.commit()
    row = admin_conn.execute(f"SELECT label, score FROM {schema}.sd ORDER BY id").fetchall()
    assert row == [("unnamed", 42), ("mine", 1)]


def test_onupdate_is_applied_to_updates_only(engine: Engine) -> None:
    stamps = itertools.count(1)

    class Base(DeclarativeBase):
        pass

    class OU(Base):
        __tablename__ = "ou"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        revision: Mapped[int] = mapped_column(default=0, onupdate=lambda: next(stamps))

    Base.metadata.create_all(engine)
    with Session(engine) as s:
        obj = OU(name="a")
        s.add(obj)
        s.flush()
        assert obj.revision == 0
        obj.name = "b"
        s.flush()
        assert obj.revision == 1
        obj.name = "c"
        s.flush()
        assert obj.revision == 2
        # a flush with no change of the object does not run onupdate
        s.flush()
        assert obj.revision == 2
        # an explicit value wins over onupdate
        obj.name = "d"
        obj.revision = 50
        s.flush()
        assert obj.revision == 50
        s.commit()
        oid = obj.id
    with Session(engine) as s:
        fresh = s.get(OU, oid)
        assert fresh is not None
        assert (fresh.name, fresh.revision) == ("d", 50)


def test_name_option_maps_attribute_to_a_differently_named_column(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    class Base(DeclarativeBase):
        pass

    class R(Base):
        __tablename__ = "renamed"
        id: Mapped[int] = mapped_column("pk_col", primary_key=True)
        label: Mapped[str] = mapped_column(name="label_col")

    Base.metadata.create_all(engine)
    assert list(_columns(admin_conn, schema, "renamed")) == ["pk_col", "label_col"]
    assert R.__table__.c.label.name == "label_col"
    with Session(engine) as s:
        r = R(label="x")
        s.add(r)
        s.flush()
        r.label = "y"
        s.commit()
        rid = r.id
    assert admin_conn.execute(f"SELECT pk_col, label_col FROM {schema}.renamed").fetchall() == [
        (rid, "y")
    ]
    with Session(engine) as s:
        found = s.scalars(select(R).where(R.label == "y")).one()
        assert (found.id, found.label) == (rid, "y")
        assert s.scalars(select(R).filter_by(label="y")).one() is found
        assert s.get(R, rid) is found


def test_explicit_type_wins_over_the_annotation(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    class Base(DeclarativeBase):
        pass

    class T(Base):
        __tablename__ = "t"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        body: Mapped[str] = mapped_column(Text)
        n: Mapped[int] = mapped_column(type_=BigInteger)

    Base.metadata.create_all(engine)
    cols = _columns(admin_conn, schema, "t")
    assert (cols["id"][0], cols["body"][0], cols["n"][0]) == ("bigint", "text", "bigint")


# --------------------------------------------------------------------------------------------
# generated __init__


def test_generated_init_sets_given_attributes_only() -> None:
    class Base(DeclarativeBase):
        pass

    class P(Base):
        __tablename__ = "p"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        nickname: Mapped[str | None]
        status: Mapped[str] = mapped_column(default="new")

    p = P(name="ann")
    assert p.name == "ann"
    assert p.nickname is None
    assert p.id is None
    # a Python default is applied at flush, not by the constructor (SQLAlchemy semantics)
    assert p.status is None
    assert inspect(p).transient


def test_generated_init_rejects_unknown_arguments() -> None:
    class Base(DeclarativeBase):
        pass

    class P(Base):
        __tablename__ = "p"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    with pytest.raises(TypeError, match="nmae"):
        P(nmae="typo")
    with pytest.raises(TypeError):
        P("positional")


def test_user_defined_init_can_call_super() -> None:
    class Base(DeclarativeBase):
        pass

    class P(Base):
        __tablename__ = "p"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

        def __init__(self, name: str) -> None:
            super().__init__(name=name.upper())

    assert P("ann").name == "ANN"


def test_generated_init_is_a_method_of_the_base_that_defers_the_unusual_calls() -> None:
    # the usual call runs in the core (rust/py/init.rs); a positional argument, a mapper not
    # configured yet and an unmapped subclass go to the Python __init__
    class Base(DeclarativeBase):
        pass

    class P(Base):
        __tablename__ = "p"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        kids: Mapped[list[Kid]] = relationship(back_populates="parent")

    class Kid(Base):
        __tablename__ = "kid"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int | None] = mapped_column(ForeignKey("p.id"))
        parent: Mapped[P | None] = relationship(back_populates="kids")

    assert type(P.__init__).__name__ == "method_descriptor"
    assert mapping._unconfigured  # not configured yet: the first object configures them
    k = Kid(id=2)
    assert not mapping._unconfigured
    p = P(name="ann", kids=[k])  # a relationship keyword sets the back reference as well
    assert (p.name, p.kids, k.parent) == ("ann", [k], p)
    assert inspect(p).transient
    with pytest.raises(TypeError, match="positional"):
        P("ann")

    class Sub(P):  # an unmapped subclass of a mapped class builds as its mapped base
        pass

    assert Sub(name="sub").name == "sub"

    class Loose(Base):
        __abstract__ = True

    with pytest.raises(exc.UnmappedClassError, match="not mapped"):
        Loose(name="x")


# --------------------------------------------------------------------------------------------
# keys


def test_server_generated_identity_key(engine: Engine, admin_conn: Conn, schema: str) -> None:
    class Base(DeclarativeBase):
        pass

    class G(Base):
        __tablename__ = "g"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    Base.metadata.create_all(engine)
    assert _columns(admin_conn, schema, "g")["id"][3] is True  # an identity column
    with Session(engine) as s:
        one = G(name="one")
        s.add(one)
        assert one.id is None
        s.flush()
        assert isinstance(one.id, int)
        many = [G(name=f"m{i}") for i in range(5)]
        s.add_all(many)
        s.flush()
        ids = [one.id, *(m.id for m in many)]
        assert len(set(ids)) == 6
        assert inspect(many[3]).identity == (many[3].id,)
        s.commit()
    rows = admin_conn.execute(f"SELECT id, name FROM {schema}.g ORDER BY id").fetchall()
    assert sorted(rows) == sorted(zip(ids, ["one", *(f"m{i}" for i in range(5))], strict=True))


def test_natural_string_key_is_given_by_the_client(
    engine: Engine, admin_conn: Conn, schema: str, sql_log: list[tuple[str, Any]]
) -> None:
    class Base(DeclarativeBase):
        pass

    class Country(Base):
        __tablename__ = "countries"
        code: Mapped[str] = mapped_column(String(2), primary_key=True)
        name: Mapped[str]

    Base.metadata.create_all(engine)
    assert _columns(admin_conn, schema, "countries")["code"][3] is False
    sql_log.clear()
    with Session(engine) as s:
        s.add_all([Country(code="fr", name="France"), Country(code="de", name="Germany")])
        s.commit()
    assert not any("nextval" in sql for sql, _ in sql_log)
    with Session(engine) as s:
        fr = s.get(Country, "fr")
        assert fr is not None and fr.name == "France"
        assert inspect(fr).identity == ("fr",)
        assert s.get(Country, "xx") is None


def test_natural_uuid_key(engine: Engine, admin_conn: Conn, schema: str) -> None:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "docs"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
        title: Mapped[str]

    Base.metadata.create_all(engine)
    given = uuid.uuid4()
    with Session(engine) as s:
        a = Doc(id=given, title="given")
        b = Doc(title="generated")
        s.add_all([a, b])
        s.flush()
        assert a.id == given
        assert isinstance(b.id, uuid.UUID) and b.id != given
        bid = b.id
        s.commit()
    with Session(engine) as s:
        loaded = s.get(Doc, given)
        assert loaded is not None and loaded.title == "given"
        other = s.get(Doc, bid)
        assert other is not None and other.title == "generated"
        assert isinstance(loaded.id, uuid.UUID)
    assert admin_conn.execute(f"SELECT count(*) FROM {schema}.docs").fetchone() == (2,)


def test_composite_primary_key(engine: Engine, admin_conn: Conn, schema: str) -> None:
    class Base(DeclarativeBase):
        pass

    class Line(Base):
        __tablename__ = "lines"
        order_no: Mapped[int] = mapped_column(primary_key=True)
        line_no: Mapped[int] = mapped_column(primary_key=True)
        item: Mapped[str]

    assert [c.name for c in Line.__mapper__.primary_key] == ["order_no", "line_no"]
    assert Line.__table__.autoincrement_column is None
    Base.metadata.create_all(engine)
    assert _primary_key(admin_conn, schema, "lines") == ["order_no", "line_no"]
    assert not any(info[3] for info in _columns(admin_conn, schema, "lines").values())
    with Session(engine) as s:
        s.add_all(
            [
                Line(order_no=1, line_no=1, item="a"),
                Line(order_no=1, line_no=2, item="b"),
                Line(order_no=2, line_no=1, item="c"),
            ]
        )
        s.commit()
    with Session(engine) as s:
        b = s.get(Line, (1, 2))
        assert b is not None and b.item == "b"
        assert s.get(Line, {"order_no": 1, "line_no": 2}) is b
        assert s.get(Line, [1, 2]) is b
        assert inspect(b).identity == (1, 2)
        c = s.get(Line, {"line_no": 1, "order_no": 2})
        assert c is not None and c.item == "c"
        assert s.get(Line, (2, 2)) is None


def test_foreign_key_column_takes_the_type_of_its_target(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    class Base(DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = "parents"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)

    class Child(Base):
        __tablename__ = "children"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(ForeignKey("parents.id"))

    Base.metadata.create_all(engine)
    cols = _columns(admin_conn, schema, "children")
    # the annotation says int; the explicit type on the target is not overridden by it
    assert cols["parent_id"][0] in ("integer", "bigint")
    assert ("children", "parents") in _foreign_keys(admin_conn, schema)
    assert Child.__table__.autoincrement_column is Child.__table__.c.id
    # a model with a foreign key can be flushed (this configures the mappers)
    with Session(engine) as s:
        s.add(Parent(id=7))
        s.flush()
        s.add(Child(parent_id=7))
        s.commit()
    assert admin_conn.execute(f"SELECT parent_id FROM {schema}.children").fetchall() == [(7,)]


# --------------------------------------------------------------------------------------------
# DDL order


def _parent_child_models() -> tuple[type[DeclarativeBase], type[Any], type[Any]]:
    class Base(DeclarativeBase):
        pass

    # the child is declared first: create_all must still create the parent first
    class Child(Base):
        __tablename__ = "child"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(ForeignKey("parent.id", ondelete="CASCADE"))

    class Parent(Base):
        __tablename__ = "parent"
        id: Mapped[int] = mapped_column(primary_key=True)

    return Base, Parent, Child


def test_create_all_and_drop_all_follow_foreign_key_order(
    engine: Engine, admin_conn: Conn, schema: str, sql_log: list[tuple[str, Any]]
) -> None:
    Base, _, _ = _parent_child_models()
    assert [t.name for t in Base.metadata.sorted_tables] == ["parent", "child"]
    Base.metadata.create_all(engine)
    ddl = _ddl(sql_log)
    assert _first_index(ddl, "CREATE TABLE parent") < _first_index(ddl, "CREATE TABLE child")
    assert _tables(admin_conn, schema) == {"parent", "child"}
    assert _foreign_keys(admin_conn, schema) == {("child", "parent")}
    # create_all is idempotent (checkfirst)
    sql_log.clear()
    Base.metadata.create_all(engine)
    assert _ddl(sql_log) == []
    admin_conn.execute(f"INSERT INTO {schema}.parent (id) VALUES (1)")
    admin_conn.execute(f"INSERT INTO {schema}.child (id, parent_id) VALUES (1, 1)")
    admin_conn.execute(f"DELETE FROM {schema}.parent")  # ON DELETE CASCADE was emitted
    assert admin_conn.execute(f"SELECT count(*) FROM {schema}.child").fetchone() == (0,)
    sql_log.clear()
    Base.metadata.drop_all(engine)
    ddl = _ddl(sql_log)
    assert _first_index(ddl, "DROP TABLE child") < _first_index(ddl, "DROP TABLE parent")
    assert _tables(admin_conn, schema) == set()


# Mapper dependencies are process-wide state: the two tests below declare mutually referencing
# models, so they run in a fresh interpreter, where whatever they do cannot leak into the
# mappers (and flushes) of every later test.

_ISOLATED_PRELUDE = """
import os, psycopg
from typing import Any
from retort import DeclarativeBase, ForeignKey, Mapped, Session, create_engine, mapped_column
engine = create_engine(os.environ["RETORT_ISOLATED_URL"])
schema = os.environ["RETORT_ISOLATED_SCHEMA"]
admin = psycopg.connect(os.environ["RETORT_ISOLATED_CONNINFO"], autocommit=True)
log: list[str] = []
engine._statement_hooks.append(lambda sql, params: log.append(sql))
"""


def _run_isolated(engine: Engine, schema: str, body: str) -> None:
    """Run `body` (after a prelude defining engine, schema, admin and log) in a new process."""
    import os
    import subprocess
    import sys
    import textwrap

    url = engine.url
    env = {
        **os.environ,
        "RETORT_ISOLATED_URL": url.render_as_string(hide_password=False),
        "RETORT_ISOLATED_SCHEMA": schema,
        "RETORT_ISOLATED_CONNINFO": psycopg.conninfo.make_conninfo("", **url.connect_kwargs()),
    }
    script = _ISOLATED_PRELUDE + textwrap.dedent(body) + "\nengine.dispose()\n"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(f"isolated test failed:\n{proc.stderr[-4000:]}", pytrace=False)


def test_use_alter_allows_mutually_referencing_tables(engine: Engine, schema: str) -> None:
    _run_isolated(
        engine,
        schema,
        """
        class Base(DeclarativeBase):
            pass

        class Team(Base):
            __tablename__ = "teams"
            id: Mapped[int] = mapped_column(primary_key=True)
            captain_id: Mapped[int | None] = mapped_column(
                ForeignKey("players.id", use_alter=True, name="fk_team_captain")
            )

        class Player(Base):
            __tablename__ = "players"
            id: Mapped[int] = mapped_column(primary_key=True)
            team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))

        Base.metadata.create_all(engine)
        ddl = [q for q in log if q.startswith(("CREATE", "ALTER"))]
        def first(prefix):
            return next(i for i, q in enumerate(ddl) if q.startswith(prefix))
        assert first("CREATE TABLE teams") < first("CREATE TABLE players") < first(
            "ALTER TABLE teams"
        ), ddl
        assert "fk_team_captain" in ddl[first("ALTER TABLE teams")]
        fks = {
            (r[0].split(".")[-1], r[1].split(".")[-1])
            for r in admin.execute(
                "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text "
                "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE n.nspname = %s AND c.contype = 'f'",
                (schema,),
            )
        }
        assert fks == {("teams", "players"), ("players", "teams")}, fks
        # the constraints really exist: a dangling reference is refused
        try:
            admin.execute(f"INSERT INTO {schema}.teams (id, captain_id) VALUES (1, 99)")
        except psycopg.errors.ForeignKeyViolation:
            pass
        else:
            raise AssertionError("the use_alter foreign key was not created")

        # the mapped classes can be used: the cycle goes through nullable columns
        with Session(engine) as s:
            team = Team()
            s.add(team)
            s.flush()
            player = Player(team_id=team.id)
            s.add(player)
            s.flush()
            team.captain_id = player.id
            s.commit()
        rows = admin.execute(
            f"SELECT t.captain_id = p.id, p.team_id = t.id "
            f"FROM {schema}.teams t, {schema}.players p"
        ).fetchall()
        assert rows == [(True, True)], rows

        Base.metadata.drop_all(engine)
        left = admin.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchone()
        assert left == (0,), left
        """,
    )


def test_models_of_one_registry_do_not_affect_flushes_of_another(
    engine: Engine, schema: str
) -> None:
    _run_isolated(
        engine,
        schema,
        """
        class Other(DeclarativeBase):
            pass

        # a registry whose tables reference each other (never created, never used)
        class Hen(Other):
            __tablename__ = "hens"
            id: Mapped[int] = mapped_column(primary_key=True)
            egg_id: Mapped[int | None] = mapped_column(ForeignKey("eggs.id", use_alter=True))

        class Egg(Other):
            __tablename__ = "eggs"
            id: Mapped[int] = mapped_column(primary_key=True)
            hen_id: Mapped[int | None] = mapped_column(ForeignKey("hens.id"))

        class Base(DeclarativeBase):
            pass

        class Plain(Base):
            __tablename__ = "plain"
            id: Mapped[int] = mapped_column(primary_key=True)

        Base.metadata.create_all(engine)
        with Session(engine) as s:
            s.add(Plain())
            s.commit()
        assert admin.execute(f"SELECT count(*) FROM {schema}.plain").fetchone() == (1,)
        """,
    )


def test_table_create_and_drop_one_table(engine: Engine, admin_conn: Conn, schema: str) -> None:
    class Base(DeclarativeBase):
        pass

    class One(Base):
        __tablename__ = "one"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    class Other(Base):
        __tablename__ = "other"
        id: Mapped[int] = mapped_column(primary_key=True)

    One.__table__.create(engine)
    assert _tables(admin_conn, schema) == {"one"}
    assert One.__table__.exists(engine)
    assert not Other.__table__.exists(engine)
    One.__table__.drop(engine)
    assert _tables(admin_conn, schema) == set()


def test_core_table_maps_through_dunder_table(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    from retort import Column

    class Base(DeclarativeBase):
        pass

    kv = Table(
        "kv",
        Base.metadata,
        Column("k", String(10), primary_key=True),
        Column("v", Integer, nullable=True),
    )

    class KV(Base):
        __table__ = kv

    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(KV(k="a", v=1))
        s.commit()
    assert admin_conn.execute(f"SELECT k, v FROM {schema}.kv").fetchall() == [("a", 1)]


def test_class_attributes_are_column_expressions() -> None:
    class Base(DeclarativeBase):
        pass

    class E(Base):
        __tablename__ = "e"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    assert E.name.__clause_element__() is E.__table__.c.name
    mapper = inspect(E)
    assert [c.key for c in mapper.columns] == ["id", "name"]
    assert mapper.columns_by_key["name"] is E.__table__.c.name
    assert mapper.class_ is E and mapper.local_table is E.__table__
    # comparisons build SQL, not booleans
    assert not isinstance(E.name == "x", bool)


def test_server_defaults_are_fetched_for_a_multi_row_insert(engine: Engine) -> None:
    class Base(DeclarativeBase):
        pass

    class SD(Base):
        __tablename__ = "sd_many"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column(server_default="unnamed")
        made: Mapped[dt.datetime] = mapped_column(
            DateTime(timezone=True), server_default=text("now()")
        )

    Base.metadata.create_all(engine)
    with Session(engine) as s:
        objs = [SD() for _ in range(3)]
        s.add_all(objs)
        s.flush()
        assert [o.label for o in objs] == ["unnamed"] * 3
        assert all(isinstance(o.made, dt.datetime) and o.made.tzinfo for o in objs)
        assert len({o.id for o in objs}) == 3


def test_onupdate_applies_to_each_row_of_a_set_update(engine: Engine) -> None:
    class Base(DeclarativeBase):
        pass

    class OU(Base):
        __tablename__ = "ou_many"
        id: Mapped[int] = mapped_column(primary_key=True)
        n: Mapped[int]
        touched: Mapped[str] = mapped_column(default="created", onupdate="updated")

    Base.metadata.create_all(engine)
    with Session(engine) as s:
        objs = [OU(n=i) for i in range(4)]
        s.add_all(objs)
        s.commit()
        for o in objs[:3]:
            o.n += 10
        s.commit()
        ids = [o.id for o in objs]
    with Session(engine) as s:
        got = [(o.n, o.touched) for o in (s.get(OU, i) for i in ids) if o is not None]
    assert got == [(10, "updated"), (11, "updated"), (12, "updated"), (3, "created")]


def test_primary_key_of_a_persistent_object_can_change(
    engine: Engine, admin_conn: Conn, schema: str
) -> None:
    class Base(DeclarativeBase):
        pass

    class K(Base):
        __tablename__ = "k"
        code: Mapped[str] = mapped_column(primary_key=True)
        v: Mapped[int]

    Base.metadata.create_all(engine)
    with Session(engine) as s:
        k = K(code="old", v=1)
        s.add(k)
        s.commit()
        k.code = "new"
        s.commit()
        assert s.get(K, "new") is k
        assert inspect(k).identity == ("new",)
    assert admin_conn.execute(f"SELECT code, v FROM {schema}.k").fetchall() == [("new", 1)]
