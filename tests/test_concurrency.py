"""Concurrency: threads with their own sessions, optimistic locking, deadlocks, and one session
shared by two threads.

- Several threads, each with its own sessions from one `sessionmaker`, move random amounts
  between a few versioned accounts. Lost updates are caught by the version column: the loser of
  a race gets `StaleDataError`, rolls back and retries. At the end the total is unchanged, every
  account holds exactly what the ledger of successful transfers says, and each row's version
  counts the transfers that touched it.
- A deadlock between two sessions surfaces as a retort `OperationalError` (the psycopg error in
  `.orig`); the victim rolls back and retries.
- Calls from a second thread while the owner's flush waits in the database raise
  `ConcurrentUseError` and change nothing; the owner goes on afterwards. Two threads hammering
  one session see only `ConcurrentUseError`. (tests/test_threads.py covers add, execute, commit
  and get against a waiting flush, and re-entry from the owner's own thread.)

Nothing here can hang: the engines run with `lock_timeout` and `statement_timeout`, every
thread join and barrier has a timeout, and every join is followed by an assertion that the
thread finished.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from retort import DeclarativeBase, Mapped, Session, exc, mapped_column, select, sessionmaker
from retort.engine import Engine
from tests.fix_db import _conninfo, checked_out

Conn = psycopg.Connection[Any]

JOIN_TIMEOUT = 60.0  # seconds; a thread still alive after this is a hang
# database waits end with an error instead of hanging (lock_timeout must exceed
# deadlock_timeout, 1 s by default, so that deadlocks are detected as such)
DB_TIMEOUTS = "-c lock_timeout=15s -c statement_timeout=30s"


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    balance: Mapped[int]
    version: Mapped[int]
    __mapper_args__ = {"version_id_col": "version"}


class Counter(Base):
    __tablename__ = "counters"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


@pytest.fixture
def db(engine_factory: Callable[..., Engine], schema: str) -> Engine:
    """An engine on the test's schema whose connections cannot wait forever on a lock."""
    eng = engine_factory(
        pool_size=8,
        pool_timeout=20,
        connect_args={"options": f"-c search_path={schema} {DB_TIMEOUTS}", "connect_timeout": 10},
    )
    Base.metadata.create_all(eng)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "15s"
    return eng


@pytest.fixture
def blocker(dsn: str, schema: str) -> Iterator[Conn]:
    """A connection outside the engine, to hold row locks that make a flush wait."""
    conn = psycopg.connect(
        _conninfo(dsn), options=f"-c search_path={schema} {DB_TIMEOUTS}", connect_timeout=10
    )
    try:
        yield conn
    finally:
        conn.close()


