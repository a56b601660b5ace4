"""Session(binds={...}): each model's SQL goes to its own engine, in one session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from retort import DeclarativeBase, Mapped, Session, create_engine, mapped_column, select
from retort.engine import Engine, make_url


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


@pytest.fixture
def two_engines(dsn: str, engine: Engine, schema: str) -> Iterator[tuple[Engine, Engine, str]]:
    """The test's engine, and a second one on another schema of the same server."""
    other = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {other}")
    second = create_engine(make_url(dsn).update_query_dict({"options": f"-c search_path={other}"}))
    Order.__table__.create(engine)
    Audit.__table__.create(second)
    try:
        yield engine, second, other
    finally:
        second.dispose()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {other} CASCADE")


def test_each_model_uses_its_bind(
    two_engines: tuple[Engine, Engine, str], admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    first, second, other = two_engines
    with Session(binds={Order: first, Audit: second}) as s:
        assert s.get_bind(Order) is first and s.get_bind(Audit) is second
        s.add_all([Order(what="book"), Audit(note="ordered a book")])
        s.commit()
        assert s.scalars(select(Audit)).one().note == "ordered a book"
        assert s.scalars(select(Order)).one().what == "book"
    assert admin_conn.execute(f"SELECT what FROM {schema}.orders").fetchall() == [("book",)]
    assert admin_conn.execute(f"SELECT note FROM {other}.audits").fetchall() == [
        ("ordered a book",)
    ]


def test_rollback_covers_every_bind(
    two_engines: tuple[Engine, Engine, str], admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    first, second, other = two_engines
    with Session(binds={Order: first, Audit: second}) as s:
        s.add_all([Order(what="x"), Audit(note="y")])
        s.flush()
        s.rollback()
    assert admin_conn.execute(f"SELECT count(*) FROM {schema}.orders").fetchone() == (0,)
    assert admin_conn.execute(f"SELECT count(*) FROM {other}.audits").fetchone() == (0,)


def test_savepoints_cover_every_bind(
    two_engines: tuple[Engine, Engine, str], admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    first, second, other = two_engines
    with Session(binds={Order: first, Audit: second}) as s:
        s.add(Order(what="kept"))
        s.flush()  # only the first bind has a connection when the SAVEPOINT begins
        with s.begin_nested() as outer:
            s.add(Audit(note="kept too"))
            with s.begin_nested() as inner:
                s.add_all([Order(what="undone"), Audit(note="undone")])
                s.flush()
                inner.rollback()
            outer.commit()
        with s.begin_nested():
            s.add(Audit(note="released"))
        s.commit()
    assert admin_conn.execute(f"SELECT what FROM {schema}.orders").fetchall() == [("kept",)]
    notes = admin_conn.execute(f"SELECT note FROM {other}.audits ORDER BY id").fetchall()
    assert notes == [("kept too",), ("released",)]


def test_a_failed_flush_in_a_savepoint_rolls_back_every_bind_to_it(
    two_engines: tuple[Engine, Engine, str], admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    first, second, other = two_engines
    with Session(binds={Order: first, Audit: second}) as s:
        s.add_all([Order(what="kept"), Audit(id=7, note="kept")])
        s.flush()
        sp = s.begin_nested()
        s.add(Order(what="undone"))
        s.flush()
        s.add(Audit(id=7, note="duplicate key"))
        with pytest.raises(Exception, match="duplicate key"):
            s.flush()
        sp.rollback()
        s.commit()
    assert admin_conn.execute(f"SELECT what FROM {schema}.orders").fetchall() == [("kept",)]
    assert admin_conn.execute(f"SELECT note FROM {other}.audits").fetchall() == [("kept",)]
