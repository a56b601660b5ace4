"""The Session: the public unit-of-work API over the Rust core.

The core holds the identity map, object states and change tracking, and plans flushes; this
module owns transactions, the connection, SQL execution and the public API with SQLAlchemy 2.x
names and semantics.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from retort import _core, attributes, event, exc, flush, loading, mapping
from retort.engine.base import TwoPhaseTransaction
from retort.engine.result import Result, ScalarResult
from retort.flush import (  # "%" doubled: run with parameters
    RelatedChanges,
    quote_identifier,
    quote_table,
)
from retort.mapping import Mapper, class_mapper, configure_mappers, object_mapper
from retort.sql.compiler import compile as compile_stmt
from retort.sql.elements import and_, or_
from retort.sql.selectable import Select
from retort.sql.selectable import select as select_

if TYPE_CHECKING:
    from retort.engine import Connection, Engine
    from retort.engine.base import NestedTransaction

_T = TypeVar("_T")

__all__ = [
    "Session",
    "SessionTransaction",
    "close_all_sessions",
    "make_transient",
    "make_transient_to_detached",
    "object_session",
    "sessionmaker",
]

_NEEDS_LOAD = _core.NEEDS_LOAD
_sessions: weakref.WeakSet[Session] = weakref.WeakSet()


def _relationships_of(obj: Any) -> Any:
    """The relationships of a mapped object's class (empty for anything else)."""
    mapper = getattr(type(obj), "__mapper__", None)
    return mapper.relationships if isinstance(mapper, Mapper) else ()


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _clear_finished_frames(tb: TracebackType | None) -> None:
    """Drop the local variables of the finished frames of retort's own code along a traceback
    (their code and line numbers stay, for printing it); the frames still running are left."""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            try:
                frame.clear()
            except RuntimeError:
                pass  # still running
        tb = tb.tb_next


def _lifecycle(obj: Any) -> str:
    """transient, pending, persistent, deleted or detached."""
    state = obj.__dict__.get("_retort_state")
    return "transient" if state is None else str(state.lifecycle)


def _attribute_names(names: Iterable[str] | None) -> list[str] | None:
    """The attribute names given to expire() or refresh(); None for all of them. An empty
    list means all of them too, as in SQLAlchemy (which tests the argument for truth)."""
    listed = list(names) if names is not None else None
    return listed or None


def _pending_in(plan: Any) -> list[Any]:
    """The pending objects a flush plan makes persistent, in flush order: its inserts, and the
    new objects that take a deleted object's row over (row switch: an UPDATE)."""
    out: list[Any] = []
    for batch in plan.batches:
        if batch.phase != "main":
            continue
        if batch.op == "insert":
            out.extend(batch.objects())
        elif batch.op == "update":
            out.extend(o for o in batch.objects() if _lifecycle(o) == "pending")
    return out


def _first_entity(statement: Any) -> Mapper | None:
    """The mapper of a select's first selected entity, if it is a mapped class."""
    raw = getattr(statement, "_raw_columns", None)
    if not raw:
        return None
    mapper = getattr(raw[0], "__mapper__", None)
    return mapper if isinstance(mapper, Mapper) else None


def _load_outer(core: Any, rows: list[Any], shape: Any, populate: bool) -> list[Any]:
    """Objects of an outer-joined entity per row (None where the join found nothing)."""
    mapper = shape.mapper
    pk_pos = shape.start + mapper.columns.index(mapper.primary_key[0])
    present = [i for i, r in enumerate(rows) if r[pk_pos] is not None]
    out: list[Any] = [None] * len(rows)
    if present:
        loaded = core.load_rows(
            mapper._core, [rows[i] for i in present], shape.start, populate, False
        )
        for i, obj in zip(present, loaded, strict=True):
            out[i] = obj
    return out


# Rows per page when a query's objects load page by page (see Result).
_LOAD_PAGE = 1000


class IdentitySet:
    """A set of objects compared by identity (objects may define ``__eq__`` as they like)."""

    __slots__ = ("_objs",)

    def __init__(self, objs: Iterable[Any] = ()) -> None:
        self._objs = {id(o): o for o in objs}

    def __contains__(self, obj: object) -> bool:
        return id(obj) in self._objs

    def __iter__(self) -> Iterator[Any]:
        return iter(self._objs.values())

    def __len__(self) -> int:
        return len(self._objs)

    def __bool__(self) -> bool:
        return bool(self._objs)

    def __repr__(self) -> str:
        return f"IdentitySet({list(self._objs.values())!r})"


