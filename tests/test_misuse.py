"""A catalogue of misuse (issue 6, "Bad input").

Every case does one wrong thing and checks three promises of SPEC section 4:

1. the *specific* `retort.exc` class is raised (compared with ``type(err) is``, so a base class
   such as RetortError or InvalidRequestError does not pass for a subclass);
2. the message says what to do: each case names a phrase of the advice, not of the problem;
3. nothing reached the database (every table compared through `admin_conn`, a connection
   outside the engine), and the session goes on: rollback() where a flush failed, then a good
   commit.

tests/test_errors.py already covers add/delete of unmapped objects and of transient or pending
ones, get() with the wrong number of key values, inspect() of unmapped objects, unknown
constructor keywords, objects of another live session or whose identity is taken, and the
NOT NULL / unique / too-long / stale-data database errors; those are not repeated here.

Cases that need a change in session.py, flush.py or the Rust core are strict xfails whose reason
starts with "retort gap" (the fix is described there and in the issue report).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from retort import (
    BigInteger,
    DateTime,
    DeclarativeBase,
    ForeignKey,
    Mapped,
    Numeric,
    Session,
    String,
    event,
    exc,
    inspect,
    make_transient,
    make_transient_to_detached,
    mapped_column,
    object_session,
    relationship,
    select,
    text,
)
from retort.engine import Engine
from retort.mapping import configure_mappers

Conn = psycopg.Connection[Any]


class Mood(enum.Enum):
    HAPPY = "h"
    SAD = "s"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    nickname: Mapped[str | None]


class Pair(Base):
    __tablename__ = "pairs"
    a: Mapped[int] = mapped_column(primary_key=True)
    b: Mapped[int] = mapped_column(primary_key=True)


class Tag(Base):
    """A natural (client-given) string key."""

    __tablename__ = "tags"
    name: Mapped[str] = mapped_column(primary_key=True)
    note: Mapped[str | None]


class Thing(Base):
    """One column of each kind a bad value can be given to."""

    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True)
    i: Mapped[int | None]
    big: Mapped[int | None] = mapped_column(BigInteger)
    s5: Mapped[str | None] = mapped_column(String(5))
    s: Mapped[str | None]
    b: Mapped[bool | None]
    money: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    naive: Mapped[dt.datetime | None]
    aware: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    raw: Mapped[bytes | None]
    doc: Mapped[dict[str, Any] | None]
    mood: Mapped[Mood | None]
    u: Mapped[uuid.UUID | None]


class Parent(Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    children: Mapped[list[Child]] = relationship(
        back_populates="parent", cascade="all, delete-orphan"
    )


class Child(Base):
    __tablename__ = "children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("parents.id"))
    name: Mapped[str]
    parent: Mapped[Parent | None] = relationship(back_populates="children")


class NotMapped:
    def __init__(self) -> None:
        self.name = "x"


TABLES = ("users", "pairs", "tags", "things", "parents", "children")


def _snapshot(admin: Conn, schema: str) -> dict[str, list[str]]:
    """Every row of every table (as text, sorted), read outside the engine."""
    out = {}
    for table in TABLES:
        rows = admin.execute(
            sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchall()
        out[table] = sorted(r[0] for r in rows)
    return out


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([User(name="ann", nickname="a"), User(name="bob"), Pair(a=1, b=2)])
        s.add_all([Tag(name="t"), Thing(s="seed", i=7)])
        s.add(Parent(name="p", children=[Child(name="c")]))
        s.commit()
    return engine


@pytest.fixture
def before(db: Engine, admin_conn: Conn, schema: str) -> dict[str, list[str]]:
    """The seeded database, to compare with after each misuse."""
    return _snapshot(admin_conn, schema)


def _check(err: BaseException, error: type[BaseException], advice: str) -> None:
    """Promises 1 and 2: exactly this class, and the advice in the message."""
    assert type(err) is error, f"{type(err).__qualname__} raised instead of {error.__name__}"
    assert advice in str(err), f"no advice {advice!r} in: {err}"


def _commits(s: Session, admin: Conn, schema: str, name: str = "good") -> None:
    """Promise 3, second half: the session writes a good change."""
    s.add(User(name=name))
    s.commit()
    row = admin.execute(
        sql.SQL("SELECT count(*) FROM {}.users WHERE name = %s").format(sql.Identifier(schema)),
        (name,),
    ).fetchone()
    assert row == (1,)


def _recovers(s: Session, admin: Conn, schema: str, name: str = "good") -> None:
    """After a failed flush: nothing goes on until rollback(), then the session works."""
    with pytest.raises(exc.PendingRollbackError, match=r"session\.rollback\(\)"):
        s.commit()
    s.rollback()
    _commits(s, admin, schema, name)


# ---------------------------------------------------------------------------------------------
# A. Values the column cannot hold
#
# The class follows where the value is refused:
# - retort's own bind processors (Enum, LargeBinary, Numeric(p, s)) refuse it before any SQL:
#   ArgumentError, as for bad Enum values before this catalogue;
# - psycopg cannot encode it (an object in a JSON document, a lone surrogate): StatementError,
#   SQLAlchemy's class for a statement whose parameters could not be sent;
# - psycopg cannot adapt the type at all, or PostgreSQL refuses it: the DBAPIError subclass of
#   the driver error (DataError for bad data, ProgrammingError for a type mismatch), as in
#   SQLAlchemy, with advice appended to the message.


_AWARE = dt.datetime(2020, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5)))
_NAIVE = dt.datetime(2020, 1, 1, 12)

VALUE_CASES = [
    pytest.param("i", "abc", exc.DataError, "column's Python type", id="str-into-integer"),
    pytest.param("i", 2**40, exc.DataError, "as BigInteger", id="too-big-for-integer"),
    pytest.param("i", float("nan"), exc.DataError, "does not fit", id="nan-into-integer"),
    pytest.param("big", 2**70, exc.DataError, "does not fit", id="too-big-for-biginteger"),
    pytest.param("i", True, exc.ProgrammingError, "int(...) for Integer", id="bool-into-integer"),
    pytest.param("b", 1, exc.ProgrammingError, "bool(...) for Boolean", id="int-into-boolean"),
    pytest.param("s5", "toolong", exc.DataError, "larger String(n)", id="too-long-for-string-n"),
    pytest.param("s", "a\x00b", exc.DataError, "remove them", id="nul-in-string"),
    pytest.param("s", "\ud800", exc.StatementError, "clean the string", id="lone-surrogate"),
    pytest.param("s", b"bytes", exc.ArgumentError, "decode", id="bytes-into-string"),
    pytest.param("raw", "text", exc.ArgumentError, "encode it first", id="str-into-largebinary"),
    pytest.param("raw", 5, exc.ProgrammingError, "bytes for LargeBinary", id="int-into-binary"),
    pytest.param(
        "naive", object(), exc.ProgrammingError, "datetime for DateTime", id="object-into-datetime"
    ),
    pytest.param(
        "naive", "not a date", exc.DataError, "datetime for DateTime", id="bad-str-into-datetime"
    ),
    pytest.param("naive", _AWARE, exc.ArgumentError, "timezone=True", id="aware-into-naive"),
    pytest.param("aware", _NAIVE, exc.ArgumentError, "tzinfo", id="naive-into-aware"),
    pytest.param(
        "money", Decimal("12345.67"), exc.DataError, "more precision", id="numeric-overflow"
    ),
    pytest.param("money", Decimal("1.234"), exc.ArgumentError, "quantize", id="numeric-rounding"),
    pytest.param(
        "money", Decimal("Infinity"), exc.ArgumentError, "store None", id="infinity-into-numeric"
    ),
    pytest.param("money", float("-inf"), exc.ArgumentError, "store None", id="float-inf-numeric"),
    pytest.param(
        "doc", {"a": object()}, exc.StatementError, "JSON column holds", id="object-in-json"
    ),
    pytest.param("doc", {"a": b"x"}, exc.StatementError, "bytes.decode()", id="bytes-in-json"),
    pytest.param("doc", {"a": {1, 2}}, exc.StatementError, "list(...)", id="set-in-json"),
    pytest.param("doc", {"a": float("nan")}, exc.DataError, "NaN and Infinity", id="nan-in-json"),
    pytest.param("doc", {"a": "x\x00"}, exc.DataError, "remove them", id="nul-in-json"),
    pytest.param("mood", "nope", exc.ArgumentError, "use Mood members", id="enum-unknown-name"),
    pytest.param("mood", "h", exc.ArgumentError, "use Mood members", id="enum-value-not-name"),
    pytest.param("mood", 3, exc.ArgumentError, "use Mood members", id="int-into-enum"),
    pytest.param("u", "not-a-uuid", exc.DataError, "uuid.UUID for Uuid", id="bad-str-into-uuid"),
    pytest.param("u", 5, exc.ProgrammingError, "convert it first", id="int-into-uuid"),
]


@pytest.mark.parametrize(("attr", "value", "error", "advice"), VALUE_CASES)
@pytest.mark.parametrize("how", ["insert", "update"])
def test_value_the_column_cannot_hold(
    db: Engine,
    before: dict[str, list[str]],
    admin_conn: Conn,
    schema: str,
    how: str,
    attr: str,
    value: Any,
    error: type[Exception],
    advice: str,
) -> None:
    with Session(db) as s:
        good = Thing(s="good row in the same flush")
        if how == "insert":
            s.add_all([good, Thing(**{attr: value})])
        else:
            seeded = s.scalars(select(Thing).where(Thing.s == "seed")).one()
            s.add(good)
            setattr(seeded, attr, value)
        with pytest.raises(exc.RetortError) as info:
            s.flush()
        _check(info.value, error, advice)
        assert _snapshot(admin_conn, schema) == before
        _recovers(s, admin_conn, schema)


@pytest.mark.parametrize(
    ("attr", "value", "error", "advice"),
    [
        pytest.param("s5", "toolong", exc.DataError, "larger String(n)", id="too-long"),
        pytest.param("i", "abc", exc.DataError, "column's Python type", id="str-into-integer"),
        pytest.param("s", "a\x00b", exc.DataError, "remove them", id="nul-in-string"),
        pytest.param("doc", {"a": object()}, exc.StatementError, "JSON column", id="object-json"),
        pytest.param("money", Decimal("1.234"), exc.ArgumentError, "quantize", id="rounding"),
        pytest.param("mood", "nope", exc.ArgumentError, "use Mood members", id="enum"),
    ],
)
def test_value_the_column_cannot_hold_in_a_copy_batch(
    db: Engine,
    before: dict[str, list[str]],
    admin_conn: Conn,
    schema: str,
    attr: str,
    value: Any,
    error: type[Exception],
    advice: str,
) -> None:
    """The same refusals when the row is the last of a batch large enough for COPY."""
    with Session(db) as s:
        s.add_all([Thing(s=f"row {n}") for n in range(100)] + [Thing(**{attr: value})])
        with pytest.raises(exc.RetortError) as info:
            s.flush()
        _check(info.value, error, advice)
        assert _snapshot(admin_conn, schema) == before
        _recovers(s, admin_conn, schema)


# ---------------------------------------------------------------------------------------------
# B. Unmapped classes and instances (add and delete of unmapped objects: test_errors.py)
#
# UnmappedInstanceError where an instance is expected, UnmappedClassError where a class is
# (SQLAlchemy's classes); ArgumentError where a relationship or select() is given something
# that is not what it holds or selects.

_DECLARE = "on a DeclarativeBase subclass"

UNMAPPED_CASES = [
    pytest.param(
        lambda s, p: s.merge(NotMapped()), exc.UnmappedInstanceError, _DECLARE, id="merge"
    ),
    pytest.param(
        lambda s, p: s.merge_all([NotMapped()]), exc.UnmappedInstanceError, _DECLARE, id="merge_all"
    ),
    pytest.param(
        lambda s, p: s.expunge(NotMapped()), exc.UnmappedInstanceError, _DECLARE, id="expunge"
    ),
    pytest.param(
        lambda s, p: s.refresh(NotMapped()), exc.UnmappedInstanceError, _DECLARE, id="refresh"
    ),
    pytest.param(
        lambda s, p: s.expire(NotMapped()), exc.UnmappedInstanceError, _DECLARE, id="expire"
    ),
    pytest.param(
        lambda s, p: s.is_modified(NotMapped()),
        exc.UnmappedInstanceError,
        _DECLARE,
        id="is_modified",
    ),
    pytest.param(lambda s, p: NotMapped() in s, exc.UnmappedInstanceError, _DECLARE, id="in"),
    pytest.param(
        lambda s, p: s.add_all(["not an object"]), exc.UnmappedInstanceError, _DECLARE, id="add_all"
    ),
    pytest.param(
        lambda s, p: s.delete(User), exc.UnmappedInstanceError, _DECLARE, id="delete-a-class"
    ),
    pytest.param(
        lambda s, p: object_session(NotMapped()),
        exc.UnmappedInstanceError,
        _DECLARE,
        id="object_session",
    ),
    pytest.param(
        lambda s, p: make_transient(NotMapped()),
        exc.UnmappedInstanceError,
        _DECLARE,
        id="make_transient",
    ),
    pytest.param(
        lambda s, p: make_transient_to_detached(NotMapped()),
        exc.UnmappedInstanceError,
        _DECLARE,
        id="make_transient_to_detached",
    ),
    pytest.param(
        lambda s, p: s.get(NotMapped, 1), exc.UnmappedClassError, _DECLARE, id="get-unmapped-class"
    ),
    pytest.param(
        lambda s, p: s.get_one(NotMapped, 1), exc.UnmappedClassError, _DECLARE, id="get_one"
    ),
    pytest.param(
        lambda s, p: s.get("users", 1), exc.UnmappedClassError, _DECLARE, id="get-a-table-name"
    ),
    pytest.param(
        lambda s, p: s.get(User(name="x"), 1),
        exc.UnmappedClassError,
        "pass its class",
        id="get-an-instance",
    ),
    pytest.param(
        lambda s, p: s.execute(select(NotMapped)),  # type: ignore[call-overload]
        exc.ArgumentError,
        "takes mapped classes, columns, tables",
        id="select-unmapped",
    ),
    pytest.param(
        lambda s, p: p.children.append(NotMapped()),
        exc.ArgumentError,
        "give it Child instances",
        id="append-to-collection",
    ),
    pytest.param(
        lambda s, p: p.children[0].__setattr__("parent", NotMapped()),
        exc.ArgumentError,
        "give it Parent instances",
        id="set-many-to-one",
    ),
    pytest.param(
        lambda s, p: Parent(name="q", children=[NotMapped()]),
        exc.ArgumentError,
        "give it Child instances",
        id="constructor-collection",
    ),
]


@pytest.mark.parametrize(("call", "error", "advice"), UNMAPPED_CASES)
def test_unmapped_class_or_instance(
    db: Engine,
    before: dict[str, list[str]],
    admin_conn: Conn,
    schema: str,
    call: Callable[[Session, Parent], Any],
    error: type[Exception],
    advice: str,
) -> None:
    with Session(db) as s:
        parent = s.scalars(select(Parent)).one()
        with pytest.raises(exc.RetortError) as info:
            call(s, parent)
        _check(info.value, error, advice)
        assert [c.name for c in parent.children] == ["c"]  # nothing half-done in memory
        assert not s.new and not s.dirty and not s.deleted
        assert _snapshot(admin_conn, schema) == before
        _commits(s, admin_conn, schema)  # no flush failed: no rollback needed


@pytest.mark.parametrize("thing", [None, 42], ids=["None", "int"])
def test_add_all_of_something_not_iterable(
    db: Engine, before: dict[str, list[str]], admin_conn: Conn, schema: str, thing: Any
) -> None:
    # A builtin TypeError on purpose: add_all() iterates its argument, and SQLAlchemy raises
    # the same TypeError ("... object is not iterable"), which already says what is wrong.
    with Session(db) as s:
        with pytest.raises(TypeError, match="not iterable"):
            s.add_all(thing)
        assert not s.new
        assert _snapshot(admin_conn, schema) == before
        _commits(s, admin_conn, schema)


# ---------------------------------------------------------------------------------------------
# C. Objects of another live session (add and delete of one: test_errors.py)


def test_add_all_with_an_object_of_another_session(
    db: Engine, before: dict[str, list[str]], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s1, Session(db) as s2:
        theirs = s1.scalars(select(User).where(User.name == "ann")).one()
        with pytest.raises(exc.RetortError) as info:
            s2.add_all([User(name="carl"), theirs])
        _check(info.value, exc.InvalidRequestError, "expunge it from that session")
        assert object_session(theirs) is s1 and theirs not in s2
        assert not s2.new  # all or nothing: carl, added first, left again
        assert _snapshot(admin_conn, schema) == before
        _commits(s2, admin_conn, schema)
        carl = sql.SQL("SELECT count(*) FROM {}.users WHERE name = 'carl'").format(
            sql.Identifier(schema)
        )
        assert admin_conn.execute(carl).fetchone() == (0,)  # (the commit wrote no carl)
        s1.commit()  # s1 is not disturbed


@pytest.mark.parametrize("listened", [False, True], ids=["core-cascade", "with-listeners"])
def test_add_of_a_graph_reaching_an_object_of_another_session_attaches_nothing(
    db: Engine, before: dict[str, list[str]], admin_conn: Conn, schema: str, listened: bool
) -> None:
    """The save-update cascade of add() meets s1's child after a new child: nothing of the
    graph stays in s2 (SQLAlchemy keeps what it attached before the error, and its next
    commit writes it), and listeners hear of no attachment."""
    with Session(db) as s1, Session(db) as s2:
        heard: list[Any] = []
        if listened:
            event.listen(s2, "after_attach", lambda session, obj: heard.append(obj))
        theirs = s1.scalars(select(Child)).one()
        mine, new_child = Parent(name="q"), Child(name="n")
        mine.children.append(new_child)
        mine.children.append(theirs)  # (mine is in no session: no cascade yet)
        with pytest.raises(exc.RetortError) as info:
            s2.add(mine)
        _check(info.value, exc.InvalidRequestError, "expunge it from that session")
        assert mine not in s2 and new_child not in s2 and not s2.new
        assert inspect(mine).transient and inspect(new_child).transient
        assert object_session(theirs) is s1
        assert heard == []
        s2.commit()
        assert _snapshot(admin_conn, schema) == before
        # the graph can be added once the object is its own again
        s1.expunge(theirs)
        s2.add(mine)
        assert {mine, new_child, theirs} <= set(s2)
        assert heard == ([mine, new_child, theirs] if listened else [])
        s2.rollback()
        s1.rollback()


def test_cascade_pulls_in_an_object_of_another_session(
    db: Engine, before: dict[str, list[str]], admin_conn: Conn, schema: str
) -> None:
    """Appending s1's child to s2's parent would cascade the child into s2."""
    with Session(db) as s1, Session(db) as s2:
        theirs = s1.scalars(select(Child)).one()
        mine = Parent(name="q")
        s2.add(mine)
        with pytest.raises(exc.RetortError) as info:
            mine.children.append(theirs)
        _check(info.value, exc.InvalidRequestError, "expunge it from that session")
        assert object_session(theirs) is s1
        assert _snapshot(admin_conn, schema) == before
        s2.rollback()
        _commits(s2, admin_conn, schema)
        s1.rollback()


def test_an_append_whose_cascade_reaches_an_object_of_another_session_attaches_nothing(
    db: Engine, before: dict[str, list[str]], admin_conn: Conn, schema: str
) -> None:
    """The cascade of an append to a collection of an object in s2 goes through a new child
    to its new parent, which lists s1's child: the append is refused, and the new child and
    its parent, attached on the way, leave s2 again."""
    with Session(db) as s1, Session(db) as s2:
        theirs = s1.scalars(select(Child)).one()
        mine = s2.scalars(select(Parent)).one()
        other = Parent(name="o")
        other.children.append(theirs)
        new_child = Child(name="n", parent=other)
        with pytest.raises(exc.RetortError) as info:
            mine.children.append(new_child)
        _check(info.value, exc.InvalidRequestError, "expunge it from that session")
        assert new_child not in s2 and other not in s2 and not s2.new
        assert new_child not in mine.children and new_child.parent is other
        s2.commit()
        assert _snapshot(admin_conn, schema) == before
        s1.rollback()


def test_expunge_of_an_object_of_another_session(
    db: Engine, before: dict[str, list[str]], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s1, Session(db) as s2:
        theirs = s1.scalars(select(User).where(User.name == "ann")).one()
        assert object_session(theirs) is s1  # checked before the call that may fail
        with pytest.raises(exc.RetortError) as info:
            s2.expunge(theirs)
        assert object_session(theirs) is s1
        assert _snapshot(admin_conn, schema) == before
        _commits(s2, admin_conn, schema)
        _check(info.value, exc.InvalidRequestError, "object_session(")


# ---------------------------------------------------------------------------------------------
# D. Deleted objects (add() after delete + flush: test_errors.py)


def test_change_of_an_object_deleted_by_a_flush(
    db: Engine, before: dict[str, list[str]], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        bob = s.scalars(select(User).where(User.name == "bob")).one()
        s.delete(bob)
        s.flush()
        with pytest.raises(exc.RetortError) as info:
            bob.nickname = "changed after its row was deleted"
            s.flush()
        s.rollback()
        assert _snapshot(admin_conn, schema) == before
        _commits(s, admin_conn, schema)
        _check(info.value, exc.InvalidRequestError, "rollback()")


@pytest.mark.parametrize("method", ["refresh", "expire"])
def test_refresh_or_expire_of_a_deleted_object(
    db: Engine, before: dict[str, list[str]], admin_conn: Conn, schema: str, method: str
) -> None:
    with Session(db) as s:
        bob = s.scalars(select(User).where(User.name == "bob")).one()
        s.delete(bob)
        s.flush()
        with pytest.raises(exc.RetortError) as info:
            getattr(s, method)(bob)
        s.rollback()
        assert _snapshot(admin_conn, schema) == before
        _commits(s, admin_conn, schema)
        _check(info.value, exc.InvalidRequestError, "rollback()")


def test_add_of_an_object_whose_delete_was_committed(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        bob = s.scalars(select(User).where(User.name == "bob")).one()
        s.delete(bob)
        s.commit()
        after_delete = _snapshot(admin_conn, schema)
        with pytest.raises(exc.RetortError) as info:
            s.add(bob)
            bob.nickname = "back?"
            s.commit()
        assert _snapshot(admin_conn, schema) == after_delete
        s.rollback()
        _commits(s, admin_conn, schema)
        _check(info.value, exc.InvalidRequestError, "make_transient(")


# ---------------------------------------------------------------------------------------------
# E. Bad primary-key arguments to get() (wrong number of values: test_errors.py)

GET_CASES = [
    pytest.param(lambda s: s.get(User, None), exc.InvalidRequestError, "needs a value", id="None"),
    pytest.param(
        lambda s: s.get(User, (None,)), exc.InvalidRequestError, "needs a value", id="(None,)"
    ),
    pytest.param(
        lambda s: s.get(Pair, (1, None)), exc.InvalidRequestError, "needs a value", id="half-None"
    ),
    pytest.param(
        lambda s: s.get(Pair, {1, 2}), exc.InvalidRequestError, "or a dict keyed", id="a-set"
    ),
    pytest.param(
        lambda s: s.get(User, [1, 2]), exc.InvalidRequestError, "pass a scalar", id="list-of-two"
    ),
    pytest.param(
        lambda s: s.get(User, object()),
        exc.ProgrammingError,
        "column's Python type",
        id="unadaptable-object",
    ),
    pytest.param(
        lambda s: s.get_one(User, None), exc.InvalidRequestError, "needs a value", id="get_one-None"
    ),
    pytest.param(
        lambda s: s.get(Pair, {"a": 1, "b": 2, "c": 3}),
        exc.InvalidRequestError,
        "primary key attribute names are",
        id="dict-with-an-unknown-key",
    ),
]


@pytest.mark.parametrize(("call", "error", "advice"), GET_CASES)
def test_get_with_a_bad_key(
    db: Engine,
    before: dict[str, list[str]],
    admin_conn: Conn,
    schema: str,
    call: Callable[[Session], Any],
    error: type[Exception],
    advice: str,
) -> None:
    with Session(db) as s:
        with pytest.raises(exc.RetortError) as info:
            call(s)
        _check(info.value, error, advice)
        assert s.get(Pair, (1, 2)) is not None  # the transaction is still good
        assert _snapshot(admin_conn, schema) == before
        _commits(s, admin_conn, schema)


@pytest.mark.parametrize(
    ("key", "advice"),
    [
        pytest.param("abc", "column's Python type", id="str-for-an-integer-key"),
        # (False == 0: no object in the identity map has that key, so get() asks the database;
        # True == 1 would find ann there, as in SQLAlchemy)
        pytest.param(False, "convert it to the column's type", id="bool-for-an-integer-key"),
        pytest.param(2**70, None, id="too-big-for-an-integer-key"),
    ],
)
def test_get_with_a_key_of_the_wrong_type(
    db: Engine,
    before: dict[str, list[str]],
    admin_conn: Conn,
    schema: str,
    key: Any,
    advice: str | None,
) -> None:
    """PostgreSQL refuses the comparison, which aborts the transaction: the next statement says
    to roll back, and after rollback() the session works. (A key PostgreSQL can compare, such as
    2**70, simply finds nothing.)"""
    with Session(db) as s:
        ann = s.scalars(select(User).where(User.name == "ann")).one()
        if advice is None:
            assert s.get(User, key) is None
            _commits(s, admin_conn, schema)
            return
        with pytest.raises(exc.RetortError) as info:
            s.get(User, key)
        _check(info.value, exc.DataError if key == "abc" else exc.ProgrammingError, advice)
        s.expire(ann)
        with pytest.raises(exc.RetortError) as later:
            _ = ann.name
        _check(later.value, exc.InternalError, "call rollback()")
        s.rollback()
        assert ann.name == "ann"
        assert _snapshot(admin_conn, schema) == before
        _commits(s, admin_conn, schema)


# ---------------------------------------------------------------------------------------------
# F. Bad mapping declarations: ArgumentError, at class creation or at the first configure
# (flush, query or constructor), as in SQLAlchemy


def _no_primary_key(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        x: Mapped[int]


def _two_attributes_one_column(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        p: Mapped[int] = mapped_column("x")
        q: Mapped[int] = mapped_column("x")


def _attribute_name_taken_by_a_column_name(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        q: Mapped[int] = mapped_column("id")


def _unknown_class_in_annotation(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        bs: Mapped[list[Nope]] = relationship()  # type: ignore[name-defined]  # noqa: F821


def _unknown_class_by_name(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        bs = relationship("Nope")


def _unmapped_class(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        x = relationship(NotMapped)


def _a_b_c(base: Any, a_bs: str, b_a: str | None) -> None:
    """A 1-* B and A 1-* C, with back_populates as given (B.a's None: none)."""

    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        bs: Mapped[list[B]] = relationship(back_populates=a_bs)
        cs: Mapped[list[C]] = relationship(back_populates="a")

    class B(base):
        __tablename__ = "b"
        id: Mapped[int] = mapped_column(primary_key=True)
        a_id: Mapped[int | None] = mapped_column(ForeignKey("a.id"))
        c_id: Mapped[int | None] = mapped_column(ForeignKey("c.id"))
        a: Mapped[A | None] = relationship(back_populates=b_a)
        c: Mapped["C | None"] = relationship()  # noqa: UP037 - a forward reference as a string

    class C(base):
        __tablename__ = "c"
        id: Mapped[int] = mapped_column(primary_key=True)
        a_id: Mapped[int | None] = mapped_column(ForeignKey("a.id"))
        a: Mapped[A | None] = relationship(back_populates="cs")


def _version(base: Any, spec: Any) -> None:
    class Other(base):
        __tablename__ = "other"
        id: Mapped[int] = mapped_column(primary_key=True)
        v: Mapped[int]

    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str]
        __mapper_args__ = {"version_id_col": Other.v if spec == "other" else spec}


