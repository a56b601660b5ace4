"""Engine, Connection and Transaction: running SQL on PostgreSQL through psycopg 3.

An `Engine` owns a `psycopg_pool.ConnectionPool`, opened on first use. A `Connection` holds
one pooled psycopg connection (autocommit off: PostgreSQL starts a transaction with the first
statement) until it is closed. Every statement goes through `Connection._cursor_execute`,
the one place that logs (echo), calls the engine's statement hooks and wraps psycopg errors
into `retort.exc`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import psycopg
import psycopg_pool
from psycopg import pq
from psycopg._preparing import Prepare as _Prepare
from psycopg._queries import PostgresQuery
from psycopg.abc import Buffer, PQGen
from psycopg.abc import Transformer as AdaptTransformer
from psycopg.adapt import PyFormat, Transformer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.generators import execute as _execute
from psycopg.generators import fetch as _fetch
from psycopg.generators import fetch_many as _fetch_many
from psycopg.generators import send as _send

from retort import exc
from retort.engine.result import Result, RowTransform, ScalarResult
from retort.engine.url import URL, make_url

__all__ = [
    "Connection",
    "Engine",
    "NestedTransaction",
    "RootTransaction",
    "Transaction",
    "TwoPhaseTransaction",
    "create_engine",
]

logger = logging.getLogger("retort.engine")

StatementHook = Callable[[str, Any], None]
DriverConnection = psycopg.Connection[Any]
_Pool = psycopg_pool.ConnectionPool[DriverConnection]
_T = TypeVar("_T")

_IDLE = pq.TransactionStatus.IDLE
_INERROR = pq.TransactionStatus.INERROR
_INTRANS = pq.TransactionStatus.INTRANS

# connect_args that would take the connection out of retort's hands
_FORBIDDEN_CONNECT_ARGS = {
    "autocommit": "retort manages transactions itself (autocommit stays off)",
    "row_factory": "results are built by retort from plain tuples",
    "cursor_factory": "retort creates its own cursors",
}

# While a pool has not yet delivered a connection (or its last connect attempt failed), a
# checkout waits in slices this long, so that a connect error surfaces at once instead of
# after pool_timeout.
_UNHEALTHY_WAIT_SLICE = 0.05
_SPARE_IDLE = 30.0  # seconds an engine keeps its hot spare connection (see Engine._check_in)
_monotonic = time.monotonic


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    echo: bool | str = False,
    pool_timeout: float = 30.0,
    connect_args: Mapping[str, Any] | None = None,
) -> Engine:
    """An `Engine` for a PostgreSQL URL (`postgresql://` or `postgresql+psycopg://`).

    At most `pool_size + max_overflow` connections are open at once; a checkout waits up to
    `pool_timeout` seconds for one. `echo=True` logs every statement and its parameters to
    the "retort.engine" logger. `connect_args` go to `psycopg.connect` (libpq parameters such
    as `connect_timeout`, or psycopg options such as `prepare_threshold`).
    """
    u = make_url(url)
    if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
        raise exc.ArgumentError(f"pool_size must be a positive integer, got {pool_size!r}")
    if not isinstance(max_overflow, int) or isinstance(max_overflow, bool) or max_overflow < 0:
        raise exc.ArgumentError(
            f"max_overflow must be an integer >= 0 (the pool needs an upper bound), "
            f"got {max_overflow!r}"
        )
    if not isinstance(pool_timeout, int | float) or pool_timeout <= 0:
        raise exc.ArgumentError(f"pool_timeout must be a positive number, got {pool_timeout!r}")
    args = dict(connect_args or {})
    for key, why in _FORBIDDEN_CONNECT_ARGS.items():
        if key in args and not (key == "autocommit" and args[key] is False):
            raise exc.ArgumentError(f"connect_args may not set {key!r}: {why}")
    args.pop("autocommit", None)
    return Engine(
        u,
        pool_size=pool_size,
        max_overflow=max_overflow,
        echo=echo,
        pool_timeout=float(pool_timeout),
        connect_args=args,
    )


class _ConnectHealth:
    """The outcome of the pool's latest connect attempt (attempts run in pool threads)."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


def _pooled_connection_class(health: _ConnectHealth) -> type[DriverConnection]:
    """A psycopg Connection class that records connect failures for the pool's users."""

    class PooledConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                conn = super().connect(conninfo, **kwargs)
            except Exception as err:
                health.error = err
                raise
            health.error = None
            return conn

    return PooledConnection


