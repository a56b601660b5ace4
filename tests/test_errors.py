"""Misuse and database errors: the specific exception, a useful message, an unchanged database
and a session that can go on (after rollback() where the transaction failed)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from retort import DeclarativeBase, Mapped, Session, String, exc, inspect, mapped_column, select
from retort.engine import Engine

Conn = psycopg.Connection[Any]


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


class NotMapped:
    def __init__(self) -> None:
        self.name = "x"


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


def _rows(admin: Conn, schema: str) -> list[tuple[Any, ...]]:
    """Everything in the users table, from a connection outside the engine."""
    return admin.execute(f"SELECT id, name, nickname FROM {schema}.users ORDER BY id").fetchall()


@pytest.fixture
def seeded(db: Engine, admin_conn: Conn, schema: str) -> list[tuple[Any, ...]]:
    with Session(db) as s:
        s.add_all([User(name="ann", nickname="a"), User(name="bob")])
        s.commit()
    return _rows(admin_conn, schema)


def _session_still_works(s: Session, admin: Conn, schema: str, name: str) -> None:
    s.add(User(name=name))
    s.commit()
    assert admin.execute(
        f"SELECT count(*) FROM {schema}.users WHERE name = %s", (name,)
    ).fetchone() == (1,)


def test_every_error_is_a_retort_error() -> None:
    for cls in (
        exc.InvalidRequestError,
        exc.UnmappedInstanceError,
        exc.DetachedInstanceError,
        exc.ObjectDeletedError,
        exc.StaleDataError,
        exc.FlushError,
        exc.CircularDependencyError,
        exc.PendingRollbackError,
        exc.NoResultFound,
        exc.MultipleResultsFound,
        exc.ArgumentError,
        exc.IntegrityError,
        exc.OperationalError,
        exc.ProgrammingError,
        exc.DataError,
    ):
        assert issubclass(cls, exc.RetortError), cls
    for cls in (exc.IntegrityError, exc.OperationalError, exc.ProgrammingError, exc.DataError):
        assert issubclass(cls, exc.DBAPIError)
    assert issubclass(exc.UnmappedInstanceError, exc.InvalidRequestError)
    assert issubclass(exc.PendingRollbackError, exc.InvalidRequestError)


# --------------------------------------------------------------------------------------------
# misuse


def test_add_of_an_unmapped_object(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        with pytest.raises(exc.UnmappedInstanceError, match="NotMapped"):
            s.add(NotMapped())
        ok = User(name="carl")
        with pytest.raises(exc.UnmappedInstanceError):
            s.add_all([ok, NotMapped()])
        assert list(s.new) in ([], [ok])  # nothing half-added beyond the valid object
        s.rollback()
        assert _rows(admin_conn, schema) == seeded
        _session_still_works(s, admin_conn, schema, "dan")


@pytest.mark.parametrize("thing", ["a string", 42, None, User], ids=["str", "int", "None", "cls"])
def test_add_of_something_that_is_not_a_mapped_instance(
    db: Engine, thing: Any, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        with pytest.raises(exc.UnmappedInstanceError):
            s.add(thing)
        _session_still_works(s, admin_conn, schema, "ann")


def test_delete_of_an_unmapped_object(db: Engine, admin_conn: Conn, schema: str) -> None:
    with Session(db) as s:
        with pytest.raises(exc.UnmappedInstanceError):
            s.delete(NotMapped())
        _session_still_works(s, admin_conn, schema, "ann")


def test_delete_of_a_transient_object(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        u = User(name="ann")
        with pytest.raises(exc.InvalidRequestError, match=r"not persisted|transient|persistent"):
            s.delete(u)
        assert inspect(u).transient
        assert u not in s
        s.commit()
    assert _rows(admin_conn, schema) == seeded


def test_delete_of_a_pending_object(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        u = User(name="carl")
        s.add(u)
        with pytest.raises(exc.InvalidRequestError, match=r"expunge|pending|persist"):
            s.delete(u)
        assert inspect(u).pending
        assert u in s.new and u not in s.deleted
        s.rollback()
    assert _rows(admin_conn, schema) == seeded


def test_delete_of_a_detached_object_attaches_it(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    # SQLAlchemy: "The object is assumed to be either persistent or detached when passed"
    with Session(db, expire_on_commit=False) as s:
        ann = s.scalars(select(User).where(User.name == "ann")).one()
    with Session(db) as s2:
        s2.delete(ann)
        assert ann in s2.deleted
        s2.commit()
    assert [r[1] for r in _rows(admin_conn, schema)] == ["bob"]


def test_get_with_the_wrong_number_of_key_values(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        with pytest.raises(exc.InvalidRequestError):
            s.get(Pair, 1)
        with pytest.raises(exc.InvalidRequestError):
            s.get(Pair, (1,))
        with pytest.raises(exc.InvalidRequestError):
            s.get(Pair, (1, 2, 3))
        with pytest.raises(exc.InvalidRequestError):
            s.get(User, (1, 2))
        with pytest.raises(exc.InvalidRequestError, match="'b'"):
            s.get(Pair, {"a": 1})
        # the session is fine afterwards
        assert s.get(User, seeded[0][0]) is not None
        _session_still_works(s, admin_conn, schema, "carl")


def test_get_of_an_unmapped_class(db: Engine) -> None:
    with Session(db) as s:
        with pytest.raises(exc.InvalidRequestError):
            s.get(NotMapped, 1)


def test_inspect_of_something_unmapped() -> None:
    with pytest.raises(exc.NoInspectionAvailable):
        inspect(NotMapped())
    with pytest.raises(exc.NoInspectionAvailable):
        inspect(42)
    assert inspect(42, raiseerr=False) is None


def test_unknown_constructor_argument(db: Engine, admin_conn: Conn, schema: str) -> None:
    with pytest.raises(TypeError, match="nmae"):
        User(nmae="typo")
    with pytest.raises(TypeError):
        User(name="ok", nope=1)
    with Session(db) as s:
        s.commit()
    assert _rows(admin_conn, schema) == []


def test_adding_a_detached_object_whose_identity_is_taken(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    ann_id = seeded[0][0]
    with Session(db, expire_on_commit=False) as s1:
        old = s1.get(User, ann_id)
    assert old is not None and inspect(old).detached
    with Session(db) as s2:
        current = s2.get(User, ann_id)
        assert current is not None and current is not old
        old.nickname = "from the detached copy"
        with pytest.raises(exc.InvalidRequestError, match=r"identity|already"):
            s2.add(old)
        assert old not in s2
        assert inspect(old).detached
        assert s2.get(User, ann_id) is current
        assert s2.identity_map[(User, (ann_id,), None)] is current
        s2.commit()
    assert _rows(admin_conn, schema) == seeded


def test_adding_an_object_of_another_live_session(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s1, Session(db) as s2:
        loaded = s1.get(User, seeded[0][0])
        pending = User(name="carl")
        s1.add(pending)
        for obj in (loaded, pending):
            with pytest.raises(exc.InvalidRequestError, match=r"another|session"):
                s2.add(obj)
            assert obj in s1 and obj not in s2
            assert inspect(obj).session is s1
        with pytest.raises(exc.InvalidRequestError):
            s2.delete(loaded)
        assert loaded not in s2.deleted and loaded not in s1.deleted
        s2.commit()
        assert _rows(admin_conn, schema) == seeded
        s1.commit()  # s1 is unaffected and writes its pending object
    assert [r[1] for r in _rows(admin_conn, schema)] == ["ann", "bob", "carl"]


def test_readding_the_same_object_is_harmless(db: Engine, admin_conn: Conn, schema: str) -> None:
    with Session(db) as s:
        u = User(name="ann")
        s.add(u)
        s.add(u)
        s.add_all([u, u])
        assert len(s.new) == 1
        s.commit()
    assert len(_rows(admin_conn, schema)) == 1


# --------------------------------------------------------------------------------------------
# database errors


def test_null_into_a_non_nullable_column(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        ann = s.get(User, seeded[0][0])
        assert ann is not None
        ok = User(name="carl")
        bad = User(nickname="no name")
        s.add_all([ok, bad])
        with pytest.raises(exc.IntegrityError) as info:
            s.flush()
        err = info.value
        assert isinstance(err.orig, psycopg.errors.NotNullViolation)
        assert err.statement is not None and "INSERT INTO" in err.statement
        assert "users" in err.statement
        assert err.params is not None and "no name" in list(err.params)
        assert "NotNullViolation" in str(err) and "INSERT INTO" in str(err)
        assert _rows(admin_conn, schema) == seeded
        with pytest.raises(exc.PendingRollbackError):
            s.commit()
        s.rollback()
        assert inspect(ok).transient and inspect(bad).transient
        assert ann in s and ann.name == "ann"
        _session_still_works(s, admin_conn, schema, "dan")
    assert [r[1] for r in _rows(admin_conn, schema)] == ["ann", "bob", "dan"]


def test_unique_violation_on_insert(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        s.add(User(name="ann"))
        with pytest.raises(exc.IntegrityError) as info:
            s.commit()
        err = info.value
        assert isinstance(err.orig, psycopg.errors.UniqueViolation)
        assert err.statement is not None and err.statement.startswith("INSERT")
        assert err.params is not None and "ann" in list(err.params)
        assert _rows(admin_conn, schema) == seeded
        with pytest.raises(exc.PendingRollbackError):
            s.commit()
        s.rollback()
        _session_still_works(s, admin_conn, schema, "carl")


def test_unique_violation_on_update(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        bob = s.get(User, seeded[1][0])
        assert bob is not None
        bob.name = "ann"
        with pytest.raises(exc.IntegrityError) as info:
            s.flush()
        assert isinstance(info.value.orig, psycopg.errors.UniqueViolation)
        assert info.value.statement is not None and info.value.statement.startswith("UPDATE")
        s.rollback()
        assert bob.name == "bob"  # reloaded
        assert bob not in s.dirty
        _session_still_works(s, admin_conn, schema, "carl")
    assert [r[1] for r in _rows(admin_conn, schema)] == ["ann", "bob", "carl"]


def test_value_too_long_is_a_data_error(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        s.add(User(name="x" * 51))
        with pytest.raises(exc.DataError) as info:
            s.flush()
        assert isinstance(info.value.orig, psycopg.errors.StringDataRightTruncation)
        s.rollback()
    assert _rows(admin_conn, schema) == seeded


def test_failed_flush_of_a_batch_writes_none_of_it(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        bob = s.get(User, seeded[1][0])
        assert bob is not None
        bob.nickname = "changed"  # an UPDATE that succeeds before the failing INSERT
        s.add_all([User(name="new1"), User(name="new2"), User(name="bob")])
        with pytest.raises(exc.IntegrityError):
            s.flush()
        s.rollback()
    assert _rows(admin_conn, schema) == seeded


def test_update_of_a_row_deleted_by_someone_else_is_stale_data(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        bob = s.get(User, seeded[1][0])
        assert bob is not None
        admin_conn.execute(f"DELETE FROM {schema}.users WHERE name = 'bob'")
        bob.nickname = "too late"
        with pytest.raises(exc.StaleDataError, match="users"):
            s.flush()
        with pytest.raises(exc.PendingRollbackError):
            s.commit()
        s.rollback()
    assert _rows(admin_conn, schema) == seeded[:1]


def test_delete_of_a_row_deleted_by_someone_else_is_stale_data(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        ann, bob = (s.get(User, r[0]) for r in seeded)
        admin_conn.execute(f"DELETE FROM {schema}.users WHERE name = 'bob'")
        s.delete(ann)
        s.delete(bob)
        with pytest.raises(exc.StaleDataError):
            s.flush()
        s.rollback()
    assert _rows(admin_conn, schema) == seeded[:1]  # ann's delete was rolled back too


def test_expired_object_whose_row_is_gone(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        bob = s.get(User, seeded[1][0])
        assert bob is not None
        s.expire(bob)
        admin_conn.execute(f"DELETE FROM {schema}.users WHERE name = 'bob'")
        with pytest.raises(exc.ObjectDeletedError):
            _ = bob.name
        # not a failed flush: the session goes on without a rollback
        _session_still_works(s, admin_conn, schema, "carl")


def test_refresh_of_an_object_whose_row_is_gone(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        bob = s.get(User, seeded[1][0])
        admin_conn.execute(f"DELETE FROM {schema}.users WHERE name = 'bob'")
        with pytest.raises(exc.InvalidRequestError):
            s.refresh(bob)


def test_bad_sql_in_execute_is_a_programming_error(db: Engine) -> None:
    from retort import text

    with Session(db) as s:
        with pytest.raises(exc.ProgrammingError) as info:
            s.execute(text("SELECT no_such_column FROM users"))
        assert isinstance(info.value.orig, psycopg.errors.UndefinedColumn)
        assert info.value.statement is not None and "no_such_column" in info.value.statement
        s.rollback()
        assert s.scalars(select(User)).all() == []


def test_adding_a_deleted_object_again(
    db: Engine, seeded: list[Any], admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        bob = s.get(User, seeded[1][0])
        s.delete(bob)
        s.flush()
        with pytest.raises(exc.InvalidRequestError, match="deleted"):
            s.add(bob)
        assert inspect(bob).deleted
        s.rollback()
    assert _rows(admin_conn, schema) == seeded


def test_expire_or_refresh_of_an_object_that_is_not_persistent(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s, Session(db) as other:
        transient = User(name="t")
        pending = User(name="p")
        s.add(pending)
        foreign = User(name="f")
        other.add(foreign)
        other.flush()
        for obj in (transient, pending, foreign):
            with pytest.raises(exc.InvalidRequestError):
                s.expire(obj)
            with pytest.raises(exc.InvalidRequestError):
                s.refresh(obj)
        assert inspect(pending).pending and pending.name == "p"
        assert inspect(foreign).session is other and foreign.name == "f"
        s.commit()
    assert [r[1] for r in _rows(admin_conn, schema)] == ["p"]
