"""Memory: what a Session keeps alive and what it lets go.

Clean persistent objects are held weakly by the identity map; new, dirty and deleted objects are
held strongly until flushed; a closed (or dropped) session and its objects are freed. Objects of
classes with JSON columns are the exception: a change made inside a JSON value has no event, so
the session keeps them (strongly) to compare their values with the ones loaded before a flush.
"""

from __future__ import annotations

import gc
import itertools
import sys
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from retort import DeclarativeBase, Mapped, Session, inspect, mapped_column, select
from retort.engine import Engine

Log = list[tuple[str, Any]]
Collected = Callable[..., None]


class Base(DeclarativeBase):
    pass


class Node(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Doc(Base):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    payload: Mapped[dict[str, Any] | None]


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Node(name=f"n{i}") for i in range(5)])
        s.add_all([Doc(name=f"n{i}", payload={"i": i}) for i in range(5)])
        s.commit()
    return engine


def _collect() -> None:
    for _ in range(3):
        gc.collect()


def test_closed_session_and_its_objects_are_collected(
    db: Engine, assert_collected: Collected
) -> None:
    s = Session(db)
    loaded = s.scalars(select(Node)).all()
    added = Node(name="new")
    s.add(added)
    s.flush()
    loaded[0].name = "changed"
    s.delete(loaded[1])
    s.commit()
    _ = [n.name for n in s.scalars(select(Node)).all()]  # reload after expiry
    s.close()
    refs = [weakref.ref(s), weakref.ref(added), *(weakref.ref(o) for o in loaded)]
    del s, loaded, added
    assert_collected(*refs)


def test_closed_session_with_pending_changes_is_collected(
    db: Engine, assert_collected: Collected
) -> None:
    s = Session(db)
    objs = s.scalars(select(Node)).all()
    objs[0].name = "dirty"
    s.delete(objs[1])
    new = Node(name="pending")
    s.add(new)
    s.close()
    refs = [weakref.ref(s), weakref.ref(new), *(weakref.ref(o) for o in objs)]
    del s, objs, new
    assert_collected(*refs)


def test_session_used_as_context_manager_is_collected(
    db: Engine, assert_collected: Collected
) -> None:
    with Session(db) as s:
        obj = s.scalars(select(Node).limit(1)).one()
        obj.name = "x"
        s.commit()
    refs = [weakref.ref(s), weakref.ref(obj)]
    del s, obj
    assert_collected(*refs)


def test_objects_do_not_keep_their_session_alive(db: Engine, assert_collected: Collected) -> None:
    with Session(db, expire_on_commit=False) as s:
        obj = s.scalars(select(Node).limit(1)).one()
        ref = weakref.ref(s)
        del s
    assert_collected(ref)
    assert obj.name.startswith("n")
    assert inspect(obj).session is None


def test_dropped_unclosed_session_is_collected(db: Engine, assert_collected: Collected) -> None:
    s = Session(db)
    objs = s.scalars(select(Node)).all()
    s.commit()  # no transaction left open, nothing to roll back
    refs = [weakref.ref(s), *(weakref.ref(o) for o in objs)]
    del s, objs
    assert_collected(*refs)


def test_clean_persistent_objects_are_held_weakly(
    db: Engine, sql_log: Log, assert_collected: Collected
) -> None:
    with Session(db) as s:
        objs = s.scalars(select(Node).order_by(Node.id)).all()
        ids = [o.id for o in objs]
        keep = objs[0]
        refs = [weakref.ref(o) for o in objs[1:]]
        del objs
        assert_collected(*refs)
        assert len(s.identity_map) == 1
        assert list(s) == [keep]
        # a collected object is loaded again on demand, as a new instance
        sql_log.clear()
        again = s.get(Node, ids[1])
        assert again is not None and again.name == "n1"
        assert [sql.split()[0] for sql, _ in sql_log] == ["SELECT"]
        assert s.get(Node, ids[0]) is keep


def test_flushed_and_committed_objects_become_weak(db: Engine, assert_collected: Collected) -> None:
    with Session(db) as s:
        new = Node(name="new")
        s.add(new)
        s.flush()  # now persistent and clean
        obj = s.scalars(select(Node).where(Node.name == "n0")).one()
        obj.name = "n0!"
        s.commit()  # clean (and expired) afterwards
        refs = [weakref.ref(new), weakref.ref(obj)]
        del new, obj
        assert_collected(*refs)


def test_new_objects_are_held_strongly(db: Engine) -> None:
    with Session(db) as s:
        s.add(Node(name="only referenced by the session"))
        ref = weakref.ref(next(iter(s.new)))
        _collect()
        assert ref() is not None
        assert len(s.new) == 1
        s.commit()
    with Session(db) as s2:
        assert s2.scalars(select(Node).where(Node.name.like("only%"))).one() is not None