class Engine:
    """A source of `Connection`s to one database, through a connection pool.

    Thread-safe; create one per database and process. `connect()` checks a connection out,
    `begin()` runs a block in a transaction, `dispose()` closes the pool.
    """

    name: ClassVar[str] = "postgresql"
    driver: ClassVar[str] = "psycopg"

    def __init__(
        self,
        url: URL,
        *,
        pool_size: int,
        max_overflow: int,
        echo: bool | str,
        pool_timeout: float,
        connect_args: dict[str, Any],
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.pool_timeout = pool_timeout
        self._conninfo = make_conninfo("", **url.connect_kwargs())
        self._connect_args = connect_args
        # Called as hook(sql, params) before every statement; tests and instrumentation append
        # to this list (never rebind it: connections keep a reference to it).
        self._statement_hooks: list[StatementHook] = []
        self._pool: _Pool | None = None
        self._pool_lock = threading.Lock()
        self._pool_warm = False  # the current pool has delivered a connection
        self._health = _ConnectHealth()
        # The hot spare: the connection closed last, idle, kept out of the pool for the next
        # checkout (see `_check_in`), as (connection, its pool, when to stop keeping it).
        # `_pool_users` counts checkouts inside the pool's getconn (under `_spare_lock`).
        self._spare: list[tuple[DriverConnection, _Pool, float]] = []
        self._spare_lock = threading.Lock()
        self._pool_users = 0
        self._echo: bool = False
        self.echo = echo

    # -- settings ------------------------------------------------------------------------

    @property
    def echo(self) -> bool:
        return self._echo

    @echo.setter
    def echo(self, value: bool | str) -> None:
        self._echo = bool(value)
        if self._echo and not logger.hasHandlers():
            # echo is asked for but logging is not configured: show the SQL anyway
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
            )
            logger.addHandler(handler)

    def __repr__(self) -> str:
        return f"Engine({self.url.render_as_string(hide_password=True)})"

    # -- connections ---------------------------------------------------------------------

    def connect(self) -> Connection:
        """Check a connection out of the pool; close it (or use `with`) to give it back."""
        return Connection(self)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """`with engine.begin() as conn:` runs the block in a transaction on a new connection,
        committed when the block succeeds and rolled back when it raises."""
        with self.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        """Close the pool and its idle connections. Checked-out connections are closed when
        they are returned; the next `connect()` opens a new pool."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            self._pool_warm = False
        if pool is not None:
            pool.close()
        self._drop_spare()

    def _get_pool(self) -> _Pool:
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._pool is None:
                # min_size 0: opening connects nothing, so the first checkout makes the one
                # connection it needs (with min_size 1 the pool's initial connect and the
                # growth triggered by the waiting client would open two). Connections left
                # unused for max_idle (10 min) are closed one at a time.
                self._pool = psycopg_pool.ConnectionPool(
                    self._conninfo,
                    connection_class=_pooled_connection_class(self._health),
                    kwargs=self._connect_args,
                    min_size=0,
                    max_size=self.pool_size + self.max_overflow,
                    timeout=self.pool_timeout,
                    name=f"retort-{id(self):x}",
                    open=True,
                )
            return self._pool

    def _checkout(self) -> tuple[DriverConnection, _Pool | None]:
        """A psycopg connection and the pool to return it to (None: close it instead): the
        hot spare if there is one (see `_check_in`), else one from the pool."""
        spare = self._spare
        while True:
            if spare:
                try:
                    dbapi, pool, until = spare.pop()  # (atomic: a spare goes to one thread)
                except IndexError:
                    pass
                else:
                    if pool is self._pool and _monotonic() < until:
                        return dbapi, pool
                    _give_back(pool, dbapi)  # disposed of, or kept long enough
                    continue
            with self._spare_lock:
                # from here on a checkin goes to the pool, where this checkout may wait for
                # it; a spare that came before is taken on the next turn
                if not spare:
                    self._pool_users += 1
                    break
        try:
            return self._checkout_from_pool()
        finally:
            with self._spare_lock:
                self._pool_users -= 1

    def _checkout_from_pool(self) -> tuple[DriverConnection, _Pool | None]:
        for _ in range(2):  # a dispose() on another thread may close the pool under us
            pool = self._get_pool()
            try:
                if self._pool_warm and self._health.error is None:
                    return pool.getconn(self.pool_timeout), pool
                return self._checkout_slow(pool)
            except psycopg_pool.PoolClosed:
                continue
            except psycopg_pool.PoolTimeout as err:
                raise exc.OperationalError(
                    f"no connection available from the pool within {self.pool_timeout:g}s: "
                    f"all {self.pool_size + self.max_overflow} connections (pool_size="
                    f"{self.pool_size} + max_overflow={self.max_overflow}) are checked out; "
                    "close connections when done or raise pool_size/max_overflow",
                    err,
                    None,
                    None,
                ) from None
        raise exc.InvalidRequestError("the engine was disposed while connecting; try again")

    def _check_in(self, pool: _Pool | None, dbapi: DriverConnection) -> None:
        """Take back a connection whose transaction has ended: keep it as the hot spare for
        the next checkout when there is none yet, it is idle and sound, and no checkout is
        inside the pool (which may be waiting there for it); otherwise return it to the
        pool. A trip out of and back into psycopg_pool runs about a tenth of the client's
        instructions in a small transaction (its locks, logging calls and bookkeeping), and
        a program that closes a connection usually opens the next one at once. A spare is
        kept for `_SPARE_IDLE` seconds at most, and never past the pool's own lifetime for
        the connection (max_lifetime)."""
        if (
            pool is not None
            and not self._spare
            and not self._pool_users
            and pool is self._pool
            and dbapi.pgconn.transaction_status == _IDLE
            and dbapi._pipeline is None
        ):
            until = _monotonic() + _SPARE_IDLE
            expire = getattr(dbapi, "_expire_at", until)  # (psycopg_pool's max_lifetime)
            with self._spare_lock:
                if not self._spare and not self._pool_users:
                    self._spare.append((dbapi, pool, min(until, expire)))
                    return
        _give_back(pool, dbapi)

    def _drop_spare(self) -> None:
        with self._spare_lock:
            spares = self._spare[:]
            del self._spare[:]
        for dbapi, pool, _ in spares:
            _give_back(pool, dbapi)

    def _checkout_slow(self, pool: _Pool) -> tuple[DriverConnection, _Pool | None]:
        """Checkout while the pool is unproven or its last connect attempt failed: the pool
        connects in its own threads, so watch for failures instead of waiting them out."""
        deadline = time.monotonic() + self.pool_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise exc.OperationalError(
                    f"could not get a database connection within {self.pool_timeout:g}s; "
                    "the server did not answer in time",
                    None,
                    None,
                    None,
                )
            try:
                conn = pool.getconn(min(remaining, _UNHEALTHY_WAIT_SLICE))
            except psycopg_pool.PoolTimeout:
                if self._health.error is not None:
                    # raises the real connect error, or hands out a direct connection if the
                    # database is back while the pool is still backing off
                    return self._probe(remaining), None
                continue
            if pool is self._pool:
                self._pool_warm = True
            return conn, pool

    def _probe(self, remaining: float) -> DriverConnection:
        """Connect once outside the pool (which has just failed to)."""
        args = dict(self._connect_args)
        if "connect_timeout" not in args and "connect_timeout" not in conninfo_to_dict(
            self._conninfo
        ):
            args["connect_timeout"] = max(2, int(remaining))
        try:
            conn = psycopg.Connection.connect(self._conninfo, **args)
        except psycopg.Error as err:
            raise exc.OperationalError(
                f"cannot connect to {self.url}: {err}".rstrip(), err, None, None
            ) from err
        self._health.error = None
        return conn


class _NoDriverConnection:
    """Stands in for the psycopg connection of a closed or invalidated Connection, so that
    the statement path needs no extra check: its `cursor()` raises the right error."""

    __slots__ = ("_error",)
    closed = True

    def __init__(self, error: Callable[[], Exception]) -> None:
        self._error = error

    def cursor(self) -> Any:
        raise self._error()


def _closed_error() -> Exception:
    return exc.ResourceClosedError("this Connection is closed; get a new one with engine.connect()")


def _invalidated_error() -> Exception:
    return exc.PendingRollbackError(
        "the database connection was lost inside a transaction, which the server has "
        "abandoned; call rollback() on the connection before running more statements "
        "(a new database connection is used then)"
    )


_CLOSED: Any = _NoDriverConnection(_closed_error)
_INVALIDATED: Any = _NoDriverConnection(_invalidated_error)


class Connection:
    """One database connection checked out of an Engine's pool, until `close()`.

    The first statement starts a transaction (autobegin); `commit()` or `rollback()` ends
    it. Not thread-safe: use one Connection per thread.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_commit_next",
        "_commit_pending",
        "_dbapi",
        "_echo",
        "_hooks",
        "_info",
        "_invalid",
        "_lone",
        "_nested",
        "_pool",
        "_savepoint_seq",
        "_transaction",
        "_wrote",
        "engine",
    )

    _dbapi: DriverConnection
    _pool: _Pool | None

    def __init__(self, engine: Engine) -> None:
        self._closed = True  # until the checkout succeeded (for __del__)
        self.engine = engine
        self._hooks = engine._statement_hooks
        self._echo = engine._echo or logger.isEnabledFor(logging.INFO)
        self._transaction: RootTransaction | None = None
        self._nested: NestedTransaction | None = None
        self._savepoint_seq = 0
        self._invalid = False
        self._info: dict[Any, Any] | None = None
        self._lone = False
        self._commit_pending: Callable[[], None] | None = None
        self._commit_next = False
        self._wrote = False
        self._dbapi, self._pool = engine._checkout()
        self._closed = False

    # -- state ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def invalidated(self) -> bool:
        """True from the loss of the database connection until a new one is used (by the
        first statement after `rollback()`)."""
        return self._invalid

    @property
    def driver_connection(self) -> DriverConnection:
        """The psycopg connection in use. (What runs on it directly is unknown to retort,
        which from then on counts the transaction as one that wrote: see `_run_and_commit`.)"""
        if self._closed:
            raise _closed_error()
        if self._invalid:
            raise _invalidated_error()
        self._wrote = True
        self._dbapi.__dict__.pop(_TRANSFORMER, None)  # (adapters may change: see _TRANSFORMER)
        return self._dbapi

    @property
    def info(self) -> dict[Any, Any]:
        """A dict for the caller's own bookkeeping, kept for the life of this Connection."""
        if self._info is None:
            self._info = {}
        return self._info

    def in_transaction(self) -> bool:
        return self._transaction is not None

    def in_nested_transaction(self) -> bool:
        return self._nested is not None

    def get_transaction(self) -> RootTransaction | None:
        return self._transaction

    def get_nested_transaction(self) -> NestedTransaction | None:
        return self._nested

    def __repr__(self) -> str:
        state = "closed" if self._closed else "invalidated" if self._invalid else "open"
        return f"<Connection {state} {self.engine!r}>"

    # -- statements ----------------------------------------------------------------------

    def execute(self, statement: Any, parameters: Any = None) -> Result:
        """Run a statement (`select(...)`, `text(...)`, ...) with optional parameters: a dict,
        or a list of dicts to run it once per dict (executemany)."""
        if isinstance(statement, str):
            raise exc.ArgumentError(
                "execute() takes a statement such as text('...') or select(...); "
                "run a raw SQL string with exec_driver_sql()"
            )
        compiled = _compiler()(statement, parameters)
        if _is_many(parameters):  # compiled.params is then one dict per execution
            return Result(self._cursor_execute(compiled.sql, compiled.params, many=True))
        return self._execute_compiled(compiled)

    def _execute_compiled(
        self,
        compiled: Any,
        *,
        row_transform: RowTransform | None = None,
        keys: Sequence[str] | None = None,
    ) -> Result:
        """Run a `Compiled` and buffer its result (see `Result` for the two options)."""
        params = compiled.params
        # never None: psycopg only unescapes %% when it is given parameters
        cursor = self._cursor_execute(compiled.sql, () if params is None else params)
        return Result(cursor, compiled.columns, row_transform=row_transform, keys=keys)

    def exec_driver_sql(self, statement: str, parameters: Any = None) -> Result:
        """Run SQL text as psycopg takes it (`%s` / `%(name)s` placeholders). A list of
        tuples or dicts runs the statement once per item (executemany). Without parameters
        the text is sent as is (`%` needs no escaping)."""
        many = _is_many(parameters)
        return Result(self._cursor_execute(statement, parameters, many=many))

    def scalar(self, statement: Any, parameters: Any = None) -> Any:
        """The first column of the first row of the statement's result, or None."""
        return self.execute(statement, parameters).scalar()

    def scalars(self, statement: Any, parameters: Any = None) -> ScalarResult:
        """The first column of each row of the statement's result."""
        return self.execute(statement, parameters).scalars()

    def _announce(self, sql: str, params: Any, many: bool) -> None:
        """What comes before every statement: the transaction begins (autobegin), echo logs
        it and the statement hooks see it."""
        if self._transaction is None and not self._lone:
            self._begin_root()
        if self._echo:
            _log_statement(sql, params, many)
        if self._hooks:
            for hook in self._hooks:
                hook(sql, params)

    def _cursor_execute(self, sql: str, params: Any, *, many: bool = False) -> psycopg.Cursor[Any]:
        """Run one statement and return the psycopg cursor. Every statement goes through
        here: it begins the transaction, logs (echo), calls the statement hooks, and wraps
        psycopg errors into retort.exc."""
        self._announce(sql, params, many)
        self._wrote = True  # (for all it knows)
        try:
            cursor = self._dbapi.cursor()
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
        except psycopg.Error as err:
            raise self._wrap(err, sql, params) from err
        except exc.RetortError:
            raise
        except Exception as err:  # a value psycopg failed to encode (TypeError, UnicodeError)
            raise exc.wrap_statement_error(err, sql, params) from err
        return cursor

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        """Run one statement retort generated (a flush's, or a load by primary key) and return
        its outcome, which answers `rowcount`, `description` and `fetchall()` as a cursor does.

        Like `_cursor_execute` (transaction, echo, hooks, errors), but on psycopg's libpq
        connection directly, with the connection's own adapters and prepared statements and
        without a cursor (`_run_statement`): a fraction of `cursor.execute`'s client time,
        for the same messages on the wire. A connection in pipeline mode, or closed, takes
        `_cursor_execute`."""
        if not self._driven_directly():
            return self._cursor_execute(sql, params)
        self._announce(sql, params, False)
        if self._commit_next:
            self._commit_next = False
            if not self._wrote and self._may_send_commit():
                return self._run_and_commit(sql, params)
        if not sql.startswith("SELECT "):  # retort's own SELECTs only read
            self._wrote = True
        return self._on_driver(sql, params, _run_statement, self._dbapi, sql, params)

    def _may_send_commit(self) -> bool:
        """Whether the COMMIT may be sent ahead of `commit()` (`_send_commit`,
        `_run_and_commit`): a plain transaction, begun on the server and not failed, on a
        connection retort drives directly, with no COMMIT sent yet."""
        return (
            self._commit_pending is None
            and self._transaction.__class__ is RootTransaction
            and self._driven_directly()
            and self._dbapi.pgconn.transaction_status == _INTRANS
        )

    def _run_and_commit(self, sql: str, params: Sequence[Any]) -> Any:
        """`_run`, with the COMMIT sent behind the statement in the same round trip: the
        server commits once the statement is done. If the statement fails, the server skips
        the COMMIT (the transaction is aborted, for rollback() to end) and the statement's
        error is raised. The COMMIT's own outcome (a deferred constraint, a serialization
        failure) is kept for the next `commit()`, which raises it.

        The caller (Session.flush, for commit()) checks the statement's row count only after
        the COMMIT: it sends this only for a statement on one row by its primary key, in a
        transaction that wrote nothing before (`_wrote`), so a statement
        that matched no row leaves nothing written either way."""
        if self._echo:
            _log("COMMIT (with the statement above)")
        outcome = self._on_driver(sql, params, _run_statement, self._dbapi, sql, params, True)
        failed = outcome.commit_error
        if failed is None:
            self._commit_pending = _nothing
        else:
            error = self._wrap(failed, "COMMIT", None)

            def raise_failed() -> None:
                raise error from failed

            self._commit_pending = raise_failed
        return outcome

    def _start(self, sql: str, params: Sequence[Any]) -> Callable[[], Any]:
        """`_run` in two halves: the statement is sent now, and the function returned waits
        for it and returns its outcome. Meanwhile the caller may work, but run nothing else
        on this connection; it must call the function (also on the way out of an error)."""
        if not self._driven_directly():
            cursor = self._cursor_execute(sql, params)
            return lambda: cursor
        self._announce(sql, params, False)
        self._wrote = True
        dbapi = self._dbapi
        started = self._on_driver(sql, params, _start_statement, dbapi, sql, params, True)
        return lambda: self._on_driver(sql, params, _finish_statement, dbapi, *started)

    def _driven_directly(self) -> bool:
        """Whether `_run` and `_start` may drive the psycopg connection without a cursor (not
        in psycopg's pipeline mode, not closed)."""
        dbapi = self._dbapi
        return dbapi.__class__ is not _NoDriverConnection and dbapi._pipeline is None

    def _on_driver(self, sql: str, params: Any, step: Callable[..., _T], *args: Any) -> _T:
        """`step(*args)` under the psycopg connection's lock, its errors wrapped into
        retort.exc as `_cursor_execute` wraps them."""
        try:
            with self._dbapi.lock:
                return step(*args)
        except exc.RetortError:
            raise
        except psycopg.Error as err:
            raise self._wrap(err, sql, params) from err
        except Exception as err:  # a value psycopg failed to encode (TypeError, UnicodeError)
            raise exc.wrap_statement_error(err, sql, params) from err

    @contextmanager
    def _copy(self, sql: str, rows: Callable[[], Any]) -> Iterator[psycopg.Copy]:
        """``COPY ... FROM STDIN``: yields psycopg's Copy object to write rows to. Like
        `_cursor_execute` it begins the transaction, logs, calls the statement hooks (with the
        rows as parameters: `rows()`, only called when someone looks) and wraps psycopg
        errors."""
        if self._transaction is None and not self._lone:
            self._begin_root()
        self._wrote = True
        if self._echo or self._hooks:
            params = rows()
            if self._echo:
                _log_statement(sql, params, True)
            for hook in self._hooks:
                hook(sql, params)
        try:
            with self._dbapi.cursor().copy(sql) as copy:
                yield copy
        except psycopg.Error as err:
            raise self._wrap(err, sql, rows) from err
        except exc.RetortError:
            raise
        except Exception as err:  # a value psycopg failed to encode (TypeError, UnicodeError)
            raise exc.wrap_statement_error(err, sql, None) from err

    def _wrap(self, err: psycopg.Error, sql: str | None, params: Any) -> exc.DBAPIError:
        if self._dbapi.closed and not self._invalid and not self._closed:
            self._invalidate()
        return exc.wrap_dbapi_error(err, sql, params)

    # -- transactions --------------------------------------------------------------------

    def begin(self) -> RootTransaction:
        """Begin a transaction explicitly; use it as a context manager to commit on success
        and roll back on error. PostgreSQL sees BEGIN with the first statement."""
        if self._transaction is not None:
            raise exc.InvalidRequestError(
                "a transaction is already in progress on this connection (begun by begin() "
                "or by the first statement); commit() or rollback() it first, or use "
                "begin_nested() for a SAVEPOINT"
            )
        return self._begin_root()

    def begin_nested(self) -> NestedTransaction:
        """Open a SAVEPOINT (beginning the transaction first if needed). Committing the
        returned transaction releases it, rolling back returns to it."""
        if self._transaction is None:
            self._begin_root()
        self._savepoint_seq += 1
        name = f"retort_sp_{self._savepoint_seq}"
        self._cursor_execute(f"SAVEPOINT {name}", None)
        self._nested = NestedTransaction(self, name, self._nested)
        return self._nested

    def begin_twophase(self, xid: str | None = None) -> TwoPhaseTransaction:
        """Begin a two-phase transaction (PostgreSQL prepared transactions, through psycopg's
        tpc API) with the global transaction id `xid` (a unique one if None). `prepare()` on
        the returned transaction runs PREPARE TRANSACTION; `commit()` prepares if needed and
        runs COMMIT PREPARED. The server must allow prepared transactions
        (``max_prepared_transactions`` > 0)."""
        if self._transaction is not None:
            raise exc.InvalidRequestError(
                "a transaction is already in progress on this connection; commit() or "
                "rollback() it before begin_twophase()"
            )
        if xid is None:
            xid = f"retort_{uuid.uuid4().hex}"
        elif not isinstance(xid, str) or not xid:
            raise exc.ArgumentError(f"begin_twophase() takes a non-empty string xid, not {xid!r}")
        self._check_out()
        txn = self._transaction = TwoPhaseTransaction(self, xid)
        if self._echo:
            _log("BEGIN TWOPHASE %s", xid)
        try:
            self._dbapi.tpc_begin(xid)
        except psycopg.Error as err:
            self._transaction = None
            raise self._wrap(err, "BEGIN", None) from err
        return txn

    def recover_twophase(self) -> list[str]:
        """The ids of the transactions prepared on this database and not yet committed or
        rolled back (left by a process that stopped between prepare and commit)."""
        if self._transaction is not None:
            raise exc.InvalidRequestError(
                "recover_twophase() needs a connection without a transaction in progress"
            )
        try:
            xids = self.driver_connection.tpc_recover()
        except psycopg.Error as err:
            raise self._wrap(err, "SELECT ... FROM pg_prepared_xacts", None) from err
        return [str(x) for x in xids]

    def commit_prepared(self, xid: str) -> None:
        """COMMIT PREPARED a transaction prepared earlier (see `recover_twophase()`)."""
        self._finish_prepared("COMMIT", xid)

    def rollback_prepared(self, xid: str) -> None:
        """ROLLBACK PREPARED a transaction prepared earlier (see `recover_twophase()`)."""
        self._finish_prepared("ROLLBACK", xid)

    def _finish_prepared(self, action: str, xid: str) -> None:
        if self._transaction is not None:
            raise exc.InvalidRequestError(
                f"{action} PREPARED cannot run inside a transaction; commit() or rollback() "
                "this connection first"
            )
        dbapi = self.driver_connection
        if self._echo:
            _log("%s PREPARED %s", action, xid)
        try:
            if action == "COMMIT":
                dbapi.tpc_commit(xid)
            else:
                dbapi.tpc_rollback(xid)
        except psycopg.Error as err:
            raise self._wrap(err, f"{action} PREPARED", None) from err

    def commit(self) -> None:
        """Commit the transaction in progress, if any (savepoints inside it included)."""
        if self._transaction is not None:
            self._commit_root()

    def rollback(self) -> None:
        """Roll back the transaction in progress, if any."""
        if self._transaction is not None:
            self._rollback_root()

    def _check_out(self) -> None:
        """Before a transaction begins: refuse a closed connection, and replace a lost
        database connection (the loss was acknowledged by rollback())."""
        if self._closed:
            raise _closed_error()
        if self._invalid:
            self._dbapi, self._pool = self.engine._checkout()
            self._invalid = False

    def _begin_lone(self) -> DriverConnection | None:
        """Run the one statement of a transaction that holds nothing else without BEGIN and
        COMMIT: PostgreSQL runs a statement sent outside a transaction block in an implicit
        transaction of its own, with the same default settings a plain BEGIN would take, and
        commits it when it succeeds (or rolls all of it back). It saves two round trips.

        Returns the psycopg connection, for `_end_lone` once the statement has run, when it
        applies: only when no transaction is in progress and the psycopg connection does not
        begin its transactions with an isolation level, READ ONLY or DEFERRABLE of its own.
        Otherwise None, and the statement runs as usual."""
        dbapi = self._dbapi
        if (
            self._transaction is not None
            or self._invalid
            or self._closed
            or dbapi.pgconn.transaction_status != _IDLE
            or dbapi._pipeline is not None
            or dbapi.isolation_level is not None
            or dbapi.read_only is not None
            or dbapi.deferrable is not None
        ):
            return None
        # psycopg's own flag: its `autocommit` setter checks (in a generator, under its lock)
        # what was just checked, the idle status outside a pipeline
        dbapi._autocommit = True
        self._lone = True
        if self._echo:
            _log("(one statement: its own implicit transaction, no BEGIN/COMMIT)")
        return dbapi

    def _end_lone(self, dbapi: DriverConnection) -> None:
        self._lone = False
        dbapi._autocommit = False

    def _begin_root(self) -> RootTransaction:
        self._check_out()
        self._wrote = False
        txn = self._transaction = RootTransaction(self)
        if self._echo:
            _log("BEGIN (implicit)")
        return txn

    def _end_all(self) -> None:
        """Mark every transaction of this connection inactive and forget them."""
        nested = self._nested
        if nested is not None:
            while nested is not None:
                nested.is_active = False
                nested = nested._parent
            self._nested = None
        if self._transaction is not None:
            self._transaction.is_active = False
            self._transaction = None

    def _send_commit(self) -> None:
        """The first half of `commit()`: COMMIT goes to the server now, and the next
        `commit()` reads its outcome (a `rollback()` or `close()` meanwhile reads and drops
        it). The caller runs nothing else on this connection in between. It lets the client
        finish its own work while the server commits, and sends the COMMIT without that
        work's delay after the last statement. Only where `_may_send_commit`; otherwise
        nothing is sent."""
        if not self._may_send_commit():
            return
        if self._echo:
            _log("COMMIT")
        self._on_driver("COMMIT", None, _send_command, self._dbapi, b"COMMIT")
        self._commit_pending = self._commit_outcome

    def _commit_outcome(self) -> None:
        """The second half of `_send_commit`: wait for the COMMIT's outcome (raising its
        error, wrapped)."""
        self._on_driver("COMMIT", None, _finish_command, self._dbapi)

    def _commit_root(self) -> None:
        pending = self._commit_pending
        if pending is not None:  # the COMMIT was sent already: its outcome
            self._commit_pending = None
            self._end_all()
            pending()
            return
        if self._invalid:
            raise _invalidated_error()
        txn = self._transaction
        if txn.__class__ is not RootTransaction and isinstance(txn, TwoPhaseTransaction):
            self._commit_twophase(txn)
            return
        dbapi = self._dbapi
        if dbapi.pgconn.transaction_status == _INERROR:
            self._rollback_root()
            raise exc.InvalidRequestError(
                "cannot commit: a statement in this transaction failed, so PostgreSQL aborted "
                "the transaction; it has been rolled back and nothing was committed"
            )
        self._end_all()
        if self._echo and dbapi.pgconn.transaction_status != _IDLE:
            _log("COMMIT")
        try:
            dbapi.commit()
        except psycopg.Error as err:
            raise self._wrap(err, "COMMIT", None) from err

    def _prepare(self, txn: TwoPhaseTransaction) -> None:
        if self._invalid:
            raise _invalidated_error()
        dbapi = self._dbapi
        if dbapi.pgconn.transaction_status == _INERROR:
            self._rollback_root()
            raise exc.InvalidRequestError(
                "cannot prepare: a statement in this transaction failed, so PostgreSQL aborted "
                "the transaction; it has been rolled back and nothing was prepared"
            )
        if self._echo:
            _log("PREPARE TRANSACTION %s", txn.xid)
        try:
            dbapi.tpc_prepare()
        except psycopg.Error as err:
            # PostgreSQL ends the transaction when PREPARE fails: nothing is left to roll back
            self._end_all()
            self._reset_tpc(dbapi)
            raise self._wrap(err, "PREPARE TRANSACTION", None) from err
        txn.prepared = True

    def _commit_twophase(self, txn: TwoPhaseTransaction) -> None:
        if not txn.prepared:
            self._prepare(txn)
        dbapi = self._dbapi
        self._end_all()
        if self._echo:
            _log("COMMIT PREPARED %s", txn.xid)
        try:
            dbapi.tpc_commit()
        except psycopg.Error as err:
            self._reset_tpc(dbapi)
            raise self._wrap(err, "COMMIT PREPARED", None) from err

    def _reset_tpc(self, dbapi: DriverConnection) -> None:
        """Forget psycopg's two-phase state after a failed PREPARE or COMMIT PREPARED: the
        server has ended the transaction (or keeps it prepared, to be finished by id), so this
        connection is no longer in it. psycopg keeps the state set after such a failure and
        has no public way to clear it."""
        dbapi._tpc = None
        if not dbapi.closed and dbapi.pgconn.transaction_status != _IDLE:
            with contextlib.suppress(psycopg.Error):
                dbapi.rollback()

    def _rollback_root(self) -> None:
        if self._commit_pending is not None:  # too late to roll back: read the outcome, drop it
            try:
                self._commit_root()
            except exc.RetortError:
                pass
            return
        txn = self._transaction
        self._end_all()
        if self._invalid:
            return  # the server dropped the transaction with the connection
        dbapi = self._dbapi
        if isinstance(txn, TwoPhaseTransaction):
            if self._echo:
                _log("ROLLBACK PREPARED %s" if txn.prepared else "ROLLBACK", txn.xid)
            try:
                dbapi.tpc_rollback()
            except psycopg.Error as err:
                self._reset_tpc(dbapi)
                if dbapi.closed:
                    self._invalidate()
                    self._end_all()
                    return
                raise self._wrap(err, "ROLLBACK", None) from err
            return
        if dbapi.pgconn.transaction_status == _IDLE:
            return  # nothing was run: no round trip
        if self._echo:
            _log("ROLLBACK")
        try:
            dbapi.rollback()
        except psycopg.Error as err:
            if dbapi.closed:  # lost connection: the transaction is gone with it
                self._invalidate()
                self._end_all()
                return
            raise self._wrap(err, "ROLLBACK", None) from err

    def _release(self, txn: NestedTransaction) -> None:
        self._cursor_execute(f"RELEASE SAVEPOINT {txn.name}", None)
        self._pop_nested(txn)

    def _rollback_to(self, txn: NestedTransaction) -> None:
        if not self._invalid:
            self._cursor_execute(f"ROLLBACK TO SAVEPOINT {txn.name}", None)
        self._pop_nested(txn)

    def _pop_nested(self, txn: NestedTransaction) -> None:
        # releasing or rolling back a savepoint ends the savepoints opened after it
        nested = self._nested
        while nested is not None and nested is not txn:
            nested.is_active = False
            nested = nested._parent
        txn.is_active = False
        self._nested = txn._parent

    # -- closing -------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Discard the database connection (it is closed, not returned to the pool). A
        transaction in progress is lost; call rollback() before using this Connection again."""
        if self._closed or self._invalid:
            return
        self._dbapi.close()
        self._invalidate()

    def _invalidate(self) -> None:
        dbapi, self._dbapi = self._dbapi, _INVALIDATED
        self._invalid = True
        _give_back(self._pool, dbapi)  # the pool sees it is broken, drops it, opens another
        # the server has abandoned the transaction; keep the root so that the caller must
        # acknowledge that with rollback() before a new database connection is used
        nested = self._nested
        while nested is not None:
            nested.is_active = False
            nested = nested._parent
        self._nested = None
        if self._transaction is not None:
            self._transaction.is_active = False

    def close(self) -> None:
        """Roll back a transaction in progress and return the connection to the pool."""
        if self._closed:
            return
        try:
            if self._transaction is not None:
                self._rollback_root()
        finally:
            self._closed = True
            self._end_all()
            dbapi, self._dbapi = self._dbapi, _CLOSED
            if not self._invalid:
                self.engine._check_in(self._pool, dbapi)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._invalid:
            _return_abandoned(self._pool, self._dbapi)
        warnings.warn(
            "a retort Connection was garbage collected without being closed; its database "
            "connection was returned to the pool and its transaction rolled back. Close "
            "connections explicitly or use `with engine.connect() as conn:`",
            ResourceWarning,
            stacklevel=1,
        )


class Transaction:
    """A transaction of a Connection: `commit()`, `rollback()`, `close()`, `is_active`.

    As a context manager it commits when the block succeeds and rolls back when it raises
    (unless the block already ended it).
    """

    __slots__ = ("_parent", "connection", "is_active")

    nested: ClassVar[bool] = False
    _parent: NestedTransaction | None

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.is_active = True

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Roll back if still in progress."""
        self.rollback()

    def _in_progress(self) -> bool:
        return self.is_active

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if not self._in_progress():
            return  # committed or rolled back inside the block
        if exc_type is not None:
            self.rollback()
            return
        try:
            self.commit()
        except BaseException:
            if self._in_progress():
                self.rollback()
            raise


