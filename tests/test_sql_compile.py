"""Compilation of expressions and statements to exact SQL text and parameters."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from retort import exc
from retort.sql import (
    ARRAY,
    JSON,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    compile,
    delete,
    desc,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
    text,
    true,
    update,
)
from retort.sql.compiler import EntityShape, ResultColumn
from retort.sql.elements import ColumnOperators


class Color(enum.Enum):
    RED = 1
    GREEN = 2


md = MetaData()
users = Table(
    "users",
    md,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
    Column("age", Integer),
    Column("color", Enum(Color)),
    Column("prefs", JSON),
    Column("created", DateTime(timezone=True)),
    Column("tags", ARRAY(String)),
)
addresses = Table(
    "addresses",
    md,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id")),
    Column("email", String),
)
order = Table(
    "order",
    md,
    Column("id", Integer, primary_key=True),
    Column("UserId", ForeignKey("users.id")),
)


def sql(stmt: Any, params: Any = None) -> str:
    return compile(stmt, params).sql


def where(*crit: Any) -> tuple[str, Any]:
    c = compile(select(users.c.id).where(*crit))
    prefix = "SELECT users.id FROM users WHERE "
    assert c.sql.startswith(prefix), c.sql
    return c.sql[len(prefix) :], c.params


# Fake mapped class: the documented duck-typed seam (docs/internals.md), nothing more.
class _Mapper:
    def __init__(self, cls: type, table: Table) -> None:
        self.class_ = cls
        self.local_table = table
        self.columns = list(table.columns)
        self.columns_by_key = {c.key: c for c in table.columns}
        self.primary_key = table.primary_key


class MappedAttr(ColumnOperators):
    def __init__(self, column: Column) -> None:
        self.column = column

    def __clause_element__(self) -> Column:
        return self.column


class User:
    __mapper__ = _Mapper(object, users)
    id = MappedAttr(users.c.id)
    name = MappedAttr(users.c.name)


User.__mapper__.class_ = User


class Address:
    __mapper__ = _Mapper(object, addresses)
    id = MappedAttr(addresses.c.id)
    user_id = MappedAttr(addresses.c.user_id)
    email = MappedAttr(addresses.c.email)


# -- comparison operators --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (users.c.age == 5, "users.age = %(age_1)s"),
        (users.c.age != 5, "users.age <> %(age_1)s"),
        (users.c.age < 5, "users.age < %(age_1)s"),
        (users.c.age <= 5, "users.age <= %(age_1)s"),
        (users.c.age > 5, "users.age > %(age_1)s"),
        (users.c.age >= 5, "users.age >= %(age_1)s"),
        (users.c.age == None, "users.age IS NULL"),  # noqa: E711
        (users.c.age != None, "users.age IS NOT NULL"),  # noqa: E711
        (users.c.age.is_(None), "users.age IS NULL"),
        (users.c.age.is_not(None), "users.age IS NOT NULL"),
        (users.c.age == null(), "users.age IS NULL"),
        (users.c.name.like("a%"), "users.name LIKE %(name_1)s"),
        (users.c.name.ilike("a%"), "users.name ILIKE %(name_1)s"),
        (users.c.name.not_like("a%"), "users.name NOT LIKE %(name_1)s"),
        (users.c.age.in_([1, 2, 3]), "users.age IN (%(age_1)s, %(age_2)s, %(age_3)s)"),
        (users.c.age.not_in([1]), "users.age NOT IN (%(age_1)s)"),
        (users.c.age.between(1, 9), "users.age BETWEEN %(age_1)s AND %(age_2)s"),
        (users.c.age.is_distinct_from(3), "users.age IS DISTINCT FROM %(age_1)s"),
    ],
)
def test_comparison(expr: Any, expected: str) -> None:
    text_, _ = where(expr)
    assert text_.startswith(expected)


def test_where_adds_its_tables_to_from() -> None:
    assert sql(select(users.c.id).where(users.c.id == addresses.c.user_id)) == (
        "SELECT users.id FROM users, addresses WHERE users.id = addresses.user_id"
    )


def test_in_empty_list_is_false_and_not_in_empty_is_true() -> None:
    assert where(users.c.age.in_([])) == ("false", {})
    assert where(users.c.age.not_in([])) == ("true", {})


def test_in_rejects_a_string() -> None:
    with pytest.raises(exc.ArgumentError, match="list of values"):
        users.c.name.in_("abc")


def test_compare_none_with_ordering_operator_is_an_error() -> None:
    with pytest.raises(exc.ArgumentError, match="None"):
        users.c.age < None  # noqa: B015


def test_in_subquery() -> None:
    s = select(users.c.id).where(users.c.id.in_(select(addresses.c.user_id)))
    assert sql(s) == (
        "SELECT users.id FROM users WHERE users.id IN (SELECT addresses.user_id FROM addresses)"
    )


def test_parameters_are_values() -> None:
    c = compile(select(users.c.id).where(users.c.age.in_([1, 2]), users.c.name == "x"))
    assert c.params == {"age_1": 1, "age_2": 2, "name_1": "x"}


def test_enum_and_json_parameters_are_bind_processed_with_the_column_type() -> None:
    c = compile(select(users.c.id).where(users.c.color == Color.RED, users.c.prefs == {"a": 1}))
    assert c.params["color_1"] == "RED"
    assert isinstance(c.params["prefs_1"], Jsonb)
    assert c.params["prefs_1"].obj == {"a": 1}
    c = compile(select(users.c.id).where(users.c.color.in_([Color.GREEN, "RED"])))
    assert c.params == {"color_1": "GREEN", "color_2": "RED"}


def test_enum_parameter_rejects_bad_values() -> None:
    with pytest.raises(exc.ArgumentError, match="BLUE"):
        compile(select(users.c.id).where(users.c.color == "BLUE"))


# -- boolean logic -------------------------------------------------------------------------


def test_and_or_not() -> None:
    expr = and_(users.c.age > 1, or_(users.c.name == "a", users.c.name == "b"))
    assert where(expr)[0] == (
        "users.age > %(age_1)s AND (users.name = %(name_1)s OR users.name = %(name_2)s)"
    )
    expr = or_(users.c.age > 1, and_(users.c.name == "a", users.c.age < 3))
    assert where(expr)[0] == (
        "users.age > %(age_1)s OR (users.name = %(name_1)s AND users.age < %(age_2)s)"
    )


def test_and_flattens_and_where_joins_with_and() -> None:
    assert where(and_(and_(users.c.age > 1, users.c.age < 5), users.c.id == 2), true())[0] == (
        "users.age > %(age_1)s AND users.age < %(age_2)s AND users.id = %(id_1)s AND true"
    )


def test_empty_and_adds_nothing() -> None:
    assert sql(select(users.c.id).where(and_())) == "SELECT users.id FROM users"


def test_not_inverts_comparisons() -> None:
    assert where(not_(users.c.age == 5))[0] == "users.age <> %(age_1)s"
    assert where(~(users.c.age < 5))[0] == "users.age >= %(age_1)s"
    assert where(not_(users.c.age.in_([1])))[0] == "users.age NOT IN (%(age_1)s)"
    assert where(not_(users.c.age == None))[0] == "users.age IS NOT NULL"  # noqa: E711
    assert where(not_(users.c.age.between(1, 2)))[0] == (
        "users.age NOT BETWEEN %(age_1)s AND %(age_2)s"
    )
    assert where(not_(or_(users.c.age == 1, users.c.age == 2)))[0] == (
        "NOT (users.age = %(age_1)s OR users.age = %(age_2)s)"
    )
    assert where(not_(not_(or_(users.c.age == 1, users.c.age == 2))))[0] == (
        "users.age = %(age_1)s OR users.age = %(age_2)s"
    )
    assert where(not_(true()))[0] == "false"


def test_python_and_or_operators_on_conditions() -> None:
    expr = (users.c.age > 1) & (users.c.age < 5) | (users.c.id == 1)
    assert where(expr)[0] == (
        "(users.age > %(age_1)s AND users.age < %(age_2)s) OR users.id = %(id_1)s"
    )


def test_truth_value_of_expression() -> None:
    assert bool(users.c.id == users.c.id) is True
    assert bool(users.c.id == users.c.age) is False
    assert bool(users.c.id != users.c.age) is True
    with pytest.raises(TypeError, match="and_"):
        bool(users.c.id < users.c.age)
    # schema objects are plainly true; only conditions refuse a truth value
    assert bool(users.c.id) and bool(users) and bool(users.alias())
    with pytest.raises(TypeError):
        bool(and_(users.c.id == 1, users.c.age == 2))
    # identity semantics make `in` on lists of columns work
    assert users.c.id in [users.c.name, users.c.id]
    assert users.c.age not in [users.c.name, users.c.id]
    assert {users.c.id: 1}[users.c.id] == 1


# -- arithmetic, functions, labels --------------------------------------------------------


def test_arithmetic_and_precedence() -> None:
    c = compile(select((users.c.age + 1) * 2))
    assert c.sql == "SELECT (users.age + %(age_1)s) * %(age_2)s FROM users"
    assert [r.name for r in c.columns] == ["anon_1"]
    assert sql(select(users.c.age - (users.c.id - 1))) == (
        "SELECT users.age - (users.id - %(id_1)s) FROM users"
    )
    assert sql(select(users.c.age - users.c.id - 1)) == (
        "SELECT users.age - users.id - %(age_1)s FROM users"
    )
    assert sql(select(10 - users.c.age)) == "SELECT %(age_1)s - users.age FROM users"
    assert sql(select(-users.c.age)) == "SELECT -users.age FROM users"
    negated = -users.c.age
    assert sql(select(-negated)) == "SELECT -(-users.age) FROM users"
    assert sql(select(users.c.age % 3)) == "SELECT users.age %% %(age_1)s FROM users"


def test_string_plus_is_concatenation() -> None:
    assert sql(select(users.c.name + "!")) == "SELECT users.name || %(name_1)s FROM users"


def test_functions() -> None:
    assert sql(select(func.count()).select_from(users)) == "SELECT count(*) FROM users"
    assert sql(select(func.count(users.c.id))) == "SELECT count(users.id) FROM users"
    assert sql(select(func.lower(users.c.name))) == "SELECT lower(users.name) FROM users"
    assert sql(select(func.now())) == "SELECT now()"
    assert sql(select(func.current_timestamp())) == "SELECT CURRENT_TIMESTAMP"
    assert sql(select(func.pg_catalog.version())) == "SELECT pg_catalog.version()"
    assert sql(select(func.coalesce(users.c.age, 0))) == (
        "SELECT coalesce(users.age, %(param_1)s) FROM users"
    )
    assert sql(select(func.count(users.c.id.distinct()))) == (
        "SELECT count(DISTINCT users.id) FROM users"
    )


def test_function_result_types_and_names() -> None:
    c = compile(select(func.count(), func.max(users.c.color), func.lower(users.c.name)))
    assert [r.name for r in c.columns] == ["count", "max", "lower"]
    assert isinstance(c.columns[1].type, Enum)
    assert isinstance(c.columns[2].type, String)


def test_labels() -> None:
    c = compile(select(users.c.name.label("n"), func.count(users.c.id).label("order")))
    assert c.sql == 'SELECT users.name AS n, count(users.id) AS "order" FROM users'
    assert [r.name for r in c.columns] == ["n", "order"]


def test_order_by_label_name() -> None:
    lbl = func.count(users.c.id).label("cnt")
    s = select(users.c.name, lbl).group_by(users.c.name).order_by("cnt", desc("cnt"), lbl)
    assert sql(s) == (
        "SELECT users.name, count(users.id) AS cnt FROM users GROUP BY users.name "
        "ORDER BY cnt, cnt DESC, cnt"
    )
    with pytest.raises(exc.CompileError, match="no label 'nope'"):
        sql(select(users.c.id).order_by(desc("nope")))


def test_cast_case_literal() -> None:
    assert sql(select(cast(users.c.age, String(10)))) == (
        "SELECT CAST(users.age AS VARCHAR(10)) FROM users"
    )
    assert sql(select(case((users.c.age > 1, "big"), else_="small"))) == (
        "SELECT CASE WHEN users.age > %(age_1)s THEN %(param_1)s ELSE %(param_2)s END FROM users"
    )
    c = compile(select(literal(5), literal_column("'x'"), false()))
    assert c.sql == "SELECT %(param_1)s, 'x', false"
    assert c.params == {"param_1": 5}


def test_like_helpers() -> None:
    assert where(users.c.name.startswith("ab"))[0] == "users.name LIKE %(name_1)s || '%%'"
    assert where(users.c.name.contains("ab"))[0] == "users.name LIKE '%%' || %(name_1)s || '%%'"
    text_, params = where(users.c.name.endswith("a_b", autoescape=True))
    assert text_ == "users.name LIKE '%%' || %(name_1)s ESCAPE '/'"
    assert params == {"name_1": "a/_b"}
    assert where(users.c.name.like("a!%", escape="!"))[0] == "users.name LIKE %(name_1)s ESCAPE '!'"


def test_order_by_modifiers() -> None:
    s = select(users.c.id).order_by(users.c.name.desc().nulls_last(), users.c.age.asc())
    assert sql(s) == "SELECT users.id FROM users ORDER BY users.name DESC NULLS LAST, users.age ASC"
    assert sql(s.order_by(None)) == "SELECT users.id FROM users"


# -- quoting ----------------------------------------------------------------------------------


def test_reserved_and_mixed_case_names_are_quoted() -> None:
    assert sql(select(order.c.UserId).where(order.c.id == 1)) == (
        'SELECT "order"."UserId" FROM "order" WHERE "order".id = %(id_1)s'
    )


# -- select -----------------------------------------------------------------------------------


def test_select_full() -> None:
    s = (
        select(users.c.id, users.c.name)
        .where(users.c.age > 18)
        .order_by(users.c.name)
        .limit(10)
        .offset(20)
        .distinct()
    )
    assert sql(s) == (
        "SELECT DISTINCT users.id, users.name FROM users WHERE users.age > %(age_1)s "
        "ORDER BY users.name LIMIT 10 OFFSET 20"
    )


def test_select_is_generative() -> None:
    base = select(users.c.id)
    filtered = base.where(users.c.id == 1)
    assert sql(base) == "SELECT users.id FROM users"
    assert sql(filtered) == "SELECT users.id FROM users WHERE users.id = %(id_1)s"
    assert sql(base.limit(1)) == "SELECT users.id FROM users LIMIT 1"
    assert sql(base) == "SELECT users.id FROM users"


def test_limit_validation() -> None:
    with pytest.raises(exc.ArgumentError):
        select(users.c.id).limit(-1)
    with pytest.raises(exc.ArgumentError):
        select(users.c.id).limit("1")  # type: ignore[arg-type]
    assert sql(select(users.c.id).limit(1).limit(None)) == "SELECT users.id FROM users"


def test_select_table_and_result_columns() -> None:
    c = compile(select(addresses))
    assert c.sql == "SELECT addresses.id, addresses.user_id, addresses.email FROM addresses"
    assert [r.name for r in c.columns] == ["id", "user_id", "email"]
    assert isinstance(c.columns[1].type, Integer)  # from the foreign key
    assert c.entities == [EntityShape(None, 0, 1), EntityShape(None, 1, 1), EntityShape(None, 2, 1)]


def test_select_mapped_class_entities() -> None:
    c = compile(select(User, Address.email, func.count()).join(Address).group_by(users.c.id))
    assert c.sql == (
        "SELECT users.id, users.name, users.age, users.color, users.prefs, users.created, "
        "users.tags, addresses.email, count(*) FROM users "
        "JOIN addresses ON addresses.user_id = users.id "
        "GROUP BY users.id"
    )
    assert c.entities == [
        EntityShape(User.__mapper__, 0, 7),
        EntityShape(None, 7, 1),
        EntityShape(None, 8, 1),
    ]
    assert c.columns[3] == ResultColumn("color", users.c.color.type)


def test_mapped_attributes_have_operators() -> None:
    c = compile(
        select(User).where(User.name == "ann", User.id.in_([1, 2])).order_by(User.id.desc())
    )
    assert c.sql.endswith(
        "FROM users WHERE users.name = %(name_1)s AND users.id IN (%(id_1)s, %(id_2)s) "
        "ORDER BY users.id DESC"
    )
    assert bool(User.id == User.id)
    assert hash(User.id) == object.__hash__(User.id)


def test_filter_by_uses_primary_entity_or_last_join() -> None:
    assert sql(select(User).filter_by(name="x")).endswith("WHERE users.name = %(name_1)s")
    assert sql(select(User).join(Address).filter_by(email="e")).endswith(
        "WHERE addresses.email = %(email_1)s"
    )
    assert sql(select(users.c.id).filter_by(age=1)).endswith("WHERE users.age = %(age_1)s")
    with pytest.raises(exc.InvalidRequestError, match="nope"):
        select(User).filter_by(nope=1)


def test_select_from_and_count() -> None:
    assert sql(select(func.count()).select_from(User).where(User.name == "x")) == (
        "SELECT count(*) FROM users WHERE users.name = %(name_1)s"
    )


def test_join_explicit_onclause_and_outer() -> None:
    s = select(users.c.name, addresses.c.email).outerjoin(
        addresses,
        and_(addresses.c.user_id == users.c.id, addresses.c.email != None),  # noqa: E711
    )
    assert sql(s) == (
        "SELECT users.name, addresses.email FROM users LEFT OUTER JOIN addresses "
        "ON addresses.user_id = users.id AND addresses.email IS NOT NULL"
    )
    s = select(addresses.c.email).select_from(users).join(addresses)
    assert sql(s) == (
        "SELECT addresses.email FROM users JOIN addresses ON addresses.user_id = users.id"
    )


def test_join_without_fk_path_is_an_error() -> None:
    other = Table("other", MetaData(), Column("id", Integer, primary_key=True))
    with pytest.raises(exc.ArgumentError, match="ON clause"):
        sql(select(users.c.id).join(other))


def test_join_ambiguous_fk_paths_is_an_error() -> None:
    m = MetaData()
    a = Table("a", m, Column("id", Integer, primary_key=True))
    b = Table(
        "b",
        m,
        Column("id", Integer, primary_key=True),
        Column("a1", ForeignKey("a.id")),
        Column("a2", ForeignKey("a.id")),
    )
    with pytest.raises(exc.ArgumentError, match="2 foreign key paths"):
        sql(select(a.c.id).join(b))
    assert sql(select(a.c.id).join(b, b.c.a2 == a.c.id)) == (
        "SELECT a.id FROM a JOIN b ON b.a2 = a.id"
    )


def test_self_join_with_alias() -> None:
    m = MetaData()
    node = Table(
        "node",
        m,
        Column("id", Integer, primary_key=True),
        Column("parent_id", ForeignKey("node.id")),
    )
    parent = node.alias("parent")
    s = select(node.c.id, parent.c.id.label("pid")).join(parent, node.c.parent_id == parent.c.id)
    assert sql(s) == (
        "SELECT node.id, parent.id AS pid FROM node JOIN node AS parent "
        "ON node.parent_id = parent.id"
    )


def test_subquery() -> None:
    sub = (
        select(addresses.c.user_id, func.count().label("n"))
        .group_by(addresses.c.user_id)
        .subquery()
    )
    s = select(users.c.name, sub.c.n).join(sub, sub.c.user_id == users.c.id)
    assert sql(s) == (
        "SELECT users.name, anon_1.n FROM users JOIN (SELECT addresses.user_id, count(*) AS n "
        "FROM addresses GROUP BY addresses.user_id) AS anon_1 ON anon_1.user_id = users.id"
    )


def test_scalar_subquery_is_correlated() -> None:
    count = (
        select(func.count(addresses.c.id))
        .where(addresses.c.user_id == users.c.id)
        .scalar_subquery()
    )
    assert sql(select(users.c.name, count.label("n"))) == (
        "SELECT users.name, (SELECT count(addresses.id) FROM addresses "
        "WHERE addresses.user_id = users.id) AS n FROM users"
    )


def test_exists() -> None:
    s = select(users.c.id).where(exists().where(addresses.c.user_id == users.c.id))
    assert sql(s) == (
        "SELECT users.id FROM users WHERE EXISTS (SELECT 1 FROM addresses "
        "WHERE addresses.user_id = users.id)"
    )
    s = select(users.c.id).where(
        ~select(addresses.c.id).where(addresses.c.user_id == users.c.id).exists()
    )
    assert sql(s) == (
        "SELECT users.id FROM users WHERE NOT EXISTS (SELECT addresses.id FROM addresses "
        "WHERE addresses.user_id = users.id)"
    )


def test_with_for_update() -> None:
    base = select(users.c.id)
    assert sql(base.with_for_update()) == "SELECT users.id FROM users FOR UPDATE"
    assert sql(base.with_for_update(nowait=True)) == "SELECT users.id FROM users FOR UPDATE NOWAIT"
    assert sql(base.with_for_update(read=True, skip_locked=True)) == (
        "SELECT users.id FROM users FOR SHARE SKIP LOCKED"
    )
    assert sql(base.with_for_update(of=User)) == "SELECT users.id FROM users FOR UPDATE OF users"
    assert sql(base.with_for_update(of=order.c.id)) == (
        'SELECT users.id FROM users FOR UPDATE OF "order"'
    )
    assert sql(base.with_for_update(key_share=True)) == (
        "SELECT users.id FROM users FOR NO KEY UPDATE"
    )


def test_distinct_on_group_by_having() -> None:
    s = (
        select(users.c.name, func.count())
        .group_by(users.c.name)
        .having(func.count() > 1)
        .distinct(users.c.name)
    )
    assert sql(s) == (
        "SELECT DISTINCT ON (users.name) users.name, count(*) FROM users GROUP BY users.name "
        "HAVING count(*) > %(count_1)s"
    )


def test_options_and_execution_options_are_stored() -> None:
    opt = object()
    s = select(User).options(opt).execution_options(populate_existing=True)
    assert s._with_options == (opt,)
    assert s.get_execution_options() == {"populate_existing": True}
    assert select(User).get_execution_options() == {}


def test_select_rejects_strings() -> None:
    with pytest.raises(exc.ArgumentError, match="literal_column"):
        select("id")
    with pytest.raises(exc.ArgumentError, match="text"):
        select(users.c.id).where("id = 1")


def test_bindparam_values_at_execution() -> None:
    s = select(users.c.id).where(users.c.id == bindparam("uid"))
    assert compile(s, {"uid": 3}).params == {"uid": 3}
    with pytest.raises(exc.ArgumentError, match="uid"):
        compile(s)
    many = compile(s, [{"uid": 1}, {"uid": 2}])
    assert many.params == [{"uid": 1}, {"uid": 2}]


# -- text ------------------------------------------------------------------------------------


def test_text_parameters_casts_and_escapes() -> None:
    c = compile(
        text(r"SELECT :a::int, '5 % 2', x::text, '\:b', :a, t.ts AT TIME ZONE 'UTC' FROM t"),
        {"a": 1},
    )
    assert c.sql == (
        "SELECT %(a)s::int, '5 %% 2', x::text, ':b', %(a)s, t.ts AT TIME ZONE 'UTC' FROM t"
    )
    assert c.params == {"a": 1}


def test_text_requires_values() -> None:
    with pytest.raises(exc.ArgumentError, match="'a'"):
        compile(text("SELECT :a"))


def test_text_bindparams_values_and_types() -> None:
    t = text("SELECT :c, :d").bindparams(bindparam("c", type_=Enum(Color)), d={"k": 1})
    c = compile(t, {"c": Color.GREEN})
    assert c.params["c"] == "GREEN"
    assert isinstance(c.params["d"], Jsonb)
    with pytest.raises(exc.ArgumentError, match=":zz"):
        text("SELECT :c").bindparams(zz=1)


def test_text_in_where_and_columns() -> None:
    s = select(users.c.id).where(text("users.age > :age")).order_by(text("users.id DESC"))
    c = compile(s, {"age": 3})
    assert c.sql == "SELECT users.id FROM users WHERE users.age > %(age)s ORDER BY users.id DESC"
    ts = text("SELECT 1 AS n, 'RED' AS color").columns(literal_column("n"), color=Enum(Color))
    c = compile(ts)
    assert [r.name for r in c.columns] == ["n", "color"]
    assert isinstance(c.columns[1].type, Enum)


def test_plain_string_compiles_escaped() -> None:
    assert compile("SELECT 5 % 2").sql == "SELECT 5 %% 2"
    assert compile("SELECT %s", [1]).sql == "SELECT %s"


def test_str_of_statement() -> None:
    assert str(users.c.id == 5) == "users.id = %(id_1)s"
    assert str(select(users.c.id)) == "SELECT users.id FROM users"


# -- DML ---------------------------------------------------------------------------------------


def test_insert() -> None:
    c = compile(insert(users).values(name="ann", color=Color.RED).returning(users.c.id))
    assert c.sql == (
        "INSERT INTO users (name, color) VALUES (%(name)s, %(color)s) RETURNING users.id"
    )
    assert c.params == {"name": "ann", "color": "RED"}
    assert c.columns == [ResultColumn("id", users.c.id.type)]


def test_insert_from_execution_parameters_and_executemany() -> None:
    c = compile(insert(users), [{"name": "a", "age": 1}, {"name": "b", "age": 2}])
    assert c.sql == "INSERT INTO users (name, age) VALUES (%(name)s, %(age)s)"
    assert c.params == [{"name": "a", "age": 1}, {"name": "b", "age": 2}]


def test_insert_multi_values_and_python_defaults() -> None:
    m = MetaData()
    calls = []

    def next_value() -> int:
        calls.append(1)
        return len(calls)

    t = Table(
        "t",
        m,
        Column("id", Integer, primary_key=True),
        Column("x", Integer),
        Column("d", Integer, default=next_value),
        Column("k", String, default="kk"),
    )
    c = compile(insert(t).values([{"x": 1}, {"x": 2}]))
    assert c.sql == (
        "INSERT INTO t (x, d, k) VALUES (%(x_m0)s, %(d_1)s, %(k_1)s), (%(x_m1)s, %(d_2)s, %(k_2)s)"
    )
    assert c.params == {"x_m0": 1, "d_1": 1, "k_1": "kk", "x_m1": 2, "d_2": 2, "k_2": "kk"}
    c = compile(insert(t), [{"x": 5}, {"x": 6}])
    assert c.params == [{"x": 5, "d_1": 3, "k_1": "kk"}, {"x": 6, "d_1": 4, "k_1": "kk"}]


def test_update_and_delete() -> None:
    c = compile(
        update(users)
        .where(users.c.id == 5)
        .values(age=users.c.age + 1, name="x")
        .returning(users.c.age)
    )
    assert c.sql == (
        "UPDATE users SET age=users.age + %(age_1)s, name=%(name)s WHERE users.id = %(id_1)s "
        "RETURNING users.age"
    )
    assert c.params == {"id_1": 5, "age_1": 1, "name": "x"}
    assert (
        sql(delete(users).where(users.c.id == 5)) == "DELETE FROM users WHERE users.id = %(id_1)s"
    )
    assert sql(delete(User).where(User.id == bindparam("pk")), {"pk": 1}) == (
        "DELETE FROM users WHERE users.id = %(pk)s"
    )


def test_update_executemany_set_from_parameters() -> None:
    stmt = update(users).where(users.c.id == bindparam("pk"))
    c = compile(stmt, [{"pk": 1, "name": "a"}, {"pk": 2, "name": "b"}])
    assert c.sql == "UPDATE users SET name=%(name)s WHERE users.id = %(pk)s"
    assert c.params == [{"pk": 1, "name": "a"}, {"pk": 2, "name": "b"}]


def test_update_without_values_is_an_error() -> None:
    with pytest.raises(exc.CompileError, match="values"):
        compile(update(users).where(users.c.id == 1))


def test_update_with_other_table_in_where_uses_from() -> None:
    s = update(addresses).where(addresses.c.user_id == users.c.id, users.c.name == "x")
    assert sql(s.values(email="e")) == (
        "UPDATE addresses SET email=%(email)s FROM users WHERE addresses.user_id = users.id "
        "AND users.name = %(name_1)s"
    )


# -- PostgreSQL specifics ----------------------------------------------------------------------


def test_in_with_one_list_parameter_uses_any() -> None:
    c = compile(
        select(users.c.id).where(
            users.c.color.in_(bindparam("cs")), users.c.id.in_(bindparam("ids"))
        ),
        {"cs": [Color.RED, "GREEN"], "ids": []},
    )
    assert c.sql == (
        "SELECT users.id FROM users WHERE users.color = ANY (%(cs)s::varchar[]) "
        "AND users.id = ANY (%(ids)s::int4[])"
    )
    assert c.params == {"cs": ["RED", "GREEN"], "ids": []}
    for crit in (not_(users.c.id.in_(bindparam("ids"))), users.c.id.not_in(bindparam("ids"))):
        c = compile(select(users.c.id).where(crit), {"ids": [1]})
        assert c.sql == "SELECT users.id FROM users WHERE users.id <> ALL (%(ids)s::int4[])"


def test_json_paths_and_containment() -> None:
    text_, params = where(
        users.c.prefs["a"]["b"].astext == "x",
        users.c.prefs["n"].as_integer() > 3,
        users.c.prefs[0] == {"k": 1},
        users.c.prefs.contains({"a": 1}),
        users.c.tags.contains(["t"]),
    )
    assert text_ == (
        "users.prefs -> %(prefs_1)s ->> %(prefs_2)s = %(prefs_3)s "
        "AND CAST(users.prefs ->> %(prefs_4)s AS INTEGER) > %(param_1)s "
        "AND users.prefs -> %(prefs_5)s = %(prefs_6)s "
        "AND users.prefs @> %(prefs_7)s AND users.tags @> %(tags_1)s::varchar[]"
    )
    assert params["prefs_1"] == "a" and params["prefs_5"] == 0
    assert isinstance(params["prefs_6"], Jsonb) and isinstance(params["prefs_7"], Jsonb)
    assert params["tags_1"] == ["t"]


def test_columns_are_not_iterable() -> None:
    with pytest.raises(TypeError):
        iter(users.c.prefs)
    with pytest.raises(TypeError, match="subscriptable"):
        users.c.name["x"]


def test_join_through_a_relationship_like_attribute() -> None:
    class Rel:
        def __join_info__(self) -> tuple[Any, Any]:
            return Address, addresses.c.user_id == users.c.id

    assert sql(select(User).join(Rel())).endswith(
        "FROM users JOIN addresses ON addresses.user_id = users.id"
    )
    assert sql(select(User.id).join(Address, Rel())) == (
        "SELECT users.id FROM users JOIN addresses ON addresses.user_id = users.id"
    )