def _a_b(base: Any, **rel: Any) -> None:
    """B *-1 A with the relationship arguments given; B also has a plain column and a
    foreign key to D."""

    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)

    class D(base):
        __tablename__ = "d"
        id: Mapped[int] = mapped_column(primary_key=True)

    class B(base):
        __tablename__ = "b"
        id: Mapped[int] = mapped_column(primary_key=True)
        a_id: Mapped[int | None] = mapped_column(ForeignKey("a.id"))
        d_id: Mapped[int | None] = mapped_column(ForeignKey("d.id"))
        plain: Mapped[int | None]
        a: Mapped[A | None] = relationship(**rel)


def _no_foreign_key(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)

    class B(base):
        __tablename__ = "b"
        id: Mapped[int] = mapped_column(primary_key=True)
        a: Mapped[A | None] = relationship()


def _foreign_key_to(base: Any, target: str) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        x_id: Mapped[int | None] = mapped_column(ForeignKey(target))


def _secondary(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)

    class B(base):
        __tablename__ = "b"
        id: Mapped[int] = mapped_column(primary_key=True)
        as_: Mapped[list[A]] = relationship(secondary="no_such_table")


def _nul_in_table_name(base: Any) -> None:
    class A(base):
        __tablename__ = "a\x00b"
        id: Mapped[int] = mapped_column(primary_key=True)