class RootTransaction(Transaction):
    """The outermost transaction of a Connection (BEGIN ... COMMIT/ROLLBACK)."""

    __slots__ = ()

    def _in_progress(self) -> bool:
        # an invalidated transaction is inactive but still needs its rollback()
        return self.connection._transaction is self

    def commit(self) -> None:
        if self.connection._transaction is not self:
            raise exc.InvalidRequestError(
                "this transaction has already been committed or rolled back; begin a new one"
            )
        self.connection._commit_root()

    def rollback(self) -> None:
        if self.connection._transaction is self:
            self.connection._rollback_root()

    def __enter__(self) -> RootTransaction:
        return self


class TwoPhaseTransaction(RootTransaction):
    """A root transaction committed in two phases: `prepare()` (PREPARE TRANSACTION), then
    `commit()` (COMMIT PREPARED) or `rollback()` (ROLLBACK PREPARED)."""

    __slots__ = ("prepared", "xid")

    def __init__(self, connection: Connection, xid: str) -> None:
        super().__init__(connection)
        self.xid = xid
        self.prepared = False

    def prepare(self) -> None:
        """Run the first phase: after it the transaction survives a crash of this process and
        can still be committed or rolled back, by id, from any connection."""
        if self.connection._transaction is not self:
            raise exc.InvalidRequestError(
                "this transaction has already been committed or rolled back; begin a new one"
            )
        if self.prepared:
            raise exc.InvalidRequestError("this transaction is already prepared")
        self.connection._prepare(self)


