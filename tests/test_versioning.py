"""Optimistic concurrency: version_id_col is checked by UPDATE and DELETE and bumped by UPDATE."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from retort import DeclarativeBase, Mapped, Session, exc, mapped_column, select
from retort.engine import Engine

Log = list[tuple[str, Any]]


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str]
    balance: Mapped[int]
    version: Mapped[int]
    __mapper_args__ = {"version_id_col": "version"}


class Plain(Base):
    __tablename__ = "plain"
    id: Mapped[int] = mapped_column(primary_key=True)
    v: Mapped[int]


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Account(owner=f"o{i}", balance=100) for i in range(3)])
        s.commit()
    return engine


def _rows(admin_conn: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    return admin_conn.execute(
        f"SELECT id, balance, version FROM {schema}.accounts ORDER BY id"
    ).fetchall()


def test_version_starts_at_one_and_counts_updates(
    db: Engine, sql_log: Log, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with Session(db) as s:
        a = s.get(Account, 1)
        assert a is not None and a.version == 1
        a.balance = 90
        sql_log.clear()
        s.flush()
        (sql, params) = sql_log[-1]
        assert sql.startswith("UPDATE") and "version = %s" in sql.split("WHERE")[1]
        assert list(params) == [90, 2, 1, 1]  # SET balance, version=2 WHERE id=1 AND version=1
        assert a.version == 2
        a.balance = 80
        s.commit()
    assert _rows(admin_conn, schema)[0] == (1, 80, 3)


def test_concurrent_sessions_one_wins_one_gets_stale_data(
    db: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s1, s2 = Session(db), Session(db)
    try:
        a1, a2 = s1.get(Account, 2), s2.get(Account, 2)
        assert a1 is not None and a2 is not None
        a1.balance += 10
        s1.commit()
        a2.balance -= 10
        with pytest.raises(exc.StaleDataError, match=r"accounts.*expected to match 1.*0 were"):
            s2.commit()
        # the failed session recovers after rollback and sees the winner's row
        s2.rollback()
        again = s2.get(Account, 2)
        assert again is not None and (again.balance, again.version) == (110, 2)
    finally:
        s1.close()
        s2.close()
    assert _rows(admin_conn, schema)[1] == (2, 110, 2)


def test_a_stale_delete_raises(
    db: Engine, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with Session(db) as s1, Session(db) as s2:
        a1, a2 = s1.get(Account, 3), s2.get(Account, 3)
        a1.balance = 0  # type: ignore[union-attr]
        s1.commit()
        s2.delete(a2)
        with pytest.raises(exc.StaleDataError, match="DELETE"):
            s2.flush()
        s2.rollback()
    assert _rows(admin_conn, schema)[2] == (3, 0, 2)


def test_batched_updates_check_the_count_for_the_batch(
    db: Engine, sql_log: Log, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with Session(db) as s1:
        accounts = s1.scalars(select(Account).order_by(Account.id)).all()
        with Session(db) as s2:
            other = s2.get(Account, 2)
            other.balance = 1  # type: ignore[union-attr]
            s2.commit()
        for a in accounts:
            a.balance += 1
        sql_log.clear()
        with pytest.raises(exc.StaleDataError, match="expected to match 3 row"):
            s1.flush()
        assert len(sql_log) == 1 and "unnest(" in sql_log[0][0]  # one statement for all
        s1.rollback()
    assert [r[1] for r in _rows(admin_conn, schema)] == [100, 1, 100]


def test_update_of_a_row_deleted_elsewhere_raises_without_a_version(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Plain(v=1))
        s.commit()
    with Session(engine) as s1:
        p = s1.get(Plain, 1)
        with Session(engine) as s2:
            s2.delete(s2.get(Plain, 1))
            s2.commit()
        p.v = 2  # type: ignore[union-attr]
        with pytest.raises(exc.StaleDataError, match="plain"):
            s1.flush()


def test_version_id_col_must_name_an_integer_column() -> None:
    class OtherBase(DeclarativeBase):
        pass

    with pytest.raises(exc.ArgumentError, match="integer"):

        class Bad(OtherBase):
            __tablename__ = "bad"
            id: Mapped[int] = mapped_column(primary_key=True)
            tag: Mapped[str]
            __mapper_args__ = {"version_id_col": "tag"}

    with pytest.raises(exc.ArgumentError, match="version_id_col"):

        class Missing(OtherBase):
            __tablename__ = "missing"
            id: Mapped[int] = mapped_column(primary_key=True)
            __mapper_args__ = {"version_id_col": "nope"}


def test_row_switch_keeps_counting_versions(
    db: Engine, sql_log: Log, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    with Session(db) as s:
        s.delete(s.get(Account, 1))
        s.add(Account(id=1, owner="new", balance=5))
        sql_log.clear()
        s.flush()
        assert [q.split()[0] for q, _ in sql_log] == ["UPDATE"]
        s.commit()
    assert _rows(admin_conn, schema)[0] == (1, 5, 2)