def _nul_in_column_name(base: Any) -> None:
    class A(base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column("i\x00d", primary_key=True)


MAPPING_CASES = [
    pytest.param(_no_primary_key, "mapped_column(primary_key=True)", id="no-primary-key"),
    pytest.param(_two_attributes_one_column, "its own name", id="two-attributes-one-column"),
    pytest.param(_attribute_name_taken_by_a_column_name, "its own name", id="name-taken"),
    pytest.param(_unknown_class_in_annotation, "import the module", id="relationship-unknown"),
    pytest.param(_unknown_class_by_name, "import the module", id="relationship-unknown-by-name"),
    pytest.param(_unmapped_class, "needs a class declared on", id="relationship-unmapped-class"),
    pytest.param(
        lambda b: _a_b_c(b, "nope", "bs"), "declare the other side", id="back-populates-missing"
    ),
    pytest.param(
        lambda b: _a_b_c(b, "a_id", "bs"),
        "is a column, not a relationship",
        id="back-populates-names-a-column",
    ),
    pytest.param(
        lambda b: _a_b_c(b, "a", "cs"), "must name each other", id="back-populates-mismatched"
    ),
    pytest.param(
        lambda b: _a_b_c(b, "c", "bs"), "that points back to A", id="back-populates-wrong-class"
    ),
    pytest.param(lambda b: _version(b, "nope"), "e.g. __mapper_args__", id="version-not-a-column"),
    pytest.param(lambda b: _version(b, "label"), "Mapped[int]", id="version-a-string-column"),
    pytest.param(lambda b: _version(b, "other"), "e.g. __mapper_args__", id="version-other-table"),
    pytest.param(
        lambda b: _a_b(b, cascade="all, delete-orphans"), "use any of", id="cascade-misspelled"
    ),
    pytest.param(lambda b: _a_b(b, cascade="save_update"), "use any of", id="cascade-underscore"),
    pytest.param(lambda b: _a_b(b, cascade=42), "such as 'all, delete-orphan'", id="cascade-int"),
    pytest.param(
        lambda b: _a_b(b, cascade="all, delete-orphan"),
        "on the relationship from A to B instead",
        id="delete-orphan-on-many-to-one",
    ),
    pytest.param(
        lambda b: _a_b(b, foreign_keys="B.plain"),
        "name a column that references 'a'",
        id="foreign-keys-without-foreign-key",
    ),
    pytest.param(
        lambda b: _a_b(b, foreign_keys="B.d_id"),
        "name a column that references 'a'",
        id="foreign-keys-to-another-table",
    ),
    pytest.param(
        lambda b: _a_b(b, foreign_keys=[42]), "name mapped columns", id="foreign-keys-not-a-column"
    ),
    pytest.param(
        lambda b: _a_b(b, foreign_keys="B.nope"), "check the spelling", id="foreign-keys-unknown"
    ),
    pytest.param(_no_foreign_key, "add a ForeignKey", id="relationship-without-foreign-key"),
    pytest.param(
        lambda b: _foreign_key_to(b, "nope.id"), "fix the table name", id="fk-unknown-table"
    ),
    pytest.param(
        lambda b: _foreign_key_to(b, "a.nope"), "name one of its columns", id="fk-unknown-column"
    ),
    pytest.param(_secondary, "check the spelling", id="secondary-unknown"),
    pytest.param(_nul_in_table_name, "remove it", id="nul-in-table-name"),
    pytest.param(_nul_in_column_name, "remove it", id="nul-in-column-name"),
]


def _drain_configure() -> None:
    """Configure what the broken declaration left queued (its other classes), so that their
    errors do not surface in a later, unrelated flush."""
    for _ in range(10):
        try:
            configure_mappers()
            return
        except exc.ArgumentError:
            continue
    raise AssertionError("configure_mappers() keeps failing")


@pytest.mark.parametrize(("declare", "advice"), MAPPING_CASES)
def test_bad_mapping_declaration(
    db: Engine,
    before: dict[str, list[str]],
    admin_conn: Conn,
    schema: str,
    declare: Callable[[Any], None],
    advice: str,
) -> None:
    class Broken(DeclarativeBase):
        pass

    with pytest.raises(exc.RetortError) as info:
        declare(Broken)
        configure_mappers()
    _check(info.value, exc.ArgumentError, advice)
    _drain_configure()
    assert _snapshot(admin_conn, schema) == before
    tables = admin_conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    ).fetchall()
    assert sorted(t for (t,) in tables) == sorted(TABLES)
    with Session(db) as s:  # models of other bases are unaffected
        s.add(Parent(name="other base", children=[Child(name="fine")]))
        _commits(s, admin_conn, schema)


