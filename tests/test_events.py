"""Session events (`retort.event`): which events fire, with which arguments, how often and in
which order, against a real PostgreSQL.

The sequence tests take the `orm` fixture and run on retort and on SQLAlchemy 2.x: SQLAlchemy
is the oracle for the order. (Where one flush makes several objects persistent, SQLAlchemy
fires their lifecycle events in set order; retort fires them in flush order, so those
sequences are retort-only tests.) The registration API tests are retort-only.
"""

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from retort import (
    DeclarativeBase,
    Mapped,
    Session,
    String,
    event,
    exc,
    make_transient,
    mapped_column,
    select,
    sessionmaker,
)
from retort.engine import Connection, Engine
from retort.event import SESSION_EVENTS
from retort.session import SessionTransaction, UOWTransaction
from tests._rel_models import Api, parent_child, sqlalchemy_api

Log = list[tuple[Any, ...]]


@pytest.fixture(params=["retort", "sqlalchemy"])
def orm(
    request: pytest.FixtureRequest,
    dsn: str,
    schema: str,
    admin_conn: psycopg.Connection[Any],
) -> Iterator[Api]:
    """The library under test (see test_relationships.py)."""
    admin_conn.execute(f"SET search_path TO {schema}")
    if request.param == "retort":
        engine = request.getfixturevalue("engine")
        yield Api("retort", engine, request.getfixturevalue("sql_log"), admin_conn)
        return
    pytest.importorskip("sqlalchemy")
    api = sqlalchemy_api(dsn, schema, admin_conn)
    try:
        yield api
    finally:
        api.engine.dispose()


def _event_module(orm: Api) -> Any:
    return importlib.import_module("retort.event" if orm.name == "retort" else "sqlalchemy.event")


def _is_mapped(value: Any) -> bool:
    return hasattr(type(value), "__mapper__")


def _recorder(log: Log, name: str) -> Callable[..., None]:
    def listener(session: Any, *args: Any) -> None:
        log.append((name, *[a for a in args if _is_mapped(a)]))

    return listener


def record(ev: Any, target: Any) -> Log:
    """Listen for every session event on `target`; the log gets (event name, *objects)."""
    log: Log = []
    for name in SESSION_EVENTS:
        ev.listen(target, name, _recorder(log, name))
    return log


FLUSH = [("before_flush",), ("after_flush",), ("after_flush_postexec",)]


# -- sequences, on retort and on SQLAlchemy ---------------------------------------------------