class NestedTransaction(Transaction):
    """A SAVEPOINT: `commit()` releases it, `rollback()` rolls back to it."""

    __slots__ = ("name",)

    nested: ClassVar[bool] = True

    def __init__(self, connection: Connection, name: str, parent: NestedTransaction | None):
        super().__init__(connection)
        self.name = name
        self._parent = parent

    def commit(self) -> None:
        if not self.is_active:
            raise exc.InvalidRequestError(
                f"savepoint {self.name} has already been released or rolled back"
            )
        self.connection._release(self)

    def rollback(self) -> None:
        if self.is_active:
            self.connection._rollback_to(self)

    def __enter__(self) -> NestedTransaction:
        return self


# --------------------------------------------------------------------------------------------
# helpers


_compile: Callable[[Any, Any], Any] | None = None


def _compiler() -> Callable[[Any, Any], Any]:
    """`retort.sql.compiler.compile`, imported on first use (the sql layer sits below the
    engine, but the engine must import without it for raw-SQL use)."""
    global _compile
    if _compile is None:
        _compile = importlib.import_module("retort.sql.compiler").compile
    return _compile


def _is_many(params: Any) -> bool:
    """A list of dicts or tuples is one parameter set per execution. (A list of lists is a
    single positional set whose values are arrays.)"""
    return isinstance(params, list) and bool(params) and isinstance(params[0], Mapping | tuple)