def test_a_broken_relationship_raises_its_error_whenever_used(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    class Broken(DeclarativeBase):
        pass

    class A(Broken):
        __tablename__ = "broken_a"
        id: Mapped[int] = mapped_column(primary_key=True)
        bs: Mapped[list[Missing]] = relationship()  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(exc.ArgumentError, match="import the module"):
        configure_mappers()
    _drain_configure()
    a = A(id=1)
    for use in (lambda: A(id=2, bs=[A(id=3)]), lambda: a.bs.append(A(id=4))):
        with pytest.raises(exc.RetortError) as info:
            use()
        _check(info.value, exc.ArgumentError, "import the module")


# ---------------------------------------------------------------------------------------------
# G. SQL-significant characters in values and in names

WEIRD_VALUES = [
    "it's",
    'say "hi"',
    "'; DROP TABLE users; --",
    "semi;colon",
    "%s",
    "%(name)s and %%",
    "{0} {name}",
    ":name $1 ?",
    "back\\slash \\x41 \\\\",
    "line\nbreak\ttab\r",
    "ünïcødé ✓ 日本語 🎉",
    "/* not a comment */ -- nor this",
    "",
    " ",
]


def _stored(admin: Conn, schema: str, query: str, *params: Any) -> list[Any]:
    rows = admin.execute(
        sql.SQL(query).format(schema=sql.Identifier(schema)), params or None
    ).fetchall()
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize(
    "path", ["insert-one", "insert-many", "copy", "update-one", "update-set", "json"]
)
def test_sql_significant_values_round_trip(
    db: Engine, admin_conn: Conn, schema: str, path: str
) -> None:
    with Session(db) as s:
        if path == "insert-one":
            for v in WEIRD_VALUES:
                s.add(Thing(s=v))
                s.flush()
        elif path in ("insert-many", "copy"):
            filler = [Thing(s="filler") for _ in range(100)] if path == "copy" else []
            s.add_all([Thing(s=v) for v in WEIRD_VALUES] + filler)
        elif path in ("update-one", "update-set"):
            s.add_all([Thing(s="before") for _ in WEIRD_VALUES])
            s.commit()
            things = s.scalars(select(Thing).where(Thing.s == "before")).all()
            for thing, v in zip(things, WEIRD_VALUES, strict=True):
                thing.s = v
                if path == "update-one":
                    s.flush()
        else:
            s.add_all([Thing(doc={v: [v, {"k": v}]}) for v in WEIRD_VALUES])
        s.commit()
    if path == "json":
        docs = _stored(
            admin_conn, schema, "SELECT doc::text FROM {schema}.things WHERE doc IS NOT NULL"
        )
        with Session(db) as s:
            loaded = [t.doc for t in s.scalars(select(Thing).where(Thing.doc.is_not(None)))]
        assert len(docs) == len(WEIRD_VALUES)
        assert sorted(loaded, key=repr) == sorted(
            ({v: [v, {"k": v}]} for v in WEIRD_VALUES), key=repr
        )
        return
    stored = _stored(
        admin_conn, schema, "SELECT s FROM {schema}.things WHERE s NOT IN ('seed', 'filler')"
    )
    assert stored == sorted(WEIRD_VALUES)
    with Session(db) as s:
        for v in WEIRD_VALUES:  # compared in a WHERE clause and through text()
            assert [t.s for t in s.scalars(select(Thing).where(Thing.s == v))] == [v]
            found = s.execute(text("SELECT s FROM things WHERE s = :v"), {"v": v}).scalar()
            assert found == v


def test_sql_significant_values_as_natural_keys(db: Engine, admin_conn: Conn, schema: str) -> None:
    with Session(db) as s:
        s.add_all([Tag(name=v or "empty", note=v) for v in WEIRD_VALUES])
        s.commit()
    with Session(db) as s:
        for v in WEIRD_VALUES:
            tag = s.get(Tag, v or "empty")
            assert tag is not None and tag.note == v
            tag.note = f"{v}!"
        s.commit()
        s.delete(s.get(Tag, WEIRD_VALUES[2]))
        s.delete(s.get(Tag, WEIRD_VALUES[5]))
        s.commit()
    notes = _stored(admin_conn, schema, "SELECT note FROM {schema}.tags WHERE name <> 't'")
    gone = {WEIRD_VALUES[2], WEIRD_VALUES[5]}
    assert notes == sorted(f"{v}!" for v in WEIRD_VALUES if v not in gone)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda s: s.scalars(select(User).where(User.name == "a\x00")).all(), id="where"
        ),
        pytest.param(lambda s: s.get(Tag, "a\x00b"), id="get-by-natural-key"),
        pytest.param(
            lambda s: s.execute(text("SELECT :v"), {"v": "\x00"}).all(), id="text-parameter"
        ),
    ],
)
def test_nul_in_a_query_parameter(
    db: Engine,
    before: dict[str, list[str]],
    admin_conn: Conn,
    schema: str,
    call: Callable[[Session], Any],
) -> None:
    with Session(db) as s:
        with pytest.raises(exc.RetortError) as info:
            call(s)
        _check(info.value, exc.DataError, "remove them")
        assert _snapshot(admin_conn, schema) == before
        s.rollback()
        _commits(s, admin_conn, schema)