def test_dirty_objects_are_held_strongly(db: Engine) -> None:
    with Session(db) as s:
        obj = s.scalars(select(Node).where(Node.name == "n2")).one()
        oid = obj.id
        obj.name = "modified"
        ref = weakref.ref(obj)
        del obj
        _collect()
        assert ref() is not None
        assert len(s.dirty) == 1
        s.commit()
    with Session(db) as s2:
        fresh = s2.get(Node, oid)
        assert fresh is not None and fresh.name == "modified"


def test_in_place_json_change_keeps_the_object_alive(db: Engine) -> None:
    # changes inside JSON values are detected without wrapper types (SPEC §5): an object whose
    # JSON was changed in place has a change to flush, so it must not be dropped
    with Session(db) as s:
        obj = s.scalars(select(Doc).where(Doc.name == "n3")).one()
        oid = obj.id
        payload = obj.payload
        assert payload is not None
        payload["i"] = 300
        ref = weakref.ref(obj)
        del obj
        _collect()
        assert ref() is not None
        s.commit()
    with Session(db) as s2:
        fresh = s2.get(Doc, oid)
        assert fresh is not None and fresh.payload == {"i": 300}


def test_objects_with_json_columns_are_held_while_in_the_session(
    db: Engine, assert_collected: Collected
) -> None:
    with Session(db) as s:
        docs = s.scalars(select(Doc)).all()
        refs = [weakref.ref(d) for d in docs]
        del docs
        _collect()
        assert all(r() is not None for r in refs)
    # ...and let go once the session is closed
    assert_collected(*refs)


def test_deleted_objects_are_held_strongly(db: Engine, assert_collected: Collected) -> None:
    with Session(db) as s:
        obj = s.scalars(select(Node).where(Node.name == "n4")).one()
        s.delete(obj)
        ref = weakref.ref(obj)
        del obj
        _collect()
        assert ref() is not None
        assert len(s.deleted) == 1
        s.flush()
        s.commit()
        assert_collected(ref)  # detached after commit: nothing holds it
    with Session(db) as s2:
        assert s2.scalars(select(Node).where(Node.name == "n4")).all() == []


def test_expunged_objects_are_released(db: Engine, assert_collected: Collected) -> None:
    with Session(db) as s:
        obj = s.scalars(select(Node).limit(1)).one()
        obj.name = "dirty but expunged"
        s.expunge(obj)
        pending = Node(name="pending but expunged")
        s.add(pending)
        s.expunge(pending)
        refs = [weakref.ref(obj), weakref.ref(pending)]
        del obj, pending
        assert_collected(*refs)
        assert len(s.dirty) == 0 and len(s.new) == 0


def test_clean_states_stay_out_of_the_collector_until_they_hold_a_value(
    db: Engine, assert_collected: Collected
) -> None:
    # a state with an empty snapshot is in no cycle: it is not tracked (the identity map holds
    # its objects by a plain pointer), which keeps a large load cheap for the cyclic collector
    with Session(db) as s:
        nodes = s.scalars(select(Node)).all()
        states = [n.__dict__["_retort_state"] for n in nodes]
        assert states and not any(gc.is_tracked(st) for st in states)
        nodes[0].name = "changed"  # the snapshot keeps the old value: tracked from now on
        assert gc.is_tracked(states[0]) and not gc.is_tracked(states[1])
    # a cycle through a snapshot's value is still collected: the loaded payload, changed in
    # place to refer to its object, then replaced (the snapshot keeps it as committed value)
    with Session(db) as s:
        doc = s.scalars(select(Doc).where(Doc.name == "n1")).one()
        old = doc.payload
        assert old is not None
        old["me"] = doc
        doc.payload = {"other": 1}
        assert gc.is_tracked(doc.__dict__["_retort_state"])
        s.expunge(doc)
        del old
        ref = weakref.ref(doc)
        del doc
    assert_collected(ref)


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11),
    reason="CPython 3.11's shared instance-attribute tables (other versions lay them out "
    "differently)",
)
def test_loaded_objects_share_attribute_names_after_many_were_constructed(
    engine: Engine,
) -> None:
    """CPython freezes a class's shared table of attribute names once specialized code relies
    on it; objects that then need a name missing from it get a whole dict each. Built by
    their constructor first (no key, no state yet), they must not leave loaded objects with
    that larger dict."""

    class FreshBase(DeclarativeBase):
        pass

    class Part(FreshBase):
        __tablename__ = "parts"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        qty: Mapped[int]

    FreshBase.metadata.create_all(engine)
    with Session(engine) as s:
        # enough constructions for the interpreter to specialize the attribute stores
        s.add_all([Part(name=f"p{i}", qty=i) for i in range(2000)])
        s.commit()
    with Session(engine) as s:
        loaded = s.scalars(select(Part)).all()
        assert len(loaded) == 2000
        d = loaded[-1].__dict__
        assert list(d)[:3] == ["id", "name", "qty"]
        # a dict of its own is as large as a copy of it; a shared-names one is smaller
        assert sys.getsizeof(d) < sys.getsizeof(dict(d)), (sys.getsizeof(d), len(d))


