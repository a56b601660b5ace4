"""Session behaviour against a real PostgreSQL: states, identity map, loading, expiry,
transactions, autoflush and queries (SQLAlchemy 2.x semantics)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from retort import (
    DeclarativeBase,
    Mapped,
    Session,
    String,
    exc,
    func,
    inspect,
    make_transient,
    mapped_column,
    object_session,
    select,
    sessionmaker,
    text,
)
from retort.engine import Engine
from retort.inspection import History

Log = list[tuple[str, Any]]
Conn = psycopg.Connection[Any]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    nickname: Mapped[str | None]
    age: Mapped[int | None]


class Tag(Base):
    __tablename__ = "tags"
    code: Mapped[str] = mapped_column(primary_key=True)
    label: Mapped[str]


class Profile(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    prefs: Mapped[dict[str, Any]]
    tags: Mapped[list[str]]


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


def _count(admin: Conn, schema: str, table: str = "users", where: str = "true") -> int:
    row = admin.execute(f"SELECT count(*) FROM {schema}.{table} WHERE {where}").fetchone()
    assert row is not None
    return int(row[0])


def _names(admin: Conn, schema: str) -> list[str]:
    return [r[0] for r in admin.execute(f"SELECT name FROM {schema}.users ORDER BY name")]


def _verbs(log: Log) -> list[str]:
    return [sql.split(None, 1)[0].upper() for sql, _ in log]


def _seed(engine: Engine, *names: str) -> list[int]:
    with Session(engine) as s:
        users = [User(name=n, nickname=f"{n}-nick", age=30) for n in names]
        s.add_all(users)
        s.commit()
        return [u.id for u in users]


# --------------------------------------------------------------------------------------------
# object states


def test_lifecycle_transient_pending_persistent_deleted_detached(db: Engine) -> None:
    with Session(db) as s:
        u = User(name="ann")
        st = inspect(u)
        assert (st.transient, st.pending, st.persistent, st.deleted, st.detached) == (
            True,
            False,
            False,
            False,
            False,
        )
        assert st.session is None and st.identity is None and st.identity_key is None
        assert object_session(u) is None

        s.add(u)
        assert st.pending and not st.transient
        assert st.session is s and object_session(u) is s
        assert st.identity is None

        s.flush()
        assert st.persistent and not st.pending
        assert st.identity == (u.id,)
        assert st.identity_key == (User, (u.id,), None)

        s.delete(u)
        assert st.persistent  # marked, not yet flushed
        assert u in s.deleted
        s.flush()
        assert st.deleted and not st.persistent
        assert st.was_deleted
        assert u not in s

        s.commit()
        assert st.detached and not st.deleted
        assert st.was_deleted
        assert st.session is None
        assert object_session(u) is None


def test_commit_keeps_objects_persistent_and_close_detaches_them(db: Engine) -> None:
    s = Session(db)
    u = User(name="ann")
    s.add(u)
    s.commit()
    assert inspect(u).persistent
    assert u in s
    s.close()
    st = inspect(u)
    assert st.detached and st.session is None
    assert st.identity is not None
    assert u not in s


def test_expunge_detaches_one_object_and_expunge_all_every_object(db: Engine) -> None:
    _seed(db, "a", "b", "c")
    with Session(db) as s:
        a, b, c = s.scalars(select(User).order_by(User.name)).all()
        pending = User(name="d")
        s.add(pending)
        s.expunge(a)
        assert inspect(a).detached
        assert a not in s and b in s
        assert a.name == "a"  # loaded values stay readable
        s.expunge(pending)
        assert inspect(pending).transient
        assert pending not in s.new
        s.expunge_all()
        assert inspect(b).detached and inspect(c).detached
        assert list(s) == []
        assert len(s.identity_map) == 0
        s.commit()  # nothing left to write
    with Session(db) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 3


@pytest.mark.parametrize("changed", [False, True])
def test_add_of_an_object_marked_for_deletion_takes_the_mark_back(
    db: Engine, admin_conn: Conn, schema: str, changed: bool
) -> None:
    # as SQLAlchemy's add(): the object is not deleted, and a change made before is flushed
    # (a class without relationships: the core's add() alone)
    _seed(db, "a", "b")
    with Session(db) as s:
        a, b = s.scalars(select(User).order_by(User.name)).all()
        if changed:
            a.nickname = "x"
        s.delete(a)
        s.delete(b)
        s.add(a)
        assert list(s.deleted) == [b] and a in s
        assert s.is_modified(a) is changed and (a in s.dirty) is changed
        s.commit()
    assert _names(admin_conn, schema) == ["a"]
    assert _count(admin_conn, schema, where="nickname = 'x'") == int(changed)


def test_expunge_of_an_object_not_in_the_session_is_an_error(db: Engine) -> None:
    with Session(db) as s:
        with pytest.raises(exc.InvalidRequestError):
            s.expunge(User(name="x"))


def test_detached_object_can_be_added_to_a_new_session(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db, expire_on_commit=False) as s:
        u = User(name="ann")
        s.add(u)
        s.commit()
    assert inspect(u).detached
    with Session(db) as s2:
        s2.add(u)
        assert inspect(u).persistent and u in s2
        assert u not in s2.new
        u.nickname = "back"
        assert u in s2.dirty
        s2.commit()
    assert admin_conn.execute(f"SELECT nickname FROM {schema}.users").fetchall() == [("back",)]


def test_make_transient_forgets_session_and_identity(db: Engine) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        make_transient(u)
        st = inspect(u)
        assert st.transient and st.identity is None and st.session is None
        assert u not in s
        assert u.name == "ann"


# --------------------------------------------------------------------------------------------
# new / dirty / deleted, is_modified, history


def test_new_dirty_and_deleted_sets(db: Engine) -> None:
    a_id, b_id = _seed(db, "a", "b")
    with Session(db) as s:
        assert (len(s.new), len(s.dirty), len(s.deleted)) == (0, 0, 0)
        a, b = s.get(User, a_id), s.get(User, b_id)
        assert a is not None and b is not None
        c = User(name="c")
        s.add(c)
        assert list(s.new) == [c] and c not in s.dirty
        a.nickname = "changed"
        assert list(s.dirty) == [a]
        s.delete(b)
        assert list(s.deleted) == [b]
        assert b not in s.dirty
        s.flush()
        assert (len(s.new), len(s.dirty), len(s.deleted)) == (0, 0, 0)


def test_is_modified_modified_flag_and_history(db: Engine) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        st = inspect(u)
        assert not s.is_modified(u) and not st.modified
        assert st.attrs["name"].history == History((), ("ann",), ())
        assert not st.attrs["name"].history.has_changes()

        u.name = "bob"
        assert s.is_modified(u) and st.modified
        assert u in s.dirty
        assert st.attrs["name"].history == History(("bob",), (), ("ann",))
        assert st.attrs["name"].history.has_changes()
        assert st.attrs["age"].history == History((), (30,), ())

        u.name = "carl"  # the deleted value stays the committed one
        assert st.attrs["name"].history == History(("carl",), (), ("ann",))

        u.name = "ann"  # back to the committed value: no net change
        assert not s.is_modified(u)
        assert u not in s.dirty
        assert st.attrs["name"].history == History((), ("ann",), ())

        u.nickname = None
        assert st.attrs["nickname"].history == History((None,), (), ("ann-nick",))
        s.flush()
        assert not s.is_modified(u) and u not in s.dirty
        assert st.attrs["nickname"].history == History((), (None,), ())


def test_history_of_a_pending_object(db: Engine) -> None:
    with Session(db) as s:
        u = User(name="ann")
        s.add(u)
        assert inspect(u).attrs["name"].history == History(("ann",), (), ())
        assert inspect(u).attrs["age"].history == History((), (), ())


def test_contains_iteration_and_identity_map(db: Engine) -> None:
    a_id, b_id = _seed(db, "a", "b")
    with Session(db) as s:
        a = s.get(User, a_id)
        b = s.get(User, b_id)
        new = User(name="new")
        s.add(new)
        outsider = User(name="out")
        assert a in s and b in s and new in s
        assert outsider not in s
        assert {id(o) for o in s} == {id(a), id(b), id(new)}
        im = s.identity_map
        assert len(im) == 2
        assert set(im.keys()) == {(User, (a_id,), None), (User, (b_id,), None)}
        assert im[(User, (a_id,), None)] is a
        assert (User, (b_id,), None) in im
        assert (User, (-1,), None) not in im
        assert im.get((User, (-1,), None)) is None
        with pytest.raises(KeyError):
            im[(User, (-1,), None)]
        s.flush()
        assert len(s.identity_map) == 3
        assert s.identity_map[(User, (new.id,), None)] is new


# --------------------------------------------------------------------------------------------
# get / get_one


def test_get_hits_the_identity_map_without_sql(db: Engine, sql_log: Log) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        sql_log.clear()
        u = s.get(User, uid)
        assert u is not None and u.name == "ann"
        assert _verbs(sql_log) == ["SELECT"]
        sql_log.clear()
        assert s.get(User, uid) is u
        assert s.get(User, (uid,)) is u
        assert s.get(User, {"id": uid}) is u
        assert s.get(User, [uid]) is u

        class Key(int):  # (an int subclass takes the general conversion, to the same key)
            pass

        assert s.get(User, Key(uid)) is u
        assert s.get(User, (Key(uid),)) is u
        assert sql_log == []
        assert s.scalars(select(User).where(User.id == uid)).one() is u


def test_get_by_a_bool_answers_from_the_identity_map_like_the_equal_int(
    db: Engine, sql_log: Log
) -> None:
    # True == 1 in Python, and SQLAlchemy's identity map finds user 1 under (True,); a SELECT
    # instead would compare an integer column with a boolean and abort the transaction
    with Session(db) as s:
        one = User(id=1, name="one")
        s.add(one)
        s.flush()
        sql_log.clear()
        assert s.get(User, True) is one
        assert s.get(User, (True,)) is one
        assert s.identity_map.get((User, (True,), None)) is one
        assert sql_log == []
        s.commit()


def test_get_through_the_class_a_subclass_and_a_new_identity_map(db: Engine, sql_log: Log) -> None:
    # each session's `get` is its core's (a hit runs no Python): it must follow the core when
    # expunge_all() or close() replaces it, and step aside for a subclass's own get()
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert Session.get(s, User, uid) is u
        s.expunge_all()
        sql_log.clear()
        again = s.get(User, uid)
        assert again is not u and again is not None and again.name == "ann"
        assert _verbs(sql_log) == ["SELECT"]
        s.close()
        assert s.get(User, uid) is not again
        assert s.get(User, uid, populate_existing=True) is s.get(User, uid)

    calls: list[Any] = []

    class Counting(Session):
        def get(self, entity: Any, ident: Any, **kw: Any) -> Any:
            calls.append(ident)
            return super().get(entity, ident, **kw)

    with Counting(db) as s:
        first = s.get(User, uid)
        assert s.get(User, uid) is first
        assert calls == [uid, uid]


def test_get_of_a_missing_row_returns_none_and_get_one_raises(db: Engine) -> None:
    with Session(db) as s:
        assert s.get(User, 12345) is None
        with pytest.raises(exc.NoResultFound):
            s.get_one(User, 12345)
        tag = Tag(code="t", label="T")
        s.add(tag)
        s.flush()
        assert s.get_one(Tag, "t") is tag


def test_get_natural_key_of_a_pending_object_flushes_first(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        tag = Tag(code="py", label="Python")
        s.add(tag)
        sql_log.clear()
        assert s.get(Tag, "py") is tag
        # either found in the identity map after autoflush, or flushed and not selected
        assert "INSERT" in _verbs(sql_log)
        assert inspect(tag).persistent


def test_get_after_delete_flush_returns_none(db: Engine) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        s.delete(u)
        s.flush()
        assert s.get(User, uid) is None


# --------------------------------------------------------------------------------------------
# expire / refresh


def test_expire_unloads_and_next_access_selects_once(db: Engine, sql_log: Log) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        s.expire(u)
        assert inspect(u).expired_attributes == {"name", "nickname", "age"}
        sql_log.clear()
        assert u.name == "ann"
        assert _verbs(sql_log) == ["SELECT"]
        assert u.age == 30 and u.nickname == "ann-nick"
        assert len(sql_log) == 1  # one SELECT loaded every expired attribute
        assert inspect(u).expired_attributes == set()


def test_expire_and_refresh_of_an_empty_list_of_names_take_every_attribute(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    # SQLAlchemy tests the names for truth: an empty list is no list, so all attributes go
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        s.expire(u, [])
        assert inspect(u).expired_attributes == {"name", "nickname", "age"}
        assert u.age == 30
        admin_conn.execute(f"UPDATE {schema}.users SET age = 31, name = 'bea'")
        s.refresh(u, iter(()))
        assert (u.name, u.age) == ("bea", 31)


def test_expire_picks_up_changes_made_by_others(db: Engine, admin_conn: Conn, schema: str) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None and u.age == 30
        admin_conn.execute(f"UPDATE {schema}.users SET age = 31")
        assert u.age == 30  # loaded values are not reloaded by themselves
        s.expire(u, ["age"])
        assert inspect(u).expired_attributes == {"age"}
        assert u.age == 31


def test_expire_named_attribute_keeps_a_later_assignment(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        s.expire(u, ["name"])
        assert inspect(u).expired_attributes == {"name"}
        u.name = "assigned"
        sql_log.clear()
        assert u.name == "assigned"
        assert sql_log == []  # nothing to load: the assignment is the value
        assert u.nickname == "ann-nick"
        s.commit()
    assert _names(admin_conn, schema) == ["assigned"]


def test_an_object_expired_by_name_in_every_column_but_the_key_is_not_expired_as_a_whole(
    db: Engine, sql_log: Log
) -> None:
    # as SQLAlchemy: get() answers from the identity map without SQL, and the flush of its
    # DELETE loads nothing first (an object expired as a whole is loaded again by both)
    uid, other = _seed(db, "ann", "bob")
    with Session(db) as s:
        u, v = s.get(User, uid), s.get(User, other)
        assert u is not None and v is not None
        s.expire(u, ["name", "nickname", "age"])
        sql_log.clear()
        assert s.get(User, uid) is u
        assert sql_log == []
        assert u.name == "ann"
        assert _verbs(sql_log) == ["SELECT"]
        s.expire(v, ["name", "nickname", "age"])
        s.delete(v)
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["DELETE"]


def test_a_new_object_takes_the_place_of_a_loaded_object_whose_row_is_gone(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    # the row of a loaded (not expired) object is deleted by another transaction, and a new
    # object of its key is added: the flush checks the row (one SELECT), marks the old object
    # deleted and inserts the new one in its place; where the row is there, the INSERT fails
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        old = s.get(User, uid)
        assert old is not None
        admin_conn.execute(f"DELETE FROM {schema}.users WHERE id = %s", (uid,))
        new = User(id=uid, name="bea")
        s.add(new)
        sql_log.clear()
        s.flush()
        assert _verbs(sql_log) == ["SELECT", "INSERT"]
        assert inspect(old).deleted and inspect(new).persistent
        assert s.get(User, uid) is new
        s.commit()
    assert _names(admin_conn, schema) == ["bea"]
    with Session(db) as s:
        assert s.get(User, uid) is not None
        s.add(User(id=uid, name="cy"))
        with pytest.raises(exc.IntegrityError):
            s.flush()


def test_expire_discards_unflushed_changes(db: Engine, admin_conn: Conn, schema: str) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        u.name = "never"
        s.expire(u)
        assert u not in s.dirty
        assert u.name == "ann"
        s.commit()
    assert _names(admin_conn, schema) == ["ann"]


def test_expire_all_expires_every_persistent_object(db: Engine, sql_log: Log) -> None:
    ids = _seed(db, "a", "b")
    with Session(db) as s:
        objs = [s.get(User, i) for i in ids]
        s.expire_all()
        for o in objs:
            assert inspect(o).expired_attributes == {"name", "nickname", "age"}
        sql_log.clear()
        assert [o.name for o in objs if o is not None] == ["a", "b"]
        assert _verbs(sql_log) == ["SELECT", "SELECT"]


def test_refresh_reloads_now(db: Engine, sql_log: Log, admin_conn: Conn, schema: str) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        admin_conn.execute(f"UPDATE {schema}.users SET nickname = 'theirs', age = 99")
        u.age = 1  # an unflushed change of the refreshed object is discarded
        sql_log.clear()
        s.refresh(u)
        assert _verbs(sql_log) == ["SELECT"]
        n = len(sql_log)
        assert (u.nickname, u.name, u.age) == ("theirs", "ann", 99)
        assert len(sql_log) == n  # already loaded by refresh()
        assert u not in s.dirty


def test_refresh_named_attributes_only(db: Engine, admin_conn: Conn, schema: str) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        admin_conn.execute(f"UPDATE {schema}.users SET nickname = 'theirs', age = 99")
        s.refresh(u, ["nickname"])
        assert u.nickname == "theirs"
        assert u.age == 30  # not refreshed, still the loaded value


def test_refresh_of_a_transient_object_is_an_error(db: Engine) -> None:
    with Session(db) as s:
        with pytest.raises(exc.InvalidRequestError):
            s.refresh(User(name="x"))


# --------------------------------------------------------------------------------------------
# expire_on_commit


def test_expire_on_commit_reloads_with_one_select(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        u = User(name="ann", age=5)
        s.add(u)
        s.commit()
        sql_log.clear()
        assert u.name == "ann"
        assert _verbs(sql_log) == ["SELECT"]
        assert u.age == 5 and u.nickname is None
        assert len(sql_log) == 1
        assert inspect(u).persistent


def test_expire_on_commit_sees_committed_changes_of_others(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        u = User(name="ann", age=5)
        s.add(u)
        s.commit()
        admin_conn.execute(f"UPDATE {schema}.users SET age = 6")
        assert u.age == 6


def test_expire_on_commit_false_keeps_values_without_sql(db: Engine, sql_log: Log) -> None:
    with Session(db, expire_on_commit=False) as s:
        u = User(name="ann", age=5)
        s.add(u)
        s.commit()
        sql_log.clear()
        assert (u.name, u.age, u.nickname) == ("ann", 5, None)
        assert inspect(u).expired_attributes == set()
        assert sql_log == []
    # still readable after close, detached
    assert u.name == "ann"


def test_expired_attribute_of_a_detached_object_raises(db: Engine) -> None:
    with Session(db) as s:
        u = User(name="ann")
        s.add(u)
        s.commit()
    with pytest.raises(exc.DetachedInstanceError):
        _ = u.name


# --------------------------------------------------------------------------------------------
# rollback


def test_rollback_restores_attribute_values_from_the_database(
    db: Engine, sql_log: Log, admin_conn: Conn, schema: str
) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        u.name = "flushed"
        s.flush()
        u.age = 77  # not even flushed
        s.rollback()
        assert u not in s.dirty
        assert inspect(u).persistent
        sql_log.clear()
        assert (u.name, u.age) == ("ann", 30)
        assert "SELECT" in _verbs(sql_log)  # re-read, not restored from memory
    assert _names(admin_conn, schema) == ["ann"]


def test_rollback_makes_objects_added_in_the_transaction_transient(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    (uid,) = _seed(db, "old")
    with Session(db) as s:
        old = s.get(User, uid)
        flushed = User(name="flushed")
        pending = User(name="pending")
        s.add(flushed)
        s.flush()
        s.add(pending)
        s.rollback()
        for obj in (flushed, pending):
            assert inspect(obj).transient, obj
            assert obj not in s
            assert inspect(obj).identity is None
        assert old in s and inspect(old).persistent
        assert len(s.identity_map) == 1
        assert list(s.new) == []
        # they can be added again and written in a new transaction
        s.add_all([flushed, pending])
        s.commit()
    assert _names(admin_conn, schema) == ["flushed", "old", "pending"]


def test_an_object_expired_before_its_insert_was_rolled_back_is_inserted_once_set_again(
    db: Engine, admin_conn: Conn, schema: str, sql_log: Log
) -> None:
    with Session(db) as s:
        u = User(name="ann", age=5)
        s.add(u)
        s.flush()
        s.expire(u)
        s.rollback()  # no row to load name and age from any more
        with pytest.raises(exc.DetachedInstanceError, match="set it again"):
            _ = u.name
        s.add(u)
        with pytest.raises(exc.InvalidRequestError, match="set it again"):
            _ = u.age
        sql_log.clear()
        with pytest.raises(exc.InvalidRequestError, match="attribute 'name' was expired"):
            s.flush()
        assert "INSERT" not in _verbs(sql_log)
        s.rollback()  # (the failed flush made u transient again, as SQLAlchemy's does)
        u.name, u.age = "bea", None
        s.add(u)
        # that rollback does not make the value of a column expired before the first one
        # known: each must be set again
        with pytest.raises(exc.InvalidRequestError, match="attribute 'nickname' was expired"):
            s.flush()
        s.rollback()
        u.nickname = None
        s.add(u)
        s.commit()
        assert inspect(u).persistent
        s.expire(u)
        assert (u.name, u.age) == ("bea", None)
    assert _names(admin_conn, schema) == ["bea"]


def test_rollback_of_a_flushed_delete_makes_the_object_persistent_again(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        s.delete(u)
        s.flush()
        assert inspect(u).deleted
        s.rollback()
        assert inspect(u).persistent
        assert not inspect(u).was_deleted
        assert u in s and u not in s.deleted
        assert s.get(User, uid) is u
        assert u.name == "ann"
    assert _count(admin_conn, schema) == 1


def test_rollback_of_an_unflushed_delete_keeps_the_object(db: Engine) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        s.delete(u)
        s.rollback()
        assert u in s and u not in s.deleted
        s.commit()
        assert s.get(User, uid) is u


# --------------------------------------------------------------------------------------------
# autoflush


def test_autoflush_before_a_query(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        s.add(User(name="ann"))
        sql_log.clear()
        found = s.scalars(select(User).where(User.name == "ann")).all()
        assert len(found) == 1
        assert _verbs(sql_log) == ["INSERT", "SELECT"]


def test_autoflush_before_a_get_miss(db: Engine, sql_log: Log) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        u.age = 1
        sql_log.clear()
        assert s.get(User, uid + 1000) is None
        assert _verbs(sql_log) == ["UPDATE", "SELECT"]


def test_no_autoflush_suppresses_autoflush(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        s.add(User(name="ann"))
        sql_log.clear()
        with s.no_autoflush:
            assert s.scalars(select(User)).all() == []
            assert s.get(User, 1) is None
        assert "INSERT" not in _verbs(sql_log)
        assert len(s.new) == 1
        assert len(s.scalars(select(User)).all()) == 1  # autoflush is back after the block


def test_autoflush_false_session(db: Engine, sql_log: Log) -> None:
    with Session(db, autoflush=False) as s:
        s.add(User(name="ann"))
        assert s.scalars(select(User)).all() == []
        s.flush()
        assert len(s.scalars(select(User)).all()) == 1


# --------------------------------------------------------------------------------------------
# failed flush


def test_failed_flush_requires_rollback_then_session_works_again(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        keeper = User(name="keeper", age=1)
        s.add(keeper)
        s.commit()
        keeper_id = keeper.id
        s.add(User(name="keeper"))  # unique violation
        with pytest.raises(exc.IntegrityError):
            s.flush()
        assert not s.is_active  # (SQLAlchemy's name for "to be rolled back")
        s.flush()  # nothing left to write: returns, as in SQLAlchemy
        for op in (
            lambda: (s.add(User(name="other")), s.flush()),
            s.commit,
            lambda: s.execute(select(User)),
            lambda: s.scalars(select(User)),
            lambda: s.get(User, keeper_id + 1),
            s.connection,
        ):
            with pytest.raises(exc.PendingRollbackError):
                op()
        s.rollback()
        assert s.is_active
        assert list(s.new) == []
        assert keeper in s
        assert keeper.name == "keeper" and keeper.age == 1
        assert s.get(User, keeper_id) is keeper
        s.add(User(name="second"))
        s.commit()
    assert _names(admin_conn, schema) == ["keeper", "second"]


# --------------------------------------------------------------------------------------------
# statements


def test_execute_scalars_and_scalar(db: Engine) -> None:
    ids = _seed(db, "d", "a", "c", "b", "e")
    with Session(db) as s:
        names = s.scalars(select(User.name).order_by(User.name)).all()
        assert names == ["a", "b", "c", "d", "e"]
        desc = s.scalars(select(User).order_by(User.name.desc()).limit(2)).all()
        assert [u.name for u in desc] == ["e", "d"]
        page = s.scalars(select(User).order_by(User.name).limit(2).offset(1)).all()
        assert [u.name for u in page] == ["b", "c"]
        assert s.scalars(select(User).filter_by(name="c")).one().id == ids[2]
        assert s.scalar(select(func.count()).select_from(User)) == 5
        assert s.scalar(select(func.count(User.id)).where(User.name > "b")) == 3
        assert s.scalar(select(User).where(User.name == "zzz")) is None
        rows = s.execute(select(User.id, User.name).where(User.name.in_(["a", "e"]))).all()
        assert sorted((r.name, r.id) for r in rows) == [("a", ids[1]), ("e", ids[4])]
        row = s.execute(select(User).where(User.name == "a")).one()
        assert isinstance(row[0], User) and row[0].name == "a"
        assert row.User is row[0]
        with pytest.raises(exc.MultipleResultsFound):
            s.scalars(select(User)).one()
        with pytest.raises(exc.NoResultFound):
            s.scalars(select(User).where(User.name == "zzz")).one()
        assert s.scalars(select(User).where(User.name == "zzz")).one_or_none() is None
        first = s.scalars(select(User).order_by(User.id)).first()
        assert first is not None and first.id == ids[0]


def test_text_with_bound_parameters(db: Engine) -> None:
    _seed(db, "ann", "bob")
    with Session(db) as s:
        got = s.execute(
            text("SELECT name, age FROM users WHERE name = :n OR name = :m ORDER BY name"),
            {"n": "bob", "m": "ann"},
        ).all()
        assert [tuple(r) for r in got] == [("ann", 30), ("bob", 30)]
        assert s.scalar(text("SELECT count(*) FROM users WHERE name LIKE :p"), {"p": "a%"}) == 1
        s.execute(text("UPDATE users SET age = :a WHERE name = :n"), {"a": 1, "n": "ann"})
        assert s.scalar(text("SELECT age FROM users WHERE name = 'ann'")) == 1


def test_query_rows_return_identity_map_instances_without_overwriting(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        assert u is not None
        with s.no_autoflush:
            u.nickname = "local"  # unflushed
            admin_conn.execute(f"UPDATE {schema}.users SET age = 99, nickname = 'db'")
            again = s.scalars(select(User).where(User.id == uid)).one()
            assert again is u
            assert u.nickname == "local"
            assert u.age == 30  # loaded value kept
            assert u in s.dirty
            refreshed = s.scalars(
                select(User).where(User.id == uid).execution_options(populate_existing=True)
            ).one()
            assert refreshed is u
            assert (u.age, u.nickname) == (99, "db")
            assert u not in s.dirty


def test_get_with_populate_existing_overwrites(db: Engine, admin_conn: Conn, schema: str) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        admin_conn.execute(f"UPDATE {schema}.users SET age = 42")
        assert s.get(User, uid) is u and u is not None and u.age == 30
        assert s.get(User, uid, populate_existing=True) is u
        assert u.age == 42


def test_execute_rejects_a_plain_string(db: Engine) -> None:
    with Session(db) as s:
        with pytest.raises(exc.ArgumentError, match="text"):
            s.execute("SELECT 1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# transactions and session lifecycle


def test_context_manager_closes_without_committing(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        u = User(name="ann")
        s.add(u)
        s.flush()
        assert s.in_transaction()
    assert inspect(u).detached or inspect(u).transient
    assert _count(admin_conn, schema) == 0
    with Session(db) as s2:
        assert s2.scalars(select(User)).all() == []


def test_commit_is_visible_to_other_sessions(db: Engine, admin_conn: Conn, schema: str) -> None:
    with Session(db) as s:
        s.add(User(name="ann"))
        s.flush()
        assert _count(admin_conn, schema) == 0  # not yet committed
        s.commit()
        assert _count(admin_conn, schema) == 1
        assert not s.in_transaction()


def test_sessionmaker_begin_commits_on_success(db: Engine, admin_conn: Conn, schema: str) -> None:
    factory = sessionmaker(db)
    with factory.begin() as s:
        assert isinstance(s, Session)
        s.add(User(name="ann"))
        u = User(name="bob")
        s.add(u)
    assert _names(admin_conn, schema) == ["ann", "bob"]
    assert inspect(u).detached  # closed afterwards


def test_sessionmaker_begin_rolls_back_on_error(db: Engine, admin_conn: Conn, schema: str) -> None:
    factory = sessionmaker(db)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with factory.begin() as s:
            s.add(User(name="ann"))
            s.flush()
            raise Boom
    assert _count(admin_conn, schema) == 0


def test_sessionmaker_passes_its_settings(db: Engine, sql_log: Log) -> None:
    factory = sessionmaker(db, expire_on_commit=False)
    s = factory()
    try:
        assert s.expire_on_commit is False and s.bind is db
        u = User(name="ann")
        s.add(u)
        s.commit()
        sql_log.clear()
        assert u.name == "ann" and sql_log == []
    finally:
        s.close()
    assert factory(expire_on_commit=True).expire_on_commit is True


def test_session_begin_commits_and_rolls_back(db: Engine, admin_conn: Conn, schema: str) -> None:
    with Session(db) as s:
        with s.begin():
            s.add(User(name="ann"))
        assert _count(admin_conn, schema) == 1
        with pytest.raises(ZeroDivisionError):
            with s.begin():
                s.add(User(name="bob"))
                s.flush()
                _ = 1 / 0
        assert _names(admin_conn, schema) == ["ann"]
        tx = s.begin()
        assert tx.is_active and s.in_transaction()
        s.add(User(name="carl"))
        tx.commit()
        assert not tx.is_active
    assert _names(admin_conn, schema) == ["ann", "carl"]


def test_begin_while_a_transaction_is_open_is_an_error(db: Engine) -> None:
    with Session(db) as s:
        s.begin()
        with pytest.raises(exc.InvalidRequestError):
            s.begin()
        s.rollback()
        # an autobegun transaction counts too
        s.execute(select(User))
        assert s.in_transaction()
        with pytest.raises(exc.InvalidRequestError):
            s.begin()
        s.commit()
        with s.begin():  # nothing open any more
            pass


def test_session_works_after_commit_and_after_close(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    s = Session(db)
    s.add(User(name="a"))
    s.commit()
    s.add(User(name="b"))
    s.commit()
    s.close()
    s.add(User(name="c"))
    s.commit()
    s.close()
    assert _names(admin_conn, schema) == ["a", "b", "c"]
    # after close, each first use (get() included) starts the session afresh
    for first_use in ("get", "add", "identity_map"):
        s.close()
        assert not s.identity_map
        if first_use == "get":
            c = s.get(User, 3)
            assert c is not None and c.name == "c" and c in s
        elif first_use == "add":
            d = User(name=f"d{len(s.identity_map)}")
            s.add(d)
            assert d in s and list(s.new) == [d]
            s.rollback()
        assert s.get(User, 1) is s.get(User, 1)
    s.close()


def test_connection_is_the_transaction_connection(db: Engine) -> None:
    with Session(db) as s:
        s.add(User(name="ann"))
        s.flush()
        conn = s.connection()
        # same transaction: sees the flushed, uncommitted row
        assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar() == 1
        assert s.connection() is conn


def test_update_and_delete_round_trip(db: Engine, admin_conn: Conn, schema: str) -> None:
    ids = _seed(db, "a", "b", "c")
    with Session(db) as s:
        a, b, c = (s.get(User, i) for i in ids)
        assert a is not None and b is not None and c is not None
        a.age = 1
        b.name = "bee"
        s.delete(c)
        s.commit()
    rows = admin_conn.execute(f"SELECT name, age FROM {schema}.users ORDER BY id").fetchall()
    assert rows == [("a", 1), ("bee", 30)]


def test_in_place_json_changes_are_detected(db: Engine, admin_conn: Conn, schema: str) -> None:
    # SPEC §5: changes inside JSON/JSONB and list values are detected with no wrapper types
    with Session(db) as s:
        p = Profile(prefs={"theme": "light"}, tags=["a"])
        s.add(p)
        s.commit()
        p.prefs["theme"] = "dark"
        p.tags.append("b")
        assert s.is_modified(p)
        assert p in s.dirty
        s.commit()
    row = admin_conn.execute(f"SELECT prefs, tags FROM {schema}.profiles").fetchone()
    assert row == ({"theme": "dark"}, ["a", "b"])


def test_deleting_twice_is_harmless(db: Engine, admin_conn: Conn, schema: str) -> None:
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        s.delete(u)
        s.delete(u)
        assert len(s.deleted) == 1
        s.commit()
    assert _count(admin_conn, schema) == 0


def test_close_all_sessions_detaches_everything(db: Engine) -> None:
    from retort import close_all_sessions

    (uid,) = _seed(db, "ann")
    s1, s2 = Session(db), Session(db)
    a = s1.get(User, uid)
    b = s2.get(User, uid)
    close_all_sessions()
    assert inspect(a).detached and inspect(b).detached
    assert not s1.in_transaction() and not s2.in_transaction()


def test_get_of_an_object_marked_for_deletion_returns_it_until_the_flush(db: Engine) -> None:
    # as SQLAlchemy: the identity map still holds it; after the flush the row is gone
    (uid,) = _seed(db, "ann")
    with Session(db) as s:
        u = s.get(User, uid)
        s.delete(u)
        assert s.get(User, uid) is u
        assert u in s.deleted
        s.flush()
        assert s.get(User, uid) is None


def test_a_load_larger_than_a_page_keeps_order_identity_and_changes(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    """Objects of a class without relationships load page by page; the pages must join up:
    every row once, in the query's order, objects the session holds returned as they are
    (with their unflushed changes), the rest loaded."""
    from retort.session import _LOAD_PAGE

    n = 2 * _LOAD_PAGE + 7
    admin_conn.execute(
        f"INSERT INTO {schema}.users (name, age) SELECT 'u' || i, i FROM generate_series(1, %s) i",
        (n,),
    )
    with Session(db) as s:
        held = s.scalars(select(User).where(User.age == _LOAD_PAGE + 1)).one()
        held.nickname = "changed"  # dirty, on the second page of the big load
        with s.no_autoflush:
            users = s.scalars(select(User).order_by(User.age.desc())).all()
        assert [u.age for u in users] == list(range(n, 0, -1))
        assert len({id(u) for u in users}) == n
        assert users[n - _LOAD_PAGE - 1] is held
        assert held.nickname == "changed"
        assert all(u.nickname is None for u in users if u is not held)
        assert len(list(s)) == n
        s.commit()
    assert _count(admin_conn, schema, where="nickname = 'changed'") == 1


def test_a_loader_registered_on_the_driver_connection_applies_to_later_loads(db: Engine) -> None:
    # retort keeps one psycopg adaptation context per database connection, which remembers
    # the loader of each column type it met: handing the connection out drops it, so that
    # what is registered there is used by the next load on that connection
    class Shouting(psycopg.adapt.Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode().upper()

    with Session(db) as session:
        session.add(User(id=1, name="ann"))
        session.commit()
        assert session.get(User, 1).name == "ann"  # (expired by the commit: loaded again)
    with db.connect() as conn:  # the same database connection (the engine's spare)
        driver = conn.driver_connection
        driver.adapters.register_loader("varchar", Shouting)
    with Session(db) as session:
        assert session.get(User, 1).name == "ANN"
        assert session.connection().driver_connection is driver