WEIRD_NAMES = [
    pytest.param("it's", id="single-quote"),
    pytest.param('say "hi"', id="double-quote"),
    pytest.param("semi;colon", id="semicolon"),
    pytest.param("back\\slash", id="backslash"),
    pytest.param("Mixed Case", id="mixed-case-and-space"),
    pytest.param("ünïcødé ✓", id="unicode"),
    pytest.param("select", id="reserved-select"),
    pytest.param("order", id="reserved-order"),
    pytest.param("user", id="reserved-user"),
    pytest.param("$1 :name ?", id="other-placeholders"),
    pytest.param("x); DROP TABLE users; --", id="injection"),
    pytest.param("%s", id="percent-s"),
    pytest.param("%(x)s", id="percent-named"),
    pytest.param("100%", id="percent"),
]


@pytest.mark.parametrize("name", WEIRD_NAMES)
def test_sql_significant_table_and_column_names(
    engine: Engine, admin_conn: Conn, schema: str, name: str
) -> None:
    class Weird(DeclarativeBase):
        pass

    class W(Weird):
        __tablename__ = name
        id: Mapped[int] = mapped_column(name, primary_key=True)
        val: Mapped[str | None] = mapped_column(f"{name} val")

    class K(Weird):
        __tablename__ = f"{name} kids"
        id: Mapped[int] = mapped_column(primary_key=True)
        w_id: Mapped[int | None] = mapped_column(f"{name} fk", ForeignKey(W.id))
        w: Mapped[W | None] = relationship()

    def stored() -> list[tuple[Any, ...]]:
        query = sql.SQL("SELECT {}, {} FROM {}.{} ORDER BY 1").format(
            sql.Identifier(name),
            sql.Identifier(f"{name} val"),
            sql.Identifier(schema),
            sql.Identifier(name),
        )
        return admin_conn.execute(query).fetchall()

    Weird.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(W(val="one"))
        s.flush()  # INSERT ... RETURNING
        s.add_all([W(val=str(n)) for n in range(3)])
        s.flush()  # keys from the sequence, multi-row INSERT
        s.add_all([W(val="copied") for _ in range(100)])
        s.flush()  # COPY
        s.add(K(w=W(val="parent")))
        s.flush()  # foreign key copied along the relationship
        first = s.get(W, 1)
        assert first is not None
        first.val = "changed"
        s.flush()  # UPDATE one row
        for n in (2, 3):
            s.get_one(W, n).val = "set"
        s.flush()  # UPDATE ... FROM unnest
        s.delete(s.get_one(W, 4))
        s.flush()  # DELETE one row
        for n in (5, 6):
            s.delete(s.get_one(W, n))
        s.flush()  # DELETE = ANY
        s.refresh(first)
        assert [w.id for w in s.scalars(select(W).where(W.val == "set").order_by(W.id))] == [2, 3]
        s.commit()
    with Session(engine) as s:
        kid = s.scalars(select(K)).one()
        assert kid.w is not None and kid.w.val == "parent"  # lazy load
        s.expire(first := s.get_one(W, 1))
        assert first.val == "changed"
    rows = stored()
    assert rows[:3] == [(1, "changed"), (2, "set"), (3, "set")]
    assert len(rows) == 1 + 3 + 100 + 1 - 3
    Weird.metadata.drop_all(engine)


