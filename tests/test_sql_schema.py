"""Schema objects, DDL text, table ordering, and create_all / drop_all on a real database."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from retort import exc
from retort.sql import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    quote_identifier,
    select,
    text,
)
from retort.sql.compiler import RESERVED_WORDS, compile
from retort.sql.ddl import (
    AddConstraint,
    CreateTable,
    add_constraint_sql,
    create_index_sql,
    create_table_sql,
    drop_constraint_sql,
    table_indexes,
)

# -- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("users", "users"),
        ("user", '"user"'),
        ("order", '"order"'),
        ("UserId", '"UserId"'),
        ("my table", '"my table"'),
        ('we"ird', '"we""ird"'),
        ("1abc", '"1abc"'),
        ("a$b", "a$b"),
        ("_x9", "_x9"),
        ("time", "time"),  # a non-reserved key word works unquoted
    ],
)
def test_quote_identifier(name: str, quoted: str) -> None:
    assert quote_identifier(name) == quoted


def test_reserved_words_match_the_server(admin_conn: psycopg.Connection[Any]) -> None:
    rows = admin_conn.execute(
        "SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T')"
    ).fetchall()
    server = {r[0] for r in rows}
    assert server <= RESERVED_WORDS, sorted(server - RESERVED_WORDS)


# -- columns and tables -----------------------------------------------------------------------


def test_column_basics() -> None:
    m = MetaData()
    col = Column("user_name", String(20), key="name", nullable=False)
    t = Table("t", m, Column("id", Integer, primary_key=True), col)
    assert t.c.name is col
    assert t.c["name"] is col
    assert "name" in t.c and col in t.c
    assert [c.key for c in t.columns] == ["id", "name"]
    assert col.table is t and col.name == "user_name" and col.key == "name"
    assert t.primary_key == [t.c.id]
    assert t.c.id.nullable is False and col.nullable is False
    assert compile(select(col)).sql == "SELECT t.user_name FROM t"
    with pytest.raises(AttributeError, match="columns are"):
        t.c.nope  # noqa: B018


def test_column_defaults() -> None:
    counter = iter(range(10))
    c1 = Column("a", Integer, default=5)
    c2 = Column("b", Integer, default=lambda: next(counter))
    c3 = Column("c", Integer)
    c4 = Column("d", DateTime, onupdate=dt.datetime.now)
    assert c1.default_value() == 5
    assert [c2.default_value(), c2.default_value()] == [0, 1]
    assert c3.default_value() is None
    assert isinstance(c4.onupdate_value(), dt.datetime)
    with pytest.raises(exc.ArgumentError, match="takes arguments"):
        Column("e", Integer, default=lambda ctx: 1)


def test_bad_arguments() -> None:
    with pytest.raises(exc.ArgumentError, match="referential action"):
        ForeignKey("a.id", ondelete="explode")
    with pytest.raises(exc.ArgumentError, match=r"table\.column"):
        ForeignKey("nodot")
    with pytest.raises(exc.ArgumentError, match="server_default"):
        Column("x", Integer, server_default=5)
    m = MetaData()
    Table("t", m, Column("id", Integer, primary_key=True))
    with pytest.raises(exc.ArgumentError, match="already defined"):
        Table("t", m, Column("id", Integer, primary_key=True))
    with pytest.raises(exc.ArgumentError, match="already has a column"):
        Table("u", m, Column("id", Integer), Column("id", Integer))
    with pytest.raises(exc.ArgumentError, match="no name"):
        Table("v", m, Column(Integer))


def test_foreign_key_type_is_resolved_lazily() -> None:
    m = MetaData()
    child = Table(
        "child", m, Column("id", Integer, primary_key=True), Column("pid", ForeignKey("parent.id"))
    )
    assert child.c.pid.type.__class__.__name__ == "NullType"
    with pytest.raises(exc.ArgumentError, match="'parent'"):
        child.c.pid.foreign_keys[0].column  # noqa: B018
    parent = Table("parent", m, Column("id", String(8), primary_key=True))
    assert child.c.pid.type == String(8)
    assert child.c.pid.foreign_keys[0].column is parent.c.id
    assert child.c.pid.references(parent.c.id)
    assert child.foreign_keys[0].references(parent)


def test_autoincrement_column_rules() -> None:
    m = MetaData()
    a = Table("a", m, Column("id", Integer, primary_key=True))
    b = Table("b", m, Column("id", String(5), primary_key=True))
    c = Table(
        "c", m, Column("x", Integer, primary_key=True), Column("y", Integer, primary_key=True)
    )
    d = Table("d", m, Column("id", Integer, primary_key=True, autoincrement=False))
    e = Table("e", m, Column("id", ForeignKey("a.id"), primary_key=True))
    f = Table("f", m, Column("id", Integer, primary_key=True, default=7))
    g = Table("g", m, Column("id", Integer, Identity(always=True, start=10), primary_key=True))
    assert a.autoincrement_column is a.c.id and a.c.id.is_identity
    assert [t.autoincrement_column for t in (b, c, d, e, f)] == [None] * 5
    assert g.autoincrement_column is g.c.id


# -- DDL text ---------------------------------------------------------------------------------


def _blog() -> MetaData:
    m = MetaData()
    Table(
        "post",
        m,
        Column("id", Integer, primary_key=True),
        Column("author_id", ForeignKey("user.id", ondelete="CASCADE"), nullable=False),
        Column("title", String(200), nullable=False, index=True),
        Column("slug", String(200), unique=True),
        Column("body", Text, server_default=""),
        Column("score", Numeric(10, 2), server_default="0"),
        Column("created", DateTime(timezone=True), server_default=text("now()")),
        Column("published", Boolean, nullable=False, server_default=text("false")),
        UniqueConstraint("author_id", "title", name="uq_post_author_title"),
        CheckConstraint("score >= 0", name="ck_score"),
    )
    Table(
        "user",
        m,
        Column("id", Integer, primary_key=True),
        Column("Name", String(50), nullable=False, unique=True, index=True),
    )
    return m


def test_create_table_sql() -> None:
    m = _blog()
    assert create_table_sql(m.tables["post"]) == (
        "CREATE TABLE post (\n"
        "    id INTEGER GENERATED BY DEFAULT AS IDENTITY NOT NULL,\n"
        "    author_id INTEGER NOT NULL,\n"
        "    title VARCHAR(200) NOT NULL,\n"
        "    slug VARCHAR(200),\n"
        "    body TEXT DEFAULT '',\n"
        "    score NUMERIC(10, 2) DEFAULT '0',\n"
        "    created TIMESTAMP WITH TIME ZONE DEFAULT now(),\n"
        "    published BOOLEAN DEFAULT false NOT NULL,\n"
        "    PRIMARY KEY (id),\n"
        "    UNIQUE (slug),\n"
        "    CONSTRAINT uq_post_author_title UNIQUE (author_id, title),\n"
        "    CONSTRAINT ck_score CHECK (score >= 0),\n"
        '    FOREIGN KEY (author_id) REFERENCES "user" (id) ON DELETE CASCADE\n'
        ")"
    )
    assert create_table_sql(m.tables["user"]) == (
        'CREATE TABLE "user" (\n'
        "    id INTEGER GENERATED BY DEFAULT AS IDENTITY NOT NULL,\n"
        '    "Name" VARCHAR(50) NOT NULL,\n'
        "    PRIMARY KEY (id)\n"
        ")"
    )
    assert [create_index_sql(i) for i in table_indexes(m.tables["user"])] == [
        'CREATE UNIQUE INDEX "ix_user_Name" ON "user" ("Name")'
    ]
    assert [create_index_sql(i) for i in table_indexes(m.tables["post"])] == [
        "CREATE INDEX ix_post_title ON post (title)"
    ]


def test_server_default_literal_is_quoted() -> None:
    m = MetaData()
    t = Table("t", m, Column("s", String, server_default="it's 100%"))
    assert "s VARCHAR DEFAULT 'it''s 100%'" in create_table_sql(t)
    # compile() of a DDL element escapes % for psycopg
    assert "DEFAULT 'it''s 100%%'" in compile(CreateTable(t)).sql


def test_server_default_sql_expression() -> None:
    m = MetaData()
    t = Table("t", m, Column("n", Integer, server_default=func.length("abc")))
    assert "n INTEGER DEFAULT length('abc')" in create_table_sql(t)


def test_identity_options_and_composite_keys() -> None:
    m = MetaData()
    Table("p", m, Column("a", Integer, primary_key=True), Column("b", Integer, primary_key=True))
    t = Table(
        "c",
        m,
        Column("id", Integer, Identity(start=100, increment=5)),
        Column("pa", Integer),
        Column("pb", Integer),
        PrimaryKeyConstraint("id", name="c_pk"),
        ForeignKeyConstraint(["pa", "pb"], ["p.a", "p.b"], name="fk_c_p", onupdate="cascade"),
    )
    assert create_table_sql(t) == (
        "CREATE TABLE c (\n"
        "    id INTEGER GENERATED BY DEFAULT AS IDENTITY (START WITH 100 INCREMENT BY 5)"
        " NOT NULL,\n"
        "    pa INTEGER,\n"
        "    pb INTEGER,\n"
        "    CONSTRAINT c_pk PRIMARY KEY (id),\n"
        "    CONSTRAINT fk_c_p FOREIGN KEY (pa, pb) REFERENCES p (a, b) ON UPDATE CASCADE\n"
        ")"
    )


def test_use_alter_constraint_sql() -> None:
    m = MetaData()
    Table(
        "a",
        m,
        Column("id", Integer, primary_key=True),
        Column("b_id", ForeignKey("b.id", use_alter=True)),
    )
    Table("b", m, Column("id", Integer, primary_key=True), Column("a_id", ForeignKey("a.id")))
    fkc = m.tables["a"].foreign_key_constraints[0]
    assert add_constraint_sql(fkc) == (
        "ALTER TABLE a ADD CONSTRAINT a_b_id_fkey FOREIGN KEY (b_id) REFERENCES b (id)"
    )
    assert drop_constraint_sql(fkc, if_exists=True) == (
        "ALTER TABLE a DROP CONSTRAINT IF EXISTS a_b_id_fkey"
    )
    assert compile(AddConstraint(fkc)).sql == add_constraint_sql(fkc)


# -- ordering ---------------------------------------------------------------------------------


def test_sorted_tables_follow_foreign_keys_with_definition_order_ties() -> None:
    m = MetaData()
    Table("c", m, Column("id", Integer, primary_key=True), Column("b_id", ForeignKey("b.id")))
    Table("z", m, Column("id", Integer, primary_key=True))
    Table("b", m, Column("id", Integer, primary_key=True), Column("a_id", ForeignKey("a.id")))
    Table("a", m, Column("id", Integer, primary_key=True), Column("a_id", ForeignKey("a.id")))
    Table("y", m, Column("id", Integer, primary_key=True))
    assert [t.name for t in m.sorted_tables] == ["z", "a", "b", "c", "y"]


def test_sorted_tables_with_a_cycle_is_deterministic() -> None:
    m = MetaData()
    Table("a", m, Column("id", Integer, primary_key=True), Column("b_id", ForeignKey("b.id")))
    Table("b", m, Column("id", Integer, primary_key=True), Column("a_id", ForeignKey("a.id")))
    ordered, alter = m._sort()
    assert [t.name for t in ordered] == ["a", "b"]
    assert [f.table.name for f in alter] == ["a"]  # a.b_id is added after b exists


# -- against the database ---------------------------------------------------------------------


def _tables(engine: Any) -> list[str]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        ).fetchall()
    return [r[0] for r in rows]


def test_create_all_and_drop_all(engine: Any, sql_log: list[tuple[str, Any]]) -> None:
    m = _blog()
    m.create_all(engine)
    assert _tables(engine) == ["post", "user"]
    ddl = [s for s, _p in sql_log if not s.startswith("SELECT")]
    assert [s.split("(")[0].strip() for s in ddl] == [
        'CREATE TABLE "user"',
        'CREATE UNIQUE INDEX "ix_user_Name" ON "user"',
        "CREATE TABLE post",
        "CREATE INDEX ix_post_title ON post",
    ]
    # checkfirst: a second create_all does nothing but look
    sql_log.clear()
    m.create_all(engine)
    assert all(s.startswith("SELECT to_regclass") for s, _p in sql_log)
    # the defaults work
    with engine.begin() as conn:
        conn.execute(insert(m.tables["user"]).values(Name="ann"))
        conn.execute(insert(m.tables["post"]).values(author_id=1, title="t"))
        row = conn.execute(select(m.tables["post"])).one()
    assert row.id == 1 and row.body == "" and row.published is False
    assert isinstance(row.created, dt.datetime) and row.created.tzinfo is not None
    m.drop_all(engine)
    assert _tables(engine) == []
    m.drop_all(engine)  # checkfirst: nothing to drop, no error


def test_create_all_without_checkfirst_fails_on_existing(engine: Any) -> None:
    m = _blog()
    m.create_all(engine)
    with pytest.raises(exc.ProgrammingError, match="already exists"):
        m.create_all(engine, checkfirst=False)


def test_mutual_references_with_use_alter(engine: Any) -> None:
    m = MetaData()
    Table(
        "team",
        m,
        Column("id", Integer, primary_key=True),
        Column("captain_id", ForeignKey("player.id", use_alter=True, name="fk_team_captain")),
    )
    Table(
        "player",
        m,
        Column("id", Integer, primary_key=True),
        Column("team_id", ForeignKey("team.id")),
    )
    m.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO team (id) VALUES (1)")
        conn.exec_driver_sql("INSERT INTO player (id, team_id) VALUES (7, 1)")
        conn.exec_driver_sql("UPDATE team SET captain_id = 7")
    with pytest.raises(exc.IntegrityError, match="fk_team_captain"), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE team SET captain_id = 99")
    m.drop_all(engine)
    assert _tables(engine) == []


def test_unnamed_cycle_is_created_and_dropped(engine: Any) -> None:
    m = MetaData()
    Table("a", m, Column("id", Integer, primary_key=True), Column("b_id", ForeignKey("b.id")))
    Table("b", m, Column("id", Integer, primary_key=True), Column("a_id", ForeignKey("a.id")))
    m.create_all(engine)
    with pytest.raises(exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO a (id, b_id) VALUES (1, 5)")
    m.drop_all(engine)
    assert _tables(engine) == []


def test_reserved_and_keyword_names_work(engine: Any) -> None:
    m = MetaData()
    t = Table(
        "order",
        m,
        Column("id", Integer, primary_key=True),
        Column("user", String(10)),
        Column("time", Integer),
        Column("Select", Integer, index=True),
        Column("group", Integer, ForeignKey("order.id")),
    )
    t.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(t).values(user="u", time=1, Select=2))
        row = conn.execute(select(t).where(t.c.user == "u").order_by(t.c.time)).one()
    assert tuple(row) == (1, "u", 1, 2, None)
    assert t.exists(engine)
    t.drop(engine)
    assert not t.exists(engine)


def test_ddl_on_a_connection_is_part_of_its_transaction(engine: Any) -> None:
    m = _blog()
    with engine.connect() as conn:
        m.create_all(conn)
        assert m.tables["post"].exists(conn)
        conn.rollback()
    assert _tables(engine) == []


def test_index_objects(engine: Any) -> None:
    m = MetaData()
    t = Table("t", m, Column("a", Integer), Column("b", Integer))
    ix = Index("ix_t_ab", t.c.a, t.c.b, unique=True)
    assert t.indexes == [ix]
    assert create_index_sql(ix) == "CREATE UNIQUE INDEX ix_t_ab ON t (a, b)"
    m.create_all(engine)
    with pytest.raises(exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 1), (1, 1)")
    ix.drop(engine)
    ix.drop(engine, checkfirst=True)
    ix.create(engine)
    ix.create(engine, checkfirst=True)