def _log(msg: str, *args: Any) -> None:
    # Log at INFO even when the logger's level is higher: echo=True on one engine must not
    # need (or cause) a global logging change.
    logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, msg, args, None))


def _log_statement(sql: str, params: Any, many: bool) -> None:
    _log("%s", sql)
    if many:
        _log("[executemany %d sets] %s", len(params), exc._short_params(params))
    elif params:
        _log("[parameters] %s", exc._short_params(params))
    else:
        _log("[no parameters]")


# -- Connection._run: psycopg's cursor.execute without the cursor ----------------------------

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_IDLE = pq.TransactionStatus.IDLE
_CONN_OK = pq.ConnStatus.OK
_TEXT = pq.Format.TEXT
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC


def _run_statement(
    dbapi: DriverConnection, sql: str, params: Sequence[Any], commit: bool = False
) -> _Outcome:
    """What psycopg's ``cursor.execute(sql, params)`` does on a connection outside pipeline
    mode, with the same steps and the connection's own prepared-statement cache (so that
    prepare_threshold, prepared_max and its clearing on ROLLBACK, DISCARD ALL or DDL hold as
    for any statement): begin the transaction, adapt the parameters, prepare the statement
    once it has run prepare_threshold times, execute it, raise the server's error.

    One difference: the BEGIN of the transaction (and the PREPARE of the statement, when
    due) go with the statement, in one round trip, through libpq's pipeline mode, where
    psycopg waits for each on its own.

    With `commit`, a COMMIT follows the statement in the same round trip (see
    `Connection._run_and_commit`); its error, if any, is the outcome's `commit_error`."""
    return _finish_statement(dbapi, *_start_statement(dbapi, sql, params, False, commit))


