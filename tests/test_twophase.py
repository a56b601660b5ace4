"""Two-phase commit: Connection.begin_twophase() and Session(twophase=True) over two binds,
through psycopg's tpc API on a server that allows prepared transactions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from retort import (
    DeclarativeBase,
    Mapped,
    Session,
    create_engine,
    event,
    exc,
    mapped_column,
    select,
    text,
)
from retort.engine import Engine, TwoPhaseTransaction, make_url

Conn = psycopg.Connection[Any]


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    what: Mapped[str]


class Audit(Base):
    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str]


def _engine_on(dsn: str, schema: str) -> Engine:
    return create_engine(make_url(dsn).update_query_dict({"options": f"-c search_path={schema}"}))


@pytest.fixture
def binds(twophase_dsn: str, schema: str) -> Iterator[tuple[Engine, Engine, str]]:
    """Two engines on two schemas (separate connections, so separate prepared transactions);
    the audits table has a deferred unique constraint, which PREPARE checks."""
    dsn = twophase_dsn
    other = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {other}")
    first, second = _engine_on(dsn, schema), _engine_on(dsn, other)
    Order.__table__.create(first)
    Audit.__table__.create(second)
    with second.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE audits ADD CONSTRAINT audits_note_key UNIQUE (note) "
                "DEFERRABLE INITIALLY DEFERRED"
            )
        )
    try:
        yield first, second, other
    finally:
        first.dispose()
        second.dispose()
        with psycopg.connect(dsn, autocommit=True) as c:
            # never leave a prepared transaction behind: it would hold its locks forever
            for (gid,) in c.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'retort_%' OR gid LIKE 'test_%'"
            ).fetchall():
                c.execute(f"ROLLBACK PREPARED '{gid}'")
            c.execute(f"DROP SCHEMA {other} CASCADE")


def _prepared(admin: Conn) -> set[str]:
    return {r[0] for r in admin.execute("SELECT gid FROM pg_prepared_xacts").fetchall()}


def _count(admin: Conn, table: str) -> int:
    row = admin.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# -- Connection ---------------------------------------------------------------------------


def test_connection_prepare_then_commit(
    binds: tuple[Engine, Engine, str], admin_conn: Conn, schema: str
) -> None:
    first, _, _ = binds
    with first.connect() as conn:
        txn = conn.begin_twophase()
        assert isinstance(txn, TwoPhaseTransaction) and txn.xid.startswith("retort_")
        conn.execute(text("INSERT INTO orders (what) VALUES ('a')"))
        txn.prepare()
        assert txn.prepared and txn.xid in _prepared(admin_conn)
        assert _count(admin_conn, f"{schema}.orders") == 0  # not visible until committed
        with pytest.raises(exc.InvalidRequestError, match="already prepared"):
            txn.prepare()
        txn.commit()
        assert not conn.in_transaction()
        assert conn.scalar(text("SELECT count(*) FROM orders")) == 1  # usable afterwards
    assert txn.xid not in _prepared(admin_conn)
    assert _count(admin_conn, f"{schema}.orders") == 1


def test_connection_rollback_after_prepare(
    binds: tuple[Engine, Engine, str], admin_conn: Conn, schema: str
) -> None:
    first, _, _ = binds
    with first.connect() as conn:
        with conn.begin_twophase("test_rollback_after_prepare") as txn:
            conn.execute(text("INSERT INTO orders (what) VALUES ('a')"))
            txn.prepare()
            assert "test_rollback_after_prepare" in _prepared(admin_conn)
            txn.rollback()
    assert "test_rollback_after_prepare" not in _prepared(admin_conn)
    assert _count(admin_conn, f"{schema}.orders") == 0


def test_commit_without_prepare_prepares_first(
    binds: tuple[Engine, Engine, str], admin_conn: Conn, schema: str
) -> None:
    first, _, _ = binds
    with first.connect() as conn, conn.begin_twophase():
        conn.execute(text("INSERT INTO orders (what) VALUES ('a')"))
    assert _count(admin_conn, f"{schema}.orders") == 1


def test_a_prepared_transaction_survives_its_connection_and_is_recovered(
    binds: tuple[Engine, Engine, str], admin_conn: Conn, schema: str
) -> None:
    first, _, _ = binds
    conn = first.connect()
    txn = conn.begin_twophase()
    conn.execute(text("INSERT INTO orders (what) VALUES ('survivor')"))
    txn.prepare()
    conn.invalidate()  # the process "crashes" between the two phases
    conn.rollback()
    conn.close()
    with first.connect() as other:
        assert txn.xid in other.recover_twophase()
        assert _count(admin_conn, f"{schema}.orders") == 0
        other.commit_prepared(txn.xid)
        assert txn.xid not in other.recover_twophase()
    assert _count(admin_conn, f"{schema}.orders") == 1


def test_rollback_prepared_by_id(
    binds: tuple[Engine, Engine, str], admin_conn: Conn, schema: str
) -> None:
    first, _, _ = binds
    with first.connect() as conn:
        txn = conn.begin_twophase()
        conn.execute(text("INSERT INTO orders (what) VALUES ('x')"))
        txn.prepare()
        conn.invalidate()
        conn.rollback()
    with first.connect() as other:
        other.rollback_prepared(txn.xid)
        with pytest.raises(exc.DBAPIError, match="does not exist"):
            other.rollback_prepared(txn.xid)
        other.rollback()
    assert _count(admin_conn, f"{schema}.orders") == 0
    assert txn.xid not in _prepared(admin_conn)


def test_connection_misuse(binds: tuple[Engine, Engine, str]) -> None:
    first, _, _ = binds
    with first.connect() as conn:
        with pytest.raises(exc.ArgumentError, match="non-empty string"):
            conn.begin_twophase("")
        conn.execute(text("SELECT 1"))
        with pytest.raises(exc.InvalidRequestError, match="already in progress"):
            conn.begin_twophase()
        with pytest.raises(exc.InvalidRequestError, match="inside a transaction"):
            conn.commit_prepared("nope")
        with pytest.raises(exc.InvalidRequestError, match="without a transaction"):
            conn.recover_twophase()
        conn.rollback()


def test_a_failed_prepare_raises_retorts_error_and_leaves_nothing(
    binds: tuple[Engine, Engine, str], admin_conn: Conn
) -> None:
    # a deferred constraint is checked by PREPARE
    _, second, _ = binds
    with second.connect() as conn:
        txn = conn.begin_twophase()
        conn.execute(text("INSERT INTO audits (note) VALUES ('same'), ('same')"))
        with pytest.raises(exc.IntegrityError, match="audits_note_key"):
            txn.prepare()
        assert not conn.in_transaction()
        assert conn.scalar(text("SELECT count(*) FROM audits")) == 0
        conn.rollback()
    assert txn.xid not in _prepared(admin_conn)


# -- Session --------------------------------------------------------------------------------


def test_session_commits_both_binds_in_two_phases(
    binds: tuple[Engine, Engine, str], admin_conn: Conn, schema: str
) -> None:
    first, second, other = binds
    with Session(binds={Order: first, Audit: second}, twophase=True) as s:
        s.add_all([Order(what="book"), Audit(note="ordered a book")])
        s.prepare()
        xids = {c.get_transaction().xid for c in s._conns.values()}  # type: ignore[union-attr]
        assert len(xids) == 2 and xids <= _prepared(admin_conn)
        assert _count(admin_conn, f"{schema}.orders") == 0
        with pytest.raises(exc.InvalidRequestError, match="already prepared"):
            s.prepare()
        s.commit()
        assert not (xids & _prepared(admin_conn))
        assert s.scalars(select(Order.what)).all() == ["book"]
        # a second transaction is two-phase too
        s.add(Audit(note="again"))
        s.commit()
    assert admin_conn.execute(f"SELECT what FROM {schema}.orders").fetchall() == [("book",)]
    notes = admin_conn.execute(f"SELECT note FROM {other}.audits ORDER BY id").fetchall()
    assert notes == [("ordered a book",), ("again",)]


def test_a_bind_that_cannot_prepare_rolls_every_bind_back(
    binds: tuple[Engine, Engine, str], admin_conn: Conn, schema: str
) -> None:
    first, second, other = binds
    with Session(binds={Order: first, Audit: second}, twophase=True) as s:
        order = Order(what="book")
        s.add(order)
        s.flush()  # the orders connection comes first, so it is prepared first
        s.add_all([Audit(note="dup"), Audit(note="dup")])
        with pytest.raises(exc.IntegrityError, match="audits_note_key"):
            s.commit()
        assert not [g for g in _prepared(admin_conn) if g.startswith("retort_")]
        assert _count(admin_conn, f"{schema}.orders") == 0
        assert _count(admin_conn, f"{other}.audits") == 0
        # the order is transient again; the session refuses work until rollback() (a flush
        # with nothing to write returns, as in SQLAlchemy)
        assert order not in s
        s.flush()
        s.add(Order(what="pen"))
        with pytest.raises(exc.PendingRollbackError):
            s.flush()
        s.rollback()
        assert not s.in_transaction()
        s.add(Order(what="second try"))
        s.commit()
    assert admin_conn.execute(f"SELECT what FROM {schema}.orders").fetchall() == [("second try",)]


def test_no_sql_after_prepare_and_rollback_undoes_it(
    binds: tuple[Engine, Engine, str], admin_conn: Conn, schema: str
) -> None:
    first, second, other = binds
    with Session(binds={Order: first, Audit: second}, twophase=True) as s:
        s.add_all([Order(what="a"), Audit(note="b")])
        s.prepare()
        s.add(Order(what="late"))
        with pytest.raises(exc.InvalidRequestError, match="prepared"):
            s.flush()
        with pytest.raises(exc.InvalidRequestError, match="prepared"):
            s.execute(select(Order))
        s.rollback()
        assert not [g for g in _prepared(admin_conn) if g.startswith("retort_")]
    assert _count(admin_conn, f"{schema}.orders") == 0
    assert _count(admin_conn, f"{other}.audits") == 0


def test_commit_events_wrap_both_phases(binds: tuple[Engine, Engine, str]) -> None:
    first, second, _ = binds
    log: list[str] = []
    with Session(binds={Order: first, Audit: second}, twophase=True) as s:
        for name in ("before_commit", "before_flush", "after_flush", "after_commit"):
            event.listen(s, name, lambda *a, _n=name: log.append(_n))
        s.add_all([Order(what="a"), Audit(note="b")])
        s.commit()
    assert log == ["before_commit", "before_flush", "after_flush", "after_commit"]


def test_prepare_needs_a_twophase_session_and_a_transaction(
    binds: tuple[Engine, Engine, str],
) -> None:
    first, second, _ = binds
    with Session(first) as s:
        with pytest.raises(exc.InvalidRequestError, match="twophase=True"):
            s.prepare()
    with Session(binds={Order: first, Audit: second}, twophase=True) as s:
        with pytest.raises(exc.InvalidRequestError, match="no transaction"):
            s.prepare()


def test_a_connection_bind_already_in_a_transaction_is_refused(
    binds: tuple[Engine, Engine, str],
) -> None:
    first, _, _ = binds
    with first.connect() as conn:
        conn.execute(text("SELECT 1"))
        with Session(conn, twophase=True) as s:
            s.add(Order(what="x"))
            with pytest.raises(exc.InvalidRequestError, match="already in a transaction"):
                s.flush()
        conn.rollback()
