"""Engine, Connection, Transaction and pool behaviour against a real PostgreSQL."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from typing import Any

import psycopg
import pytest

from retort import exc
from retort.engine import Connection, Engine, create_engine
from retort.engine import base as engine_base
from tests.fix_db import checked_out

# --------------------------------------------------------------------------------------------
# helpers


def _pid(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())


def _names(admin_conn: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = admin_conn.execute(f"SELECT name FROM {schema}.users ORDER BY name").fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def users(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE users (id serial PRIMARY KEY, name text UNIQUE)")
    return engine


# --------------------------------------------------------------------------------------------
# create_engine


def test_create_engine_validates_arguments() -> None:
    url = "postgresql://u@localhost/db"
    with pytest.raises(exc.ArgumentError, match="pool_size"):
        create_engine(url, pool_size=0)
    with pytest.raises(exc.ArgumentError, match="max_overflow"):
        create_engine(url, max_overflow=-1)
    with pytest.raises(exc.ArgumentError, match="pool_timeout"):
        create_engine(url, pool_timeout=0)
    with pytest.raises(exc.ArgumentError, match="autocommit"):
        create_engine(url, connect_args={"autocommit": True})
    with pytest.raises(exc.ArgumentError, match="row_factory"):
        create_engine(url, connect_args={"row_factory": object()})


def test_engine_repr_hides_password() -> None:
    engine = create_engine("postgresql+psycopg://scott:tiger@db.example:5433/app")
    assert repr(engine) == "Engine(postgresql+psycopg://scott:***@db.example:5433/app)"
    assert "tiger" not in str(engine.url)
    assert engine.url.password == "tiger"
    assert engine.pool_size == 5 and engine.max_overflow == 10


def test_engine_does_not_connect_until_used() -> None:
    engine = create_engine("postgresql://nobody@/nowhere?host=/nonexistent-socket-dir")
    assert engine._pool is None
    engine.dispose()  # nothing to close; must not fail


def test_unreachable_database_fails_fast() -> None:
    engine = create_engine(
        "postgresql://nobody@/nowhere?host=/nonexistent-socket-dir", pool_timeout=20
    )
    t0 = time.monotonic()
    with pytest.raises(exc.OperationalError, match="cannot connect") as info:
        engine.connect()
    assert time.monotonic() - t0 < 5, "a connect error must not wait for pool_timeout"
    assert isinstance(info.value.orig, psycopg.OperationalError)
    engine.dispose()


# --------------------------------------------------------------------------------------------
# statements, commit and rollback


def test_exec_driver_sql_and_result(engine: Engine) -> None:
    with engine.connect() as conn:
        result = conn.exec_driver_sql("SELECT %s::int AS a, %s::text AS b", (1, "x"))
        assert result.keys() == ["a", "b"]
        row = result.one()
        assert row == (1, "x")
        assert (row.a, row.b) == (1, "x")
        assert row._mapping == {"a": 1, "b": "x"}
        # without parameters the text is sent as is: % needs no escaping
        assert conn.exec_driver_sql("SELECT 7 % 4").scalar() == 3


def test_execute_rejects_plain_strings(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(exc.ArgumentError, match="exec_driver_sql"):
        conn.execute("SELECT 1")


def test_execute_text_compiles_through_sql_layer(engine: Engine) -> None:
    from retort.sql import text

    with engine.connect() as conn:
        row = conn.execute(text("SELECT CAST(:x AS int) AS x, '50%' AS pct"), {"x": 5}).one()
        assert row.x == 5 and row.pct == "50%"
        assert conn.scalar(text("SELECT 1")) == 1
        assert conn.scalars(text("SELECT generate_series(1, 3)")).all() == [1, 2, 3]


def test_commit_is_visible_to_other_connections(
    users: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with users.connect() as conn:
        conn.exec_driver_sql("INSERT INTO users (name) VALUES (%s)", ("ann",))
        assert conn.in_transaction()
        assert _names(admin_conn, schema) == []  # not committed yet
        conn.commit()
        assert not conn.in_transaction()
        assert _names(admin_conn, schema) == ["ann"]


def test_rollback_and_close_discard_changes(
    users: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with users.connect() as conn:
        conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
        conn.rollback()
        assert not conn.in_transaction()
        conn.exec_driver_sql("INSERT INTO users (name) VALUES ('bob')")
    # closed without commit: rolled back
    assert _names(admin_conn, schema) == []


def test_commit_and_rollback_without_transaction_are_noops(engine: Engine, sql_log: list) -> None:
    with engine.connect() as conn:
        conn.commit()
        conn.rollback()
        assert not conn.in_transaction()
    assert sql_log == []


def test_dml_result_has_rowcount_and_no_rows(users: Engine) -> None:
    with users.begin() as conn:
        result = conn.exec_driver_sql("INSERT INTO users (name) VALUES (%s), (%s)", ("a", "b"))
        assert result.rowcount == 2
        assert not result.returns_rows
        with pytest.raises(exc.ResourceClosedError, match="does not return rows"):
            result.all()
        result = conn.exec_driver_sql("UPDATE users SET name = name || '!'")
        assert result.rowcount == 2


def test_executemany(users: Engine, admin_conn: psycopg.Connection[Any], schema: str) -> None:
    with users.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO users (name) VALUES (%(name)s)", [{"name": "a"}, {"name": "b"}]
        )
        conn.exec_driver_sql("INSERT INTO users (name) VALUES (%s)", [("c",), ("d",)])
    assert _names(admin_conn, schema) == ["a", "b", "c", "d"]


def test_list_of_lists_is_one_parameter_set_with_arrays(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT %s::int[]", [[1, 2]]).scalar() == [1, 2]


# --------------------------------------------------------------------------------------------
# begin() / begin_nested()


def test_begin_context_commits(
    users: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with users.connect() as conn:
        with conn.begin() as txn:
            assert conn.in_transaction() and txn.is_active
            conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
        assert not txn.is_active
        assert not conn.in_transaction()
    assert _names(admin_conn, schema) == ["ann"]


def test_begin_context_rolls_back_on_error(
    users: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with users.connect() as conn:
        with pytest.raises(RuntimeError), conn.begin():
            conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
            raise RuntimeError("boom")
        assert not conn.in_transaction()
        # the connection is usable again
        assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar() == 0
    assert _names(admin_conn, schema) == []


def test_engine_begin(users: Engine, admin_conn: psycopg.Connection[Any], schema: str) -> None:
    with users.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
    with pytest.raises(ZeroDivisionError), users.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (name) VALUES ('bob')")
        1 / 0  # noqa: B018
    assert _names(admin_conn, schema) == ["ann"]
    assert conn.closed


def test_begin_twice_is_an_error(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # autobegins
        with pytest.raises(exc.InvalidRequestError, match="already in progress"):
            conn.begin()
        conn.rollback()
        txn = conn.begin()
        txn.commit()
        with pytest.raises(exc.InvalidRequestError, match="already been committed"):
            txn.commit()
        txn.rollback()  # no-op on an ended transaction


def test_commit_inside_begin_block_ends_it(
    users: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with users.connect() as conn, conn.begin():
        conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
        conn.commit()
    assert _names(admin_conn, schema) == ["ann"]


def test_savepoints(
    users: Engine, sql_log: list, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with users.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
            with conn.begin_nested() as sp:
                assert conn.in_nested_transaction() and sp.nested
                conn.exec_driver_sql("INSERT INTO users (name) VALUES ('bob')")
            assert not conn.in_nested_transaction()
            with pytest.raises(exc.IntegrityError), conn.begin_nested():
                conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
            # the failed savepoint was rolled back; the outer transaction goes on
            conn.exec_driver_sql("INSERT INTO users (name) VALUES ('cy')")
    assert _names(admin_conn, schema) == ["ann", "bob", "cy"]
    statements = [s for s, _ in sql_log if not s.startswith("CREATE")]
    assert statements == [
        "INSERT INTO users (name) VALUES ('ann')",
        "SAVEPOINT retort_sp_1",
        "INSERT INTO users (name) VALUES ('bob')",
        "RELEASE SAVEPOINT retort_sp_1",
        "SAVEPOINT retort_sp_2",
        "INSERT INTO users (name) VALUES ('ann')",
        "ROLLBACK TO SAVEPOINT retort_sp_2",
        "INSERT INTO users (name) VALUES ('cy')",
    ]


def test_nested_savepoints_end_together(users: Engine) -> None:
    with users.connect() as conn:
        outer = conn.begin_nested()  # autobegins the root transaction too
        assert conn.in_transaction()
        inner = conn.begin_nested()
        conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
        outer.rollback()  # rolls back past the inner savepoint as well
        assert not inner.is_active and not outer.is_active
        assert conn.get_nested_transaction() is None
        assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar() == 0
        with pytest.raises(exc.InvalidRequestError, match="already been released"):
            inner.commit()
        # committing the root ends open savepoints
        sp = conn.begin_nested()
        conn.commit()
        assert not sp.is_active and not conn.in_transaction()


def test_commit_after_failed_statement_raises_and_rolls_back(
    users: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with users.connect() as conn:
        conn.exec_driver_sql("INSERT INTO users (name) VALUES ('ann')")
        with pytest.raises(exc.ProgrammingError):
            conn.exec_driver_sql("SELECT * FROM no_such_table")
        with pytest.raises(exc.InvalidRequestError, match="nothing was committed"):
            conn.commit()
        assert not conn.in_transaction()
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert _names(admin_conn, schema) == []


# --------------------------------------------------------------------------------------------
# errors


def test_integrity_error_is_wrapped(users: Engine) -> None:
    with users.connect() as conn:
        conn.exec_driver_sql("INSERT INTO users (name) VALUES (%s)", ("ann",))
        sql = "INSERT INTO users (name) VALUES (%s)"
        with pytest.raises(exc.IntegrityError) as info:
            conn.exec_driver_sql(sql, ("ann",))
        err = info.value
        assert isinstance(err, exc.DBAPIError)
        assert isinstance(err.orig, psycopg.errors.UniqueViolation)
        assert err.__cause__ is err.orig
        assert err.statement == sql
        assert err.params == ("ann",)
        assert "[SQL: INSERT INTO users" in str(err)


def test_a_long_failing_statement_is_cut_in_the_message(users: Engine) -> None:
    # a multi-row VALUES list can run to megabytes: the message shows its start and end, the
    # error keeps the whole
    rows = 5000
    sql = "INSERT INTO users (name) VALUES " + ", ".join(["(%s)"] * rows)
    with users.connect() as conn:
        with pytest.raises(exc.IntegrityError) as info:
            conn.exec_driver_sql(sql, tuple(["same"] * rows))
    err = info.value
    assert err.statement == sql
    text = str(err)
    assert len(text) < 3000
    assert "[SQL: INSERT INTO users (name) VALUES (%s), (%s)" in text
    assert f"({len(sql):,} characters in all, see .statement)" in text
    assert text.split("\n[parameters:")[0].endswith("(%s), (%s)]")


def test_hooks_see_failing_statements_too(engine: Engine, sql_log: list) -> None:
    with engine.connect() as conn, pytest.raises(exc.ProgrammingError):
        conn.exec_driver_sql("SELEC 1")
    assert sql_log == [("SELEC 1", None)]


def test_closed_connection_refuses_work(engine: Engine) -> None:
    conn = engine.connect()
    conn.close()
    conn.close()  # idempotent
    assert conn.closed
    with pytest.raises(exc.ResourceClosedError, match="closed"):
        conn.exec_driver_sql("SELECT 1")
    with pytest.raises(exc.ResourceClosedError):
        conn.driver_connection  # noqa: B018


# --------------------------------------------------------------------------------------------
# pool


def test_pool_reuses_connection(engine: Engine) -> None:
    with engine.connect() as conn:
        pid = _pid(conn)
        driver = conn.driver_connection
    with engine.connect() as conn:
        assert _pid(conn) == pid
        assert conn.driver_connection is driver


def test_idle_checkout_and_return_cost_no_statement(engine: Engine) -> None:
    with engine.connect() as conn:
        _pid(conn)
        conn.commit()
    with engine.connect() as conn:
        driver = conn.driver_connection
        assert driver.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert not driver.autocommit


def test_connection_returned_in_failed_transaction_is_rolled_back(engine: Engine) -> None:
    with engine.connect() as conn:
        pid = _pid(conn)
        with pytest.raises(exc.ProgrammingError):
            conn.exec_driver_sql("SELECT * FROM no_such_table")
    with engine.connect() as conn:
        assert _pid(conn) == pid
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_broken_connection_is_discarded(
    engine: Engine, admin_conn: psycopg.Connection[Any]
) -> None:
    with engine.connect() as conn:
        pid = _pid(conn)
        admin_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(exc.OperationalError) as info:
            conn.exec_driver_sql("SELECT 1")
        assert isinstance(info.value.orig, psycopg.OperationalError)
        assert conn.invalidated and conn.in_transaction()
        with pytest.raises(exc.PendingRollbackError, match="rollback"):
            conn.exec_driver_sql("SELECT 1")
        with pytest.raises(exc.PendingRollbackError):
            conn.commit()
        conn.rollback()
        assert not conn.in_transaction()
        # a fresh database connection behind the same Connection
        assert _pid(conn) != pid
        assert not conn.invalidated
    # and the pool hands out working connections
    for _ in range(3):
        with engine.connect() as conn:
            assert _pid(conn) != pid


def test_broken_connection_inside_begin_block(
    engine: Engine, admin_conn: psycopg.Connection[Any]
) -> None:
    with engine.connect() as conn:
        pid = _pid(conn)
        conn.rollback()
        with pytest.raises(exc.OperationalError), conn.begin():
            admin_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.exec_driver_sql("SELECT 1")
        assert not conn.in_transaction()  # the block's rollback acknowledged the loss
        assert _pid(conn) != pid


def test_pool_timeout(engine_factory: Any) -> None:
    engine = engine_factory(pool_size=1, max_overflow=0, pool_timeout=0.3)
    with engine.connect():
        t0 = time.monotonic()
        with pytest.raises(exc.OperationalError, match="pool_size=1"):
            engine.connect()
        assert time.monotonic() - t0 < 3
    with engine.connect() as conn:  # returned: available again
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_a_closed_connection_is_the_next_checkouts_hot_spare(engine_factory: Any) -> None:
    # the engine keeps the connection closed last outside its pool for the next checkout,
    # which then costs no trip through the pool
    engine = engine_factory(pool_size=1, max_overflow=0, pool_timeout=5)
    with engine.connect() as conn:
        driver = conn.driver_connection
    assert checked_out(engine) == 0
    requests = engine._pool.get_stats()["requests_num"]
    with engine.connect() as conn:
        assert conn.driver_connection is driver
        assert checked_out(engine) == 1
    assert engine._pool.get_stats()["requests_num"] == requests


def test_a_checkout_waiting_in_the_pool_gets_the_connection_closed_meanwhile(
    engine_factory: Any,
) -> None:
    # every connection is out, so a checkout waits in the pool: the next close must hand its
    # connection there, not keep it as the spare beside a waiter that would time out
    engine = engine_factory(pool_size=1, max_overflow=0, pool_timeout=5)
    conn = engine.connect()
    pid = _pid(conn)
    got: list[Any] = []

    def other() -> None:
        try:
            with engine.connect() as c:
                got.append(_pid(c))
        except BaseException as err:
            got.append(err)

    thread = threading.Thread(target=other)
    thread.start()
    deadline = time.monotonic() + 5
    while not engine._pool_users and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine._pool_users == 1
    conn.close()
    thread.join(15)
    assert got == [pid]


def test_a_spare_kept_past_its_time_goes_back_to_the_pool(
    engine_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_base, "_SPARE_IDLE", 0.0)
    engine = engine_factory(pool_size=1, max_overflow=0, pool_timeout=5)
    with engine.connect() as conn:
        pid = _pid(conn)
    requests = engine._pool.get_stats()["requests_num"]
    with engine.connect() as conn:  # the same one, by way of the pool
        assert _pid(conn) == pid
    assert engine._pool.get_stats()["requests_num"] == requests + 1


def test_dispose_closes_the_spare(engine: Engine) -> None:
    with engine.connect() as conn:
        driver = conn.driver_connection
    assert not driver.closed
    engine.dispose()
    assert driver.closed


def test_dispose_and_reconnect(engine: Engine) -> None:
    with engine.connect() as conn:
        pid = _pid(conn)
    held = engine.connect()
    held_pid = _pid(held)
    engine.dispose()
    assert engine._pool is None
    with engine.connect() as conn:
        assert _pid(conn) not in (pid, held_pid)
    # a connection checked out before dispose() still works and is closed on return
    assert held.exec_driver_sql("SELECT 2").scalar() == 2
    driver = held.driver_connection
    held.close()
    assert driver.closed


def test_threads_share_an_engine(engine_factory: Any) -> None:
    engine = engine_factory(pool_size=2, max_overflow=1, pool_timeout=10)
    errors: list[BaseException] = []
    pids: set[int] = set()

    def work() -> None:
        try:
            for _ in range(10):
                with engine.connect() as conn:
                    pids.add(_pid(conn))
                    conn.exec_driver_sql("SELECT pg_sleep(0.001)")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 1 <= len(pids) <= 3


def test_garbage_collected_connection_goes_back_to_pool(engine_factory: Any) -> None:
    engine = engine_factory(pool_size=1, max_overflow=0, pool_timeout=5)
    conn = engine.connect()
    pid = _pid(conn)
    with pytest.warns(ResourceWarning, match="without being closed"):
        del conn
        gc.collect()
    with engine.connect() as conn:  # would time out if the connection had leaked
        status = conn.driver_connection.pgconn.transaction_status
        assert status == psycopg.pq.TransactionStatus.IDLE  # rolled back on return
        assert _pid(conn) == pid


def test_connection_leaked_until_interpreter_exit_does_not_hang(dsn: str) -> None:
    code = textwrap.dedent(
        f"""
        import warnings
        warnings.simplefilter("ignore")
        from retort.engine import create_engine
        conn = create_engine({dsn!r}).connect()
        conn.exec_driver_sql("SELECT 1")
        cycle = [conn]
        cycle.append(cycle)  # freed only by the collection at exit
        """
    )
    subprocess.run([sys.executable, "-c", code], timeout=60, check=True)


def test_closed_connection_and_result_are_collected(engine: Engine, assert_collected: Any) -> None:
    conn = engine.connect()
    with conn.begin():
        result = conn.exec_driver_sql("SELECT 1 AS a")
        row = result.one()
    conn.close()
    refs = (weakref.ref(conn), weakref.ref(result))
    del conn, result
    assert_collected(*refs)
    assert row.a == 1


# --------------------------------------------------------------------------------------------
# echo and hooks


def test_echo_logs_statements_and_parameters(
    engine_factory: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_factory(echo=True)
    # echo must not depend on (or change) the logger's level
    monkeypatch.setattr(logging.getLogger("retort.engine"), "level", logging.WARNING)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT %s::int", (42,))
        conn.commit()
    messages = [r.getMessage() for r in caplog.records if r.name == "retort.engine"]
    assert messages == [
        "BEGIN (implicit)",
        "SELECT %s::int",
        "[parameters] [42]",
        "COMMIT",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "retort.engine")


def test_no_echo_no_log(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert [r for r in caplog.records if r.name == "retort.engine"] == []


def test_echo_follows_logger_level_when_off(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="retort.engine")
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert "SELECT 1" in [r.getMessage() for r in caplog.records]


def test_echo_adds_a_handler_only_when_logging_is_unconfigured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = logging.getLogger("retort.engine")
    monkeypatch.setattr(log, "propagate", False)
    monkeypatch.setattr(log, "handlers", [])
    create_engine("postgresql://u@h/db", echo=True)
    assert len(log.handlers) == 1
    create_engine("postgresql://u@h/db", echo=True)
    assert len(log.handlers) == 1


def test_statement_hooks_see_savepoints_and_params(engine: Engine, sql_log: list) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT %(x)s::int", {"x": 1})
        conn.begin_nested().commit()
        conn.commit()
    assert sql_log == [
        ("SELECT %(x)s::int", {"x": 1}),
        ("SAVEPOINT retort_sp_1", None),
        ("RELEASE SAVEPOINT retort_sp_1", None),
    ]


def test_cursor_execute_returns_the_psycopg_cursor(engine: Engine) -> None:
    with engine.connect() as conn:
        cur = conn._cursor_execute("SELECT %s::int", (3,))
        assert isinstance(cur, psycopg.Cursor)
        assert cur.fetchall() == [(3,)]
        cur = conn._cursor_execute("SELECT %s::int", [(1,), (2,)], many=True)
        assert conn.in_transaction()