def _send_command(dbapi: DriverConnection, command: bytes) -> None:
    """Send a statement without parameters (in the simple query protocol, as psycopg sends
    COMMIT) and return once it is on its way; `_finish_command` reads its outcome."""
    pgconn = dbapi.pgconn
    if pgconn.status != _CONN_OK:
        dbapi._check_connection_ok()  # raises psycopg's error
    pgconn.send_query(command)
    dbapi.wait(_send(pgconn))


def _finish_command(dbapi: DriverConnection) -> None:
    pgconn = dbapi.pgconn
    for result in dbapi.wait(_fetch_many(pgconn)):
        if result.status == _FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=dbapi.info.encoding)


_Started = tuple[Any, "_Query | None", _Prepare, bytes, bool, bool, bool]


def _start_statement(
    dbapi: DriverConnection, sql: str, params: Sequence[Any], defer: bool, commit: bool = False
) -> _Started:
    """The sending half of `_run_statement`; with `defer`, the statement is on its way to
    the server when this returns (in pipeline mode, for `_finish_statement` to read)."""
    pgconn = dbapi.pgconn
    if pgconn.status != _CONN_OK:
        dbapi._check_connection_ok()  # raises psycopg's error
    tx = dbapi.__dict__.get(_TRANSFORMER)
    if tx is None:
        tx = dbapi.__dict__[_TRANSFORMER] = Transformer(dbapi)
    converted = _CONVERTED.get(sql)
    if converted is None:
        converted = _convert(tx, sql, params)
    text = converted[0]
    values = tx.dump_sequence(params, converted[1])
    types = tx.types or ()
    formats = tx.formats
    cache = dbapi._prepared
    # a statement prepared already runs by its name (without psycopg's bookkeeping, which
    # would only move it up its LRU order); anything else asks the cache as a cursor does
    name = cache._names.get((text, types))
    query = None
    if name:
        prep = _Prepare.YES
    else:
        query = _Query()
        query.query, query.params, query.types, query.formats = text, values, types, formats
        prep, name = cache.get(query)  # type: ignore[arg-type]  # (reads .query and .types)
    begin = not dbapi.autocommit and pgconn.transaction_status == _IDLE
    piped = defer or begin or commit or prep is _Prepare.SHOULD
    if piped:
        pgconn.enter_pipeline_mode()
        try:
            if begin:
                pgconn.send_query_params(dbapi._get_tx_start_command(), None)
            if prep is _Prepare.SHOULD:
                pgconn.send_prepare(name, text, param_types=types)
            _send_statement(pgconn, text, values, types, formats, prep, name)
            if commit:
                pgconn.send_query_params(b"COMMIT", None)
            pgconn.pipeline_sync()
            if defer:
                dbapi.wait(_send(pgconn))
        except BaseException:
            _leave_pipeline_mode(pgconn)
            raise
    else:
        _send_statement(pgconn, text, values, types, formats, prep, name)
    return tx, query, prep, name, piped, commit, begin


