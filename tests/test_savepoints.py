"""SAVEPOINTs: Session.begin_nested() and what rolling one back undoes (only its own work)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import psycopg
import pytest

from retort import DeclarativeBase, Mapped, Session, exc, inspect, mapped_column, select
from retort.engine import Engine

Log = list[tuple[str, Any]]
Conn = psycopg.Connection[Any]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Item(name="a"), Item(name="b")])
        s.commit()
    return engine


def _names(admin_conn: Conn, schema: str) -> list[str]:
    rows = admin_conn.execute(f"SELECT name FROM {schema}.items ORDER BY id").fetchall()
    return [r[0] for r in rows]


def test_begin_nested_flushes_first_and_emits_savepoint_statements(
    db: Engine, sql_log: Log
) -> None:
    with Session(db) as s:
        s.add(Item(name="c"))
        sql_log.clear()
        with s.begin_nested() as sp:
            assert sp.nested and s.in_nested_transaction()
            assert sp.parent is not None and not sp.parent.nested
            s.add(Item(name="d"))
        verbs = [q.split()[0].upper() for q, _ in sql_log]
        assert verbs[:2] == ["INSERT", "SAVEPOINT"]  # pending work flushed before the SAVEPOINT
        assert verbs[-2:] == ["INSERT", "RELEASE"]
        assert not s.in_nested_transaction()


def test_rolling_back_a_savepoint_undoes_only_its_work(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        a, b = s.scalars(select(Item).order_by(Item.id)).all()
        a.name = "a1"  # before the savepoint: kept
        sp = s.begin_nested()
        b.name = "b1"
        s.flush()
        s.delete(a)
        added = Item(name="inside")
        s.add(added)
        s.flush()
        sp.rollback()
        assert inspect(added).transient
        assert inspect(a).persistent and a in s
        assert b.name == "b"  # expired and reloaded: the change inside is gone
        assert a.name == "a1"
        s.commit()
    assert _names(admin_conn, schema) == ["a1", "b"]


def test_unflushed_work_inside_a_rolled_back_savepoint_is_dropped(db: Engine) -> None:
    with Session(db) as s:
        a = s.get(Item, 1)
        with pytest.raises(RuntimeError):
            with s.begin_nested():
                pending = Item(name="p")
                s.add(pending)
                s.delete(a)
                raise RuntimeError("boom")
        assert inspect(pending).transient
        assert a not in s.deleted and inspect(a).persistent
        assert not s.new


@pytest.mark.parametrize("where", ["inside", "before"])
def test_a_changed_object_marked_deleted_inside_a_rolled_back_savepoint_is_expired(
    db: Engine, admin_conn: Conn, schema: str, where: str
) -> None:
    # found by the differential search: an object changed, then marked for deletion inside a
    # SAVEPOINT (or changed while detached, then attached by that delete()) kept its change
    # after the rollback, unflushed and left out of the dirty set; as SQLAlchemy, it is
    # expired (every object holding a change is) and reloads the row
    with Session(db) as s:
        a = s.get(Item, 1)
        assert a is not None
        if where == "before":
            s.expunge(a)
            a.name = "changed"
        sp = s.begin_nested()
        if where == "inside":
            a.name = "changed"
        s.delete(a)
        sp.rollback()
        assert a in s and a not in s.deleted and not s.is_modified(a)
        assert "name" in inspect(a).expired_attributes
        assert a.name == "a"
        a.name = "again"  # a change made now is flushed
        s.commit()
    assert _names(admin_conn, schema) == ["again", "b"]


def test_a_released_savepoint_is_undone_by_the_outer_rollback(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        with s.begin_nested():
            x = Item(name="x")
            s.add(x)
        assert inspect(x).persistent
        s.rollback()
        assert inspect(x).transient
    assert _names(admin_conn, schema) == ["a", "b"]


def test_inner_savepoint_rollback_keeps_the_outer_one(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        outer = s.begin_nested()
        s.add(Item(name="outer"))
        inner = s.begin_nested()
        s.add(Item(name="inner"))
        s.flush()
        inner.rollback()
        assert s.in_nested_transaction()
        outer.commit()
        s.commit()
    assert _names(admin_conn, schema) == ["a", "b", "outer"]


def test_a_failed_flush_inside_a_savepoint_leaves_the_outer_work(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        s.add(Item(name="kept"))
        sp = s.begin_nested()
        bad = Item(name=None)  # type: ignore[arg-type]  # NOT NULL violation
        s.add(bad)
        with pytest.raises(exc.IntegrityError):
            s.flush()
        # the savepoint's work is undone in the session at once, as SQLAlchemy: nothing left
        # to flush, but no new work until the savepoint is rolled back
        assert bad not in s and not s.new
        s.flush()
        s.add(Item(name="lost"))
        with pytest.raises(exc.PendingRollbackError):
            s.flush()
        assert not s.is_active and not sp.is_active
        sp.rollback()
        assert s.is_active
        s.commit()
    assert _names(admin_conn, schema) == ["a", "b", "kept"]


class Code(Base):
    __tablename__ = "codes"
    code: Mapped[str] = mapped_column(primary_key=True)
    label: Mapped[str]


@pytest.mark.parametrize("how", ["rollback", "savepoint"])
def test_a_primary_key_change_is_undone_in_the_identity_map(
    engine: Engine, admin_conn: Conn, schema: str, how: str
) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Code(code="old", label="x"))
        s.commit()
    with Session(engine) as s:
        c = s.get(Code, "old")
        assert c is not None
        sp = s.begin_nested() if how == "savepoint" else None
        c.code = "new"
        s.flush()
        assert s.get(Code, "new") is c
        if sp is not None:
            sp.rollback()
        else:
            s.rollback()
        assert c.code == "old"
        assert s.get(Code, "old") is c
        assert s.get(Code, "new") is None
        assert c.label == "x"  # reloads through the old key
        s.commit()
    assert admin_conn.execute(f"SELECT code FROM {schema}.codes").fetchall() == [("old",)]


def test_a_load_refused_by_a_failed_savepoint_leaves_no_prepared_statement_behind(
    engine_factory: Any,
) -> None:
    # get() loads by a statement due to be prepared (it has run prepare_threshold times) just
    # as it runs in a SAVEPOINT whose transaction failed: the server refuses the PREPARE. The
    # connection's statement cache must not name it then, or, once ROLLBACK TO SAVEPOINT made
    # the transaction usable again, every later load by that statement fails with "prepared
    # statement ... does not exist" (until a ROLLBACK clears the cache). ROLLBACK TO clears it
    # only the first time its text runs on the connection, so an earlier session on the same
    # pooled connection runs it first
    eng = engine_factory(pool_size=1, max_overflow=0, connect_args={"prepare_threshold": 2})
    Base.metadata.create_all(eng)
    with Session(eng) as s:
        s.add_all([Item(id=i, name=f"n{i}") for i in range(1, 6)])
        s.commit()
    with Session(eng) as s:
        s.get(Item, 1)
        with s.begin_nested() as sp:
            s.get(Item, 2)
            sp.rollback()
        s.commit()
    with Session(eng) as s:  # (the load's statement has run twice on the connection)
        sp = s.begin_nested()
        with pytest.raises(exc.DataError):
            s.connection().exec_driver_sql("SELECT 1/0")
        with pytest.raises(exc.InternalError, match="current transaction is aborted"):
            s.get(Item, 3)
        sp.rollback()
        assert s.get(Item, 4) is not None
        assert s.get(Item, 5) is not None  # (by the statement prepared by the load before)
        prepared = s.connection().exec_driver_sql("SELECT count(*) FROM pg_prepared_statements")
        assert prepared.scalar() == 1


@pytest.mark.parametrize(
    "undo",
    [
        "savepoint-rollback",
        "failed-flush-in-savepoint",
        "failed-flush",
        "delete-in-failed-flush-in-savepoint",
        "delete-in-failed-flush",
    ],
)
def test_an_object_whose_delete_a_rollback_undid_is_held_weakly_again(
    db: Engine, undo: str
) -> None:
    # a flushed DELETE keeps its object until the transaction ends (deleted_to_detached at
    # commit); once a rollback (of the SAVEPOINT, or of a failed flush) makes it persistent
    # again, the session holds it weakly, as every clean persistent object (and as
    # SQLAlchemy's): dropped by its caller, it goes, and a detached copy of its row attaches.
    # Likewise where the DELETE was in the failed flush (whose error the session keeps until
    # rollback(), its traceback holding the frames of the flush)
    with Session(db) as s:
        copy = s.get(Item, 1)
        assert copy is not None
        s.expunge(copy)
        item = s.get(Item, 1)
        assert item is not None and item is not copy
        sp = s.begin_nested() if "savepoint" in undo else None
        s.delete(item)
        if not undo.startswith("delete-in"):
            s.flush()
            assert inspect(item).deleted
        if undo == "savepoint-rollback":
            assert sp is not None
            sp.rollback()
        else:
            s.add(Item(id=2, name="taken"))  # the key of a row: this flush fails
            with pytest.raises(exc.IntegrityError):
                s.flush()
        assert inspect(item).persistent
        ref = weakref.ref(item)
        del item
        gc.collect()
        assert ref() is None
        if sp is None:
            s.rollback()
        elif undo != "savepoint-rollback":
            sp.rollback()
        s.delete(copy)  # no other instance of the row is held: it attaches
        s.flush()
        assert s.get(Item, 1) is None


@pytest.mark.parametrize("reload", ["get", "merge", "query"])
def test_an_object_loaded_from_a_row_a_rolled_back_savepoint_inserted_is_expired(
    db: Engine, reload: str
) -> None:
    # an item inserted inside a SAVEPOINT leaves the session (expunge), and its row is loaded
    # into another instance; the SAVEPOINT's rollback removes the row, which that instance
    # must not go on showing (SQLAlchemy's does, unless merge() touched it inside)
    with Session(db) as s:
        sp = s.begin_nested()
        inserted = Item(id=5, name="c")
        s.add(inserted)
        s.flush()
        s.expunge(inserted)
        if reload == "get":
            copy = s.get(Item, 5)
        elif reload == "merge":
            copy = s.merge(inserted)
        else:
            copy = s.scalars(select(Item).where(Item.id == 5)).one()
        assert copy is not inserted and copy is not None and copy.name == "c"
        sp.rollback()
        assert inspect(copy).expired
        with pytest.raises(exc.ObjectDeletedError, match="no longer exists"):
            copy.name  # noqa: B018
        assert s.get(Item, 5) is None
        assert inspect(inserted).transient
        s.commit()
