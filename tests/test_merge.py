"""merge(), merge_all() and make_transient_to_detached()."""

from __future__ import annotations

from typing import Any

import pytest

from retort import (
    DeclarativeBase,
    ForeignKey,
    Mapped,
    Session,
    exc,
    inspect,
    make_transient_to_detached,
    mapped_column,
    relationship,
    select,
)
from retort.engine import Engine

Log = list[tuple[str, Any]]


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str]


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    pets: Mapped[list[Pet]] = relationship(back_populates="owner")


class Pet(Base):
    __tablename__ = "pets"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))  # NOT NULL
    owner: Mapped[Owner] = relationship(back_populates="pets")


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Thing(id=i, name=f"t{i}") for i in range(1, 4)])
        s.commit()
    return engine


def _selects(log: Log) -> int:
    return sum(1 for sql, _ in log if sql.lstrip().upper().startswith("SELECT"))


def test_merge_loads_once_and_returns_the_session_instance(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        sql_log.clear()
        merged = s.merge(Thing(id=1, name="renamed"))
        assert _selects(sql_log) == 1
        assert inspect(merged).persistent and merged.name == "renamed"
        sql_log.clear()
        again = s.merge(Thing(id=1, name="again"))
        assert again is merged and _selects(sql_log) == 0  # already in the session
        missing = s.merge(Thing(id=99, name="fresh"))
        assert inspect(missing).pending  # not in the database: a new row


def test_merge_all_fetches_every_missing_key_in_one_select(db: Engine, sql_log: Log) -> None:
    with Session(db) as s:
        s.get(Thing, 1)
        sql_log.clear()
        merged = s.merge_all([Thing(id=i, name=f"m{i}") for i in (1, 2, 3, 50)])
        assert _selects(sql_log) == 1
        assert [inspect(m).persistent for m in merged] == [True, True, True, False]
        s.commit()
    with Session(db) as s:
        assert s.get(Thing, 3).name == "m3"  # type: ignore[union-attr]
        assert s.get(Thing, 50).name == "m50"  # type: ignore[union-attr]


def test_merge_all_loads_the_expired_objects_it_merges_onto_in_one_select(
    db: Engine, sql_log: Log, admin_conn: Any, schema: str
) -> None:
    with Session(db) as s:
        held = [s.get(Thing, i) for i in (1, 2, 3)]
        s.commit()  # expires them
        admin_conn.execute(f"DELETE FROM {schema}.things WHERE id = 3")
        sql_log.clear()
        copies = [Thing(id=1), Thing(id=2, name="m2"), Thing(id=3, name="m3")]
        merged = s.merge_all(copies)
        assert _selects(sql_log) == 1  # (not one per object)
        assert merged[:2] == held[:2]
        assert [inspect(m).expired for m in merged[:2]] == [False, False]
        assert [m.name for m in merged[:2]] == ["t1", "m2"]
        # its row gone: a new object, as merge() and get() of the key find
        assert merged[2] is not held[2] and inspect(merged[2]).pending
        assert inspect(held[2]).deleted or inspect(held[2]).detached
        s.commit()
    with Session(db) as s:
        assert [t.name for t in s.scalars(select(Thing).order_by(Thing.id))] == ["t1", "m2", "m3"]


def test_merge_without_load_sends_no_select_and_refuses_dirty_objects(
    db: Engine, sql_log: Log
) -> None:
    with Session(db) as s1:
        detached = s1.get(Thing, 2)
    with Session(db) as s2:
        sql_log.clear()
        merged = s2.merge(detached, load=False)  # type: ignore[arg-type]
        assert sql_log == []
        assert inspect(merged).persistent and not s2.is_modified(merged)
    with Session(db) as s3:
        loaded = s3.get(Thing, 3)
        loaded.name = "changed"  # type: ignore[union-attr]
        with Session(db) as s4, pytest.raises(exc.InvalidRequestError, match="load=False"):
            s4.merge(loaded, load=False)  # type: ignore[arg-type]


def test_make_transient_to_detached_then_add_is_persistent_without_a_select(
    db: Engine, sql_log: Log
) -> None:
    t = Thing(id=1, name="t1")
    make_transient_to_detached(t)
    assert inspect(t).detached and inspect(t).identity == (1,)
    with Session(db) as s:
        sql_log.clear()
        s.add(t)
        assert inspect(t).persistent and sql_log == []
        t.name = "via detached"
        s.commit()
    with Session(db) as s:
        assert s.get(Thing, 1).name == "via detached"  # type: ignore[union-attr]
    with pytest.raises(exc.InvalidRequestError, match="primary key"):
        make_transient_to_detached(Thing(name="no key"))
    with pytest.raises(exc.InvalidRequestError, match="transient"):
        make_transient_to_detached(t)


@pytest.mark.parametrize("many", [False, True], ids=["merge", "merge_all"])
def test_merge_flushes_pending_changes_first(db: Engine, many: bool) -> None:
    # as SQLAlchemy: the pending object with that key is flushed, then found and merged onto
    # (without the autoflush, merge would load nothing and add a second object with the key)
    with Session(db) as s:
        pending = Thing(id=5, name="pending")
        s.add(pending)
        copy = Thing(id=5, name="merged")
        merged = s.merge_all([copy])[0] if many else s.merge(copy)
        assert merged is pending and pending.name == "merged"
        s.commit()
    with Session(db) as s:
        assert [t.name for t in s.scalars(select(Thing).where(Thing.id == 5))] == ["merged"]


def test_merge_does_not_autoflush_half_merged_objects(db: Engine) -> None:
    # merging the pet creates its target before the owner is merged; an autoflush while
    # loading the owner would INSERT the pet with a NULL owner_id (SQLAlchemy merges with
    # autoflush off, after one autoflush at the start)
    with Session(db) as s:
        pet = s.merge(Pet(id=7, owner=Owner(id=3)))
        assert pet.owner.id == 3 and inspect(pet).pending
        s.commit()
    with Session(db) as s:
        assert [(p.id, p.owner_id) for p in s.scalars(select(Pet))] == [(7, 3)]