def _finish_statement(
    dbapi: DriverConnection,
    tx: Any,
    query: _Query | None,
    prep: _Prepare,
    name: bytes,
    piped: bool,
    commit: bool = False,
    began: bool = False,
) -> _Outcome:
    """The reading half of `_run_statement` (`began`: a BEGIN went first)."""
    pgconn = dbapi.pgconn
    if piped:
        try:
            results = dbapi.wait(_pipelined(pgconn))
        finally:
            _leave_pipeline_mode(pgconn)
    else:
        results = dbapi.wait(_execute(pgconn))
    committed: list[pq.abc.PGresult] = []
    if commit:  # the COMMIT's result comes last (aborted, if the statement failed)
        results, committed = results[:-1], results[-1:]
    cache = dbapi._prepared
    if prep is _Prepare.SHOULD and results[int(began)].status != _COMMAND_OK:
        # the server refused the PREPARE (in a transaction that failed already, it runs
        # nothing until ROLLBACK or ROLLBACK TO SAVEPOINT): it holds no statement of that
        # name, so neither may the cache, which would otherwise run the statement by it from
        # then on and fail ("prepared statement ... does not exist"). psycopg's cursor, which
        # waits for the PREPARE on its own, raises before its bookkeeping as well
        query = None
    if query is not None:
        key = cache.maybe_add_to_cache(query, prep, name)  # type: ignore[arg-type]
        if key is not None:
            cache.validate(key, prep, name, results[-1:])
    for result in results:
        if result.status == _FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=dbapi.info.encoding)
    if cache._to_flush:
        dbapi.wait(cache.maintain_gen(dbapi))
    outcome = _Outcome(tx, results[-1])
    for result in committed:
        if result.status == _FATAL_ERROR:
            outcome.commit_error = psycopg.errors.error_from_result(
                result, encoding=dbapi.info.encoding
            )
    return outcome


