"""pytest plugin: a real PostgreSQL for the tests, one fresh schema per test, leak checks.

Loaded with `-p tests.fix_db` (pyproject addopts).

- `dsn` (session): `RETORT_TEST_DSN` if set, else a throwaway pgserver cluster in a temp dir,
  stopped and deleted at the end of the run. Without a database the tests are skipped, except
  with `CI=true`, where that is a failure.
- `engine` (function): an Engine whose connections use a new schema `t_<random>` (through
  `search_path` in the connect options); the schema is dropped afterwards.
- `sa_schema` (function): a second new schema, for SQLAlchemy's side of a differential test.
- `sql_log` (function): list of `(sql, params)` for every statement run on `engine`.
- `admin_conn` (function): a separate autocommit psycopg connection to the same database.
- `assert_collected` (function): `assert_collected(*weakrefs)` fails unless every referent is
  gone after a garbage collection.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from retort.engine import Engine, create_engine, make_url

_DSN_ENV = "RETORT_TEST_DSN"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _no_database(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"CI=true and no test database: {reason}", pytrace=False)
    pytest.skip(f"no test database: {reason} (set {_DSN_ENV} or install pgserver)")


def _conninfo(dsn: str) -> str:
    """A libpq conninfo for a retort URL (which may say postgresql+psycopg://)."""
    return psycopg.conninfo.make_conninfo("", **make_url(dsn).connect_kwargs())


@contextlib.contextmanager
def _quiet_runtime_dir() -> Iterator[None]:
    # pgserver asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is unset
    # and falls back to /tmp; that fallback is fine for a throwaway test server
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        yield


@pytest.fixture(scope="session")
def dsn() -> Iterator[str]:
    """URL of the test database."""
    if os.environ.get(_DSN_ENV):
        url = os.environ[_DSN_ENV]
        try:
            psycopg.connect(_conninfo(url), connect_timeout=10).close()
        except Exception as err:
            _no_database(f"{_DSN_ENV} is set but the database cannot be reached: {err}")
        yield url
        return

    try:
        with _quiet_runtime_dir():
            import pgserver
    except ImportError as err:
        _no_database(f"{_DSN_ENV} is not set and pgserver is not installed ({err})")

    tmpdir = tempfile.mkdtemp(prefix="retort-pg-")
    try:
        try:
            with _quiet_runtime_dir():
                server = pgserver.get_server(tmpdir, cleanup_mode="stop")
        except Exception as err:
            _no_database(f"could not start a pgserver cluster: {err!r}")
        try:
            _allow_prepared_transactions(server, tmpdir)
            yield server.get_uri()
        finally:
            server.cleanup()  # stops the server (pgserver also does it at exit)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _allow_prepared_transactions(server: Any, pgdata: str) -> None:
    """Restart the throwaway cluster with max_prepared_transactions > 0 (pgserver starts it
    with 0), for the two-phase commit tests."""
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        row = conn.execute("SHOW max_prepared_transactions").fetchone()
        if row is not None and int(row[0]) > 0:
            return
        conn.execute("ALTER SYSTEM SET max_prepared_transactions = 16")
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=server.system_user, timeout=60)
    server.ensure_postgres_running()  # re-reads the new postmaster's pid for cleanup()


def _prepared_transactions_allowed(dsn: str) -> bool:
    with psycopg.connect(_conninfo(dsn), autocommit=True) as conn:
        row = conn.execute("SHOW max_prepared_transactions").fetchone()
    return row is not None and int(row[0]) > 0


@pytest.fixture(scope="session")
def twophase_dsn(dsn: str) -> str:
    """The test database, checked to allow prepared transactions (two-phase commit)."""
    if not _prepared_transactions_allowed(dsn):
        _no_database(
            "the test server has max_prepared_transactions = 0; set it to 16 (ALTER SYSTEM, "
            "then restart the server) to run the two-phase commit tests"
        )
    return dsn


@pytest.fixture
def admin_conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection to the test database, outside any engine."""
    with psycopg.connect(_conninfo(dsn), autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    """A new, empty schema, dropped after the test (with whatever is left in it)."""
    yield from _fresh_schema(dsn)


@pytest.fixture
def sa_schema(dsn: str) -> Iterator[str]:
    """A second new schema, for SQLAlchemy's tables where a test runs both libraries side by
    side (the differential tests)."""
    yield from _fresh_schema(dsn)


def _fresh_schema(dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(dsn), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(_conninfo(dsn), autocommit=True) as conn:
        # a test may leave a connection open inside a transaction holding locks on the
        # schema: end those sessions so that the DROP cannot hang
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def engine_factory(dsn: str, schema: str) -> Iterator[Callable[..., Engine]]:
    """`engine_factory(**create_engine_kwargs)`: engines on the test's schema, all disposed
    after the test."""
    url = make_url(dsn).update_query_dict(
        {"options": f"-c search_path={schema}", "application_name": schema}
    )
    engines: list[Engine] = []

    def make(**kwargs: Any) -> Engine:
        eng = create_engine(url, **kwargs)
        engines.append(eng)
        return eng

    yield make
    for eng in engines:
        eng.dispose()


@pytest.fixture
def engine(engine_factory: Callable[..., Engine]) -> Engine:
    """An Engine whose connections see only the test's own schema."""
    return engine_factory()


@pytest.fixture
def sql_log(engine: Engine) -> list[tuple[str, Any]]:
    """`(sql, params)` of every statement run on `engine`, in order."""
    log: list[tuple[str, Any]] = []
    engine._statement_hooks.append(lambda sql, params: log.append((sql, params)))
    return log


@pytest.fixture
def assert_collected() -> Callable[..., None]:
    """`assert_collected(*refs)`: every weakref's referent is freed after gc.collect()."""

    def check(*refs: weakref.ref[Any]) -> None:
        for _ in range(3):  # finalizers can free more on a later pass
            gc.collect()
        alive = [r() for r in refs if r() is not None]
        if alive:
            lines = []
            for obj in alive:
                referrers = [
                    type(x).__name__ for x in gc.get_referrers(obj) if not isinstance(x, list)
                ]
                lines.append(f"{obj!r:.80} still referenced by {referrers}")
            del alive
            pytest.fail("objects not garbage collected:\n" + "\n".join(lines))

    return check


def checked_out(engine: Engine) -> int:
    """Connections of `engine` in use: what its pool counts as checked out, less the idle hot
    spare the engine keeps outside the pool (Engine._check_in)."""
    pool = engine._pool
    if pool is None:
        return 0
    stats = pool.get_stats()
    return int(stats["pool_size"]) - int(stats["pool_available"]) - len(engine._spare)