def _accounts(admin: Conn, schema: str) -> list[tuple[int, int, int]]:
    rows = admin.execute(
        f"SELECT id, balance, version FROM {schema}.accounts ORDER BY id"
    ).fetchall()
    return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll until `predicate()` is true; False if it is still false after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _lock_waiters(admin: Conn, schema: str) -> int:
    """How many of the engine's backends wait for a lock (its connections carry the test's
    schema as application_name)."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
        "AND wait_event_type = 'Lock'",
        (schema,),
    ).fetchone()
    return int(row[0]) if row else 0


def _join_all(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert hung == [], f"threads still running after {JOIN_TIMEOUT:g}s: {hung}"


def _is_deadlock(err: BaseException) -> bool:
    return isinstance(err, exc.OperationalError) and isinstance(
        err.orig, psycopg.errors.DeadlockDetected
    )


# -- many threads, own sessions, versioned accounts ------------------------------------------

N_THREADS = 4
N_ACCOUNTS = 4
TRANSFERS_PER_THREAD = 25
START_BALANCE = 10_000
MAX_ATTEMPTS = 200  # per transfer; far more than contention on 4 accounts needs


def test_concurrent_transfers_conserve_the_total_and_retry_conflicts(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        s.add_all([Account(id=i, balance=START_BALANCE) for i in range(1, N_ACCOUNTS + 1)])
        s.commit()
    maker = sessionmaker(db)
    # every thread reads account 1 in its first transfer, then all meet here before any of
    # them commits: all but the first to commit must find a newer version (or wait for the
    # first's row lock and then find it), so conflicts are certain, not just likely
    barrier = threading.Barrier(N_THREADS, timeout=20)
    ledgers: dict[int, list[tuple[int, int, int]]] = {}
    stale: collections.Counter[int] = collections.Counter()
    deadlocks: collections.Counter[int] = collections.Counter()
    errors: list[tuple[int, BaseException]] = []

    def worker(k: int) -> None:
        rng = random.Random(1000 + k)
        ledger = ledgers[k] = []
        try:
            for t in range(TRANSFERS_PER_THREAD):
                src, dst = rng.sample(range(1, N_ACCOUNTS + 1), 2)
                if t == 0:
                    src, dst = 1, 2 + k % (N_ACCOUNTS - 1)
                amount = rng.randint(1, 100)
                for attempt in range(MAX_ATTEMPTS):
                    with maker() as s:
                        try:
                            a = s.get(Account, src)
                            b = s.get(Account, dst)
                            assert a is not None and b is not None
                            a.balance -= amount
                            b.balance += amount
                            if t == 0 and attempt == 0:
                                barrier.wait()
                            else:
                                time.sleep(rng.random() * 0.004)  # widen the race window
                            s.commit()
                        except exc.StaleDataError:
                            stale[k] += 1
                            s.rollback()
                            continue
                        except exc.OperationalError as err:
                            if not _is_deadlock(err):
                                raise
                            deadlocks[k] += 1
                            s.rollback()
                            continue
                    ledger.append((src, dst, amount))
                    break
                else:
                    raise AssertionError(f"transfer {t} of thread {k}: {MAX_ATTEMPTS} conflicts")
        except BaseException as err:  # reported by the main thread
            errors.append((k, err))
            barrier.abort()

    threads = [
        threading.Thread(target=worker, args=(k,), name=f"transfer-{k}", daemon=True)
        for k in range(N_THREADS)
    ]
    for t in threads:
        t.start()
    _join_all(threads)
    assert errors == []

    done = [entry for ledger in ledgers.values() for entry in ledger]
    assert len(done) == N_THREADS * TRANSFERS_PER_THREAD
    expected = dict.fromkeys(range(1, N_ACCOUNTS + 1), START_BALANCE)
    touched = collections.Counter[int]()
    for src, dst, amount in done:
        expected[src] -= amount
        expected[dst] += amount
        touched[src] += 1
        touched[dst] += 1
    rows = _accounts(admin_conn, schema)
    assert sum(balance for _, balance, _ in rows) == N_ACCOUNTS * START_BALANCE
    # no lost update: each account holds what the successful transfers say...
    assert {i: balance for i, balance, _ in rows} == expected
    # ...and its version went up once per committed transfer that touched it (from 1)
    assert {i: version for i, _, version in rows} == {i: 1 + touched[i] for i in expected}
    total_stale = sum(stale.values())
    print(
        f"\n{len(done)} transfers by {N_THREADS} threads: {total_stale} StaleDataError and "
        f"{sum(deadlocks.values())} deadlocks retried"
    )
    # the barrier round alone forces conflicts on account 1: threads 1 and 2 share only that
    # row with the others, so whichever thread commits first, at least one of them finds a
    # newer version there (threads 0 and 3 also share account 2 and may deadlock instead)
    assert total_stale >= 1
    # every session was closed: no connection is left checked out
    assert checked_out(db) == 0


# -- deadlocks --------------------------------------------------------------------------------


def test_a_deadlock_surfaces_as_a_retort_error_and_the_victim_can_retry(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        s.add_all([Account(id=1, balance=100), Account(id=2, balance=100)])
        s.commit()
    maker = sessionmaker(db)
    s1, s2 = maker(), maker()
    try:
        # s1 moves 10 from 1 to 2, s2 moves 25 from 2 to 1; each flushes its first row
        # (taking its lock), then flushes the other's: a lock cycle PostgreSQL must break
        a1 = s1.get(Account, 1)
        assert a1 is not None
        a1.balance -= 10
        s1.flush()
        b2 = s2.get(Account, 2)
        assert b2 is not None
        b2.balance -= 25
        s2.flush()

        outcome: dict[str, BaseException | None] = {}

        def second_half(name: str, s: Session, ident: int, delta: int) -> None:
            try:
                acc = s.get(Account, ident)
                assert acc is not None
                acc.balance += delta
                s.flush()
                outcome[name] = None
            except BaseException as err:  # reported below
                outcome[name] = err

        t1 = threading.Thread(target=second_half, args=("s1", s1, 2, 10), daemon=True)
        t1.start()
        assert _wait_for(lambda: _lock_waiters(admin_conn, schema) >= 1)  # s1 waits for row 2
        t2 = threading.Thread(target=second_half, args=("s2", s2, 1, 25), daemon=True)
        t2.start()
        _join_all([t1, t2])

        assert set(outcome) == {"s1", "s2"}
        failed = {name: err for name, err in outcome.items() if err is not None}
        assert len(failed) == 1, f"expected exactly one deadlock victim, got {outcome}"
        (victim_name, err) = next(iter(failed.items()))
        assert isinstance(err, exc.RetortError) and _is_deadlock(err), repr(err)
        assert "deadlock" in str(err)
        assert isinstance(err, exc.OperationalError)
        assert err.statement is not None and "UPDATE" in err.statement

        victim, winner = (s1, s2) if victim_name == "s1" else (s2, s1)
        # the victim's transaction is gone: it says so until rolled back
        with pytest.raises(exc.PendingRollbackError):
            victim.execute(select(Account))
        winner.commit()
        victim.rollback()
        # the retry: the victim's whole transfer again, from fresh rows
        src, dst, amount = (1, 2, 10) if victim_name == "s1" else (2, 1, 25)
        a = victim.get(Account, src)
        b = victim.get(Account, dst)
        assert a is not None and b is not None
        a.balance -= amount
        b.balance += amount
        victim.commit()
    finally:
        s1.close()
        s2.close()
    # both transfers happened once: 100 - 10 + 25 and 100 + 10 - 25; each row was updated by
    # both committed transactions
    assert _accounts(admin_conn, schema) == [(1, 115, 3), (2, 85, 3)]
    assert checked_out(db) == 0


# -- one session, two threads -----------------------------------------------------------------


class _BlockedFlush:
    """A session whose flush (in a worker thread) waits for a row lock held by `blocker`."""

    def __init__(self, engine: Engine, blocker: Conn) -> None:
        with Session(engine) as s:
            s.add_all([Counter(n=0), Counter(n=10)])
            s.commit()
        blocker.execute("SELECT n FROM counters WHERE id = 1 FOR UPDATE")
        self.blocker = blocker
        self.session = Session(engine)
        self.first = self.session.get(Counter, 1)
        self.other = self.session.get(Counter, 2)
        assert self.first is not None and self.other is not None
        self.first.n = 1
        self.errors: list[BaseException] = []
        self.worker = threading.Thread(target=self._flush, name="flusher", daemon=True)

    def _flush(self) -> None:
        try:
            self.session.flush()
        except BaseException as err:  # reported by finish()
            self.errors.append(err)

    def start(self, admin: Conn, schema: str) -> None:
        self.worker.start()
        # the worker holds the session and waits inside the database
        assert _wait_for(lambda: _lock_waiters(admin, schema) >= 1)
        assert self.session._owner == self.worker.ident

    def finish(self) -> None:
        self.blocker.rollback()  # release the lock: the flush goes on
        _join_all([self.worker])
        assert self.errors == []


def _refused(name: str, s: Session, b: _BlockedFlush) -> Any:
    calls: dict[str, Callable[[], Any]] = {
        "flush": s.flush,
        "rollback": s.rollback,
        "close": s.close,
        "begin_nested": s.begin_nested,
        "refresh": lambda: s.refresh(b.other),
        "delete": lambda: s.delete(b.other),
        "merge": lambda: s.merge(Counter(id=2, n=99)),
        "scalars": lambda: s.scalars(select(Counter)).all(),
        "flush_plan": s.flush_plan,
        "add_all": lambda: s.add_all([Counter(n=77)]),
        "expunge_all": s.expunge_all,
        "connection": s.connection,
        "expunge": lambda: s.expunge(b.other),
        "expire": lambda: s.expire(b.other),
        "expire_all": s.expire_all,
    }
    return calls[name]()


REFUSED = [
    "flush",
    "rollback",
    "close",
    "begin_nested",
    "refresh",
    "delete",
    "merge",
    "scalars",
    "flush_plan",
    "add_all",
    "expunge_all",
    "connection",
    "expunge",
    "expire",
    "expire_all",
]


@pytest.mark.parametrize("call", REFUSED)
def test_a_call_from_another_thread_is_refused_and_changes_nothing(
    db: Engine, blocker: Conn, admin_conn: Conn, schema: str, call: str
) -> None:
    b = _BlockedFlush(db, blocker)
    s = b.session
    try:
        b.start(admin_conn, schema)
        try:
            with pytest.raises(exc.ConcurrentUseError, match="another thread"):
                _refused(call, s, b)
        finally:
            b.finish()
        # the refused call left the owner's session as it was: its flush went through, its
        # objects are still there, and it commits (from this thread now)
        assert b.first in s and b.other in s
        assert not s.deleted and not s.new and not s.in_nested_transaction()
        assert s.get(Counter, 2) is b.other and b.other.n == 10
        b.first.n += 1
        s.commit()
        assert b.first.n == 2
    finally:
        s.close()
    rows = admin_conn.execute(f"SELECT id, n FROM {schema}.counters ORDER BY id").fetchall()
    assert rows == [(1, 2), (2, 10)]
    assert checked_out(db) == 0


def test_two_threads_hammering_one_session_only_get_concurrent_use_errors(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    with Session(db) as s:
        s.add_all([Counter(n=0) for _ in range(10)])
        s.commit()
    session = Session(db)
    try:
        _hammer(session, admin_conn, schema)
    finally:
        session.close()
    # no connection was checked out twice and left behind by the race
    assert checked_out(db) == 0


def _hammer(session: Session, admin_conn: Conn, schema: str) -> None:
    outcomes: collections.Counter[tuple[int, str]] = collections.Counter()
    unexpected: list[tuple[int, str, BaseException]] = []
    wanted = 40  # successful calls per thread
    max_calls = 5000  # bound on calls per thread, refused ones included

    def hammer(k: int) -> None:
        rng = random.Random(k)
        for _ in range(max_calls):
            if outcomes[(k, "ok")] >= wanted:
                return
            op = rng.choice(["select", "get", "add", "update", "commit", "rollback"])
            try:
                if op == "select":
                    session.scalars(select(Counter).order_by(Counter.id)).all()
                elif op == "get":
                    session.get(Counter, rng.randint(1, 10), populate_existing=True)
                elif op == "add":
                    session.add(Counter(n=-1))
                    session.flush()
                elif op == "update":
                    c = session.get(Counter, rng.randint(1, 10))
                    assert c is not None
                    c.n += 1
                    session.flush()
                elif op == "commit":
                    session.commit()
                else:
                    session.rollback()
                outcomes[(k, "ok")] += 1
            except exc.ConcurrentUseError:
                outcomes[(k, "refused")] += 1
            except BaseException as err:  # anything else is a failure
                unexpected.append((k, op, err))
                return
            time.sleep(rng.random() * 0.001)  # let the other thread in between calls

    threads = [
        threading.Thread(target=hammer, args=(k,), name=f"hammer-{k}", daemon=True)
        for k in range(2)
    ]
    for t in threads:
        t.start()
    _join_all(threads)
    assert unexpected == []
    print(f"\nshared session: {dict(outcomes)}")
    # the threads did overlap (each was refused at least once) and both got their work done
    for k in range(2):
        assert outcomes[(k, "refused")] >= 1 and outcomes[(k, "ok")] == wanted, outcomes
    # the session is intact for its owner: a clean rollback, then ordinary work
    session.rollback()
    before = admin_conn.execute(f"SELECT count(*) FROM {schema}.counters").fetchone()
    assert before is not None
    session.add(Counter(n=1234))
    session.commit()
    assert session.scalars(select(Counter).where(Counter.n == 1234)).one().n == 1234
    session.commit()
    after = admin_conn.execute(f"SELECT count(*) FROM {schema}.counters").fetchone()
    assert after == (before[0] + 1,)