# ---------------------------------------------------------------------------------------------
# H. Re-entrant calls from session events
#
# SQLAlchemy refuses a flush inside a flush (InvalidRequestError) and a commit, rollback or
# close while a flush or commit is under way (IllegalStateChangeError, an InvalidRequestError).


REENTRANT_CASES = [
    pytest.param("before_flush", "flush", exc.InvalidRequestError, "part of this flush",
                 id="flush-in-before_flush"),
    pytest.param("after_flush", "flush", exc.InvalidRequestError, "part of this flush",
                 id="flush-in-after_flush"),
    pytest.param("after_flush_postexec", "flush", exc.InvalidRequestError, "part of this flush",
                 id="flush-in-after_flush_postexec"),
    pytest.param("before_flush", "commit", exc.IllegalStateChangeError, "after the flush",
                 id="commit-in-before_flush"),
    pytest.param("after_flush", "commit", exc.IllegalStateChangeError, "after the flush",
                 id="commit-in-after_flush"),
    pytest.param("before_flush", "rollback", exc.IllegalStateChangeError, "after the flush",
                 id="rollback-in-before_flush"),
    pytest.param("after_flush", "rollback", exc.IllegalStateChangeError, "after the flush",
                 id="rollback-in-after_flush"),
    pytest.param("after_flush", "close", exc.IllegalStateChangeError, "after the flush",
                 id="close-in-after_flush"),
    pytest.param("before_commit", "rollback", exc.IllegalStateChangeError, "after the commit",
                 id="rollback-in-before_commit"),
    pytest.param("before_commit", "close", exc.IllegalStateChangeError, "after the commit",
                 id="close-in-before_commit"),
]  # fmt: skip


