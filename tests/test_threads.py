"""One Session used from two threads at once raises a clear error instead of corrupting it."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from retort import DeclarativeBase, Mapped, Session, exc, mapped_column
from retort.engine import Engine


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counters"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    n: Mapped[int]


def test_a_second_thread_is_refused_while_the_first_flushes(
    engine: Engine, dsn: str, schema: str
) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Counter(id=1, n=0))
        s.commit()
    blocker = psycopg.connect(dsn, options=f"-c search_path={schema}")
    try:
        # hold the row's lock so that the session's flush waits inside the database
        blocker.execute("SELECT n FROM counters WHERE id = 1 FOR UPDATE")
        session = Session(engine)
        counter = session.get(Counter, 1)
        assert counter is not None
        counter.n = 1
        errors: list[BaseException] = []
        started = threading.Event()

        def flush() -> None:
            started.set()
            try:
                session.flush()
            except BaseException as e:  # reported by the assertion below
                errors.append(e)

        worker = threading.Thread(target=flush, daemon=True)
        worker.start()
        assert started.wait(10)
        # wait (bounded) until the worker holds the session
        for _ in range(200):
            if session._owner is not None:
                break
            threading.Event().wait(0.01)
        assert session._owner == worker.ident
        for call in (
            lambda: session.add(Counter(id=2, n=0)),
            lambda: session.execute(Counter.__table__.select()),
            session.commit,
            lambda: session.get(Counter, 99),
        ):
            with pytest.raises(exc.ConcurrentUseError, match="another thread"):
                call()
        blocker.rollback()  # let the flush finish
        worker.join(10)
        assert not worker.is_alive() and errors == []
        session.commit()  # the session works again from this thread
        session.close()
    finally:
        blocker.close()
    with Session(engine) as s:
        assert s.get(Counter, 1).n == 1  # type: ignore[union-attr]
        assert s.get(Counter, 2) is None


def test_reentry_from_the_same_thread_is_allowed(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    seen: list[Any] = []
    with Session(engine) as s:
        s.add(Counter(id=5, n=5))
        s.commit()  # commit -> flush: nested guarded calls on one thread
        seen.append(s.get(Counter, 5))
    assert seen[0].id == 5