def _send_statement(
    pgconn: pq.abc.PGconn,
    text: bytes,
    values: Sequence[Buffer | None],
    types: tuple[int, ...],
    formats: Sequence[pq.Format] | None,
    prep: _Prepare,
    name: bytes,
) -> None:
    if prep is _Prepare.NO:
        pgconn.send_query_params(
            text, values, param_formats=formats, param_types=types, result_format=_TEXT
        )
    else:
        pgconn.send_query_prepared(name, values, param_formats=formats, result_format=_TEXT)


def _pipelined(pgconn: pq.abc.PGconn) -> PQGen[list[pq.abc.PGresult]]:
    """Send what is queued in pipeline mode, then read every result up to the sync."""
    yield from _send(pgconn)
    results: list[pq.abc.PGresult] = []
    while True:
        if pgconn.is_busy():
            result = yield from _fetch(pgconn)  # waits for the server
        else:
            result = pgconn.get_result()
        if result is None:  # the end of one statement's results
            continue
        if result.status == _PIPELINE_SYNC:
            return results
        results.append(result)


def _leave_pipeline_mode(pgconn: pq.abc.PGconn) -> None:
    try:
        pgconn.exit_pipeline_mode()
    except psycopg.Error:
        # results left unread (the wait was interrupted): the connection's state is unknown,
        # so it is closed (and the pool replaces it)
        pgconn.finish()


class _Query:
    """What psycopg's prepared-statement cache and libpq calls read of a query: the SQL with
    $n placeholders, and the parameters adapted."""

    __slots__ = ("formats", "params", "query", "types")

    query: bytes
    params: Sequence[Buffer | None]
    types: tuple[int, ...]
    formats: Sequence[pq.Format] | None


# The psycopg adaptation context (`Transformer`) `_run_statement` uses, kept in the psycopg
# connection's __dict__ under this name for every statement on that connection (psycopg
# keeps one per cursor): it remembers the dumper of each Python type and the loader of each
# column type it has met, which a new one would look up again in the connection's adapters
# (about 6% of the client's instructions in a small transaction). A dumper or loader
# registered on the psycopg connection later would not be seen for a type it has met, so
# handing the connection out (`Connection.driver_connection`) drops it. (Adapters registered
# globally reach only connections opened afterwards, in psycopg, and so in retort.)
_TRANSFORMER = "_retort_transformer"

# SQL retort generated (%s placeholders) -> (SQL with $n placeholders, the formats to adapt
# each parameter in), as psycopg converts it; bounded (the most kinds of statements), and only
# for ASCII SQL, whose bytes do not depend on the connection's client encoding
_CONVERTED: dict[str, tuple[bytes, list[PyFormat]]] = {}
_CONVERTED_MAX = 2048


def _convert(tx: AdaptTransformer, sql: str, params: Sequence[Any]) -> tuple[bytes, list[PyFormat]]:
    query = PostgresQuery(tx)
    query.convert(sql, params)
    converted = (query.query, [PyFormat.AUTO] * len(params))
    if sql.isascii():  # the same bytes in every client encoding (others: converted each time)
        if len(_CONVERTED) >= _CONVERTED_MAX:
            _CONVERTED.clear()
        _CONVERTED[sql] = converted
    return converted


class _Outcome:
    """The result of `Connection._run`: a cursor's `rowcount`, `description` (None unless
    the statement returns rows) and `fetchall()` (tuples)."""

    __slots__ = ("_result", "_tx", "commit_error", "description", "rowcount")

    commit_error: psycopg.Error | None  # (see _run_statement's commit)

    def __init__(self, tx: AdaptTransformer, result: pq.abc.PGresult) -> None:
        self._tx = tx
        self._result = result
        self.commit_error = None
        tuples = result.command_tuples
        self.rowcount = -1 if tuples is None else tuples
        self.description = True if result.status == _TUPLES_OK else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        result = self._result
        self._tx.set_pgresult(result)
        rows: list[tuple[Any, ...]] = self._tx.load_rows(0, result.ntuples, tuple)
        return rows


def _nothing() -> None:
    pass


def _give_back(pool: _Pool | None, dbapi: DriverConnection) -> None:
    """Return a connection to its pool (which rolls back or discards it as needed)."""
    if pool is None:
        _close_quietly(dbapi)
        return
    try:
        pool.putconn(dbapi)
    except Exception:
        _close_quietly(dbapi)


def _return_abandoned(pool: _Pool | None, dbapi: DriverConnection) -> None:
    # Runs from a finalizer, possibly while this thread holds the pool's lock: hand the
    # connection back from another thread so that can never deadlock. At interpreter exit
    # no new thread would ever run (start() would wait forever): just close it.
    if sys.is_finalizing():
        _close_quietly(dbapi)
        return
    try:
        threading.Thread(
            target=_give_back, args=(pool, dbapi), name="retort-return-connection", daemon=True
        ).start()
    except RuntimeError:  # interpreter shutting down
        _close_quietly(dbapi)


def _close_quietly(dbapi: DriverConnection) -> None:
    try:
        dbapi.close()
    except Exception:
        pass
