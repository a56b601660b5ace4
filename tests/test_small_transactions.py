"""A commit whose whole transaction is one statement on one row runs that statement without
BEGIN and COMMIT (PostgreSQL's implicit transaction of one statement): one round trip.

The tests read the messages the client sent to the server from libpq's protocol trace of the
engine's only pooled connection."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq

from retort import DeclarativeBase, Mapped, Session, event, exc, mapped_column, text
from retort.engine import Connection, Engine

Conn = psycopg.Connection[Any]
Wire = Callable[[], list[str]]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


@pytest.fixture
def db(engine_factory: Callable[..., Engine]) -> Engine:
    eng = engine_factory(pool_size=1, max_overflow=0)  # every session gets the same connection
    Base.metadata.create_all(eng)
    with eng.connect() as conn:
        conn.exec_driver_sql("ALTER TABLE items ADD UNIQUE (name)")
        conn.commit()
    return eng


def db_of(wire: Wire) -> Engine:
    return wire.engine  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def wire(db: Engine, tmp_path: Path) -> Iterator[Wire]:
    """`wire()`: what the client sent since the last call, one entry per query: the first
    word of a simple query or of a statement without parameters (BEGIN, COMMIT, ...), or
    "execute" for a statement with parameters (extended protocol). `wire.trips`: how many
    times the client waited for the server since the fixture began (simple queries and
    Syncs)."""
    path = tmp_path / "trace"
    out = path.open("w")
    with db.connect() as conn:
        pgconn = conn.driver_connection.pgconn
    pgconn.trace(out.fileno())
    pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
    seen = 0

    def read() -> list[str]:
        nonlocal seen
        out.flush()
        lines = path.read_text().splitlines()
        new, seen = lines[seen:], len(lines)
        sent = []
        for line in new:
            fields = line.split("\t")
            if fields[0] != "F":
                continue
            if fields[2] == "Query":
                sent.append(fields[3].strip().strip('"').split()[0])
                read.trips += 1  # type: ignore[attr-defined]
            elif fields[2] == "Parse":  # ' "name" "text" ...'
                name, text = re.findall(r'"([^"]*)"', fields[3])[:2]
                parsed[name] = text.split()[0]
            elif fields[2] == "Bind":  # ' "portal" "statement" ...'
                bound[0] = re.findall(r'"([^"]*)"', fields[3])[1]
            elif fields[2] == "Execute":
                word = parsed.get(bound[0], "")
                sent.append(word if word in _NO_PARAMETERS else "execute")
            elif fields[2] == "Sync":
                read.trips += 1  # type: ignore[attr-defined]
        return sent

    parsed: dict[str, str] = {}
    bound = [""]
    read.trips = 0  # type: ignore[attr-defined]

    read.engine = db  # type: ignore[attr-defined]
    try:
        yield read
    finally:
        pgconn.untrace()
        out.close()


_NO_PARAMETERS = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def _items(wire: Wire, *names: str) -> None:
    """Commit one Item per name (ids 1, 2, ...), in a session of its own."""
    with Session(db_of(wire)) as s:
        s.add_all([Item(name=name) for name in names])
        s.commit()


def _renamed(s: Session, pk: int, name: str) -> Item:
    item = s.get(Item, pk)
    assert item is not None
    item.name = name
    return item


def test_add_one_and_commit_is_one_round_trip(wire: Wire) -> None:
    with Session(db_of(wire)) as s:
        wire()
        item = Item(name="a")
        s.add(item)
        s.commit()
        assert wire() == ["execute"]
        assert item.name == "a"  # reloaded after commit: the row is there
        assert wire() == ["BEGIN", "execute"]


def test_two_statements_run_in_one_transaction(wire: Wire) -> None:
    with Session(db_of(wire)) as s:
        wire()
        s.add_all([Item(name="a"), Note(text="n")])
        s.commit()
        assert wire() == ["BEGIN", "execute", "execute", "COMMIT"]


def test_two_rows_of_one_table_run_in_a_transaction(wire: Wire) -> None:
    with Session(db_of(wire)) as s:
        wire()
        s.add_all([Item(name="a"), Item(name="b")])
        s.commit()
        sent = wire()
        assert sent[0] == "BEGIN" and sent[-1] == "COMMIT", sent


def test_update_after_its_select_is_the_transactions_second_statement(wire: Wire) -> None:
    with Session(db_of(wire)) as s:
        s.add(Item(name="a"))
        s.commit()
    with Session(db_of(wire)) as s:
        wire()
        trips = wire.trips  # type: ignore[attr-defined]
        item = s.get(Item, 1)
        assert item is not None
        assert wire() == ["BEGIN", "execute"]
        assert wire.trips == trips + 1  # type: ignore[attr-defined]  # the BEGIN with the SELECT
        item.name = "b"
        s.commit()
        assert wire() == ["execute", "COMMIT"]
        # the UPDATE and the COMMIT in one round trip: the transaction wrote nothing before
        assert wire.trips == trips + 2  # type: ignore[attr-defined]


def test_the_commit_goes_out_as_the_flush_of_commit_ends(
    wire: Wire, admin_conn: Conn, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the COMMIT is sent right after the flush's last statement, before commit() finishes
    # the flush's bookkeeping; commit() then reads its outcome
    _items(wire, "a", "b")
    in_flight: list[pq.TransactionStatus] = []
    send = Connection._send_commit

    def watched(self: Connection) -> None:
        send(self)
        in_flight.append(self.driver_connection.pgconn.transaction_status)

    monkeypatch.setattr(Connection, "_send_commit", watched)
    with Session(db_of(wire)) as s:
        items = [s.get(Item, 1), s.get(Item, 2)]
        for item, name in zip(items, ["c", "d"], strict=True):
            assert item is not None
            item.name = name
        wire()
        s.commit()  # two rows: one UPDATE, whose row count is checked before the COMMIT
        assert in_flight == [pq.TransactionStatus.ACTIVE]  # sent, its outcome not read yet
        assert wire() == ["execute", "COMMIT"]
        assert [i.name for i in items if i is not None] == ["c", "d"]  # reloaded
    rows = admin_conn.execute(f"SELECT name FROM {schema}.items ORDER BY id").fetchall()
    assert rows == [("c",), ("d",)]


@pytest.mark.parametrize("rows", [1, 2], ids=["with-the-statement", "after-the-flush"])
def test_a_commit_sent_early_and_refused_leaves_the_session_recoverable(
    wire: Wire, admin_conn: Conn, schema: str, rows: int
) -> None:
    # a deferred constraint fails at the COMMIT, after the flush succeeded; the COMMIT went
    # with the UPDATE of one row, or right after the UPDATE of two
    admin_conn.execute(
        f"ALTER TABLE {schema}.notes ADD CONSTRAINT notes_text_key UNIQUE (text) "
        "DEFERRABLE INITIALLY DEFERRED"
    )
    with Session(db_of(wire)) as s:
        s.add_all([Note(id=1, text="x"), Note(id=2, text="y"), Note(id=3, text="w")])
        s.commit()
    with Session(db_of(wire)) as s:
        notes = [s.get(Note, 2), s.get(Note, 3)][:rows]
        for note in notes:
            assert note is not None
            note.text = "x"
        wire()
        with pytest.raises(exc.IntegrityError, match="notes_text_key"):
            s.commit()
        assert wire() == ["execute", "COMMIT"]
        with pytest.raises(exc.PendingRollbackError):  # until the failure is acknowledged
            s.commit()
        s.rollback()
        again = s.get(Note, 2)
        assert again is not None and again.text == "y"
        again.text = "z"
        s.commit()
    rows_now = admin_conn.execute(f"SELECT id, text FROM {schema}.notes ORDER BY id").fetchall()
    assert rows_now == [(1, "x"), (2, "z"), (3, "w")]


def test_a_stale_row_with_the_commit_in_the_same_round_trip_writes_nothing(
    wire: Wire, admin_conn: Conn, schema: str
) -> None:
    # the row count is checked after the COMMIT: a statement that matched no row committed
    # a transaction that wrote nothing, and the flush fails as it would have
    _items(wire, "a", "b")
    with Session(db_of(wire)) as s:
        _renamed(s, 1, "c")  # then its row goes
        admin_conn.execute(f"DELETE FROM {schema}.items WHERE id = 1")
        wire()
        with pytest.raises(exc.StaleDataError, match="expected to match 1 row"):
            s.commit()
        assert wire() == ["execute", "COMMIT"]
        s.rollback()
        assert wire() == []  # the server's transaction is over: nothing to roll back
        _renamed(s, 2, "d")
        s.commit()
    assert admin_conn.execute(f"SELECT id, name FROM {schema}.items").fetchall() == [(2, "d")]


def test_a_failed_statement_with_the_commit_behind_it_writes_nothing(
    wire: Wire, admin_conn: Conn, schema: str
) -> None:
    # the server skips the COMMIT queued behind a statement that failed
    _items(wire, "a", "b")
    with Session(db_of(wire)) as s:
        _renamed(s, 2, "a")  # the unique name of item 1
        wire()
        with pytest.raises(exc.IntegrityError, match="name"):
            s.commit()
        # the failed flush rolls the server's transaction back at once, as always
        assert wire() == ["execute", "COMMIT", "ROLLBACK"]
        s.rollback()
        assert wire() == []
        again = s.get(Item, 2)
        assert again is not None and again.name == "b"
        again.name = "c"
        s.commit()
    rows = admin_conn.execute(f"SELECT id, name FROM {schema}.items ORDER BY id").fetchall()
    assert rows == [(1, "a"), (2, "c")]


@pytest.mark.parametrize("earlier", ["flush", "execute", "driver"])
def test_a_transaction_that_wrote_checks_the_row_count_before_its_commit(
    wire: Wire, admin_conn: Conn, schema: str, earlier: str
) -> None:
    # with an earlier write in the transaction, a stale row must roll it back: the COMMIT
    # waits for the row count
    _items(wire, "a", "b")
    with Session(db_of(wire)) as s:
        item = s.get(Item, 1)
        assert item is not None
        if earlier == "flush":
            s.add(Note(id=1, text="written"))
            s.flush()
        elif earlier == "execute":
            s.execute(text(f"INSERT INTO {schema}.notes (id, text) VALUES (1, 'written')"))
        else:  # on psycopg's connection, unseen by retort
            raw = s.connection().driver_connection
            raw.execute(f"INSERT INTO {schema}.notes (id, text) VALUES (1, 'written')")
        admin_conn.execute(f"DELETE FROM {schema}.items WHERE id = 1")
        item.name = "c"
        wire()
        with pytest.raises(exc.StaleDataError):
            s.commit()
        assert wire() == ["execute", "ROLLBACK"]
        s.rollback()
    assert admin_conn.execute(f"SELECT count(*) FROM {schema}.notes").fetchone() == (0,)
    assert admin_conn.execute(f"SELECT name FROM {schema}.items").fetchall() == [("b",)]


def test_update_and_delete_of_one_object_kept_from_an_earlier_transaction(
    wire: Wire, admin_conn: Conn, schema: str
) -> None:
    with Session(db_of(wire), expire_on_commit=False) as s:
        item = Item(name="a")
        s.add(item)
        s.commit()
        wire()
        item.name = "b"
        s.commit()
        assert wire() == ["execute"]
        assert admin_conn.execute(f"SELECT name FROM {schema}.items").fetchall() == [("b",)]
        s.delete(item)
        s.commit()
        assert wire() == ["execute"]
        assert admin_conn.execute(f"SELECT count(*) FROM {schema}.items").fetchone() == (0,)


def test_a_failed_lone_statement_writes_nothing_and_the_session_recovers(
    wire: Wire, admin_conn: Conn, schema: str
) -> None:
    with Session(db_of(wire)) as s:
        s.add(Item(name="a"))
        s.commit()
    with Session(db_of(wire)) as s:
        dup = Item(name="a")
        s.add(dup)
        wire()
        with pytest.raises(exc.IntegrityError, match="name"):
            s.commit()
        assert wire() == ["execute"]  # nothing to roll back on the server
        with pytest.raises(exc.PendingRollbackError):
            s.add(Item(name="c"))
            s.flush()
        s.rollback()
        assert dup not in s
        s.add(Item(name="b"))
        s.commit()
        assert wire() == ["execute"]
    names = admin_conn.execute(f"SELECT name FROM {schema}.items ORDER BY id").fetchall()
    assert names == [("a",), ("b",)]


def test_a_flush_before_the_commit_keeps_the_transaction(
    wire: Wire, admin_conn: Conn, schema: str
) -> None:
    with Session(db_of(wire)) as s:
        wire()
        s.add(Item(name="a"))
        s.flush()  # not the commit: the transaction stays open for more work
        s.rollback()
        assert wire() == ["BEGIN", "execute", "ROLLBACK"]
        s.add(Item(name="b"))
        s.flush()
        s.commit()
        assert wire() == ["BEGIN", "execute", "COMMIT"]
    assert admin_conn.execute(f"SELECT name FROM {schema}.items").fetchall() == [("b",)]


def test_listeners_see_the_transaction_begin(wire: Wire) -> None:
    with Session(db_of(wire)) as s:
        begun: list[Any] = []
        event.listen(s, "after_begin", lambda session, tx, conn: begun.append(conn))
        wire()
        s.add(Item(name="a"))
        s.commit()
        assert len(begun) == 1
        assert wire() == ["BEGIN", "execute", "COMMIT"]


def test_a_session_bound_to_a_connection_uses_its_transaction(
    wire: Wire, admin_conn: Conn, schema: str
) -> None:
    with db_of(wire).connect() as conn:
        wire()
        with Session(conn) as s:
            s.add(Item(name="a"))
            s.commit()
        assert wire() == ["BEGIN", "execute", "COMMIT"]
    assert admin_conn.execute(f"SELECT count(*) FROM {schema}.items").fetchone() == (1,)


def test_echo_says_the_statement_ran_alone(
    wire: Wire, caplog: pytest.LogCaptureFixture, engine_factory: Callable[..., Engine]
) -> None:
    eng = engine_factory(echo=True)
    with caplog.at_level("INFO", logger="retort.engine"), Session(eng) as s:
        s.add(Item(name="a"))
        s.commit()
    messages = [r.getMessage() for r in caplog.records]
    assert any("no BEGIN/COMMIT" in m for m in messages), messages
    assert not any(m.startswith("BEGIN") for m in messages), messages


# --------------------------------------------------------------------------------------------
# statements retort generates run on psycopg's connection without a cursor (Connection._run),
# with the connection's own prepared-statement cache


def _prepared(s: Session) -> list[str]:
    """The statements prepared on the session's connection. (The session then commits: a
    ROLLBACK makes psycopg forget how often statements ran, and deallocate them.)"""
    rows = s.connection().exec_driver_sql("SELECT statement FROM pg_prepared_statements")
    statements = sorted(r[0] for r in rows)
    s.commit()
    return statements


def _add_one(eng: Engine) -> None:
    with Session(eng) as s:
        s.add(Item(name="a"))
        s.commit()


def _get_and_change(eng: Engine, times: int) -> None:
    for i in range(times):
        with Session(eng) as s:
            item = s.get(Item, 1)
            assert item is not None
            item.name = f"n{i}"
            s.commit()


def test_a_statement_run_prepare_threshold_times_is_prepared_once(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    _add_one(db)
    with Session(db) as s:
        threshold = s.connection().driver_connection.prepare_threshold
        assert threshold is not None
        s.commit()  # (a ROLLBACK makes psycopg forget how often statements ran)
    _get_and_change(db, threshold - 1)
    with Session(db) as s:
        assert _prepared(s) == []  # run, not prepared yet
    _get_and_change(db, 2)
    with Session(db) as s:
        statements = _prepared(s)
    assert len(statements) == 2, statements
    assert any(st.startswith("SELECT") and "WHERE id = $1" in st for st in statements)
    assert any(st.startswith("UPDATE items SET name = $1") for st in statements)
    _get_and_change(db, 3)
    with Session(db) as s:
        assert _prepared(s) == statements  # executed by name since
    assert admin_conn.execute(f"SELECT name FROM {schema}.items").fetchall() == [("n2",)]


def test_statements_prepared_before_psycopg_clears_its_cache_are_prepared_again(
    db: Engine, admin_conn: Conn, schema: str
) -> None:
    # psycopg deallocates every prepared statement of the connection (DEALLOCATE ALL) on a
    # rollback when it prepared some itself: retort's are in the same cache, so it knows
    _add_one(db)
    _get_and_change(db, 8)
    with Session(db) as s:
        for _ in range(8):  # a statement of the user's, prepared by psycopg
            s.connection().exec_driver_sql("SELECT count(*) FROM items WHERE id > %s", (0,))
        assert len(_prepared(s)) == 3
        s.connection().exec_driver_sql("SELECT 1")
        s.rollback()
        assert _prepared(s) == []
    _get_and_change(db, 8)
    with Session(db) as s:
        assert len(_prepared(s)) == 2
    assert admin_conn.execute(f"SELECT name FROM {schema}.items").fetchall() == [("n7",)]


def test_prepare_threshold_none_prepares_nothing(
    engine_factory: Callable[..., Engine], admin_conn: Conn, schema: str
) -> None:
    # as for PgBouncer in transaction mode: every statement is sent unnamed
    eng = engine_factory(pool_size=1, max_overflow=0, connect_args={"prepare_threshold": None})
    Base.metadata.create_all(eng)
    _add_one(eng)
    _get_and_change(eng, 8)
    with Session(eng) as s:
        s.delete(s.get(Item, 1))
        s.add(Item(name="b"))
        s.flush()
        assert _prepared(s) == []
        s.commit()
    assert admin_conn.execute(f"SELECT name FROM {schema}.items").fetchall() == [("b",)]


def test_statements_with_non_ascii_names_follow_each_connections_client_encoding(
    engine_factory: Callable[..., Engine], admin_conn: Conn, schema: str
) -> None:
    class Local(DeclarativeBase):
        pass

    class Café(Local):
        __tablename__ = "cafés"
        id: Mapped[int] = mapped_column(primary_key=True)
        crème: Mapped[int]

    utf8 = engine_factory()
    latin1 = engine_factory(connect_args={"client_encoding": "LATIN1"})
    Local.metadata.create_all(utf8)
    with Session(utf8) as s:
        s.add(Café(id=1, crème=0))
        s.commit()
    for i in range(12):  # past prepare_threshold, on both connections
        with Session(latin1 if i % 2 else utf8) as s:
            cafe = s.get(Café, 1)
            assert cafe is not None
            cafe.crème += 1
            s.commit()
    assert admin_conn.execute(f'SELECT "crème" FROM {schema}."cafés"').fetchall() == [(12,)]