def test_add_then_commit(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    s = orm.session()
    log = record(_event_module(orm), s)
    p = Parent(name="p")
    s.add(p)
    s.add(p)  # already pending: nothing
    s.commit()
    assert log == [
        ("after_attach", p),
        ("transient_to_pending", p),
        ("before_commit",),
        ("before_flush",),
        ("after_begin",),
        ("after_flush",),
        ("pending_to_persistent", p),
        ("after_flush_postexec",),
        ("after_commit",),
    ]
    s.close()


def test_update_then_commit(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    with orm.session() as s0:
        s0.add(Parent(name="p"))
        s0.commit()
    s = orm.session()
    log = record(_event_module(orm), s)
    p = s.scalars(orm.select(Parent)).one()
    assert log == [("after_begin",)]  # loading is no lifecycle event here
    log.clear()
    p.name = "q"
    s.commit()
    assert log == [("before_commit",), *FLUSH, ("after_commit",)]
    log.clear()
    s.commit()  # nothing to flush, no connection: still a commit
    assert log == [("before_commit",), ("after_commit",)]
    s.close()


def test_delete_then_commit(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    with orm.session() as s0:
        s0.add(Parent(name="p"))
        s0.commit()
    s = orm.session()
    p = s.scalars(orm.select(Parent)).one()
    log = record(_event_module(orm), s)
    s.delete(p)
    assert log == []
    s.commit()
    assert log == [
        ("before_commit",),
        ("before_flush",),
        ("after_flush",),
        ("persistent_to_deleted", p),
        ("after_flush_postexec",),
        ("after_commit",),
        ("deleted_to_detached", p),
    ]
    s.close()


def test_rollback(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    s = orm.session()
    log = record(_event_module(orm), s)
    s.rollback()  # no transaction: nothing happens
    assert log == []
    p = Parent(name="p")
    s.add(p)
    s.flush()
    log.clear()
    s.rollback()
    assert log == [("after_rollback",), ("after_soft_rollback",)]
    log.clear()
    s.add(Parent(name="q"))  # a transaction without a connection is rolled back too
    log.clear()
    s.rollback()
    assert log == [("after_rollback",), ("after_soft_rollback",)]
    s.close()


def test_failed_flush_rolls_back_once(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    orm.fetch("INSERT INTO parents (id, name) VALUES (1, 'taken') RETURNING id")
    s = orm.session()
    log = record(_event_module(orm), s)
    s.add(Parent(id=1, name="dup"))
    log.clear()
    with pytest.raises(orm.IntegrityError):
        s.flush()
    assert log == [
        ("before_flush",),
        ("after_begin",),
        ("after_rollback",),
        ("after_soft_rollback",),
    ]
    log.clear()
    s.rollback()  # the database transaction is gone already
    assert log == [("after_soft_rollback",)]
    s.close()


def test_cascaded_add_and_flush(orm: Api) -> None:
    Parent, Child = parent_child(orm)
    s = orm.session()
    log = record(_event_module(orm), s)
    p = Parent(name="p")
    s.add(p)
    s.flush()
    log.clear()
    c = Child(name="c")
    p.children.append(c)  # save-update cascade through the collection
    assert log == [("after_attach", c), ("transient_to_pending", c)]
    log.clear()
    s.flush()
    assert log == [*FLUSH[:2], ("pending_to_persistent", c), FLUSH[2]]
    s.close()


def test_expunge_close_and_reattach(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    s = orm.session()
    p, q = Parent(name="p"), Parent(name="q")
    s.add_all([p, q])
    s.commit()
    log = record(_event_module(orm), s)
    s.expunge(p)
    assert log == [("persistent_to_detached", p)]
    log.clear()
    s.add(p)  # detached → persistent: attached, not pending
    assert log == [("after_attach", p)]
    s.expunge(p)
    log.clear()
    s.close()
    assert log == [("persistent_to_detached", q)]

    s2 = orm.session()
    log2 = record(_event_module(orm), s2)
    s2.delete(p)  # deleting a detached object attaches it first
    assert log2 == [("after_attach", p)]
    s2.flush()
    log2.clear()
    s2.expunge(p)  # flushed delete, then expunged: detached now, not at commit
    assert log2 == [("deleted_to_detached", p)]
    log2.clear()
    s2.commit()
    assert log2 == [("before_commit",), ("after_commit",)]
    s2.close()


def test_make_transient_detaches(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    s = orm.session()
    p = Parent(name="p")
    s.add(p)
    s.commit()
    log = record(_event_module(orm), s)
    make = importlib.import_module("retort" if orm.name == "retort" else "sqlalchemy.orm")
    make.make_transient(p)
    assert log == [("persistent_to_detached", p)]
    s.close()


def test_objects_added_in_before_flush_are_flushed(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    s = orm.session()
    ev = _event_module(orm)
    log = record(ev, s)
    added: list[Any] = []

    def add_one(session: Any, flush_context: Any, instances: Any) -> None:
        if not added:
            added.append(Parent(name="from before_flush"))
            session.add(added[0])

    ev.listen(s, "before_flush", add_one)
    p = Parent(name="p")
    s.add(p)
    log.clear()
    s.commit()
    a = added[0]
    assert log == [
        ("before_commit",),
        ("before_flush",),
        ("after_attach", a),
        ("transient_to_pending", a),
        ("after_begin",),
        ("after_flush",),
        *log[6:8],
        ("after_flush_postexec",),
        ("after_commit",),
    ]
    # (SQLAlchemy fires the two in set order)
    assert sorted(log[6:8], key=lambda e: e[1] is a) == [
        ("pending_to_persistent", p),
        ("pending_to_persistent", a),
    ]
    names = orm.fetch("SELECT name FROM parents ORDER BY name")
    assert names == [("from before_flush",), ("p",)]
    s.close()


def test_flush_inside_before_flush_raises(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    s = orm.session()

    def flush_again(session: Any, flush_context: Any, instances: Any) -> None:
        session.flush()

    _event_module(orm).listen(s, "before_flush", flush_again)
    s.add(Parent(name="p"))
    with pytest.raises(orm.InvalidRequestError, match="already flushing"):
        s.flush()
    s.close()


def test_after_flush_sees_the_state_before_the_flush(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    s = orm.session()
    old, gone = Parent(name="old"), Parent(name="gone")
    s.add_all([old, gone])
    s.commit()
    new = Parent(name="new")
    s.add(new)
    old.name = "changed"
    s.delete(gone)
    seen: dict[str, Any] = {}

    def after_flush(session: Any, flush_context: Any) -> None:
        seen["sets"] = [
            {id(o) for o in session.new},
            {id(o) for o in session.dirty},
            {id(o) for o in session.deleted},
        ]
        seen["new_id"] = new.id  # database-generated keys are there already

    def postexec(session: Any, flush_context: Any) -> None:
        seen["post"] = [len(session.new), len(session.dirty), len(session.deleted)]

    ev = _event_module(orm)
    ev.listen(s, "after_flush", after_flush)
    ev.listen(s, "after_flush_postexec", postexec)
    s.flush()
    assert seen["sets"] == [{id(new)}, {id(old)}, {id(gone)}]
    assert isinstance(seen["new_id"], int)
    assert seen["post"] == [0, 0, 0]
    assert len(s.new) == 0
    s.close()


def test_objects_added_after_flush_are_flushed_by_commit(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    s = orm.session()
    extra: list[Any] = []

    def add_later(session: Any, flush_context: Any) -> None:
        if not extra:
            extra.append(Parent(name="later"))
            session.add(extra[0])

    _event_module(orm).listen(s, "after_flush_postexec", add_later)
    s.add(Parent(name="first"))
    s.commit()
    assert orm.fetch("SELECT name FROM parents ORDER BY name") == [("first",), ("later",)]
    s.close()


# -- retort only: order within one flush, arguments, registration -----------------------------


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


class EventSession(Session):
    """A Session subclass, so that class-level listeners do not reach other tests."""


def test_lifecycle_events_follow_flush_order(
    engine: Engine, sql_log: Log, admin_conn: psycopg.Connection[Any]
) -> None:
    # SQLAlchemy fires one flush's lifecycle events in set order: retort only
    orm = Api("retort", engine, sql_log, admin_conn)
    Parent, Child = parent_child(orm, cascade="all, delete-orphan")
    s = orm.session()
    log = record(event, s)
    p = Parent(name="p")
    c1, c2 = Child(name="c1"), Child(name="c2")
    p.children.extend([c1, c2])
    s.add(p)
    assert log == [
        ("after_attach", p),
        ("transient_to_pending", p),
        ("after_attach", c1),
        ("transient_to_pending", c1),
        ("after_attach", c2),
        ("transient_to_pending", c2),
    ]
    log.clear()
    s.commit()
    assert log == [
        ("before_commit",),
        ("before_flush",),
        ("after_begin",),
        ("after_flush",),
        ("pending_to_persistent", p),
        ("pending_to_persistent", c1),
        ("pending_to_persistent", c2),
        ("after_flush_postexec",),
        ("after_commit",),
    ]
    log.clear()
    p.children.remove(c1)  # delete-orphan
    s.flush()
    assert log == [
        ("after_begin",),
        ("before_flush",),
        ("after_flush",),
        ("persistent_to_deleted", c1),
        ("after_flush_postexec",),
    ]
    log.clear()
    s.delete(p)  # cascades to c2
    s.commit()
    assert log == [
        ("before_commit",),
        ("before_flush",),
        ("after_flush",),
        ("persistent_to_deleted", p),
        ("persistent_to_deleted", c2),
        ("after_flush_postexec",),
        ("after_commit",),
        ("deleted_to_detached", c1),
        ("deleted_to_detached", p),
        ("deleted_to_detached", c2),
    ]
    s.close()


def test_row_switch_is_one_delete_and_one_insert_event(db: Engine) -> None:
    with Session(db) as s0:
        s0.add(Item(id=7, name="a"))
        s0.commit()
    s = Session(db)
    old = s.get_one(Item, 7)
    log = record(event, s)
    s.delete(old)
    new = Item(id=7, name="b")
    s.add(new)
    log.clear()
    s.commit()
    assert log == [
        ("before_commit",),
        ("before_flush",),
        ("after_flush",),
        ("persistent_to_deleted", old),
        ("pending_to_persistent", new),
        ("after_flush_postexec",),
        ("after_commit",),
        ("deleted_to_detached", old),
    ]
    s.close()


def test_event_arguments(db: Engine) -> None:
    s = Session(db)
    got: dict[str, tuple[Any, ...]] = {}
    for name in SESSION_EVENTS:
        event.listen(s, name, lambda *args, _n=name: got.setdefault(_n, args))
    item = Item(name="a")
    s.add(item)
    tx = s.get_transaction()
    s.flush(None)
    assert got["after_attach"] == (s, item)
    assert got["transient_to_pending"] == (s, item)
    assert got["pending_to_persistent"] == (s, item)
    session, ctx, instances = got["before_flush"]
    assert session is s and instances is None
    assert isinstance(ctx, UOWTransaction) and ctx.session is s and ctx.transaction is tx
    assert got["after_flush"] == (s, ctx) and got["after_flush_postexec"] == (s, ctx)
    assert ctx.plan is not None and len(ctx.plan) == 1
    session, transaction, connection = got["after_begin"]
    assert session is s and transaction is tx and isinstance(transaction, SessionTransaction)
    assert isinstance(connection, Connection) and connection is s.connection()
    s.rollback()
    assert got["after_rollback"] == (s,)
    assert got["after_soft_rollback"] == (s, tx)
    s.close()


def test_class_listeners_reach_every_instance(db: Engine) -> None:
    made_before = EventSession(db)
    plain = Session(db)
    log: Log = []
    fn = _recorder(log, "before_commit")
    event.listen(EventSession, "before_commit", fn)
    try:
        made_after = EventSession(db)
        made_before.commit()
        made_after.commit()
        plain.commit()
        assert log == [("before_commit",), ("before_commit",)]
        assert event.contains(EventSession, "before_commit", fn)
        assert not event.contains(Session, "before_commit", fn)
    finally:
        event.remove(EventSession, "before_commit", fn)
    made_before.commit()
    assert len(log) == 2
    assert made_before._dispatch == {} and made_after._dispatch == {}
    for s in (made_before, made_after, plain):
        s.close()


def test_listener_on_the_session_class(db: Engine) -> None:
    calls: list[Any] = []

    @event.listens_for(Session, "after_commit")
    def after_commit(session: Session) -> None:
        calls.append(session)

    try:
        s = Session(db)
        sub = EventSession(db)
        s.commit()
        sub.commit()
        assert calls == [s, sub]
    finally:
        event.remove(Session, "after_commit", after_commit)
    s.commit()
    assert len(calls) == 2
    s.close()
    sub.close()


def test_sessionmaker_listeners(db: Engine) -> None:
    maker = sessionmaker(db)
    other = sessionmaker(db)
    early = maker()
    log: Log = []
    fn = _recorder(log, "before_commit")
    event.listen(maker, "before_commit", fn)
    late = maker()
    stranger = other()
    for s in (early, late, stranger, Session(db)):
        s.commit()
    assert log == [("before_commit",), ("before_commit",)]  # early and late only
    with maker.begin():
        pass
    assert len(log) == 3
    assert event.contains(maker, "before_commit", fn)
    assert not event.contains(other, "before_commit", fn)
    event.remove(maker, "before_commit", fn)
    early.commit()
    assert len(log) == 3
    for s in (early, late, stranger):
        s.close()


def test_instance_listeners_are_per_session(db: Engine) -> None:
    a, b = Session(db), Session(db)
    log = record(event, a)
    a.add(Item(name="x"))
    b.add(Item(name="y"))
    assert [e[0] for e in log] == ["after_attach", "transient_to_pending"]
    assert b._dispatch == {}
    a.close()
    b.close()


def test_class_listeners_run_before_instance_listeners_and_insert_goes_first(
    db: Engine,
) -> None:
    order: list[str] = []
    s = EventSession(db)

    def own(session: Session) -> None:
        order.append("own")

    def cls(session: Session) -> None:
        order.append("class")

    def first(session: Session) -> None:
        order.append("first")

    event.listen(s, "before_commit", own)
    event.listen(EventSession, "before_commit", cls)
    event.listen(s, "before_commit", first, insert=True)
    try:
        s.commit()
    finally:
        event.remove(EventSession, "before_commit", cls)
    assert order == ["class", "first", "own"]
    s.close()


def test_remove_and_contains(db: Engine) -> None:
    s = Session(db)
    calls: list[str] = []

    def fn(session: Session) -> None:
        calls.append("x")

    assert not event.contains(s, "before_commit", fn)
    event.listen(s, "before_commit", fn)
    event.listen(s, "before_commit", fn)  # the same listener twice: registered once
    assert event.contains(s, "before_commit", fn)
    assert not event.contains(s, "after_commit", fn)
    s.commit()
    assert calls == ["x"]
    event.remove(s, "before_commit", fn)
    assert not event.contains(s, "before_commit", fn)
    assert s._dispatch == {}
    s.commit()
    assert calls == ["x"]
    with pytest.raises(exc.InvalidRequestError, match="not a listener"):
        event.remove(s, "before_commit", fn)
    s.close()


def test_once(db: Engine) -> None:
    s = Session(db)
    calls: list[Any] = []
    event.listen(s, "transient_to_pending", lambda session, obj: calls.append(obj), once=True)
    a, b = Item(name="a"), Item(name="b")
    s.add_all([a, b])
    s.add(Item(name="c"))
    assert calls == [a]
    s.close()


def test_named_arguments(db: Engine) -> None:
    s = Session(db)
    got: list[dict[str, Any]] = []

    @event.listens_for(s, "after_soft_rollback", named=True)
    def soft(**kw: Any) -> None:
        got.append(kw)

    s.add(Item(name="a"))
    tx = s.get_transaction()
    s.rollback()
    assert got == [{"session": s, "previous_transaction": tx}]
    s.close()


def test_bad_event_names_and_targets(db: Engine) -> None:
    s = Session(db)
    with pytest.raises(exc.InvalidRequestError, match="before_flush, after_flush") as err:
        event.listen(s, "before_insert", lambda *a: None)
    assert "'before_insert'" in str(err.value)
    with pytest.raises(exc.InvalidRequestError, match="no such event"):
        event.listens_for(Session, "after_comit")
    with pytest.raises(exc.InvalidRequestError, match="a Session, a sessionmaker"):
        event.listen(Item, "before_flush", lambda *a: None)
    with pytest.raises(exc.InvalidRequestError, match="a Session, a sessionmaker"):
        event.listen(db, "before_flush", lambda *a: None)
    with pytest.raises(exc.ArgumentError, match="callable"):
        event.listen(s, "before_flush", "not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        event.listen(s, "before_flush", lambda *a: None, retval=True)  # type: ignore[call-arg]
    assert s._dispatch == {}
    s.close()


def test_before_flush_additions_go_in_the_same_flush(db: Engine, sql_log: Log) -> None:
    s = Session(db)

    @event.listens_for(s, "before_flush")
    def add_audit(session: Session, flush_context: Any, instances: Any) -> None:
        if not any(o.name == "audit" for o in session.new):
            session.add(Item(name="audit"))

    s.add(Item(name="a"))
    sql_log.clear()
    s.flush()
    inserts = [(sql, params) for sql, params in sql_log if sql.startswith("INSERT")]
    assert len(inserts) == 1  # one statement: both rows in one batch of one flush
    assert inserts[0][0].count("(%s") == 2
    assert sorted(s.scalars(select(Item.name)).all()) == ["a", "audit"]
    s.close()


def test_before_flush_can_cancel_the_flush(db: Engine, sql_log: Log) -> None:
    s = Session(db)
    item = Item(name="a")
    calls: list[str] = []

    @event.listens_for(s, "before_flush")
    def drop_it(session: Session, flush_context: Any, instances: Any) -> None:
        session.expunge(item)

    event.listen(s, "after_flush", lambda *a: calls.append("after_flush"))
    s.add(item)
    sql_log.clear()
    s.flush()
    assert sql_log == [] and calls == []
    s.close()


def test_deleted_to_detached_with_a_listener_added_after_the_flush(db: Engine) -> None:
    s = Session(db)
    item = Item(name="a")
    s.add(item)
    s.commit()
    s.delete(item)
    s.flush()
    calls: list[Any] = []
    event.listen(s, "deleted_to_detached", lambda session, obj: calls.append(obj))
    s.commit()
    assert calls == [item]
    s.close()


def test_rolled_back_deletes_do_not_detach_at_the_next_commit(db: Engine) -> None:
    s = Session(db)
    item = Item(name="a")
    s.add(item)
    s.commit()
    log = record(event, s)
    s.delete(item)
    s.flush()
    s.rollback()
    log.clear()
    s.commit()
    assert log == [("before_commit",), ("after_commit",)]
    s.close()


def test_expunge_all_and_close_detach_every_persistent_object(db: Engine) -> None:
    s = Session(db)
    a, b, pending = Item(name="a"), Item(name="b"), Item(name="c")
    s.add_all([a, b])
    s.commit()
    s.add(pending)
    log = record(event, s)
    s.expunge_all()
    # (in identity map order, which is no particular order)
    assert sorted(log, key=lambda e: e[1].id) == [
        ("persistent_to_detached", a),
        ("persistent_to_detached", b),
    ]
    log.clear()
    s.add(a)
    s.close()
    assert log == [("after_attach", a), ("persistent_to_detached", a)]


def test_listener_errors_propagate(db: Engine) -> None:
    s = Session(db)

    def boom(session: Session, flush_context: Any) -> None:
        raise RuntimeError("listener failed")

    event.listen(s, "after_flush", boom)
    s.add(Item(name="a"))
    with pytest.raises(RuntimeError, match="listener failed"):
        s.flush()
    s.add(Item(name="c"))
    with pytest.raises(exc.PendingRollbackError):
        s.flush()
    s.rollback()
    event.remove(s, "after_flush", boom)
    s.add(Item(name="b"))
    s.commit()
    assert s.scalars(select(Item.name)).all() == ["b"]
    s.close()


def test_make_transient_of_an_unlistened_session(db: Engine) -> None:
    s = Session(db)
    item = Item(name="a")
    s.add(item)
    s.commit()
    make_transient(item)
    assert item not in s
    s.close()


def test_savepoint_release_and_rollback(orm: Api) -> None:
    Parent, _ = parent_child(orm)
    orm.fetch("INSERT INTO parents (id, name) VALUES (1000, 'taken') RETURNING id")
    s = orm.session()
    s.add(Parent(name="p"))
    s.flush()
    log = record(_event_module(orm), s)
    sp = s.begin_nested()
    s.add(Parent(name="inside"))
    log.clear()
    sp.commit()
    released = list(log)
    log.clear()
    sp = s.begin_nested()
    s.add(Parent(name="rolled back"))
    s.flush()
    log.clear()
    sp.rollback()
    rolled_back = list(log)
    log.clear()
    with pytest.raises(orm.IntegrityError):
        with s.begin_nested():
            s.add(Parent(id=1000, name="taken"))
            s.flush()
    failed = list(log)
    log.clear()
    sp = s.begin_nested()
    s.add(Parent(name="q"))
    inner = s.begin_nested()
    s.add(Parent(name="r"))
    log.clear()
    inner.commit()
    inner_released = list(log)
    log.clear()
    s.rollback()
    root_rollback = list(log)
    names = [[e[0] for e in seq] for seq in (released, failed, inner_released)]
    flush_in_savepoint = [
        "before_commit",
        "before_flush",
        "after_begin",  # the SAVEPOINT's first use of the connection
        "after_flush",
        "pending_to_persistent",
        "after_flush_postexec",
        "after_commit",
    ]
    assert names[0] == flush_in_savepoint
    assert rolled_back == [("after_rollback",), ("after_soft_rollback",)]
    assert names[1] == [
        "after_attach",
        "transient_to_pending",
        "before_flush",
        "after_begin",
        "after_rollback",  # the failed flush rolled back to the SAVEPOINT; leaving the
        "after_soft_rollback",  # block adds nothing
    ]
    assert names[2] == flush_in_savepoint
    # the open SAVEPOINT, then the transaction
    assert root_rollback == [("after_rollback",), ("after_soft_rollback",)] * 2
    s.close()