@pytest.mark.parametrize(("event_name", "action", "error", "advice"), REENTRANT_CASES)
def test_reentrant_call_from_a_session_event(
    db: Engine,
    before: dict[str, list[str]],
    admin_conn: Conn,
    schema: str,
    event_name: str,
    action: str,
    error: type[Exception],
    advice: str,
) -> None:
    with Session(db) as s:
        ann = s.scalars(select(User).where(User.name == "ann")).one()
        ann.nickname = "changed"
        s.add(User(name="carl"))
        fired: list[str] = []

        def reenter(session: Session, *args: Any) -> None:
            if not fired:
                fired.append(event_name)
                getattr(session, action)()

        event.listen(s, event_name, reenter)
        with pytest.raises(exc.RetortError) as info:
            s.commit()
        event.remove(s, event_name, reenter)
        assert fired == [event_name]
        assert _snapshot(admin_conn, schema) == before  # nothing, not half of it
        s.rollback()
        _commits(s, admin_conn, schema)
        _check(info.value, error, advice)


def test_add_inside_after_commit_belongs_to_the_next_transaction(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    """Not misuse: after_commit may add objects (no SQL runs); they are pending in a new
    transaction and the next commit writes them, as in SQLAlchemy."""
    with Session(db) as s:
        late = User(name="late")

        @event.listens_for(s, "after_commit")
        def add_late(session: Session) -> None:
            if late not in session:
                session.add(late)

        s.add(User(name="first"))
        s.commit()
        assert late in s.new
        names = _stored(admin_conn, schema, "SELECT name FROM {schema}.users")
        assert names == ["ann", "bob", "first"]
        s.commit()
    assert _stored(admin_conn, schema, "SELECT name FROM {schema}.users") == [
        "ann",
        "bob",
        "first",
        "late",
    ]