@pytest.mark.skipif(
    sys.maxsize < 2**62, reason="the layout of the state is the one of 64-bit platforms"
)
def test_the_state_of_a_persistent_object_takes_72_bytes(db: Engine) -> None:
    """Every loaded object carries a state, so its size is most of what retort adds to a row
    (BENCHMARKS.md's memory target): header and collector header (32), mapper (8), one word for
    the lifecycle, flags, key kind, lock and the object's address (8), the session generation
    (8), the committed snapshot (8) and the key's values (8). States of every key kind and
    lifecycle are the same size."""

    class CodeBase(DeclarativeBase):
        pass

    class Pair(CodeBase):
        __tablename__ = "gc_pairs"
        a: Mapped[str] = mapped_column(primary_key=True)
        b: Mapped[int] = mapped_column(primary_key=True)
        v: Mapped[int]

    CodeBase.metadata.create_all(db)
    with Session(db) as s:
        s.add(Pair(a="x" * 40, b=1, v=1))
        s.commit()
    with Session(db) as s:
        node = s.scalars(select(Node)).first()
        pair = s.scalars(select(Pair)).one()
        assert node is not None
        fresh = Node(name="new")
        s.add(fresh)
        sizes = {
            what: sys.getsizeof(obj.__dict__["_retort_state"])
            for what, obj in [("int key", node), ("composite key", pair), ("pending", fresh)]
        }
        assert sizes == dict.fromkeys(sizes, 72), sizes
        # and the key is the state's: the composite one reads back whole
        assert inspect(pair).identity == ("x" * 40, 1)
        assert s.get(Pair, ("x" * 40, 1)) is pair


# --------------------------------------------------------------------------------------------
# how the identity map learns that an object is gone: the finalizer retort gives mapped classes
# (rust/py/liveness.rs), or a weak reference where it cannot


def _fresh_class(with_del: bool = False) -> type:
    """A mapped class of its own (a class that lost retort's finalizer never gets it back)."""

    class FreshBase(DeclarativeBase):
        pass

    ns: dict[str, Any] = {
        "__tablename__": "nodes",
        "__annotations__": {"id": Mapped[int], "name": Mapped[str]},
        "id": mapped_column(primary_key=True),
    }
    if with_del:
        ns["finalized"] = []
        ns["__del__"] = lambda self: type(self).finalized.append(self.__dict__.get("id"))
    return type("Fresh", (FreshBase,), ns)


def _key(cls: type, ident: int) -> tuple[type, tuple[int], None]:
    return (cls, (ident,), None)


def test_objects_of_a_collected_cycle_leave_the_identity_map(
    db: Engine, sql_log: Log, assert_collected: Collected
) -> None:
    with Session(db) as s:
        nodes = s.scalars(select(Node).order_by(Node.id)).all()
        ids = [n.id for n in nodes]
        for a, b in zip(nodes, [*nodes[1:], nodes[0]], strict=True):
            a.peer = b  # a plain attribute: the objects form one cycle
        refs = [weakref.ref(n) for n in nodes]
        del nodes, a, b
        assert all(r() is not None for r in refs)  # the cycle keeps them until a collection
        assert_collected(*refs)
        assert len(s.identity_map) == 0
        assert all(s.identity_map.get(_key(Node, i)) is None for i in ids)
        sql_log.clear()
        again = s.get(Node, ids[2])
        assert again is not None and again.name == "n2"
        assert [sql.split()[0] for sql, _ in sql_log] == ["SELECT"]


def test_a_class_with_its_own_del_is_followed_by_weak_references(
    db: Engine, assert_collected: Collected
) -> None:
    from retort import _core

    Fresh: Any = _fresh_class(with_del=True)
    assert not _core.adopt_class(Fresh)  # its finalizer is its own __del__
    with Session(db) as s:
        objs = s.scalars(select(Fresh).order_by(Fresh.id)).all()
        ids = [o.id for o in objs]
        refs = [weakref.ref(o) for o in objs[1:]]
        del objs[1:]
        assert_collected(*refs)
        assert sorted(Fresh.finalized) == ids[1:]
        held = [s.identity_map.get(_key(Fresh, i)) is not None for i in ids]
        assert held == [True] + [False] * (len(ids) - 1)