class IdentityMapView:
    """The persistent objects of a session, keyed by ``(class, primary key tuple, None)``."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def values(self) -> list[Any]:
        return list(self._session._core.identity_objects())

    def _key(self, obj: Any) -> tuple[type, tuple[Any, ...], None]:
        mapper = object_mapper(obj)
        return (mapper.class_, tuple(mapper._core.primary_key_of(obj)), None)

    def keys(self) -> list[tuple[type, tuple[Any, ...], None]]:
        return [self._key(o) for o in self.values()]

    def items(self) -> list[tuple[tuple[type, tuple[Any, ...], None], Any]]:
        return [(self._key(o), o) for o in self.values()]

    def __iter__(self) -> Iterator[tuple[type, tuple[Any, ...], None]]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.values())

    def get(self, key: tuple[Any, ...], default: Any = None) -> Any:
        cls, ident = key[0], key[1]
        obj = self._session._core.identity_lookup(class_mapper(cls)._core, tuple(ident))
        return default if obj is None else obj

    def __getitem__(self, key: tuple[Any, ...]) -> Any:
        obj = self.get(key)
        if obj is None:
            raise KeyError(key)
        return obj

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self.get(key) is not None


class UOWTransaction:
    """The ``flush_context`` that flush events receive: the session, its transaction and, from
    after_flush on, the flush plan the core made."""

    __slots__ = ("plan", "session", "transaction")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.transaction = session._tx
        self.plan: Any = None


_get_ident = threading.get_ident
_F = TypeVar("_F", bound=Callable[..., Any])


def _exclusive(method: _F) -> _F:
    """Run a Session method as its thread's: a call from another thread meanwhile raises
    ConcurrentUseError (re-entry from the same thread, e.g. flush inside commit, is fine)."""

    @functools.wraps(method)
    def guarded(self: Session, *args: Any, **kwargs: Any) -> Any:
        me = _get_ident()
        owner = self._owner
        if owner is None:
            self._owner = me
            try:
                return method(self, *args, **kwargs)
            finally:
                self._owner = None
        if owner != me:
            raise _busy_error(self)
        return method(self, *args, **kwargs)

    return guarded  # type: ignore[return-value]


def _commit_prepared(conns: list[Connection]) -> None:
    """The second phase: COMMIT PREPARED on every connection. Once all are prepared the
    decision is to commit, so a failure on one does not stop the others; the first error is
    raised, naming the transactions the database may still hold prepared."""
    errors: list[tuple[str, BaseException]] = []
    for conn in conns:
        txn = conn.get_transaction()
        xid = txn.xid if isinstance(txn, TwoPhaseTransaction) else "?"
        try:
            conn.commit()
        except Exception as err:
            errors.append((xid, err))
    if errors:
        first = errors[0][1]
        first.add_note(
            "two-phase commit: COMMIT PREPARED failed for "
            + ", ".join(xid for xid, _ in errors)
            + f" ({len(conns) - len(errors)} of {len(conns)} connections committed); those "
            "transactions may still be prepared on their database: finish them with "
            "Connection.recover_twophase() and commit_prepared(xid)"
        )
        raise first


def _busy_error(session: Session) -> exc.ConcurrentUseError:
    return exc.ConcurrentUseError(
        f"{session!r} is in use by another thread; a Session must be used by one thread at a "
        "time: give each thread its own Session (for example from a sessionmaker)"
    )


class SessionTransaction:
    """A transaction of a Session, from `Session.begin()` (or begun implicitly)."""

    def __init__(self, session: Session, *, explicit: bool) -> None:
        self.session = session
        self.nested = False
        self.parent: SessionTransaction | None = None
        self._explicit = explicit
        self._closed = False
        # a SAVEPOINT's: the engine's savepoint on each connection it used (opened at the
        # first use, as SQLAlchemy does), and objects whose relationships changed inside it
        # (to expire if it rolls back; attributes._note_change records them, by id): an object
        # only added or marked deleted inside it is not, as SQLAlchemy expires the objects an
        # attribute event touched
        self._savepoints: dict[int, NestedTransaction] = {}
        self._touched: dict[int, Any] = {}
        # of those, the ones whose changes a flush inside it wrote: an expiry forgets the
        # others' changes, and they stay loaded when it rolls back (as SQLAlchemy's expiry
        # resets an object's modified flag, and its rollback expires the objects modified, or
        # flushed, inside)
        self._written: set[int] = set()
        # a SAVEPOINT's: how many objects Session._flushed_deleted listed when it began (those
        # after are the objects whose DELETE a flush inside it sent, which its rollback undoes)
        self._deleted_mark = 0

    @property
    def is_active(self) -> bool:
        return not self._closed and self.session._failed is None

    def commit(self) -> None:
        if self.nested:
            if self._closed:
                raise exc.InvalidRequestError("this SAVEPOINT was already released or rolled back")
            self.session._release_savepoint(self)
            return
        self._check_current()
        self.session.commit()

    def rollback(self) -> None:
        if self._closed:
            return
        if self.nested:
            self.session._rollback_savepoint(self)
            return
        self.session.rollback()

    def _check_current(self) -> None:
        if self._closed or self.session._tx is not self:
            raise exc.InvalidRequestError(
                "this transaction has already ended; begin a new one with session.begin()"
            )

    def __enter__(self) -> SessionTransaction:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        if self._closed:
            return
        if exc_type is not None:
            self.rollback()
            return
        try:
            self.commit()
        except BaseException:
            # e.g. the SAVEPOINT's closing flush failed: leave the block rolled back, not open
            if not self._closed:
                self.rollback()
            raise


def _cascade_members(d: dict[str, Any], prop: Any) -> list[Any]:
    """What the save-update cascade follows along `prop` of an object with `__dict__` `d`: the
    value, and (as SQLAlchemy's pending history) the members taken out of the collection, or
    the many-to-one's value before its change, since the last flush. A collection's members
    gained since the last flush come first, then the others, then those taken out, in
    SQLAlchemy's order (which decides what a cascade that fails halfway has attached already).
    (The core's cascade_add walks the same.)"""
    value = d[prop.key]
    if prop.uselist:
        items = list(value)
        added = getattr(value, "_added", None)
        if added and len(added) < len(items):
            items.sort(key=lambda item: id(item) not in added)
        removed = getattr(value, "_removed", None)
        if removed:
            items.extend(removed.values())
        return items
    items = [] if value is None else [value]
    old = d.get("_retort_history", {}).get(prop.key)
    if type(old) is mapping._Unsettled:
        old = old.value
    if old is not None and old is not value and hasattr(type(old), "__mapper__"):
        items.append(old)
    return items


class _CoreOnDemand:
    """`Session._core` while the session has none (after close()): reading it starts one.

    A descriptor without __set__, so the core that `_new_core` keeps in the instance's
    __dict__ wins every later lookup. (A `__getattr__` on Session would do the same, but it
    would send every attribute read of every session through the slower lookup that
    CPython keeps for classes with one.)"""

    def __get__(self, session: Session | None, owner: type | None = None) -> Any:
        if session is None:
            return self
        session._new_core()
        return session.__dict__["_core"]


class Session:
    """Manages persistence operations for mapped objects (SQLAlchemy 2.x semantics).

    Use it as a context manager to close it at the end; it never commits implicitly.
    """

    def __init__(
        self,
        bind: Engine | Connection | None = None,
        *,
        binds: Mapping[Any, Engine | Connection] | None = None,
        autoflush: bool = True,
        expire_on_commit: bool = True,
        twophase: bool = False,
        info: dict[Any, Any] | None = None,
    ) -> None:
        self.bind = bind
        if twophase:
            self.twophase = twophase
        self._binds: dict[Any, Any] = dict(binds) if binds else {}
        if not autoflush:
            self.autoflush = autoflush
        if not expire_on_commit:
            self.expire_on_commit = expire_on_commit
        self.info: dict[Any, Any] = dict(info) if info else {}
        self._new_core()
        self._conns: dict[int, Connection] = {}  # every connection, by id() of its bind
        self._nested: list[SessionTransaction] = []
        # Objects whose relationships changed since the last flush (by id), and objects that
        # lost their owner under a delete-orphan cascade.
        self._related_changed: dict[int, Any] = {}
        self._orphans: dict[int, list[Any]] = {}
        # children taken from a parent whose collection is not loaded (delete-orphan): the
        # flush deletes those that found no other parent (and expunges the pending ones taken
        # from a parent outside the session, see _expunge_pending_orphans)
        self._orphan_children: dict[int, tuple[Any, Any]] = {}
        # Of those, the persistent ones taken out in the current transaction: a rollback that
        # undoes their INSERT remembers them as orphaned (see _forget_orphan_children).
        self._orphans_taken: list[tuple[Any, Any]] = []
        # Persistent children taken out of a parent without a row that named no parent: the
        # flush deletes one once it changes (flush._delete_unparented).
        self._orphans_if_changed: dict[int, tuple[Any, Any]] = {}
        # Objects deleted by flushes of the current transaction (deleted_to_detached at commit).
        self._flushed_deleted: list[Any] = []
        # Event listeners by event name; empty when nobody listens (see retort.event).
        self._dispatch: dict[str, tuple[Callable[..., Any], ...]] = (
            event._dispatch_of(self) if event._class_registries else {}
        )
        _sessions.add(self)

    # State that starts out the same in every session is a class attribute until set.
    twophase = False
    autoflush = True
    expire_on_commit = True
    _conn: Connection | None = None  # the first connection of the transaction
    _tx: SessionTransaction | None = None
    _failed: BaseException | None = None
    _prepared = False  # two-phase: every connection's transaction is prepared
    _committing = False  # between before_commit and the database commit
    _owner: int | None = None  # the thread running a Session method that talks to the database
    _flushing = False
    _no_autoflush = 0
    # new/dirty/deleted as they were before the flush, while after_flush runs
    _flush_view: tuple[IdentitySet, IdentitySet, IdentitySet] | None = None

    # -- context management -------------------------------------------------------------------

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        self.close()

    # -- events ---------------------------------------------------------------------------

    def _fire(self, name: str, *args: Any) -> None:
        for fn in self._dispatch.get(name, ()):
            fn(self, *args)

    def _fire_each(self, name: str, objs: Iterable[Any]) -> None:
        fns = self._dispatch.get(name)
        if fns:
            for obj in objs:
                for fn in fns:
                    fn(self, obj)

    def _attached(self, obj: Any, how: str) -> None:
        """Events of an object the core just attached: how="pending" when it was transient,
        "persistent" when it was detached."""
        self._fire("after_attach", obj)
        if how == "pending":
            self._fire("transient_to_pending", obj)

    # -- transactions ---------------------------------------------------------------------

    def _autobegin(self) -> SessionTransaction:
        tx = self._tx
        if tx is None:
            tx = self._tx = SessionTransaction(self, explicit=False)
        return tx

    def begin(self) -> SessionTransaction:
        """Begin a transaction explicitly; use as ``with session.begin(): ...``."""
        if self._tx is not None:
            raise exc.InvalidRequestError(
                "a transaction is already begun on this Session; commit or roll it back "
                "before calling begin() again"
            )
        self._tx = SessionTransaction(self, explicit=True)
        return self._tx

    def in_transaction(self) -> bool:
        return self._tx is not None

    @property
    def is_active(self) -> bool:
        """False while a failed flush or commit awaits rollback() (of the SAVEPOINT it failed
        in, or of the whole transaction), as in SQLAlchemy; True otherwise, whether or not a
        transaction is begun."""
        return self._failed is None

    def in_nested_transaction(self) -> bool:
        return bool(self._nested)

    @_exclusive
    def begin_nested(self) -> SessionTransaction:
        """Begin a SAVEPOINT (flushing pending work first); use as ``with session.begin_nested():``.

        Rolling it back undoes only what happened inside it: objects added inside become
        transient, objects deleted inside come back, and objects changed inside are expired so
        that they reload what the database holds after the rollback."""
        self._check_usable()
        parent = self._nested[-1] if self._nested else self._autobegin()
        self.flush()
        self._core.savepoint_begin()
        tx = SessionTransaction(self, explicit=True)
        tx.nested = True
        tx.parent = parent
        tx._deleted_mark = len(self._flushed_deleted)
        self._nested.append(tx)
        return tx

    def _savepoint_on(self, tx: SessionTransaction, conn: Connection) -> None:
        """Open `tx`'s SAVEPOINT (and its enclosing ones) on `conn`, which it is about to use
        for the first time. With several binds every connection gets its own."""
        parent = tx.parent
        if parent is not None and parent.nested and id(conn) not in parent._savepoints:
            self._savepoint_on(parent, conn)
        tx._savepoints[id(conn)] = conn.begin_nested()
        if self._dispatch:
            self._fire("after_begin", tx, conn)

    def _release_savepoint(self, tx: SessionTransaction) -> None:
        while self._nested and self._nested[-1] is not tx:
            self._release_savepoint(self._nested[-1])  # inner ones first
        self._check_usable()
        if self._dispatch:
            self._fire("before_commit")
        self.flush()
        for sp in tx._savepoints.values():
            sp.commit()
        self._core.savepoint_release()
        self._nested.pop()
        tx._closed = True
        if self._nested:
            self._nested[-1]._touched.update(tx._touched)
            self._nested[-1]._written.update(tx._written)
        if self._dispatch:
            self._fire("after_commit")

    def _rollback_savepoint(self, tx: SessionTransaction) -> None:
        while self._nested and self._nested[-1] is not tx:
            self._rollback_savepoint(self._nested[-1])  # inner ones first
        if not self._nested:
            return
        # a failed flush rolled the database back to the SAVEPOINT already (and said so)
        events = bool(self._dispatch) and self._failed is None
        try:
            for sp in tx._savepoints.values():
                sp.rollback()
        finally:
            touched = self._undo_savepoint_work(tx)
            self._nested.pop()
            tx._closed = True
            self._failed = None
        self._expire_touched(touched)
        if events:
            self._fire("after_rollback")
            self._fire("after_soft_rollback", tx)

    def _undo_savepoint_work(self, tx: SessionTransaction, restart: bool = False) -> list[Any]:
        """Undo in the session what happened inside the innermost SAVEPOINT (the core pops
        its marker, and with `restart` sets a new one, for a flush that failed inside it);
        the objects whose relationships changed inside, to expire."""
        touched = tx._touched
        tx._touched = {}
        tx._written = set()
        # and those holding relationship changes not flushed, made before the SAVEPOINT or
        # outside the session (attached inside it), as SQLAlchemy expires every modified object
        self._touch_related_changes(touched)
        attributes.rows_undone(self._core.savepoint_rollback(restart))
        # persistent again: held weakly, as every clean persistent object
        del self._flushed_deleted[tx._deleted_mark :]
        self._related_changed.clear()
        self._orphans.clear()
        self._forget_orphan_children()
        return list(touched.values())

    def _touch_related_changes(self, touched: dict[int, Any]) -> None:
        """Add to a SAVEPOINT's `touched` the objects of `_related_changed` that hold a
        relationship change (made inside it, or before it while they were outside the session
        and attached inside it), for its rollback to expire."""
        for key, obj in self._related_changed.items():
            if key not in touched and attributes.holds_related_change(obj):
                touched[key] = obj

    def _forget_orphan_children(self, whole: bool = False) -> None:
        """After a rollback (of the `whole` transaction, or of a SAVEPOINT): forget the children
        taken out of delete-orphan collections for the flush to delete or expunge. Those taken
        out while persistent whose INSERT the rollback undid are remembered as orphaned outside
        the session (`attributes.orphaned_outside`), as SQLAlchemy marks a child taken out
        while it was not pending: should a cascade bring one back in without another parent,
        the flush expunges it rather than insert an orphan. An add() of it forgets that."""
        if self._orphans_taken:
            kept = []
            for child, prop in self._orphans_taken:
                state = child.__dict__.get("_retort_state")
                if state is not None and not state.has_identity:
                    attributes.remember_orphaned(child, prop)
                elif not whole:
                    kept.append((child, prop))
            self._orphans_taken = kept
        self._orphan_children.clear()

    def _expire_touched(self, touched: list[Any]) -> None:
        """After a SAVEPOINT rollback: expire the objects changed inside it, these only (as
        SQLAlchemy, no refresh-expire cascade to the objects their relationships hold)."""
        for obj in touched:
            state = obj.__dict__.get("_retort_state")
            if state is not None and state.lifecycle == "persistent" and obj in self:
                self._expire_whole(obj, object_mapper(obj).relationships)

    def get_transaction(self) -> SessionTransaction | None:
        return self._tx

    def _orphans_before_autoflush(self) -> None:
        """After a failed flush, what the autoflush of a load or query does before the session
        is found unusable: as SQLAlchemy's flush, it expunges the pending children taken from a
        parent outside the session (see _expunge_pending_orphans)."""
        if (
            self._failed is not None
            and (self._orphan_children or attributes.orphaned_outside)
            and self.autoflush
            and not self._no_autoflush
            and not self._flushing
        ):
            self._expunge_pending_orphans()

    def _check_usable_for_sql(self) -> None:
        """Before a load or query sends SQL: after a failed flush, what its autoflush does
        first (_orphans_before_autoflush), then PendingRollbackError."""
        self._orphans_before_autoflush()
        self._check_usable()

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise exc.PendingRollbackError(
                "this Session's transaction was rolled back because of an earlier error "
                f"in flush or commit ({type(self._failed).__name__}: {self._failed}); call "
                "session.rollback() before using the session again"
            ) from self._failed

    def _drop_core(self) -> None:
        """Let go of the core (every object leaves the session with it). The session's next
        use starts a new one (`_CoreOnDemand`): a session closed for good never makes one."""
        d = self.__dict__
        d.pop("_core", None)
        d.pop("get", None)

    if not TYPE_CHECKING:  # (type checkers see the instance attribute set by _new_core)
        _core = _CoreOnDemand()

    def _new_core(self) -> None:
        """Start an empty session core (identity map, unit of work). Its `session_get` becomes
        this session's `get`, so that an identity-map hit runs no Python code, unless a
        subclass overrides get()."""
        self._core = _core.SessionCore(weakref.ref(self))
        if type(self).get is Session.get:
            self.get = self._core.session_get  # type: ignore[method-assign]

    def _connection_for(self, mapper: Mapper | None = None, clause: Any = None) -> Connection:
        """The connection of the transaction for `mapper`'s bind, or else the bind of the
        tables `clause` uses (connecting if needed)."""
        if self._prepared:
            raise exc.InvalidRequestError(
                "this Session's transaction is prepared (two-phase commit); no more SQL can "
                "run in it: commit() or rollback() it first"
            )
        if not self._binds:
            conn = self._conn
            if conn is None:
                conn = self._connect(self.get_bind(None))
        else:
            bind = self.get_bind(mapper, clause)
            conn = self._conns.get(id(bind))
            if conn is None:
                conn = self._connect(bind)
        if self._nested and id(conn) not in self._nested[-1]._savepoints:
            self._savepoint_on(self._nested[-1], conn)
        return conn

    def _connect(self, bind: Any) -> Connection:
        tx = self._autobegin()
        conn = bind.connect() if hasattr(bind, "connect") else bind  # or a Connection as bind
        if self.twophase:
            if conn.in_transaction():
                raise exc.InvalidRequestError(
                    f"{conn!r} is already in a transaction, so this two-phase Session cannot "
                    "begin a prepared transaction on it; commit or roll it back first"
                )
            conn.begin_twophase()
        self._conns[id(bind)] = conn
        if self._conn is None:
            self._conn = conn
        if self._dispatch:
            self._fire("after_begin", tx, conn)
        return conn

    def _release_connection(self) -> None:
        conns = list(self._conns.values())
        self._conns.clear()
        self._conn = None
        for conn in conns:
            if self._owns(conn):
                conn.close()

    @_exclusive
    def commit(self) -> None:
        """Flush, commit the database transaction and end the session's transaction.

        With ``expire_on_commit`` every loaded object is expired (in constant time); its next
        attribute access reloads it.
        """
        if self._flushing or self._committing:
            self._check_state_change("commit")
        if self._failed is not None:
            self._check_usable()
        if not self._prepared:
            self._prepare_impl()
        if self._conns:
            try:
                if self._prepared:
                    _commit_prepared(list(self._conns.values()))
                else:
                    for conn in list(self._conns.values()):
                        conn.commit()
            except BaseException as err:
                self._abort_commit(err)
                raise
        self._prepared = False
        deleted = self._flushed_deleted
        if deleted:
            self._flushed_deleted = []
        if self._orphans_taken:
            self._orphans_taken = []
        if self._orphans_if_changed and self.expire_on_commit:
            # the commit expires them, which forgets the removal (see expire_all)
            self._orphans_if_changed.clear()
        if self._dispatch:
            self._fire("after_commit")
            if deleted and "deleted_to_detached" in self._dispatch:
                deleted = [o for o in deleted if _lifecycle(o) == "deleted"]
            else:
                deleted = []
        self._core.commit(self.expire_on_commit)
        if self._tx is not None:
            self._tx._closed = True
        self._tx = None
        self._release_connection()
        if deleted:
            self._fire_each("deleted_to_detached", deleted)

    @_exclusive
    def prepare(self) -> None:
        """The first phase of a two-phase commit (``Session(twophase=True)``): flush, then
        PREPARE TRANSACTION on every connection. `commit()` then commits them all; if any
        connection cannot prepare, every one is rolled back and the error raised."""
        self._check_usable()
        if not self.twophase:
            raise exc.InvalidRequestError(
                "prepare() is the first phase of a two-phase commit; create the Session with "
                "twophase=True to use it (commit() alone is enough otherwise)"
            )
        if self._tx is None:
            raise exc.InvalidRequestError(
                "no transaction is in progress to prepare; add or change objects first"
            )
        if self._prepared:
            raise exc.InvalidRequestError("this Session's transaction is already prepared")
        self._prepare_impl()

    def _check_state_change(self, what: str) -> None:
        """commit/rollback/close from a listener of a flush or commit under way would end the
        transaction in its middle: refuse it."""
        if self._flushing:
            raise exc.IllegalStateChangeError(
                f"{what}() cannot be called while the session is flushing (from a flush event "
                "listener); call it after the flush returns"
            )
        if self._committing:
            raise exc.IllegalStateChangeError(
                f"{what}() cannot be called while the session is committing (from a "
                "before_commit listener); call it after the commit returns"
            )

    def _prepare_impl(self) -> None:
        """Everything commit() does before the database commits: release open SAVEPOINTs,
        before_commit, flush until clean, and with twophase PREPARE on every connection."""
        self._committing = True
        try:
            self._prepare_steps()
        finally:
            self._committing = False

    def _prepare_steps(self) -> None:
        while self._nested:
            self._release_savepoint(self._nested[-1])
        if self._dispatch:
            self._fire("before_commit")
        # before_commit and flush listeners may change more objects: flush until clean
        for _ in range(100):
            if not (self._related_changed or self._core.has_changes()):
                break
            self.flush()
        else:
            raise exc.FlushError(
                "over 100 flushes in a row during commit(): an event listener keeps changing "
                "objects (does after_flush add new ones every time?)"
            )
        if self.twophase and self._conns:
            try:
                for conn in list(self._conns.values()):
                    txn = conn.get_transaction()
                    if isinstance(txn, TwoPhaseTransaction):
                        txn.prepare()
            except BaseException as err:
                self._abort_commit(err)  # ROLLBACK PREPARED for those prepared already
                raise
            self._prepared = True

    def _abort_commit(self, err: BaseException) -> None:
        """The database refused to commit (or prepare): roll every connection back and undo
        the transaction's work in the session. As after a failed flush, the session then
        refuses work (PendingRollbackError) until rollback() acknowledges the failure."""
        self._prepared = False
        self._failed = err
        self._rollback_connection()
        self._flushed_deleted = []
        if self._dispatch:
            self._fire("after_rollback")
        attributes.rows_undone(self._core.rollback())

    def _rollback_connection(self) -> None:
        if self._conns:
            try:
                for conn in list(self._conns.values()):
                    conn.rollback()
            finally:
                self._release_connection()

    @_exclusive
    def rollback(self) -> None:
        """Roll the transaction back: objects added in it become transient again, deleted ones
        come back, and every loaded object is expired so that it reloads its committed state."""
        self._check_state_change("rollback")
        tx = self._tx
        self._prepared = False
        # a failed flush rolled the database transaction back already (and said so)
        events = tx is not None and bool(self._dispatch)
        try:
            self._rollback_connection()
            if events and self._failed is None:
                # each open SAVEPOINT is rolled back, innermost first, then the transaction
                for sp in reversed(self._nested):
                    self._fire("after_rollback")
                    self._fire("after_soft_rollback", sp)
                self._fire("after_rollback")
        finally:
            attributes.rows_undone(self._core.rollback())
            for sp in self._nested:
                sp._closed = True
            self._nested.clear()
            self._related_changed.clear()
            self._orphans.clear()
            self._forget_orphan_children(whole=True)
            self._flushed_deleted = []
            if self._tx is not None:
                self._tx._closed = True
            self._tx = None
            self._failed = None
        if events:
            self._fire("after_soft_rollback", tx)

    @_exclusive
    def close(self) -> None:
        """Release the connection (rolling back) and detach every object."""
        if self._flushing or self._committing:
            self._check_state_change("close")
        detached = self._persistent_if_listened() if self._dispatch else None
        try:
            if self._conns:
                self._rollback_connection()
        finally:
            if self._tx is not None:
                self._tx._closed = True
                self._tx = None
            if self._nested:
                for sp in self._nested:
                    sp._closed = True
                self._nested.clear()
            self._failed = None
            self._prepared = False
            if self._related_changed:
                self._related_changed.clear()
            if self._orphans:
                self._orphans.clear()
            if self._orphan_children:
                self._orphan_children.clear()
            if self._flushed_deleted:
                self._flushed_deleted = []
            if self._orphans_taken:
                self._orphans_taken = []
            if self._orphans_if_changed:
                self._orphans_if_changed.clear()
            self._drop_core()
        if detached:
            self._fire_each("persistent_to_detached", detached)

    def _persistent_if_listened(self) -> list[Any] | None:
        """The persistent objects, when someone listens for persistent_to_detached (close and
        expunge_all stay O(1) otherwise)."""
        if "persistent_to_detached" in self._dispatch:
            return list(self._core.identity_objects())
        return None

    def reset(self) -> None:
        self.close()

    # -- binds ----------------------------------------------------------------------------

    def get_bind(self, mapper: Any = None, clause: Any = None) -> Any:
        """The engine (or connection) SQL for `mapper` runs on; without a mapper, the bind
        of the first table `clause` (a statement) uses that has one."""
        if self._binds:
            if mapper is not None:
                m = mapper if isinstance(mapper, Mapper) else class_mapper(mapper)
                for key in (*m.class_.__mro__, m, m.local_table):
                    if key in self._binds:
                        return self._binds[key]
            elif clause is not None:
                bind = self._bind_of_clause(clause)
                if bind is not None:
                    return bind
        if self.bind is not None:
            return self.bind
        raise exc.InvalidRequestError(
            "this Session is not bound to an engine; create it with Session(engine) or "
            "sessionmaker(engine)"
        )

    def _bind_of_clause(self, clause: Any) -> Any:
        if isinstance(clause, Select):
            froms = clause._froms()
        else:  # INSERT / UPDATE / DELETE
            table = getattr(clause, "table", None)
            froms = [table] if table is not None else []
        by_table: dict[Any, Any] = {}
        for key, bind in self._binds.items():
            if isinstance(key, Mapper):
                by_table.setdefault(key.local_table, bind)
            elif isinstance(key, type):
                m = getattr(key, "__mapper__", None)
                if m is not None:
                    by_table.setdefault(m.local_table, bind)
            else:
                by_table.setdefault(key, bind)
        for from_ in froms:
            for table in from_._tables():
                if table in by_table:
                    return by_table[table]
        return None

    @_exclusive
    def connection(self) -> Connection:
        """The connection of the current transaction (beginning one if needed)."""
        self._check_usable()
        return self._connection_for()

    # -- adding and removing objects ------------------------------------------------------

    def add(self, instance: object) -> None:
        """Place an object in the session; it is inserted (or updated) at the next flush. An
        object marked for deletion (by delete(), not flushed yet) is not any more.

        Related objects reachable through relationships with the save-update cascade (the
        default) are added with it."""
        if self._owner is not None and self._owner != _get_ident():
            raise _busy_error(self)
        self._autobegin()
        if not self._dispatch and not _relationships_of(instance):
            # (no cascade, no events: nothing to undo or fire)
            self._core.add(instance, True)
            return
        self._add_each((instance,))

    def add_all(self, instances: Iterable[object]) -> None:
        """add() of each object, all or nothing (see add())."""
        if self._owner is not None and self._owner != _get_ident():
            raise _busy_error(self)
        self._autobegin()
        self._add_each(instances)

    def _add_each(self, instances: Iterable[object], *, by_caller: bool = True) -> None:
        """Add `instances` and what their save-update cascades reach, all or nothing: where
        one is refused (its DELETE was flushed, another session holds it, another instance has
        its identity) the objects attached until then leave the session again before the
        error is raised, so that a later flush writes nothing of them (SQLAlchemy leaves them
        attached). Listeners hear of each object attached once all are."""
        attached: list[Any] = []  # the objects attached, in order
        hows: list[str] | None = [] if self._dispatch else None  # how each, for the events
        related: list[Any] = []
        try:
            add = self._core.add
            for obj in instances:
                # one marked for deletion is not any more (not those the cascade reaches)
                how = add(obj, by_caller)
                if how:
                    attached.append(obj)
                    if hows is not None:
                        hows.append(how)
                if _relationships_of(obj):
                    related.append(obj)
                    self._cascade_related(obj, attached, hows)
        except BaseException:
            self._detach_again(attached)
            raise
        if by_caller and attributes.orphaned_outside:
            # (added by the caller: no orphan for the flush to expunge, as in SQLAlchemy)
            for obj in related:
                attributes.orphaned_outside.pop(id(obj), None)
        if hows is not None:
            for obj, joined in zip(attached, hows, strict=True):
                self._attached(obj, joined)

    def _detach_again(self, attached: list[Any]) -> None:
        """Undo the attachment of these objects (a cascade that raised): each leaves the
        session as it came, transient or detached."""
        for obj in reversed(attached):
            self._related_changed.pop(id(obj), None)
            self._core.expunge(obj)

    def _cascade_add(self, obj: Any) -> None:
        """Add an object reached through a save-update cascade (and what it reaches), all or
        nothing, as add()."""
        self._add_each((obj,), by_caller=False)

    def _cascade_related(self, obj: Any, attached: list[Any], hows: list[str] | None) -> None:
        """Follow loaded relationships of `obj` with save-update and add what they hold (in
        the core, unless listeners want the events of each object attached: then `attached`
        and `hows` receive each object added and how, for the caller to fire the events, or
        to undo the attachments when the cascade raises; the core undoes its own)."""
        if not self._dispatch and self._core.cascade_add(obj, self._related_changed):
            return
        self._related_changed[id(obj)] = obj
        stack = [obj]
        seen = {id(obj)}
        while stack:
            current = stack.pop()
            d = current.__dict__
            state = d.get("_retort_state")
            if state is not None and state.stale:
                continue  # its relationships are expired (see attributes.holds_related_change)
            for prop in type(current).__mapper__.relationships.values():
                if "save-update" not in prop.cascade or prop.key not in d:
                    continue
                for item in _cascade_members(d, prop):
                    if id(item) in seen:
                        continue
                    seen.add(id(item))
                    how = self._core.add(item)
                    if not how:
                        continue  # in the session already: the cascade halts there
                    attached.append(item)
                    if hows is not None:
                        hows.append(how)
                    if type(item).__mapper__.relationships:
                        self._related_changed[id(item)] = item
                    stack.append(item)

    def delete(self, instance: object) -> None:
        """Mark a persistent object for deletion at the next flush (with its children, where a
        relationship has the delete cascade)."""
        if self._owner is not None and self._owner != _get_ident():
            raise _busy_error(self)
        if self._tx is None:
            self._autobegin()
        if not self._dispatch and not _relationships_of(instance):
            # nothing to cascade and nobody listening: the core marks it (once; attaching a
            # detached object first, refusing a transient one or another session's)
            self._core.delete(instance)
            return
        if self._core.is_marked_deleted(instance):
            return  # marked already (its cascade too)
        if (self._dispatch or _relationships_of(instance)) and _lifecycle(instance) == "detached":
            # deleting a detached object attaches it first (so that the delete cascade can
            # load its collections)
            how = self._core.add(instance)
            if how and self._dispatch:
                self._attached(instance, how)
            if how and _relationships_of(instance):
                # what its relationships changed while it was outside (a change queued for
                # an unloaded collection through the other side) is the session's to flush,
                # as after add(): the autoflush of the cascade's loads settles it first (a
                # child given to it outside the session gets its key, no row), so a
                # collection loaded then holds the rows only, as SQLAlchemy's
                self._related_changed[id(instance)] = instance
        if not _relationships_of(instance) or _lifecycle(instance) in ("transient", "pending"):
            self._core.delete(instance)  # (raises for a transient or pending object, before
            return  # the cascade below could expunge its pending children)
        # Collect the cascade first: loading a collection may autoflush, and that flush must
        # not see the parent deleted before its children are.
        cascade = self._delete_cascade(instance)
        self._core.delete(instance)
        self._related_changed[id(instance)] = instance
        for obj in cascade:
            if self._core.delete(obj):
                self._related_changed[id(obj)] = obj

    def _delete_cascade(self, obj: Any) -> list[Any]:
        """Objects reached from `obj` through relationships with the delete cascade: persistent
        ones, and detached ones (which the delete attaches, as SQLAlchemy's cascade does; but
        not one whose DELETE was flushed already). Pending ones leave the session."""
        from retort.inspection import inspect as _inspect

        out: list[Any] = []
        seen = {id(obj)}
        stack = [obj]
        while stack:
            current = stack.pop()
            detached = current is not obj and _inspect(current).detached
            for prop in type(current).__mapper__.relationships.values():
                if "delete" not in prop.cascade or prop.viewonly:
                    continue
                if prop.key not in current.__dict__ and (prop.passive_deletes or detached):
                    # the database's ON DELETE takes care of it; or a detached object's, which
                    # cannot load (SQLAlchemy's cascade passes over it too)
                    continue
                value = getattr(current, prop.key)
                items = list(value) if prop.uselist else ([] if value is None else [value])
                for item in items:
                    if id(item) in seen:
                        continue
                    seen.add(id(item))
                    st = _inspect(item)
                    if st.persistent or (st.detached and not st.was_deleted):
                        out.append(item)
                        stack.append(item)
                    elif st.pending:
                        self.expunge(item)
        return out

    def _cascade_delete(self, obj: Any) -> None:
        """Delete what `obj` (already marked deleted) cascades to."""
        for item in self._delete_cascade(obj):
            if self._core.delete(item):
                self._related_changed[id(item)] = item

    @_exclusive
    def expunge(self, instance: object) -> None:
        """Remove an object from the session without touching the database (with the objects
        its relationships reach through the expunge cascade)."""
        # (object, lifecycle before) for persistent_to_detached / deleted_to_detached
        gone: list[tuple[Any, str]] | None = None
        if self._dispatch:
            gone = [(instance, _lifecycle(instance))]
        self._core.expunge(instance)
        left = [instance]
        if _relationships_of(instance):
            for obj in self._cascaded(instance, "expunge"):
                # (an object whose DELETE was flushed is no longer `in` the session, but
                # belongs to it until the transaction ends: it is detached too)
                state = obj.__dict__.get("_retort_state")
                if state is not None and state.session is self:
                    if gone is not None:
                        gone.append((obj, _lifecycle(obj)))
                    self._core.expunge(obj)
                    left.append(obj)
        for obj in left:
            self._drop_related_changes(obj)
        if gone:
            for obj, was in gone:
                if was == "persistent":
                    self._fire("persistent_to_detached", obj)
                elif was == "deleted":
                    self._fire("deleted_to_detached", obj)

    def _drop_related_changes(self, obj: Any) -> None:
        """`obj` left the session: its relationship changes go with it, but for the members
        they took out of delete-orphan relationships (`_orphans_left_behind`)."""
        if self._related_changed.pop(id(obj), None) is not None:
            self._orphans_left_behind(obj)

    def _orphans_left_behind(
        self, obj: Any, names: list[str] | None = None, *, expiring: bool = False
    ) -> None:
        """The members taken out of `obj`'s delete-orphan relationships (those in `names`, or
        all) since the last flush, which no flush of `obj` settles now: it left the session,
        or (`expiring`) those relationships are to be expired, which forgets the removals.
        Those still in the session are orphans all the same (deleted by the flush unless
        another parent takes them meanwhile), as SQLAlchemy's parent tracking, kept on the
        member, has it; on an expiry only those whose own back reference still says they have
        no parent (a member expired since forgot it, as SQLAlchemy's did)."""
        d = obj.__dict__
        for prop in type(obj).__mapper__.relationships.values():
            if "delete-orphan" not in prop.cascade or (names is not None and prop.key not in names):
                continue
            if expiring and prop.back is None:
                continue
            if prop.uselist:
                value = d.get(prop.key)
                removed = [] if value is None else list(value._removed.values())
            else:  # a scalar one-to-many (one-to-one): the objects it held since the flush
                removed = self._orphans.pop(id(obj), [])
            for item in removed:
                if item not in self:
                    continue
                if expiring and item.__dict__.get(prop.back.key, obj) is not None:
                    continue
                attributes.orphaned(item, prop, obj)

    def _cascaded(self, obj: Any, cascade: str) -> list[Any]:
        """Loaded objects reached from `obj` through relationships with `cascade`."""
        out: list[Any] = []
        seen = {id(obj)}
        stack = [obj]
        while stack:
            current = stack.pop()
            d = current.__dict__
            state = d.get("_retort_state")
            if state is not None and state.stale:
                continue  # expired (a commit's or rollback's expiry not yet applied): none loaded
            for prop in type(current).__mapper__.relationships.values():
                if cascade not in prop.cascade or prop.key not in d:
                    continue
                value = d[prop.key]
                for item in list(value) if prop.uselist else [value]:
                    if item is not None and id(item) not in seen:
                        seen.add(id(item))
                        out.append(item)
                        stack.append(item)
        return out

    @_exclusive
    def expunge_all(self) -> None:
        """Remove every object from the session (the transaction stays open)."""
        detached = self._persistent_if_listened()
        self._new_core()
        self._related_changed.clear()
        self._orphans.clear()
        self._orphan_children.clear()
        self._orphans_taken = []
        self._orphans_if_changed.clear()
        self._flushed_deleted = []
        if detached:
            self._fire_each("persistent_to_detached", detached)

    def __contains__(self, instance: object) -> bool:
        return bool(self._core.contains(instance))

    def __iter__(self) -> Iterator[Any]:
        return iter([*self._core.new_objects(), *self._core.identity_objects()])

    @property
    def new(self) -> IdentitySet:
        """Objects added and not yet flushed."""
        if self._flush_view is not None:
            return self._flush_view[0]
        return IdentitySet(self._core.new_objects())

    @property
    def dirty(self) -> IdentitySet:
        """Persistent objects with a net change to flush (in a column or a relationship)."""
        if self._flush_view is not None:
            return self._flush_view[1]
        objs = list(self._core.dirty_objects())
        if self._related_changed:
            deleted = self.deleted
            for obj in self._related_changed.values():
                state = obj.__dict__.get("_retort_state")
                if (
                    state is not None
                    and state.lifecycle == "persistent"
                    and obj not in deleted
                    and attributes.holds_related_change(obj)
                ):
                    objs.append(obj)
        return IdentitySet(objs)

    @property
    def deleted(self) -> IdentitySet:
        """Objects marked for deletion and not yet flushed."""
        if self._flush_view is not None:
            return self._flush_view[2]
        return IdentitySet(self._core.deleted_objects())

    @property
    def identity_map(self) -> IdentityMapView:
        return IdentityMapView(self)

    def is_modified(self, instance: object, include_collections: bool = True) -> bool:
        if (
            include_collections
            and id(instance) in self._related_changed
            and attributes.holds_related_change(instance)
        ):
            return True
        return bool(self._core.is_modified(instance))

    # -- flush ----------------------------------------------------------------------------

    @property
    @contextmanager
    def no_autoflush(self) -> Iterator[Session]:
        """``with session.no_autoflush:`` suspends autoflush inside the block."""
        self._no_autoflush += 1
        try:
            yield self
        finally:
            self._no_autoflush -= 1

    def _related_work(self) -> bool:
        """Whether an object counted among those whose relationships changed holds a change,
        or an orphan is to be settled."""
        if self._orphans or self._orphan_children:
            return True
        return any(attributes.holds_related_change(o) for o in self._related_changed.values())

    def _autoflush(self) -> None:
        if (
            self.autoflush
            and not self._no_autoflush
            and not self._flushing
            and (self._related_changed or self._core.has_changes())
        ):
            self.flush()

    @_exclusive
    def flush(self, objects: Sequence[Any] | None = None) -> None:
        """Write pending changes to the database, in dependency order, in batches."""
        if self._flushing:
            raise exc.InvalidRequestError(
                "the Session is already flushing; flush() cannot be called from inside a flush. "
                "Objects added or changed in before_flush are part of this flush; changes made "
                "later (in after_flush or after_flush_postexec) are written by the next flush "
                "or commit"
            )
        if not self._related_changed and not self._core.has_changes():
            return  # nothing to do, even after a failure (as SQLAlchemy)
        if self._failed is not None and (self._orphan_children or attributes.orphaned_outside):
            # SQLAlchemy's flush expunges them before it finds the transaction unusable (and
            # then, with nothing else to do, does not find it)
            if self._expunge_pending_orphans():
                if not self._related_changed and not self._core.has_changes():
                    return
        if self._failed is not None:
            if not self._core.has_changes() and not self._related_work():
                # objects attached again with nothing changed (add() or delete() of a detached
                # object, which then raised): SQLAlchemy's flush finds the session clean
                return
            self._check_usable()
        if mapping._unconfigured:
            configure_mappers()
        self._flushing = True
        try:
            ctx: UOWTransaction | None = None
            if self._dispatch and "before_flush" in self._dispatch:
                # objects it adds or changes are part of this flush
                ctx = UOWTransaction(self)
                self._fire("before_flush", ctx, objects)
                if not self._related_changed and not self._core.has_changes():
                    return
            if (
                self._orphan_children or attributes.orphaned_outside
            ) and self._expunge_pending_orphans():
                if not self._related_changed and not self._core.has_changes():
                    return
            conn_for = self._connection_for
            try:
                events = self._dispatch
                if events:
                    view = (self.new, self.dirty, self.deleted) if "after_flush" in events else None
                related = None
                key_counts = None  # pending objects without keys, per mapper, if counted
                if self._related_changed or self._orphans_if_changed:
                    related, key_counts = self._prepare_related()
                deleted = self._core.deleted_objects()
                if deleted:
                    self._load_expired_deleted()
                    self._core.read_many_to_ones(deleted)
                self._settle_key_holders()
                keys = None
                if not deleted:
                    keys = flush.prefetch_keys(self, conn_for, key_counts)  # while it plans
                try:
                    plan = self._core.plan()
                except BaseException:
                    if keys is not None:
                        keys.drain()
                    raise
                if keys is not None:
                    keys.collect()
                if related is not None:
                    related.delete_links(conn_for)
                if self._committing and not self._conns and not events and not self.twophase:
                    results = self._execute_last(plan, related)
                else:
                    last = self._committing and not events and related is None
                    if last:
                        last = self._commit_with_statement(plan)
                    try:
                        results = flush.execute(plan, conn_for, keys)
                    finally:
                        if last:
                            self._conn._commit_next = False  # type: ignore[union-attr]
                if related is not None:
                    related.insert_links(conn_for)
                if events:
                    inserted = _pending_in(plan) if "pending_to_persistent" in events else None
                self._core.finish_flush(plan, results)
                if self._nested:
                    tx = self._nested[-1]
                    if related is not None:
                        # relationship changes made before the SAVEPOINT (of an object
                        # outside the session then, attached inside it) are written by this
                        # flush too: its rollback expires their objects, as for those made
                        # inside it (asked before done() settles their histories)
                        self._touch_related_changes(tx._touched)
                    tx._written.update(tx._touched)
                if related is not None:
                    related.done(self, list(self._related_changed.values()))
                    self._related_changed.clear()
                    self._orphans.clear()
                    self._orphan_children.clear()
                if deleted:
                    self._flushed_deleted.extend(deleted)
                if events:
                    self._after_flush(ctx or UOWTransaction(self), plan, view, inserted, deleted)
                elif self._committing and related is None:
                    self._send_commit()
            except BaseException as e:
                self._failed = e
                # the session keeps the error until rollback() (for PendingRollbackError), and
                # with it the frames of its traceback: they must not keep the flush's objects
                # alive, as persistent ones are held weakly (SQLAlchemy's failed flush keeps
                # none either)
                view = related = inserted = plan = None
                deleted, results = [], []
                _clear_finished_frames(e.__traceback__)
                if not self._nested:
                    # as SQLAlchemy: the transaction's work is undone in the session at once
                    # (objects the failed flush made persistent are transient again), so
                    # nothing is left to flush
                    attributes.rows_undone(self._core.rollback())
                    self._related_changed.clear()
                    self._orphans.clear()
                    self._forget_orphan_children(whole=True)
                    self._flushed_deleted = []
                try:
                    if self._nested:
                        # only the SAVEPOINT's work is lost, in the database and (at once, as
                        # SQLAlchemy) in the session; the session stays unusable until the
                        # savepoint (or the whole transaction) is rolled back
                        tx = self._nested[-1]
                        for sp in tx._savepoints.values():
                            sp.rollback()
                        # (the core's new marker is what rolling it back will pop)
                        self._expire_touched(self._undo_savepoint_work(tx, restart=True))
                    else:
                        for conn in list(self._conns.values()):
                            conn.rollback()
                except Exception:  # the original error matters more
                    pass
                if self._dispatch:
                    # what SQLAlchemy's flush does: the transaction is rolled back (soft, too)
                    self._fire("after_rollback")
                    self._fire(
                        "after_soft_rollback", self._nested[-1] if self._nested else self._tx
                    )
                raise
        finally:
            self._flushing = False

    def _owns(self, conn: Connection) -> bool:
        """Whether the session checked `conn` out itself (not a caller's Connection given as
        a bind, whose transaction the caller ends)."""
        return conn is not self.bind and conn not in self._binds.values()

    def _sole_connection(self) -> Connection | None:
        """The connection commit() may send its COMMIT on early (with listeners absent, see
        the callers): the session's only one, its own, with no SAVEPOINT open and no
        two-phase commit."""
        if self._nested or self.twophase or len(self._conns) != 1:
            return None
        conn = self._conn
        return conn if conn is not None and self._owns(conn) else None

    def _commit_with_statement(self, plan: Any) -> bool:
        """The flush of commit() is one statement on one row by its primary key (an UPDATE or
        a DELETE): the COMMIT goes with it, in the same round trip, when the transaction wrote
        nothing before on the session's sole connection (`Connection._run_and_commit`). If
        the statement matches no row, the commit has committed nothing, and the flush fails
        as it would have."""
        batches = plan.batches
        if len(batches) != 1 or batches[0].n != 1 or batches[0].op == "insert":
            return False
        conn = self._sole_connection()
        if conn is None:
            return False
        conn._commit_next = True
        return True

    def _send_commit(self) -> None:
        """The flush of commit() is done: when the session holds nothing more to flush (and
        no listener can run SQL before the COMMIT), the COMMIT is sent at once on its sole
        connection; commit() reads its outcome (`Connection._send_commit`)."""
        if self._related_changed or self._core.has_changes():
            return
        conn = self._sole_connection()
        if conn is not None:
            conn._send_commit()

    def _expunge_pending_orphans(self) -> bool:
        """Pending children taken from a delete-orphan collection of a parent outside the
        session (attributes.orphaned) leave the session now, unless another parent took them
        meanwhile, as in SQLAlchemy's flush; whether any did."""
        gone = False
        for key, (child, prop) in list(self._orphan_children.items()):
            state = child.__dict__.get("_retort_state")
            if state is None or state.has_identity:
                continue  # persistent: flush._delete_unparented decides
            del self._orphan_children[key]
            if state.session is self and child.__dict__.get(prop.back.key) is None:
                self._core.expunge(child)
                self._related_changed.pop(key, None)
                attributes.remember_orphaned(child, prop)  # (should a cascade bring it back)
                gone = True
        # and those orphaned while in no session (or made new by a rollback since) that a
        # cascade brought in since. As SQLAlchemy's mark, an entry stays after the expunge,
        # until add() takes the object in, or a flush has made it persistent
        for key, (ref, back) in attributes.orphaned_outside_entries():
            child = ref()
            state = None if child is None else child.__dict__.get("_retort_state")
            if state is None or state.session is not self:
                continue
            if state.has_identity:
                attributes.orphaned_outside.pop(key, None)
            elif child.__dict__.get(back) is None:
                self._core.expunge(child)
                self._related_changed.pop(key, None)
                gone = True
        return gone

    def _after_flush(
        self,
        ctx: UOWTransaction,
        plan: Any,
        view: tuple[IdentitySet, IdentitySet, IdentitySet] | None,
        inserted: list[Any] | None,
        deleted: list[Any],
    ) -> None:
        """after_flush (seeing new/dirty/deleted as they were before the flush), the lifecycle
        events of the flushed objects (deletes first, as SQLAlchemy), then
        after_flush_postexec."""
        ctx.plan = plan
        ctx.transaction = self._tx
        self._flush_view = view
        try:
            self._fire("after_flush", ctx)
        finally:
            self._flush_view = None
        if deleted and "persistent_to_deleted" in self._dispatch:
            self._fire_each(
                "persistent_to_deleted", [o for o in deleted if _lifecycle(o) == "deleted"]
            )
        if inserted:
            self._fire_each("pending_to_persistent", inserted)
        self._fire("after_flush_postexec", ctx)

    def _load_expired_deleted(self) -> None:
        """Load the expired attributes of objects about to be deleted, so that they stay
        readable after the DELETE (SQLAlchemy refreshes each such object before deleting
        it)."""
        expired = self._core.expired_deleted()
        if expired:
            self._load_objects(expired)

    def _settle_key_holders(self) -> None:
        """Before planning: an object of the identity map whose identity a new object has is
        loaded; if its row is gone (deleted by another transaction, inserted by a rolled-back
        one, or deleted by a flush of another instance) it is marked deleted and the new
        object takes its place, as in SQLAlchemy's flush for an expired object. (If the row is
        there, the INSERT fails on its key.)"""
        holders = self._core.key_holders()
        if holders:
            for obj in self._load_objects(holders):
                self._core.mark_gone(obj)

    def _load_objects(self, objs: list[Any]) -> list[Any]:
        """Load the rows of persistent objects into them, one SELECT per table; the objects
        whose row was not found."""
        found: set[int] = set()
        by_mapper: dict[Mapper, list[Any]] = {}
        for obj in objs:
            by_mapper.setdefault(object_mapper(obj), []).append(obj)
        for mapper, group in by_mapper.items():
            core = mapper._core
            keys = [core.primary_key_of(o) for o in group]
            table = quote_table(mapper.local_table)
            cols = ", ".join(quote_identifier(c.name) for c in mapper.columns)
            pk = [quote_identifier(c.name) for c in mapper.primary_key]
            conn = self._connection_for(mapper)
            if len(pk) == 1:
                sql = f"SELECT {cols} FROM {table} WHERE {pk[0]} = ANY(%s)"
                cur = conn._cursor_execute(sql, [[k[0] for k in keys]])
            else:
                # one array per key column: any number of keys in one statement
                arrays = ", ".join(f"%s::{c.type.sql_cast()}[]" for c in mapper.primary_key)
                sql = (
                    f"SELECT {cols} FROM {table} WHERE ({', '.join(pk)}) IN "
                    f"(SELECT * FROM unnest({arrays}))"
                )
                cur = conn._cursor_execute(sql, flush.column_arrays(keys, len(pk)))
            rows = cur.fetchall()
            if rows:
                found.update(map(id, self._core.load_rows(core, rows, 0, False)))
        return [o for o in objs if id(o) not in found]

    def _execute_last(self, plan: Any, related: RelatedChanges | None) -> list[Any]:
        """The flush of commit() in a transaction that has run nothing yet: when it is a
        single statement on one row (the usual small transaction: add one object and commit,
        or change or delete one kept from an earlier transaction), it runs without BEGIN and
        COMMIT, in PostgreSQL's implicit transaction of one statement: one round trip instead
        of three, with the same outcome (a statement on one row writes all or nothing)."""
        batches = plan.batches
        if (
            len(batches) == 1
            and batches[0].n == 1
            and not (related is not None and (related.link_inserts or related.link_deletes))
        ):
            conn = self._connection_for(batches[0].mapper.owner)
            if self._owns(conn):
                lone = conn._begin_lone()
                try:
                    return flush.execute(plan, self._connection_for)
                finally:
                    if lone is not None:
                        conn._end_lone(lone)
        return flush.execute(plan, self._connection_for)

    def _prepare_related(self) -> tuple[RelatedChanges, list[tuple[Any, int]]]:
        """Before planning: pre-allocate keys relationships need, copy keys into foreign keys,
        and settle orphans and rows of parents being deleted. Also returns the pending objects
        still without a key, counted per mapper (their keys are taken at their INSERT)."""
        later = []
        for mapper_core, count in self._core.pending_key_counts():
            mapper = mapper_core.owner
            if mapper.early_keys:
                keys = flush.allocate_keys(mapper, count, self._connection_for(mapper))
                self._core.assign_keys(mapper_core, keys)
            else:
                later.append((mapper_core, count))
        return flush.sync_related(self, list(self._related_changed.values())), later

    @_exclusive
    def flush_plan(self) -> list[dict[str, Any]]:
        """The steps the next flush would run, in order, without running them.

        It prepares the flush as flush() does (keys that relationships need are taken from
        their sequences and copied into foreign keys) but writes nothing."""
        self._check_usable()
        configure_mappers()
        if self._related_changed:
            self._flushing = True
            try:
                self._prepare_related()
            finally:
                self._flushing = False
        steps = []
        for b in self._core.plan().batches:
            mapper: Mapper = b.mapper.owner
            method = flush.method(b)
            if b.phase == "post_update":
                method = f"post-update ({method})"
            elif b.phase == "pre_delete":
                method = f"pre-delete NULL ({method})"
            steps.append(
                {
                    "table": mapper.local_table.name,
                    "operation": b.op,
                    "rows": b.n,
                    "method": method,
                    "columns": [mapper.columns[i].name for i in b.cols],
                    "phase": b.phase,
                    "dependency": b.reason,
                }
            )
        return steps

    # -- loading --------------------------------------------------------------------------

    def _select_by_pk(self, mapper: Mapper, for_update: Any = None) -> str:
        key = ("select_pk", bool(for_update))
        sql = mapper.sql_cache.get(key)
        if sql is None:
            table = quote_table(mapper.local_table)
            cols = ", ".join(quote_identifier(c.name) for c in mapper.columns)
            where = " AND ".join(f"{quote_identifier(c.name)} = %s" for c in mapper.primary_key)
            sql = f"SELECT {cols} FROM {table} WHERE {where}"
            if for_update:
                sql += " FOR UPDATE"
            mapper.sql_cache[key] = sql
        return sql

    def _fetch_by_pk(self, mapper: Mapper, ident: Sequence[Any], for_update: Any = None) -> Any:
        conn = self._connection_for(mapper)
        cur = conn._run(self._select_by_pk(mapper, for_update), list(ident))
        return cur.fetchall()

    def _retort_load(self, instance: Any, state: Any) -> None:
        """Called by the core to load an object's unloaded attributes."""
        self._check_usable_for_sql()
        mapper = object_mapper(instance)
        self._autoflush()  # first, as SQLAlchemy's load does (it may fail)
        if state.lifecycle == "deleted":
            # deleted in this transaction: by a flushed DELETE, or its row was found gone (by
            # get(), or by a flush, this autoflush perhaps, in which a new object took its
            # key). A row with its key is a new object's, loaded into that one (SQLAlchemy
            # loads it into this one too, which then holds another object's values)
            raise exc.ObjectDeletedError(
                f"{instance!r} was deleted in this transaction; its attributes cannot be loaded"
            )
        rows = self._fetch_by_pk(mapper, mapper._core.primary_key_of(instance))
        if not rows:
            raise exc.ObjectDeletedError(
                f"the row of {instance!r} no longer exists in the database, so its expired "
                "attributes cannot be loaded"
            )
        self._core.load_rows(mapper._core, rows, 0, False)

    def _load_relationship(self, obj: Any, prop: Any) -> Any:
        """Load a relationship of a persistent object (lazy="select")."""
        from retort.sql.selectable import select as _select

        if prop.direction == "MANYTOONE":
            values = [getattr(obj, dst.key) for _, dst in prop.pairs]
            if any(v is None for v in values):
                # no parent, known without SQL: no autoflush, and no refusal after a failed
                # flush (as SQLAlchemy's lazy loader)
                return None
            # the identity map's object answers without SQL, even after a failed flush (as
            # SQLAlchemy's lazy loader); get() refuses (or autoflushes) only where it loads
            ident = tuple(values)
            return self.get(prop.target.class_, ident if len(ident) > 1 else ident[0])
        self._check_usable_for_sql()
        stmt = _select(prop.target.class_)
        if prop.direction == "ONETOMANY":
            crit = [dst == getattr(obj, src.key) for src, dst in prop.pairs]
        else:
            sec = prop.secondary
            on = [tcol == scol for tcol, scol in prop.target_secondary_pairs]
            stmt = stmt.join(sec, and_(*on))
            crit = [scol == getattr(obj, pcol.key) for pcol, scol in prop.secondary_pairs]
        stmt = stmt.where(*crit)
        if prop.order_by is not None:
            order = prop.order_by
            if isinstance(order, str):
                order = prop._resolve_string(order)
            stmt = stmt.order_by(*(order if isinstance(order, list | tuple) else [order]))
        items = self.scalars(stmt).all()
        if prop.uselist:
            return items
        return items[0] if items else None

    def get(
        self,
        entity: type[_T],
        ident: Any,
        *,
        populate_existing: bool = False,
        with_for_update: Any = None,
    ) -> _T | None:
        """The object with this primary key, from the identity map or else the database."""
        # (each session's `get` attribute is its core's session_get, which answers identity-map
        # hits itself and calls _get_full for the rest; this method serves subclasses and
        # calls through the class)
        return self._core.session_get(
            entity, ident, populate_existing=populate_existing, with_for_update=with_for_update
        )

    def _get_full(
        self,
        entity: type[_T],
        ident: Any,
        *,
        populate_existing: bool = False,
        with_for_update: Any = None,
    ) -> _T | None:
        mapper = class_mapper(entity)
        if ident.__class__ is not int and isinstance(ident, Mapping):
            names = [c.key for c in mapper.primary_key]
            unknown = [k for k in ident if k not in names]
            if unknown:
                raise exc.InvalidRequestError(
                    f"the dict passed to get() has keys that are not primary key attributes "
                    f"of {mapper.class_.__name__}: {', '.join(map(repr, unknown))}; its "
                    f"primary key attribute names are {', '.join(names)}"
                )
            try:
                ident = tuple(ident[n] for n in names)
            except KeyError as e:
                raise exc.InvalidRequestError(
                    f"the dict passed to get() lacks primary key attribute {e.args[0]!r} of "
                    f"{mapper.class_.__name__}; its primary key attribute names are "
                    f"{', '.join(names)}"
                ) from None
        core = self._core
        obj = core.get(mapper._core, ident)
        if obj is False:
            return None
        if obj is not None and obj is not _NEEDS_LOAD:
            if not populate_existing and with_for_update is None:
                return obj
        return self._get_from_db(mapper, ident, obj, populate_existing, with_for_update)

    @_exclusive
    def _get_from_db(
        self,
        mapper: Mapper,
        ident: Any,
        obj: Any,
        populate_existing: bool,
        with_for_update: Any,
    ) -> Any:
        core = self._core
        self._check_usable_for_sql()
        if mapping._unconfigured:
            configure_mappers()  # as in execute()
        if self._related_changed or core.has_changes():
            self._autoflush()
        if not isinstance(ident, tuple | list):
            ident = (ident,)
        if mapper.eager and with_for_update is None:
            # eager relationships load with the object: go through a query
            stmt = select_(mapper.class_).where(
                *(c == v for c, v in zip(mapper.primary_key, ident, strict=True))
            )
            if populate_existing:
                stmt = stmt.execution_options(populate_existing=True)
            found = self.scalars(stmt).one_or_none()
            if found is None and obj is _NEEDS_LOAD:
                self._gone(mapper, ident)
            return found
        rows = self._fetch_by_pk(mapper, ident, with_for_update)
        if not rows:
            if obj is _NEEDS_LOAD:
                self._gone(mapper, ident)
            return None
        refresh = populate_existing or with_for_update is not None
        if refresh and obj is not None and obj is not _NEEDS_LOAD:
            core.expire(obj)
        return core.load_rows(mapper._core, rows, 0, False)[0]

    def _gone(self, mapper: Mapper, ident: Any) -> None:
        """The expired object of the identity map with this identity has no row (deleted by
        another transaction, or inserted by a rolled-back one): it is deleted, as SQLAlchemy
        marks it, and leaves the identity map."""
        stale = self._core.identity_lookup(mapper._core, ident)
        if stale is not None:
            self._core.mark_gone(stale)

    def get_one(self, entity: type[_T], ident: Any, **kw: Any) -> _T:
        obj = self.get(entity, ident, **kw)
        if obj is None:
            raise exc.NoResultFound(
                f"no {getattr(entity, '__name__', entity)} row with primary key {ident!r}"
            )
        return obj

    @_exclusive
    def refresh(
        self,
        instance: object,
        attribute_names: Iterable[str] | None = None,
        with_for_update: Any = None,
    ) -> None:
        """Reload an object's attributes (all, or the ones named) from the database now: an
        expire() of them (with no names, its refresh-expire cascade too), then a load of the
        row. Relationships named are loaded now; others load when next read."""
        self._check_usable()
        names = _attribute_names(attribute_names)
        mapper = object_mapper(instance)
        self._core.require_persistent(instance, "refresh")
        self._expire(instance, names)
        self._autoflush()
        rows = self._fetch_by_pk(mapper, mapper._core.primary_key_of(instance), with_for_update)
        if not rows:
            raise exc.InvalidRequestError(
                f"could not refresh {instance!r}: its row no longer exists in the database"
            )
        self._core.load_rows(mapper._core, rows, 0, False)
        for name in names or ():
            if name in mapper.relationships:
                getattr(instance, name)

    @_exclusive
    def expire(self, instance: object, attribute_names: Iterable[str] | None = None) -> None:
        """Mark attributes (all by default) as expired: the next access reloads them."""
        self._expire(instance, _attribute_names(attribute_names))

    def _expire(self, instance: object, names: list[str] | None) -> None:
        rels = object_mapper(instance).relationships
        if rels and id(instance) in self._related_changed:
            self._orphans_left_behind(instance, names, expiring=True)
        if names is None:
            related = self._cascaded(instance, "refresh-expire") if rels else []
            self._expire_whole(instance, rels)
            for obj in related:
                if obj not in self:
                    continue
                if obj.__dict__.get("_retort_state").has_identity:
                    self._expire(obj, None)
                else:
                    # a pending object the cascade reaches leaves the session, as in
                    # SQLAlchemy (which has no values of a row to expire it to)
                    self._core.expunge(obj)
                    self._drop_related_changes(obj)
            return
        self._core.expire(instance, [n for n in names if n not in rels])
        d = instance.__dict__
        for n in names:
            if n in rels:
                # its value, and with it the change since the last flush (as SQLAlchemy's
                # expiry drops the attribute's history and the changes queued for it)
                if d.pop(n, None) is not None:
                    self._parented(instance, n)
                for changes in (d.get("_retort_history"), d.get("_retort_pending")):
                    if changes:
                        changes.pop(n, None)

    def _parented(self, child: object, key: str) -> None:
        """`child`, taken out of a delete-orphan collection (not loaded) since the last flush,
        had a parent in its many-to-one `key`, which is expired now: no orphan then, as
        SQLAlchemy's parent tracking (kept on the child through an expiry of an attribute)
        records. The flush, which looks at that many-to-one, would find none."""
        for candidates in (self._orphan_children, self._orphans_if_changed):
            entry = candidates.get(id(child))
            if entry is not None and entry[1].back is not None and entry[1].back.key == key:
                del candidates[id(child)]

    def _expire_whole(self, instance: object, rels: Any) -> None:
        """Expire every attribute of `instance`, and nothing else (no cascade). Like
        SQLAlchemy's expiry, which resets an object's parent tracking, it forgets that the
        object was taken out of a parent's delete-orphan collection."""
        self._core.expire(instance, None)
        self._orphan_children.pop(id(instance), None)
        self._orphans_if_changed.pop(id(instance), None)
        for tx in self._nested:
            if id(instance) not in tx._written:
                tx._touched.pop(id(instance), None)
        d = instance.__dict__
        for key in rels:
            d.pop(key, None)
        d.pop("_retort_pending", None)
        d.pop("_retort_history", None)  # (see state.rs, forget_relationship_changes)

    @_exclusive
    def expire_all(self) -> None:
        """Expire every persistent object (in constant time for the objects; relationship
        changes of persistent objects are dropped, as their values are)."""
        self._core.expire_all()
        if self._related_changed:
            marked = {id(o) for o in self._core.deleted_objects()}
            self._related_changed = {
                k: o
                for k, o in self._related_changed.items()
                if k in marked or not o.__dict__["_retort_state"].has_identity
            }
            self._orphans = {k: o for k, o in self._orphans.items() if k in self._related_changed}
        for tx in self._nested:
            tx._touched = {k: o for k, o in tx._touched.items() if k in tx._written}
        # expired objects forget they were taken out of a parent's collection (see
        # _expire_whole); pending ones are not expired, and stay orphans, as in SQLAlchemy
        self._orphan_children = {
            k: v
            for k, v in self._orphan_children.items()
            if not v[0].__dict__["_retort_state"].has_identity
        }
        self._orphans_if_changed.clear()

    # -- statements -----------------------------------------------------------------------

    @_exclusive
    def execute(
        self,
        statement: Any,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> Result:
        """Run a statement in the session's transaction; ORM entities come back as objects."""
        self._check_usable_for_sql()
        if isinstance(statement, str):
            raise exc.ArgumentError(
                "Session.execute() takes a statement object; wrap raw SQL in text('...')"
            )
        configure_mappers()  # objects loaded below need their relationships set up
        self._autoflush()
        loader_opts = loading.root_options(getattr(statement, "_with_options", ()) or ())
        first = _first_entity(statement)
        joined: list[Any] = []
        if first is not None and (loader_opts or first.relationships):
            joined = loading.joined_props(statement, first, loader_opts)
            if joined:
                original = len(compile_stmt(statement, params).entities)
                statement = loading.widen(statement, joined)
        compiled = compile_stmt(statement, params)
        entities = [e for e in compiled.entities if e.mapper is not None]
        conn = (
            self._connection_for(entities[0].mapper)
            if entities
            else self._connection_for(None, statement)
        )
        many = (
            isinstance(compiled.params, list)
            and bool(compiled.params)
            and isinstance(compiled.params[0], Mapping)
        )
        cur = conn._cursor_execute(compiled.sql, compiled.params, many=many)
        if not entities:
            return Result(cur, compiled.columns)
        options = dict(getattr(statement, "_execution_options", None) or {})
        options.update(execution_options or {})
        populate = bool(options.get("populate_existing", False))
        core = self._core
        shapes = compiled.entities
        extra = []
        if joined:
            shapes, extra = shapes[:original], shapes[original:]

        def to_objects(rows: list[Any]) -> list[Any]:
            columns: list[Any] = []
            for shape in shapes:
                if shape.mapper is not None:
                    columns.append(
                        core.load_rows(shape.mapper._core, rows, shape.start, populate, False)
                    )
                else:
                    columns.append([r[shape.start] for r in rows])
            out = list(zip(*columns, strict=True))
            if joined:
                targets = [_load_outer(core, rows, shape, populate) for shape in extra]
                keep = loading.assemble(rows, columns[0], joined, targets)
                out = [out[i] for i in keep]
                columns = [[c[i] for i in keep] for c in columns]
            for shape, col in zip(shapes, columns, strict=True):
                mapper = shape.mapper
                if mapper is not None and mapper.relationships:
                    loading.apply(self, col, mapper, loader_opts)
            return out

        keys = [
            s.mapper.class_.__name__ if s.mapper is not None else compiled.columns[s.start].name
            for s in shapes
        ]
        # objects of classes without relationships load page by page: nothing needs all the
        # rows at once (joined and selectin loads do)
        page = (
            None
            if joined or any(s.mapper is not None and s.mapper.relationships for s in shapes)
            else _LOAD_PAGE
        )
        return Result(cur, compiled.columns, row_transform=to_objects, keys=keys, page=page)

    def scalars(
        self,
        statement: Any,
        params: Mapping[str, Any] | None = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> ScalarResult:
        """Run a statement and hand out the first column (objects for ``select(Model)``)."""
        return self.execute(statement, params, execution_options=execution_options).scalars()

    def scalar(
        self,
        statement: Any,
        params: Mapping[str, Any] | None = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> Any:
        """The first column of the first row of a statement's result."""
        return self.execute(statement, params, execution_options=execution_options).scalar()

    @_exclusive
    def merge(self, instance: _T, *, load: bool = True) -> _T:
        """Copy the state of `instance` onto the persistent object with its identity and return
        that object: the one the session holds, else one loaded (one SELECT), else a new pending
        one. Relationships with the merge cascade are merged too.

        With ``load=False`` nothing is loaded: the copy is taken as the database's state (the
        object must have no unflushed changes) and becomes persistent and clean.

        As in SQLAlchemy, pending changes are flushed first (with ``load`` and autoflush on),
        and not again while merging.
        """
        if load:
            self._autoflush()
        with self.no_autoflush:
            return self._merge(instance, load, {})

    @_exclusive
    def merge_all(self, instances: Iterable[_T], *, load: bool = True) -> list[_T]:
        """merge() each object, fetching first, in one SELECT per class, every identity the
        session lacks and the rows of the session's expired objects the copies set columns
        on."""
        objs = list(instances)
        if load:
            self._autoflush()
        loaded: list[Any] = []  # keeps what the SELECTs load alive while merging
        absent: set[tuple[Any, ...]] = set()
        if load:
            missing: dict[Mapper, list[tuple[Any, ...]]] = {}
            expired: list[Any] = []  # the session's expired objects that merge() would load
            for obj in objs:
                mapper = object_mapper(obj)
                ident = tuple(mapper._core.primary_key_of(obj))
                if all(v is not None for v in ident) and obj not in self:
                    held = self._core.identity_lookup(mapper._core, ident)
                    if held is None:
                        missing.setdefault(mapper, []).append(ident)
                    elif held.__dict__["_retort_state"].expired and _holds_columns(obj, mapper):
                        expired.append(held)
            if expired:
                # one SELECT per table; an object whose row is gone is marked so, as get()
                # marks it, and its key merges onto a new object
                self._check_usable_for_sql()
                for gone in self._load_objects(expired):
                    mapper = object_mapper(gone)
                    absent.add((mapper, tuple(mapper._core.primary_key_of(gone))))
                    self._core.mark_gone(gone)
            for mapper, idents in missing.items():
                self._autoflush()
                pk = mapper.primary_key
                if len(pk) == 1:
                    crit = pk[0].in_([i[0] for i in idents])
                else:
                    crit = or_(
                        *(and_(*(c == v for c, v in zip(pk, i, strict=True))) for i in idents)
                    )
                found = self.scalars(select_(mapper.class_).where(crit)).all()
                loaded.extend(found)
                have = {tuple(mapper._core.primary_key_of(o)) for o in found}
                absent.update((mapper, i) for i in idents if i not in have)
        memo: dict[int, Any] = {}
        resolved: dict[tuple[Any, ...], Any] = {}
        with self.no_autoflush:
            arrived: set[tuple[int, int]] = set()
            return [self._merge(obj, load, memo, absent, arrived, resolved) for obj in objs]

    def _merge(
        self,
        instance: Any,
        load: bool,
        memo: dict[int, Any],
        absent: Set[Any] = frozenset(),
        arrived: set[tuple[int, int]] | None = None,
        resolved: dict[tuple[Any, ...], Any] | None = None,
    ) -> Any:
        # arrived: (id(object), id(relationship)) for each object reached through a
        # relationship while merging; resolved: (mapper, key) -> the object merged onto for
        # that key in this merge, so that two copies of one row merge onto one object
        if arrived is None:
            arrived = set()
        if resolved is None:
            resolved = {}
        if id(instance) in memo:
            return memo[id(instance)]
        mapper = object_mapper(instance)
        if instance in self:
            memo[id(instance)] = instance
            return instance
        state = instance.__dict__.get("_retort_state")
        if not load and state is not None and state.changed:
            raise exc.InvalidRequestError(
                f"merge(load=False) takes objects without unflushed changes, and {instance!r} "
                "has some; flush them in their own session first, or merge with load=True"
            )
        if state is not None and state.lifecycle == "transient" and state.expired_insert:
            # expired before a rollback undid its INSERT. As a whole (every column but the key
            # gone: SQLAlchemy's expiry takes the key too, and its merge() raises reading it),
            # DetachedInstanceError before anything changes; some columns only, those are not
            # copied, as columns never set (SQLAlchemy's merge copies what __dict__ holds)
            d = instance.__dict__
            if not any(k in d for k in mapper.non_key_attrs) or not all(
                k in d for k in mapper.keys if k not in mapper.non_key_attrs
            ):
                for key in mapper.keys:
                    getattr(instance, key)  # (raises for the first one missing)
        ident = tuple(mapper._core.primary_key_of(instance))
        complete = all(v is not None for v in ident)
        target: Any = None
        if complete:
            if (mapper, ident) in resolved:
                # a second copy of a key this merge reached already: merged onto the same
                # object, as SQLAlchemy does (one object per key, not two pending objects of
                # one key, whose flush would fail on the primary key)
                target = resolved[(mapper, ident)]
            elif (mapper, ident) in absent:
                target = None  # merge_all already knows the database has no such row
            else:
                # the session's object, else the row's. An expired one is loaded only when
                # the copy holds columns to copy onto it, its key included (SQLAlchemy loads it
                # to set the key, which a copy expired as a whole does not hold): else it stays
                # expired, and a many-to-one change of it later cannot find its old parent
                target = self._core.identity_lookup(mapper._core, ident)
                if load and (target is None or _holds_columns(instance, mapper)):
                    target = self.get(mapper.class_, ident)
        fresh = target is None
        if fresh:
            target = object.__new__(mapper.class_)
        memo[id(instance)] = target
        if complete:
            resolved[(mapper, ident)] = target
        if not load:
            # taken as the database's state: the columns go straight into the target (no
            # change to flush), which is then persistent and clean, with no SELECT
            self._merge_columns(instance, target, mapper, fresh)
            if fresh:
                if complete:
                    _core.make_detached(target)
                self.add(target)
            self._merge_relationships(
                instance, target, mapper, load, memo, absent, arrived, resolved
            )
            return target
        if fresh:
            self.add(target)
        # relationships first, then columns, as SQLAlchemy merges them: where this merge
        # reaches a second copy of this object's key through its relationships, the columns of
        # this copy are the ones the target keeps
        self._merge_relationships(instance, target, mapper, load, memo, absent, arrived, resolved)
        self._merge_columns(instance, target, mapper, False)
        return target

    @staticmethod
    def _merge_columns(instance: Any, target: Any, mapper: Mapper, direct: bool) -> None:
        for key in mapper.keys:
            if key in instance.__dict__:
                if direct:
                    target.__dict__[key] = instance.__dict__[key]
                else:
                    setattr(target, key, instance.__dict__[key])

    def _merge_relationships(
        self,
        instance: Any,
        target: Any,
        mapper: Mapper,
        load: bool,
        memo: dict[int, Any],
        absent: Set[Any],
        arrived: set[tuple[int, int]],
        resolved: dict[tuple[Any, ...], Any],
    ) -> None:
        for prop in mapper.relationships.values():
            if "merge" not in prop.cascade or prop.key not in instance.__dict__:
                continue
            if load and prop.back is not None and (id(instance), id(prop.back)) in arrived:
                # reached through the other side of this relationship: as in SQLAlchemy, not
                # merged back (the back-reference of that side fills it in on the target)
                continue
            value = instance.__dict__[prop.key]
            if getattr(value, "_virgin", False):
                # an empty collection read on a new object and never changed: not a value to
                # copy (SQLAlchemy keeps it out of __dict__ until it changes)
                continue
            merged: list[Any] = []
            for v in value if prop.uselist else () if value is None else (value,):
                arrived.add((id(v), id(prop)))
                merged.append(self._merge(v, load, memo, absent, arrived, resolved))
            setattr(target, prop.key, merged if prop.uselist else (merged or [None])[0])

    def __repr__(self) -> str:
        return f"<Session at {id(self):#x}>"


def _holds_columns(instance: Any, mapper: Mapper) -> bool:
    """Whether merge() copies columns from `instance`: any loaded, its key included, unless it
    is expired as a whole (SQLAlchemy's expiry takes the key out of `__dict__` too, and its
    merge loads the object of the key only to set the key)."""
    d = instance.__dict__
    if any(k in d for k in mapper.non_key_attrs):
        return True
    state = d.get("_retort_state")
    if state is not None and state.has_identity and state.expired:
        return False
    return any(k in d for k in mapper.keys)


class sessionmaker:
    """A factory of Sessions with fixed settings: ``Session = sessionmaker(engine)``."""

    def __init__(
        self,
        bind: Any = None,
        *,
        class_: type[Session] = Session,
        autoflush: bool = True,
        expire_on_commit: bool = True,
        info: dict[Any, Any] | None = None,
        **kw: Any,
    ) -> None:
        self.class_ = class_
        self.kw: dict[str, Any] = {
            "bind": bind,
            "autoflush": autoflush,
            "expire_on_commit": expire_on_commit,
            "info": info,
            **kw,
        }

    def __call__(self, **local_kw: Any) -> Session:
        kw = dict(self.kw)
        if kw.get("info") is not None and "info" in local_kw:
            kw["info"] = {**kw["info"], **local_kw.pop("info")}
        kw.update(local_kw)
        session = self.class_(**kw)
        # listeners on this sessionmaker apply to its sessions (see retort.event)
        session._retort_maker = self  # type: ignore[attr-defined]
        if self.__dict__.get("_retort_listeners"):
            session._dispatch = event._dispatch_of(session)
        return session

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """A new session in a transaction: committed on success, rolled back on error,
        closed either way."""
        with self() as session, session.begin():
            yield session

    def configure(self, **kw: Any) -> None:
        self.kw.update(kw)

    def __repr__(self) -> str:
        return f"sessionmaker(class_={self.class_.__name__}, {self.kw!r})"


def object_session(instance: object) -> Session | None:
    """The session an object belongs to, or None."""
    object_mapper(instance)
    state = instance.__dict__.get("_retort_state")
    if state is None:
        return None
    session: Session | None = state.session
    return session


def close_all_sessions() -> None:
    """Close every session still alive in this process."""
    for s in list(_sessions):
        s.close()


def make_transient_to_detached(instance: object) -> None:
    """Give a transient object with a full primary key an identity, as if it had been loaded
    and then detached; add it to a session to use it as persistent (no SELECT is sent)."""
    object_mapper(instance)
    _core.make_detached(instance)


def make_transient(instance: object) -> None:
    """Turn an object back into a new (transient) one: no session, no identity."""
    object_mapper(instance)
    session = object_session(instance)
    if session is not None:
        session.expunge(instance)
    instance.__dict__.pop("_retort_state", None)