def test_del_given_to_a_mapped_class_later_loses_no_object(
    db: Engine, sql_log: Log, assert_collected: Collected
) -> None:
    from retort import _core

    Fresh: Any = _fresh_class()
    assert _core.adopt_class(Fresh)
    with Session(db) as s:
        objs = s.scalars(select(Fresh).order_by(Fresh.id)).all()
        ids = [o.id for o in objs]
        finalized: list[int] = []
        Fresh.__del__ = lambda self: finalized.append(self.__dict__.get("id"))
        # the class's finalizer is the __del__ now: retort's entries of the class count as
        # gone (the live objects are loaded again, as new instances), and new ones are weak
        keep = objs[0]
        refs = [weakref.ref(o) for o in objs[1:]]
        del objs
        assert_collected(*refs)
        assert sorted(finalized) == ids[1:]
        assert not _core.adopt_class(Fresh)
        # new objects of the same size take the memory of the ones that went
        filler = [Fresh(id=1000 + i, name="x") for i in range(200)]
        assert all(s.identity_map.get(_key(Fresh, i)) is None for i in ids[1:])
        del filler
        sql_log.clear()
        assert s.get(Fresh, ids[1]) is not None
        assert [sql.split()[0] for sql, _ in sql_log] == ["SELECT"]
        assert keep.name == "n0"


def test_an_object_cannot_be_made_an_instance_of_a_class_retort_does_not_follow(
    db: Engine,
) -> None:
    class Plain:
        pass

    with Session(db) as s:
        node = s.scalars(select(Node).limit(1)).one()
        with pytest.raises(TypeError, match="deallocator differs"):
            node.__class__ = Plain  # type: ignore[assignment]
        assert type(node) is Node and s.identity_map.get(_key(Node, node.id)) is node


def test_lookups_during_a_deep_deallocation_find_no_dying_object(engine: Engine) -> None:
    # dropping the head of a long chain of objects deallocates them recursively; CPython
    # defers the deepest ones (its "trashcan"), which then wait with no references and no
    # finalizer run yet. Code that runs meanwhile (here weak-reference callbacks of objects
    # each link holds after the next) must not get them from the identity map.
    Base.metadata.create_all(engine)
    count = 400
    with Session(engine) as s:
        s.add_all([Node(name=f"c{i}") for i in range(count)])
        s.commit()
    with Session(engine) as s:
        chain = s.scalars(select(Node).order_by(Node.id).limit(count)).all()
        ids = [n.id for n in chain]

        class Probe:
            pass

        bad: list[int] = []
        probes: list[weakref.ref[Probe]] = []

        def look(_: object, upto: int) -> None:
            for i in ids[: upto + 1]:
                if s.identity_map.get(_key(Node, i)) is not None:
                    bad.append(i)

        for pos, (a, b) in enumerate(itertools.pairwise(chain)):
            a.nxt = b  # released first when `a` is freed, then its probe
            probe = Probe()
            probes.append(weakref.ref(probe, lambda r, pos=pos: look(r, pos + 1)))
            a.probe = probe
        head = chain[0]
        del chain, a, b, probe
        del head
        assert all(p() is None for p in probes)
        assert bad == []
        assert len(s.identity_map) == 0


def test_a_copy_of_an_object_going_leaves_the_object_in_the_identity_map(
    db: Engine, sql_log: Log
) -> None:
    import copy

    with Session(db) as s:
        node = s.scalars(select(Node).order_by(Node.id).limit(1)).one()
        twin = copy.copy(node)  # shares node's __dict__ contents, its state included
        del twin
        _collect()
        sql_log.clear()
        assert s.get(Node, node.id) is node
        assert sql_log == []


def test_an_object_whose_dict_was_emptied_still_leaves_the_identity_map(
    db: Engine, assert_collected: Collected
) -> None:
    with Session(db) as s:
        nodes = s.scalars(select(Node).order_by(Node.id)).all()
        ids = [n.id for n in nodes]
        victim = nodes.pop()
        victim.__dict__.clear()  # its state is gone from the object; the object lives on
        ref = weakref.ref(victim)
        del victim
        assert_collected(ref)
        # new objects of the same size take the memory of the one that went
        filler = [Node(name="x") for _ in range(200)]
        assert s.identity_map.get(_key(Node, ids[-1])) is None
        assert [s.identity_map.get(_key(Node, i)) for i in ids[:-1]] == nodes
        del filler
