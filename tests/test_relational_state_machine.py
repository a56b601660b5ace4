"""A Session over related tables driven through random steps, checked against a pure model.

The schema is tests/_diff_models.py: Parent 1-* Child through the nullable children.parent_id
with `cascade="all, delete-orphan"` (a child taken out of its parent's collection is deleted by
the next flush rather than left with a NULL parent; a child added without a parent is allowed),
Parent *-* Tag through the association table parent_tags, and the self-referential Node
(nullable nodes.parent_id, default cascade). Keys are natural, so the model can name every row.

The steps: add a parent, a child (on its own, appended to a parent's collection, or given a
parent), a tag (on its own, appended to a parent's tags, or given parents) or a node (on its own,
under a node, appended to a node's children); set a column (the unique parents.code included);
move a child to another parent (by setting `child.parent` or appending to the other parent's
collection); take a child out of its parent (removing it from the collection, or setting
`child.parent = None`: delete-orphan); link and unlink a parent and a tag from either side; set
or clear a node's parent (never making a cycle); delete (a parent with its children, a tag with
its association rows, a node whose children get a NULL parent_id); read a relationship (lazy
loads); get(); merge() of a detached object, of an object of the session or of a new transient
copy with an existing or a new key; expunge (a parent with the children it has loaded);
expire_all; flush; commit; rollback; begin_nested with release or rollback of the innermost
SAVEPOINT. Operands are objects the program handles or stored rows it loads with get().

The pure-Python model keeps the committed rows, the rows the open transaction sees, a snapshot of
them per SAVEPOINT, and the rows the next flush would leave (every change of the session
applied). Per object it keeps the expected lifecycle, the column values a read must give (what a
reload gives where they are expired), which attributes are expired, and each relationship's
in-memory state: not loaded, loaded (with its exact content: a loaded collection keeps deleted
objects until it is expired, as in SQLAlchemy), or "loaded as before, or expired" after a
SAVEPOINT rollback. It encodes where SQLAlchemy 2.x emits SQL, and so autoflushes: loading an
unloaded collection, a many-to-one whose target is not in the identity map (or is expired), an
expired attribute, get() misses and expired hits, merge() and cascading delete().

After every step: each object's `inspect()` lifecycle and `obj in session`, `session.new` and
`session.deleted`, which relationships are loaded and what the loaded ones hold, and the
committed rows of all five tables (read through a separate autocommit connection, which sees
only committed data) agree with the model. Flushes compare the rows the session's transaction
sees; commits compare the committed rows; rollbacks (of the transaction or a SAVEPOINT) check
that objects are transient, persistent or detached as the restored rows say and that reading
them gives the restored values.

The same machine runs on SQLAlchemy 2.x (the `sqlalchemy` parameter): that run is the evidence
that the model encodes SQLAlchemy's semantics. Where the two may legitimately differ in what is
loaded or expired (SQLAlchemy loads an expired object to UPDATE it, or counts a value set again
unchanged as a change that a SAVEPOINT rollback expires), the model accepts either and checks
the content. The `test_bug_*` tests at the end reproduce, deterministically, each divergence the
machine found in retort. The fixed ones run on both libraries (`both_libraries`) and the machine
draws their cases, the model predicting SQLAlchemy's behaviour there; one still open would be a
strict xfail on retort (passing on SQLAlchemy), kept out of the draw next to its name. None is
open at present (the two the differential search found last are fixed:
test_rollback_restores_an_object_whose_key_a_row_switch_took and
test_bug_the_save_update_cascade_follows_members_taken_out_of_a_collection; this machine still
draws new objects with free keys only, never the key of a deleted or stale object).
Cases where SQLAlchemy itself fails, warns or ends up inconsistent, or where SPEC §5 lets retort
do better (cycles through nodes.parent_id, unique codes changing hands in one flush), are kept
out as well, as are a few whose outcome depends on what the model cannot know (whether the
identity map holds an object expired, or which instance a relationship holds), each with the
reason where the draw leaves it out. `test_the_checks_can_fail` shows that each kind of check
notices a change made behind the model's back.

Settings: the "ci" profile by default; `HYPOTHESIS_PROFILE=nightly` runs many more examples.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

# The shared schema (tests/_diff_models.py, built on tests/_rel_models.py). Both declare models
# with `orm.Mapped[...]` annotations on a runtime namespace, which mypy cannot resolve (by
# design, see their docstrings): imported by name so that checking this file does not report
# their errors.
_diff_models: Any = importlib.import_module("tests._diff_models")
_rel_models: Any = importlib.import_module("tests._rel_models")
INITIAL_ROWS: dict[str, list[tuple[Any, ...]]] = _diff_models.INITIAL_ROWS
TABLES: dict[str, tuple[str, str]] = _diff_models.TABLES
declare = _diff_models.declare
fetch_rows = _diff_models.fetch_rows
reset_rows = _diff_models.reset_rows
sqlalchemy_api = _rel_models.sqlalchemy_api
Api: TypeAlias = Any  # tests._rel_models.Api: one library's names, engine and connection
Models: TypeAlias = Any  # tests._diff_models.Models: the four model classes

# Per-file settings chosen by HYPOTHESIS_PROFILE, without registering global profiles (which
# would replace those of test_session_state_machine.py).
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
_PROFILES = {
    # derandomized: the same programs every run, so that a CI failure is a regression
    "ci": settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=_SUPPRESS,
        derandomize=True,
        database=None,
    ),
    "nightly": settings(
        max_examples=1000, stateful_step_count=60, deadline=None, suppress_health_check=_SUPPRESS
    ),
}


def _profile() -> settings:
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    return _PROFILES.get(name, _PROFILES["ci"])


# --------------------------------------------------------------------------------------------
# the schema as the model sees it

CLASSES = ("Parent", "Child", "Tag", "Node")
TABLE: dict[str, str] = _diff_models.TABLE_OF
# non-key columns, in table order (a row is (id, *these))
COLS: dict[str, tuple[str, ...]] = {
    "Parent": ("name", "code"),
    "Child": ("name", "parent_id"),
    "Tag": ("label",),
    "Node": ("name", "parent_id"),
}
NAME = {"Parent": "name", "Child": "name", "Tag": "label", "Node": "name"}
RELS: dict[str, tuple[str, ...]] = {
    "Parent": ("children", "tags"),
    "Child": ("parent",),
    "Tag": ("parents",),
    "Node": ("parent", "children"),
}
NAMES = ["a", "b"]
CODES = [None, "x", "y", "z"]
MAX_KEY = 7  # keys 1..MAX_KEY; the initial rows use 1..4
MAX_SAVEPOINTS = 2

Row = tuple[Any, ...]


@dataclass
class Rows:
    """Rows of the four tables (id -> the other columns) and the parent_tags pairs."""

    tables: dict[str, dict[int, Row]]
    links: set[tuple[int, int]]

    @classmethod
    def initial(cls) -> Rows:
        tables = {c: {r[0]: tuple(r[1:]) for r in INITIAL_ROWS[TABLE[c]]} for c in CLASSES}
        return cls(tables, {(p, t) for p, t in INITIAL_ROWS["parent_tags"]})

    def copy(self) -> Rows:
        return Rows({c: dict(t) for c, t in self.tables.items()}, set(self.links))

    def listing(self) -> dict[str, list[Row]]:
        """The rows as tests/_diff_models.fetch_rows() returns them."""
        out: dict[str, list[Row]] = {
            TABLE[c]: [(k, *v) for k, v in sorted(self.tables[c].items())] for c in CLASSES
        }
        out["parent_tags"] = sorted(self.links)
        return out

    def fk(self, cls: str, pk: int) -> int | None:
        value: int | None = self.tables[cls][pk][1]
        return value

    def related(self, cls: str, pk: int, attr: str) -> list[tuple[str, int]]:
        """(class, key) of what loading `attr` of object (cls, pk) finds, in key order."""
        if attr == "tags":
            return [("Tag", t) for p, t in sorted(self.links) if p == pk]
        if attr == "parents":
            return [("Parent", p) for p in sorted(p for p, t in self.links if t == pk)]
        target = "Node" if cls == "Node" else "Child"
        return [(target, k) for k, r in sorted(self.tables[target].items()) if r[1] == pk]


class _Unloaded:
    def __repr__(self) -> str:
        return "UNLOADED"


UNLOADED: Any = _Unloaded()


class _Opaque:
    def __repr__(self) -> str:
        return "OPAQUE"


# loaded or not, with a content the model cannot name (objects that left the session since):
# never relied on, never checked
OPAQUE: Any = _Opaque()


@dataclass
class Maybe:
    """A relationship that was loaded with `prev` and that a SAVEPOINT rollback may or may not
    have expired (SQLAlchemy expires only the objects changed inside the SAVEPOINT)."""

    prev: Any  # list[Obj] for a collection, Obj | None for a many-to-one


# expected lifecycles; "marked" is persistent and in session.deleted (delete() not flushed yet)
IN_SESSION = ("pending", "persistent", "marked")


@dataclass(eq=False)
class Obj:
    """One object the program handles and what the model expects of it."""

    obj: Any
    cls: str
    id: int
    state: str
    # what reading each column gives ("id" and COLS; for an expired one: what a reload gives)
    cols: dict[str, Any]
    # Child/Node: the parent key the next flush writes (cols["parent_id"] is the in-memory
    # value, which a relationship change only updates at the flush)
    lfk: int | None = None
    # persistent, taken out of its parent: the next flush deletes it (delete-orphan)
    orphan: bool = False
    # columns that are expired (a read loads them; autoflush first)
    expired: set[str] = field(default_factory=set)
    # expired as a whole (SQLAlchemy's state.expired: an identity-map lookup that may not emit
    # SQL does not see it); a load of its attributes clears it, a blind set does not
    full_expired: bool = False
    # relationship -> UNLOADED, Maybe, OPAQUE, a list of Obj (a loaded collection, in order)
    # or Obj | None (a loaded many-to-one)
    rel: dict[str, Any] = field(default_factory=dict)
    # SAVEPOINT depth (0: the transaction) at which the INSERT / DELETE was flushed
    ins_level: int | None = None
    del_level: int | None = None
    # deepest SAVEPOINT depth at which it was changed (-1: not since the last expiry; a backref
    # change queued on an unloaded collection counts); the weak level counts changes that a
    # SAVEPOINT rollback may or may not expire (an unchanged value set again, or a backref
    # removal finding nothing in a loaded collection, which retort does not count; a key nulled
    # by the flush of a deleted node; changes before expire_all())
    mod_level: int = -1
    weak_level: int = -1
    # changed since the last flush or expiry (even where its row stays the same)
    dirty: bool = False
    # given a new parent (added to a one-to-many collection) since the last flush
    moved: bool = False
    # the columns in `expired` may have been loaded since: a flush UPDATEd the object while it
    # was expired (SQLAlchemy loads it first for its key, retort does not need to)
    maybe_loaded: bool = False
    # deleted by a flush: relationship -> what the flush may have loaded into it (unloaded
    # before), a list of Obj as the transaction's rows held it then, or OPAQUE
    at_delete: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{self.cls}({self.id}, {self.state}{', orphan' if self.orphan else ''})"

    def in_session(self) -> bool:
        return self.state in IN_SESSION

    def live(self) -> bool:
        """In the session and neither deleted nor orphaned: may be changed and related."""
        return self.state in ("pending", "persistent") and not self.orphan

    def row(self) -> Row:
        """The row a flush writes for this (live) object."""
        if self.cls in ("Child", "Node"):
            return (self.cols["name"], self.lfk)
        return tuple(self.cols[c] for c in COLS[self.cls])


def _lifecycle(api: Api, obj: Any) -> list[str]:
    insp = api.inspect(obj)
    return [
        s for s in ("transient", "pending", "persistent", "deleted", "detached") if getattr(insp, s)
    ]


def _loaded(api: Api, obj: Any, attr: str) -> bool:
    """Whether `attr` holds a value that reading it returns without SQL."""
    insp = api.inspect(obj)
    return attr in insp.dict and attr not in insp.unloaded


# --------------------------------------------------------------------------------------------
# fixtures: the library under test, with the models declared in a fresh schema


@pytest.fixture(params=["retort", "sqlalchemy"])
def orm(
    request: pytest.FixtureRequest, dsn: str, schema: str, admin_conn: psycopg.Connection[Any]
) -> Iterator[Api]:
    if request.param == "retort":
        yield _rel_models.Api("retort", request.getfixturevalue("engine"), [], admin_conn)
        return
    pytest.importorskip("sqlalchemy")
    api = sqlalchemy_api(dsn, schema, admin_conn)
    try:
        yield api
    finally:
        api.engine.dispose()


@pytest.fixture
def models(orm: Api) -> Models:
    return declare(orm)


# --------------------------------------------------------------------------------------------
# the machine


def make_machine(
    orm: Api, models: Models, admin_conn: psycopg.Connection[Any], schema: str
) -> type[RuleBasedStateMachine]:
    """The state machine class for one library (its session, models and schema)."""

    def committed_rows() -> dict[str, list[Row]]:
        return {t: [tuple(r) for r in rows] for t, rows in fetch_rows(admin_conn, schema).items()}

    class RelationalMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            reset_rows(admin_conn, schema)
            self.session: Any = orm.Session(orm.engine)
            self.objs: list[Obj] = []
            self.index: dict[int, Obj] = {}  # id(obj) -> its Obj
            self.committed = Rows.initial()
            self.flushed = Rows.initial()  # what the transaction sees
            self.want = Rows.initial()  # what the next flush leaves
            self.savepoints: list[Rows] = []
            self.sp_txs: list[Any] = []

        def teardown(self) -> None:
            self.session.close()

        # -- model helpers ------------------------------------------------------------------

        @property
        def depth(self) -> int:
            return len(self.savepoints)

        def of(self, cls: str, *states: str) -> list[Obj]:
            return [o for o in self.objs if o.cls == cls and (not states or o.state in states)]

        def live(self, cls: str) -> list[Obj]:
            return [o for o in self.objs if o.cls == cls and o.live()]

        def by_obj(self, obj: Any) -> Obj | None:
            return self.index.get(id(obj))

        def idmap(self, cls: str, pk: int) -> Obj | None:
            """The object of the identity map with this key (pending ones are not in it)."""
            self.track_identity_map()
            return self.idmap_known(cls, pk)

        def idmap_known(self, cls: str, pk: int) -> Obj | None:
            for o in self.objs:
                if o.cls == cls and o.id == pk and o.state in ("persistent", "marked"):
                    return o
            return None

        def taken(self, cls: str) -> set[int]:
            keys = set(self.want.tables[cls]) | set(self.flushed.tables[cls])
            keys |= set(self.committed.tables[cls])
            keys.update(o.id for o in self.of(cls, "pending", "persistent", "marked", "deleted"))
            return keys

        def has_work(self) -> bool:
            return self.want != self.flushed

        def touch(self, *objs: Obj | None, weak: bool = False) -> None:
            """Record a change of these objects (which a SAVEPOINT rollback expires)."""
            for o in objs:
                if o is None:
                    continue
                o.dirty = True
                if weak:
                    o.weak_level = max(o.weak_level, self.depth)
                else:
                    o.mod_level = max(o.mod_level, self.depth)

        def model_flush(self) -> None:
            """What a flush (explicit or automatic) does to the model."""
            before = self.flushed
            self.flushed = self.want.copy()
            for p, t in before.links ^ self.flushed.links:
                # an association row written or deleted: SQLAlchemy reads the keys of both
                # objects for it, which loads an expired one (retort need not)
                for x in (self.idmap_known("Parent", p), self.idmap_known("Tag", t)):
                    if x is not None and x.expired:
                        x.maybe_loaded = True
            for cls in ("Child", "Node"):
                target_cls = "Parent" if cls == "Child" else "Node"
                for k, row in self.flushed.tables[cls].items():
                    old = before.tables[cls].get(k)
                    if row[1] is not None and (old is None or old[1] != row[1]):
                        # a row written with a new parent: SQLAlchemy reads the parent's key
                        # for it, which loads the parent where it is expired (retort need not)
                        x = self.idmap_known(target_cls, row[1])
                        if x is not None and x.expired:
                            x.maybe_loaded = True
            for o in self.objs:
                if o.cls in ("Parent", "Tag") and (
                    o.state == "marked" or (o.state == "persistent" and o.orphan)
                ):
                    # its DELETE loads the other side of its association rows, which refreshes
                    # the expired objects of the identity map among them
                    side = 0 if o.cls == "Parent" else 1
                    for link in before.links:
                        if link[side] == o.id:
                            other = "Tag" if o.cls == "Parent" else "Parent"
                            x = self.idmap_known(other, link[1 - side])
                            if x is not None and x.expired:
                                x.maybe_loaded = True
            for o in self.objs:
                if o.state == "marked" or (o.state == "persistent" and o.orphan):
                    # a collection its DELETE loads holds the rows as they were before this
                    # flush, which a SAVEPOINT rollback restoring the object may keep
                    o.at_delete = {}
                    for r in RELS[o.cls]:
                        if r != "parent" and o.rel[r] is UNLOADED:
                            found = [
                                self.idmap_known(c, k) for c, k in before.related(o.cls, o.id, r)
                            ]
                            o.at_delete[r] = OPAQUE if None in found else found
            self.note_keys_read_by_the_flush()
            for o in self.objs:
                o.moved = o.dirty = False
                if (
                    o.state == "persistent"
                    and not o.orphan
                    and o.expired
                    and before.tables[o.cls][o.id] != self.flushed.tables[o.cls][o.id]
                ):
                    # SQLAlchemy loads it first (its UPDATE needs the expired key)
                    o.maybe_loaded = True
                if o.state == "pending":
                    o.state = "persistent"
                    o.ins_level = self.depth
                elif o.state == "marked" or (o.state == "persistent" and o.orphan):
                    o.state = "deleted"
                    o.orphan = False
                    o.del_level = self.depth
                    # the flush may load what it needs of it (association rows, children to
                    # cascade or null, the many-to-one)
                    o.rel = {r: OPAQUE if v is UNLOADED else v for r, v in o.rel.items()}
                    continue
                if o.state == "persistent" and o.cls in ("Child", "Node"):
                    assert o.lfk == self.flushed.fk(o.cls, o.id), (o, o.lfk)
                    if o.cols["parent_id"] != o.lfk:
                        o.cols["parent_id"] = o.lfk
                        if "parent_id" in o.expired:
                            # an expired child of a deleted node: SQLAlchemy loads and nulls
                            # it, retort may just UPDATE the row
                            o.maybe_loaded = True

        def autoflush(self) -> None:
            if self.has_work():
                self.model_flush()
            else:
                # a flush with no row to write still runs for changed objects
                self.note_keys_read_by_the_flush()

        def note_keys_read_by_the_flush(self) -> None:
            """An expired persistent object changed since the last flush (a collection's queued
            change, netting to nothing, included) takes part in SQLAlchemy's flush, which reads
            its expired key to register it afterwards, loading it (retort need not)."""
            for o in self.objs:
                if o.state == "persistent" and o.dirty and o.expired:
                    o.maybe_loaded = True

        def expire(self, o: Obj, rows: Rows) -> None:
            """Expire every attribute of `o` (a persistent object) against `rows`."""
            row = rows.tables[o.cls][o.id]
            o.cols = {"id": o.id, **dict(zip(COLS[o.cls], row, strict=True))}
            if o.cls in ("Child", "Node"):
                o.lfk = row[1]
            o.expired = {"id", *COLS[o.cls]}
            o.full_expired = True
            o.rel = {r: UNLOADED for r in RELS[o.cls]}
            o.orphan = False
            o.moved = o.dirty = False
            o.maybe_loaded = False
            o.mod_level = o.weak_level = -1

        def new_obj(self, obj: Any, cls: str, state: str, cols: dict[str, Any]) -> Obj:
            o = Obj(obj, cls, cols["id"], state, cols, rel={r: UNLOADED for r in RELS[cls]})
            if cls in ("Child", "Node"):
                o.lfk = cols["parent_id"]
            self.objs.append(o)
            self.index[id(obj)] = o
            return o

        def loaded_obj(self, obj: Any, cls: str, pk: int) -> Obj:
            """Track `obj`, just loaded from the row (cls, pk) the transaction sees."""
            assert type(obj).__name__ == cls and orm.inspect(obj).identity == (pk,), (obj, pk)
            assert self.idmap_known(cls, pk) is None, (cls, pk)
            row = self.flushed.tables[cls][pk]
            return self.new_obj(
                obj, cls, "persistent", {"id": pk, **dict(zip(COLS[cls], row, strict=True))}
            )

        def expect_loaded(self, actual: list[Any], expected: list[tuple[str, int]]) -> list[Obj]:
            """Match the objects a load returned with the (class, key) pairs the model expects,
            tracking the ones the identity map did not hold."""
            got = [(type(a).__name__, orm.inspect(a).identity) for a in actual]
            assert got == [(c, (k,)) for c, k in expected], (got, expected)
            out = []
            for a, (cls, pk) in zip(actual, expected, strict=True):
                known = self.idmap_known(cls, pk)
                if known is None:
                    known = self.loaded_obj(a, cls, pk)
                assert a is known.obj, (cls, pk, "not the identity map's instance")
                # a row of an identity-map object fills in what is expired (and keeps the rest)
                self.loaded_columns(known)
                out.append(known)
            return out

        # -- collections and many-to-ones in memory -----------------------------------------

        def coll_add(self, owner: Obj, attr: str, item: Obj) -> None:
            """`item` appended to `owner.attr` (directly or as a backref)."""
            v = owner.rel[attr]
            if isinstance(v, list):
                v.append(item)
            elif isinstance(v, Maybe):
                v.prev.append(item)
            elif owner.state == "pending":
                owner.rel[attr] = [item]  # initialised empty, then appended to
            # else unloaded: queued until it loads or is expired (no SQL now); the owner counts
            # as changed either way
            self.touch(owner)

        def coll_remove(self, owner: Obj, attr: str, item: Obj) -> None:
            v = owner.rel[attr]
            seq = v if isinstance(v, list) else v.prev if isinstance(v, Maybe) else None
            for i, x in enumerate(seq or ()):  # (unloaded: queued, as in coll_add)
                if x is item:
                    del seq[i]
                    break
            # (not found, the loaded collection holding another instance of the row, it counts
            # as a change all the same: test_bug_backref_removal_of_a_missing_object_is_not_a_
            # change)
            self.touch(owner)

        def old_parent(self, o: Obj) -> tuple[bool, Obj | None]:
            """(known, value): the old value SQLAlchemy finds when `o.parent` is set without
            emitting SQL (the loaded value, or an identity-map lookup of the foreign key that
            skips expired objects)."""
            v = o.rel["parent"]
            if v is OPAQUE:
                return False, None
            if v is not UNLOADED and not isinstance(v, Maybe):
                return True, v
            if o.state == "pending":
                return True, None
            if "parent_id" in o.expired:
                return False, None
            fk = o.cols["parent_id"]
            if fk is None:
                return True, None
            target = self.idmap("Parent" if o.cls == "Child" else "Node", fk)
            if target is None or not self.settle(target) or target.full_expired:
                return False, None
            return True, target

        def set_parent(self, o: Obj, new: Obj | None, old: Obj | None) -> None:
            """The model side of `o.parent = new` (Child or Node), `old` the old value."""
            if old is not None:
                self.coll_remove(old, "children", o)
            if new is not None:
                self.coll_add(new, "children", o)
            o.rel["parent"] = new
            o.lfk = None if new is None else new.id
            o.moved = o.moved or new is not None
            self.touch(o)

        # -- loading --------------------------------------------------------------------------

        def settle(self, o: Obj) -> bool:
            """Find out whether `o` (live) is still expired where a flush may have loaded it:
            flush whatever is pending (so that a load does not autoflush), then read."""
            if not o.maybe_loaded:
                return True
            if not o.live():
                return False
            rest = [c for c in COLS[o.cls] if c in o.expired]
            if rest:  # (retort never expires the key: nothing else expired means loaded)
                if self.has_work():
                    self.session.flush()
                    self.model_flush()
                assert getattr(o.obj, rest[0]) == o.cols[rest[0]], (o, rest[0])
            self.loaded_columns(o)
            return True

        def loaded_columns(self, o: Obj) -> None:
            o.expired.clear()
            o.full_expired = False
            o.maybe_loaded = False

        def fresh(self, o: Obj) -> bool:
            """Make sure `o` (live, persistent) has its columns loaded: read an expired one,
            which autoflushes and loads them all. False when only the key is expired (retort
            never expires keys, SQLAlchemy does: they would differ on whether that load
            happens)."""
            if not self.settle(o):
                return False
            if not o.expired:
                return True
            rest = [c for c in COLS[o.cls] if c in o.expired]
            if not rest:
                return False
            self.autoflush()
            assert getattr(o.obj, rest[0]) == o.cols[rest[0]], (o, rest[0])
            self.loaded_columns(o)
            return True

        def load(self, o: Obj, attr: str) -> bool:
            """Make sure `o.attr` is loaded (`o` live), as reading it does; True when the model
            knows its content afterwards."""
            v = o.rel[attr]
            if v is OPAQUE:
                return False
            if isinstance(v, list) or o.state == "pending":
                return True
            if attr == "parent" and v is not UNLOADED and not isinstance(v, Maybe):
                return True
            if not self.fresh(o):
                return False
            if isinstance(v, Maybe):
                # loaded as before, or expired: flush first so that a load does not autoflush
                if self.has_work():
                    self.session.flush()
                    self.model_flush()
                was_loaded = _loaded(orm, o.obj, attr)
                value = getattr(o.obj, attr)
                if was_loaded:
                    if attr == "parent":
                        assert value is (None if v.prev is None else v.prev.obj), (o, attr)
                        o.rel[attr] = v.prev
                    else:
                        assert [x for x in value] == [x.obj for x in v.prev], (o, attr)
                        o.rel[attr] = v.prev
                    return True
                o.rel[attr] = UNLOADED
                self.loaded_value(o, attr, value)
                return True
            if attr == "parent":
                # by the in-memory key (a pending delete of the parent nulls it only at the flush)
                fk = o.cols["parent_id"]
                target_cls = "Parent" if o.cls == "Child" else "Node"
                target = None if fk is None else self.idmap(target_cls, fk)
                if target is not None and not self.settle(target):
                    return False
                if target is not None and target.full_expired:
                    if not target.live():
                        return False
                    # the identity map holds it expired: loading it autoflushes first
                    self.autoflush()
                    value = o.obj.parent
                    self.loaded_columns(target)
                elif fk is not None and target is None:
                    self.autoflush()
                    value = o.obj.parent
                else:
                    value = o.obj.parent
                self.loaded_value(o, attr, value)
                return True
            self.autoflush()  # lazy loads autoflush
            self.loaded_value(o, attr, getattr(o.obj, attr))
            return True

        def loaded_value(self, o: Obj, attr: str, value: Any) -> None:
            """Check what a (lazy) load of `o.attr` returned against the transaction's rows."""
            if attr == "parent":
                fk = o.cols["parent_id"]
                target_cls = "Parent" if o.cls == "Child" else "Node"
                if fk is None:
                    assert value is None, (o, value)
                    o.rel[attr] = None
                else:
                    [target] = self.expect_loaded([value], [(target_cls, fk)])
                    o.rel[attr] = target
                return
            o.rel[attr] = self.expect_loaded(list(value), self.flushed.related(o.cls, o.id, attr))

        def collection(self, o: Obj, attr: str) -> list[Obj]:
            """The model's content of a loaded collection (or of a pending object's)."""
            v = o.rel[attr]
            if v is UNLOADED:
                assert o.state == "pending", o
                return []
            assert isinstance(v, list), (o, attr, v)
            return v

        # -- choosing operands ----------------------------------------------------------------

        def pick(self, data: st.DataObject, choices: list[Obj], label: str) -> Obj | None:
            if not choices:
                return None
            return data.draw(st.sampled_from(choices), label=label)

        def obtain(self, data: st.DataObject, cls: str, label: str) -> Obj | None:
            """A live object of `cls`: one the program handles, or a stored row loaded with
            get() (which autoflushes first)."""
            handled = self.live(cls)
            loadable = [
                k
                for k in sorted(self.want.tables[cls])
                if self.idmap(cls, k) is None and not self.of_key(cls, k, "pending")
            ]
            options = [("handled", i) for i in range(len(handled))]
            options += [("row", k) for k in loadable]
            if not options:
                return None
            kind, x = data.draw(st.sampled_from(options), label=label)
            if kind == "handled":
                return handled[x]
            return self.get_miss(cls, x)

        def of_key(self, cls: str, pk: int, *states: str) -> Obj | None:
            for o in self.objs:
                if o.cls == cls and o.id == pk and o.state in states:
                    return o
            return None

        def get_miss(self, cls: str, pk: int) -> Obj | None:
            """session.get() of a key the identity map does not hold: autoflush, then SELECT."""
            self.autoflush()
            obj = self.session.get(models.by_name(cls), pk)
            if pk not in self.flushed.tables[cls]:
                assert obj is None, (cls, pk)
                return None
            known = self.idmap_known(cls, pk)  # a pending object the autoflush inserted
            if known is not None:
                assert obj is known.obj
                return known
            return self.loaded_obj(obj, cls, pk)

        def free_key(self, data: st.DataObject, cls: str) -> int | None:
            free = [k for k in range(1, MAX_KEY + 1) if k not in self.taken(cls)]
            if not free:
                return None
            return data.draw(st.sampled_from(free), label=f"new {cls} key")

        # -- adding ---------------------------------------------------------------------------

        def construct(self, cls: str, pk: int, name: str, with_fk: bool) -> Any:
            # every column given, so that the INSERT leaves none unloaded (SQLAlchemy expires
            # a column an INSERT leaves out, retort knows it is NULL)
            kwargs: dict[str, Any] = {"id": pk, NAME[cls]: name}
            if cls == "Parent":
                kwargs["code"] = None
            if with_fk and cls in ("Child", "Node"):
                kwargs["parent_id"] = None
            return models.by_name(cls)(**kwargs)

        def pending(self, obj: Any, cls: str, pk: int, name: str) -> Obj:
            cols = {"id": pk, **{c: None for c in COLS[cls]}, NAME[cls]: name}
            o = self.new_obj(obj, cls, "pending", cols)
            o.mod_level = self.depth
            return o

        @rule(data=st.data(), cls=st.sampled_from(CLASSES), name=st.sampled_from(NAMES))
        def add_plain(self, data: st.DataObject, cls: str, name: str) -> None:
            pk = self.free_key(data, cls)
            if pk is None:
                return
            if cls == "Parent" and data.draw(st.booleans(), label="with a new child"):
                cpk = self.free_key(data, "Child")
                if cpk is None:
                    return
                child = self.construct("Child", cpk, name, False)
                obj = models.Parent(id=pk, name=name, code=None, children=[child])
                self.session.add(obj)  # cascades to the child
                p = self.pending(obj, "Parent", pk, name)
                c = self.pending(child, "Child", cpk, name)
                p.rel["children"] = [c]
                c.rel["parent"] = p
                c.lfk = pk
                self.want.tables["Parent"][pk] = p.row()
                self.want.tables["Child"][cpk] = c.row()
                return
            obj = self.construct(cls, pk, name, True)
            self.session.add(obj)
            o = self.pending(obj, cls, pk, name)
            self.want.tables[cls][pk] = o.row()

        @rule(
            data=st.data(),
            cls=st.sampled_from(["Child", "Tag", "Node"]),
            name=st.sampled_from(NAMES),
            via_collection=st.booleans(),
        )
        def add_related(
            self, data: st.DataObject, cls: str, name: str, via_collection: bool
        ) -> None:
            owner = self.obtain(data, "Node" if cls == "Node" else "Parent", "owner")
            if owner is None:
                return
            attr = {"Child": "children", "Tag": "tags", "Node": "children"}[cls]
            if via_collection:
                # appended to the owner's collection, which loads it first (autoflush); the
                # save-update cascade adds it
                if not self.load(owner, attr) or not owner.live():
                    return
                pk = self.free_key(data, cls)
                if pk is None:
                    return
                obj = self.construct(cls, pk, name, False)
                getattr(owner.obj, attr).append(obj)
                o = self.pending(obj, cls, pk, name)
                if cls == "Tag":
                    self.coll_add(owner, attr, o)
                    o.rel["parents"] = [owner]
                    self.want.links.add((owner.id, pk))
                else:
                    self.set_parent(o, owner, None)
                self.want.tables[cls][pk] = o.row()
                return
            # given its owner on its own side (a backref event, which does not cascade it into
            # the session in SQLAlchemy 2.x), then added
            pk = self.free_key(data, cls)
            if pk is None:
                return
            obj = self.construct(cls, pk, name, False)
            if cls == "Tag":
                obj.parents.append(owner.obj)
            else:
                obj.parent = owner.obj
            assert obj not in self.session
            self.session.add(obj)
            o = self.pending(obj, cls, pk, name)
            if cls == "Tag":
                o.rel["parents"] = [owner]
                self.coll_add(owner, "tags", o)
                self.want.links.add((owner.id, pk))
            else:
                self.set_parent(o, owner, None)
            self.want.tables[cls][pk] = o.row()

        # -- changing columns -----------------------------------------------------------------

        @rule(data=st.data(), cls=st.sampled_from(CLASSES))
        def set_column(self, data: st.DataObject, cls: str) -> None:
            o = self.obtain(data, cls, "object")
            if o is None:
                return
            attr = data.draw(st.sampled_from([c for c in COLS[cls] if c != "parent_id"]))
            value = data.draw(st.sampled_from(CODES if attr == "code" else NAMES), label="value")
            if attr == "code" and value is not None:
                used = {r[1] for r in self.want.tables["Parent"].values()}
                used |= {r[1] for r in self.flushed.tables["Parent"].values()}
                if value in used:
                    # a unique value changing hands within one flush: SQLAlchemy's UPDATE order
                    # may violate the constraint where retort's does not (SPEC §5)
                    return
            if cls == "Node" and self.node_flush_cycle(o, o.lfk):
                return  # see node_flush_cycle()
            if not self.settle(o):
                return
            same = value == o.cols[attr]
            if same and attr in o.expired:
                return  # SQLAlchemy cannot tell it is unchanged: it UPDATEs (loading the object)
            setattr(o.obj, attr, value)  # no SQL, even where expired (a blind set)
            o.cols[attr] = value
            o.expired.discard(attr)
            # an unchanged value: SQLAlchemy counts the object as changed, retort does not (a
            # SAVEPOINT rollback may expire it or not, which the model allows for)
            self.touch(o, weak=same)
            self.want.tables[cls][o.id] = o.row()

        # -- one-to-many with delete-orphan, and the self-referential many-to-one ------------

        def settable(self, o: Obj) -> tuple[bool, bool, Obj | None]:
            """Whether `o.parent` may be set now, whether its old value is known, and the old
            value. Refreshes `o` first where its foreign key is expired."""
            if o.state == "persistent" and "parent_id" in o.expired and not o.orphan:
                if not self.fresh(o):
                    return False, False, None
            known, old = self.old_parent(o)
            if not known and isinstance(o.rel["parent"], Maybe):
                # loaded as before (SQLAlchemy knows the old value, and an old parent left out
                # of the identity map still loses it from its collection: delete-orphan) or
                # expired (an identity-map lookup that does not find it): unknown
                return False, False, None
            if old is not None and not old.live():
                return False, known, None  # its old parent is deleted or detached
            # not known: the old parent is not in the identity map (or is expired there) and
            # o.parent is not loaded; SQLAlchemy sets it without SQL and without a backref event
            # on the old parent
            return True, known, old

        @rule(data=st.data(), how=st.sampled_from(["set", "append"]))
        def move_child(self, data: st.DataObject, how: str) -> None:
            # to another parent; an orphan (taken out, not flushed yet) may get a new one
            c = self.pick(data, self.of("Child", "pending", "persistent"), "child")
            if c is None:
                return
            p = self.obtain(data, "Parent", "to")
            if p is None or c.state not in ("pending", "persistent"):
                return  # (getting the parent autoflushed, deleting the orphan)
            # (settable() may refresh the child, autoflushing: before the collection is loaded)
            ok, known, old = self.settable(c)
            if not ok or old is p or not p.live() or c.state not in ("pending", "persistent"):
                return
            if how == "append":
                if c.orphan and p.state != "pending" and not isinstance(p.rel["children"], list):
                    # loading the collection would autoflush and delete the orphan first
                    # (SQLAlchemy then refuses to append a deleted object)
                    return
                if not self.load(p, "children") or not p.live():
                    return
            if not known and c.cols["parent_id"] == p.id:
                # the parent its key names already: retort keeps child.parent unloaded, where
                # SQLAlchemy records the value (no difference in the rows)
                return
            if c.state == "pending" and old is not None:
                # SQLAlchemy takes it out of the old collection before it records the new
                # parent, and delete-orphan expunges a pending orphan at once; nothing adds it
                # back (the flush then warns about it)
                return
            if how == "set":
                c.obj.parent = p.obj
            else:
                p.obj.children.append(c.obj)
            self.set_parent(c, p, old)
            c.orphan = False
            self.want.tables["Child"][c.id] = c.row()

        @rule(data=st.data(), how=st.sampled_from(["remove", "set_none"]))
        def orphan_child(self, data: st.DataObject, how: str) -> None:
            if how == "remove":
                p = self.obtain(data, "Parent", "parent")
                if p is None or not self.load(p, "children") or not p.live():
                    return
                c = self.pick(data, [c for c in self.collection(p, "children") if c.live()], "c")
                if c is None:
                    return
                v = c.rel["parent"]
                if v is OPAQUE or (isinstance(v, Maybe) and v.prev is not p):
                    return  # whether child.parent is still loaded, and with what, is unknown
                p.obj.children.remove(c.obj)
                if isinstance(v, Obj) and v is not p and c.state == "persistent":
                    # child.parent holds another instance of the row (from before an expunge):
                    # the backref leaves it as it is; the child is an orphan all the same
                    self.coll_remove(p, "children", c)
                    del self.want.tables["Child"][c.id]
                    c.orphan = True
                    return
                old: Obj | None = p
            else:
                c = self.obtain(data, "Child", "child")
                if c is None:
                    return
                ok, known, old = self.settable(c)
                if not ok or not c.live():
                    return
                held = None if old is None else old.rel["children"]
                if held is OPAQUE:
                    return
                # (a loaded collection of the old parent holding another instance of the row
                # finds nothing to remove, and the child is an orphan all the same: see
                # test_bug_orphan_missed_when_the_old_collection_holds_another_instance)
                if not known:
                    if c.cols["parent_id"] is None:
                        return
                    if c.rel["parent"] is OPAQUE:
                        return  # loaded or not: whether the old value is found is unknown
                    target = self.idmap("Parent", c.cols["parent_id"])
                    if target is not None and target.maybe_loaded:
                        return  # whether the identity map holds it expired is unknown
                    # SQLAlchemy cannot tell it had a parent (the identity map does not hold it
                    # or holds it expired): not an orphan, parent_id is NULLed
                    c.obj.parent = None
                    self.set_parent(c, None, None)
                    self.want.tables["Child"][c.id] = c.row()
                    return
                if old is None:
                    return
                c.obj.parent = None
            self.set_parent(c, None, old)
            del self.want.tables["Child"][c.id]
            if c.state == "pending":
                c.state = "transient"  # a pending orphan is expunged at once
            else:
                c.orphan = True

        def descendants(self, pk: int) -> set[int]:
            out: set[int] = set()
            todo = [pk]
            while todo:
                cur = todo.pop()
                for k, r in self.want.tables["Node"].items():
                    if r[1] == cur and k not in out:
                        out.add(k)
                        todo.append(k)
            return out

        def node_flush_cycle(
            self, changed: Obj, new_parent: int | None, touched: tuple[Obj | None, ...] = ()
        ) -> bool:
            """Whether the nodes the next flush writes would have a cycle through their old and
            new parents together, once `changed` has `new_parent`. SQLAlchemy orders such a flush
            node by node and raises CircularDependencyError even where the rows end up acyclic
            (retort breaks it, SPEC §5). Its flush holds every node changed since the last one,
            its row unchanged included (an old or new parent whose children a backref changed),
            with the edge to its parent; `touched` are the nodes the change itself counts as
            changed that way (its old and new parents), as set_parent() will."""
            want = self.want.tables["Node"]
            flushed = self.flushed.tables["Node"]
            edges: set[tuple[int, int]] = set()
            for o in self.of("Node", "pending", "persistent", "marked"):
                in_flush = (
                    o is changed
                    or o in touched
                    or o.state != "persistent"
                    or o.orphan
                    or o.dirty  # a backref's change to its children (loaded or not) counts
                    or want.get(o.id) != flushed.get(o.id)
                )
                if not in_flush:
                    continue
                if o.id in flushed and flushed[o.id][1] is not None:
                    edges.add((flushed[o.id][1], o.id))
                new = new_parent if o is changed else want[o.id][1] if o.id in want else None
                if new is not None:
                    edges.add((new, o.id))
            # a cycle among the edges?
            graph: dict[int, set[int]] = {}
            for a, b in edges:
                graph.setdefault(a, set()).add(b)
            state: dict[int, int] = {}

            def visit(n: int) -> bool:
                state[n] = 1
                for m in graph.get(n, ()):
                    if state.get(m) == 1 or (m not in state and visit(m)):
                        return True
                state[n] = 2
                return False

            return any(n not in state and visit(n) for n in list(graph))

        @rule(data=st.data(), how=st.sampled_from(["set", "set", "append", "none"]))
        def node_parent(self, data: st.DataObject, how: str) -> None:
            n = self.obtain(data, "Node", "node")
            if n is None:
                return
            m = None
            if how != "none":
                m = self.obtain(data, "Node", "parent")
                if m is None or not n.live():
                    return
                if m is n or m.id in self.descendants(n.id):
                    return  # a cycle (SQLAlchemy cannot flush some of them; retort can, SPEC §5)
            ok, known, old = self.settable(n)
            if not ok or old is m or not n.live() or (m is not None and not m.live()):
                return
            if how == "append":
                assert m is not None
                if not self.load(m, "children") or not (m.live() and n.live()):
                    return
            if not known and n.cols["parent_id"] == (None if m is None else m.id):
                return  # the parent its key names already (see move_child)
            if self.node_flush_cycle(n, None if m is None else m.id, (m, old)):
                return
            if how == "append":
                assert m is not None
                m.obj.children.append(n.obj)
            else:
                n.obj.parent = None if m is None else m.obj
            self.set_parent(n, m, old)
            self.want.tables["Node"][n.id] = n.row()

        # -- many-to-many ---------------------------------------------------------------------

        @rule(data=st.data(), from_tag=st.booleans())
        def link(self, data: st.DataObject, from_tag: bool) -> None:
            p = self.obtain(data, "Parent", "parent")
            t = self.obtain(data, "Tag", "tag")
            if p is None or t is None or not (p.live() and t.live()):
                return
            if (p.id, t.id) in self.want.links:
                return
            owner, attr = (t, "parents") if from_tag else (p, "tags")
            if not self.load(owner, attr) or not (p.live() and t.live()):
                return
            for side, key, other in ((p, "tags", t), (t, "parents", p)):
                v = side.rel[key]
                held = v if isinstance(v, list) else v.prev if isinstance(v, Maybe) else []
                if any(x.id == other.id and x is not other for x in held):
                    # it holds another instance of the row (expunged, then loaded again): the
                    # append is a new member, whose association row both libraries insert
                    # even where the row is there (the unlink of the other instance found
                    # nothing to take out)
                    return
            if from_tag:
                t.obj.parents.append(p.obj)
            else:
                p.obj.tags.append(t.obj)
            self.coll_add(p, "tags", t)
            self.coll_add(t, "parents", p)
            self.want.links.add((p.id, t.id))

        @rule(data=st.data(), from_tag=st.booleans())
        def unlink(self, data: st.DataObject, from_tag: bool) -> None:
            owner = self.obtain(data, "Tag" if from_tag else "Parent", "owner")
            attr = "parents" if from_tag else "tags"
            if owner is None or not self.load(owner, attr) or not owner.live():
                return
            other = self.pick(data, [x for x in self.collection(owner, attr) if x.live()], "member")
            if other is None:
                return
            p, t = (other, owner) if from_tag else (owner, other)
            if (p.id, t.id) not in self.want.links:
                return  # a stale collection (see delete())
            getattr(owner.obj, attr).remove(other.obj)
            self.coll_remove(p, "tags", t)
            self.coll_remove(t, "parents", p)
            self.want.links.discard((p.id, t.id))

        # -- delete ---------------------------------------------------------------------------

        @rule(data=st.data(), cls=st.sampled_from(CLASSES))
        def delete(self, data: st.DataObject, cls: str) -> None:
            o = self.obtain(data, cls, "object")
            if o is None or o.state != "persistent" or o.orphan:
                return
            if o.moved:
                # added to another parent's collection in this flush: SQLAlchemy's flush cancels
                # the delete (an UPDATE instead, the object left persistent yet in
                # session.deleted); retort deletes it
                return
            cascade: list[Obj] = []
            if cls == "Parent":
                if any(c.lfk == o.id for c in self.of("Child", "pending")):
                    # SQLAlchemy inserts a pending child of a deleted parent (and fails on the
                    # foreign key); retort expunges it
                    return
                # the delete cascade loads the children (autoflush)
                if not self.load(o, "children") or not o.live():
                    return
                cascade = self.collection(o, "children")
                if any(c.state not in ("persistent", "marked") for c in cascade):
                    return  # a deleted (flushed) child still in the loaded collection
                if {c.id for c in cascade if c.state == "persistent"} != {
                    k for k, r in self.want.tables["Child"].items() if r[1] == o.id
                }:
                    # a stale collection: SQLAlchemy keeps one loaded across a SAVEPOINT rollback
                    # that does not expire its owner (the cascade then misses a child, and the
                    # flush fails on the foreign key)
                    return
            nulled: list[int] = []
            if cls == "Node":
                # the flush sets the children's parent_id to NULL (no cascade on Node.children)
                nulled = [k for k, r in self.want.tables["Node"].items() if r[1] == o.id]
                if any(self.flushed.tables["Node"].get(k, (None, None))[1] != o.id for k in nulled):
                    # a pending child, or one moved under it in this flush: SQLAlchemy's flush
                    # leaves those out of the nulling (and fails on the foreign key)
                    return
                v = o.rel["children"]
                if (
                    isinstance(v, Maybe)
                    or v is OPAQUE
                    or (
                        isinstance(v, list)
                        and (
                            any(x.state not in ("persistent", "marked") for x in v)
                            or {x.id for x in v if x.state == "persistent"} != set(nulled)
                        )
                    )
                ):
                    # a loaded collection holding deleted nodes, or stale (see restored()), or
                    # unknown: SQLAlchemy nulls the children it holds only
                    return
            side = 0 if cls == "Parent" else 1
            m2m = cls in ("Parent", "Tag")
            if m2m:
                v = o.rel["tags" if cls == "Parent" else "parents"]
                held = v.prev if isinstance(v, Maybe) else v
                if held is OPAQUE or (
                    isinstance(held, list)
                    and any(x.state in ("detached", "transient") for x in held)
                ):
                    # a loaded collection holding an object that left the session (expunged,
                    # or transient again after a rollback): SQLAlchemy's flush of the delete
                    # warns ("Object of type <Parent> not in session, delete operation along
                    # 'Tag.parents' won't proceed") and leaves its association row
                    return
            links = {x for x in self.want.links if m2m and x[side] == o.id}
            if links != {x for x in self.flushed.links if m2m and x[side] == o.id}:
                # a link added or removed and the object deleted in one flush: SQLAlchemy can
                # write the association rows in an order that fails
                return
            if (
                m2m
                and isinstance(held, list)
                and {x.id for x in held} != {x[1 - side] for x in links}
            ):
                # a stale collection (what the flush of its delete loaded, kept by a SAVEPOINT
                # rollback, see restored()): SQLAlchemy deletes the association rows it holds
                # only (and the flush fails on the foreign key)
                return
            self.session.delete(o.obj)
            for x in (o, *cascade):
                if x.state == "persistent":
                    x.state = "marked"
                    del self.want.tables[x.cls][x.id]
            self.want.links -= links
            for k in nulled:
                self.want.tables["Node"][k] = (self.want.tables["Node"][k][0], None)
                child = self.idmap("Node", k)
                if child is not None:
                    child.lfk = None
                    self.touch(child, weak=True)

        # -- reading and loading --------------------------------------------------------------

        @rule(data=st.data(), cls=st.sampled_from(CLASSES))
        def read_relationship(self, data: st.DataObject, cls: str) -> None:
            o = self.obtain(data, cls, "object")
            if o is None:
                return
            attr = data.draw(st.sampled_from(RELS[cls]), label="relationship")
            if not self.load(o, attr) or not o.live():
                return
            value = getattr(o.obj, attr)
            if attr == "parent":
                want = o.rel[attr]
                assert value is (None if want in (None, UNLOADED) else want.obj), (o, value)
            else:
                assert list(value) == [x.obj for x in self.collection(o, attr)], (o, attr)

        @rule(data=st.data(), cls=st.sampled_from(CLASSES))
        def get(self, data: st.DataObject, cls: str) -> None:
            pk = data.draw(st.integers(1, MAX_KEY), label="key")
            known = self.idmap(cls, pk)
            if known is None:
                self.get_miss(cls, pk)
                return
            if known.maybe_loaded and not self.settle(known):
                return
            if known.full_expired:
                if not known.live():
                    return  # the refresh would autoflush its delete first
                # an expired identity-map hit is refreshed (autoflush first)
                self.autoflush()
                assert self.session.get(models.by_name(cls), pk) is known.obj
                self.loaded_columns(known)
                return
            # a hit sends no SQL (an object marked for deletion included)
            assert self.session.get(models.by_name(cls), pk) is known.obj

        @rule()
        def read_values(self) -> None:
            self.check_values()

        # -- merge and expunge ----------------------------------------------------------------

        def copy_into(self, target: Obj, values: dict[str, Any]) -> None:
            """merge() sets the source's loaded columns on the target."""
            if not values:
                return
            if "id" in values and target.expired:
                # the key has active history: setting it loads the expired target
                self.loaded_columns(target)
            # values it holds already: SQLAlchemy counts them as a change all the same (a
            # SAVEPOINT's rollback expires the target), retort does not
            same = all(a not in target.expired and target.cols[a] == v for a, v in values.items())
            for attr, value in values.items():
                target.cols[attr] = value
                target.expired.discard(attr)
            self.touch(target, weak=same)
            self.want.tables[target.cls][target.id] = target.row()

        @rule(data=st.data(), cls=st.sampled_from(CLASSES), name=st.sampled_from(NAMES))
        def merge_new_copy(self, data: st.DataObject, cls: str, name: str) -> None:
            # a transient copy holding only the key and the name, of a stored row or with a new
            # key; merge() autoflushes first
            options = sorted(self.want.tables[cls]) + [
                k for k in range(1, MAX_KEY + 1) if k not in self.taken(cls)
            ]
            if not options:
                return
            pk = data.draw(st.sampled_from(options), label="key")
            in_want = pk in self.want.tables[cls]
            target = self.idmap(cls, pk) or self.of_key(cls, pk, "pending")
            if target is not None and not target.live():
                return
            self.autoflush()
            if in_want:
                source = models.by_name(cls)(id=pk, **{NAME[cls]: name})
            else:
                source = self.construct(cls, pk, name, True)  # see construct()
            merged = self.session.merge(source)
            if not in_want:
                # a new key: a copy is added
                o = self.pending(merged, cls, pk, name)
                self.want.tables[cls][pk] = o.row()
                return
            if target is None:
                target = self.loaded_obj(merged, cls, pk)
            assert merged is target.obj, (cls, pk)
            self.copy_into(target, {"id": pk, NAME[cls]: name})

        @rule(data=st.data())
        def merge_handled(self, data: st.DataObject) -> None:
            # a detached object with no relationship loaded, or an object of the session
            choices = [
                o
                for o in self.objs
                if o.live()
                or (o.state == "detached" and all(v is UNLOADED for v in o.rel.values()))
            ]
            src = self.pick(data, choices, "source")
            if src is None:
                return
            if src.live():
                self.autoflush()
                assert self.session.merge(src.obj) is src.obj
                return
            if src.id not in self.want.tables[src.cls]:
                return  # its row was deleted: merge() would insert it again
            values = {a: v for a, v in src.cols.items() if a not in src.expired}
            target = self.idmap(src.cls, src.id) or self.of_key(src.cls, src.id, "pending")
            if target is not None and not target.live():
                return
            if "parent_id" in values and values["parent_id"] != self.want.fk(src.cls, src.id):
                return  # would set the foreign key column behind the relationship's back
            code = values.get("code")
            if code is not None and any(
                r[1] == code for k, r in self.want.tables["Parent"].items() if k != src.id
            ):
                return  # another parent holds that code now
            self.autoflush()
            merged = self.session.merge(src.obj)
            if target is None:
                target = self.loaded_obj(merged, src.cls, src.id)
            assert merged is target.obj, (src, "merge() returned another object")
            self.copy_into(target, values)

        @rule(data=st.data())
        def expunge(self, data: st.DataObject) -> None:
            o = self.pick(data, [o for o in self.objs if o.live()], "object")
            if o is None:
                return
            if o.state == "pending":
                # only a pending object nothing refers to (and that refers to nothing)
                others = {"Parent": "Child", "Node": "Node"}.get(o.cls)
                if (
                    (o.cls in ("Child", "Node") and o.lfk is not None)
                    or any(v is not UNLOADED and v != [] for v in o.rel.values())
                    or (o.cls == "Parent" and any(x[0] == o.id for x in self.want.links))
                    or (o.cls == "Tag" and any(x[1] == o.id for x in self.want.links))
                    or (
                        others is not None
                        and any(r[1] == o.id for r in self.want.tables[others].values())
                    )
                ):
                    return
                self.session.expunge(o.obj)
                o.state = "transient"
                del self.want.tables[o.cls][o.id]
                return
            # a persistent object of a session with nothing to flush; the expunge cascade
            # takes a parent's loaded children with it
            if self.has_work() or any(x.state == "marked" or x.dirty for x in self.objs):
                return
            cascade: list[Obj] = []
            if o.cls == "Parent":
                v = o.rel["children"]
                if isinstance(v, Maybe) or v is OPAQUE:
                    return
                cascade = [] if v is UNLOADED else list(v)
            if any(
                x.state in ("persistent", "deleted") and x.ins_level is not None
                for x in (o, *cascade)
            ):
                # inserted in this transaction: a new instance of its row, loaded later, would
                # stay persistent (without a row) after a rollback
                return
            if any(
                x.state == "persistent" and max(x.mod_level, x.weak_level) >= 1
                for x in (o, *cascade)
            ):
                # changed inside an open SAVEPOINT: a new instance of its row, loaded later, is
                # not expired by the rollback of that SAVEPOINT (SQLAlchemy expires the objects
                # changed inside it) and keeps the values rolled back
                return
            self.session.expunge(o.obj)
            for x in (o, *cascade):
                if x.state in ("persistent", "deleted"):
                    x.state = "detached"
                    x.del_level = None  # a rollback no longer restores it

        # -- transactions ---------------------------------------------------------------------

        @rule()
        def flush(self) -> None:
            self.session.flush()
            self.model_flush()
            self.check_transaction_rows()

        @rule(check=st.booleans())
        def commit(self, check: bool) -> None:
            self.session.commit()
            self.model_flush()
            self.savepoints.clear()
            self.sp_txs.clear()
            self.committed = self.flushed.copy()
            # objects a flush loaded by itself are expired as a whole as well (an identity-map
            # lookup for an old value skips them): tracked before the model expires its objects
            self.track_identity_map()
            for o in self.objs:
                o.ins_level = o.del_level = None
                if o.state == "deleted":
                    o.state = "detached"
                elif o.state == "persistent":
                    self.expire(o, self.flushed)  # expire_on_commit
            assert committed_rows() == self.committed.listing()
            if check:
                self.check_values()

        @rule(check=st.booleans())
        def rollback(self, check: bool) -> None:
            self.session.rollback()
            self.track_identity_map()  # (as in commit())
            for o in self.objs:
                if o.state in ("persistent", "marked") and max(o.mod_level, o.weak_level) >= 1:
                    # the open SAVEPOINTs are rolled back first, expiring what changed inside
                    # them (an object inserted before them then becomes transient expired)
                    o.expired = {"id", *COLS[o.cls]}
                elif o.state == "deleted" and o.del_level is not None and o.del_level >= 1:
                    # its DELETE, flushed inside a SAVEPOINT, is undone first, which expires it
                    # where it was changed before the delete (SQLAlchemy: still modified); an
                    # object inserted in the transaction is then made transient expired, and
                    # reading it raises DetachedInstanceError: its values are not read
                    o.expired = {"id", *COLS[o.cls]}
            self.savepoints.clear()
            self.sp_txs.clear()
            self.flushed = self.committed.copy()
            self.want = self.committed.copy()
            for o in self.objs:
                if o.state == "pending" or o.ins_level is not None:
                    # added in the transaction (even if expunged since): transient again
                    o.state = "transient"
                elif o.state in ("marked", "deleted"):
                    o.state = "persistent"
                o.ins_level = o.del_level = None
                if o.state == "persistent":
                    self.expire(o, self.committed)
            if check:
                self.check_values()

        @precondition(lambda self: len(self.savepoints) < MAX_SAVEPOINTS)
        @rule()
        def begin_nested(self) -> None:
            self.sp_txs.append(self.session.begin_nested())  # flushes first
            self.model_flush()
            self.savepoints.append(self.flushed.copy())
            assert self.session.in_nested_transaction()

        @precondition(lambda self: len(self.savepoints) > 0)
        @rule()
        def release_savepoint(self) -> None:
            self.sp_txs.pop().commit()  # flushes first
            self.model_flush()
            level = self.depth
            self.savepoints.pop()
            for o in self.objs:
                if o.ins_level == level:
                    o.ins_level = level - 1
                if o.del_level == level:
                    o.del_level = level - 1
                o.mod_level = min(o.mod_level, level - 1)
                o.weak_level = min(o.weak_level, level - 1)
            self.check_transaction_rows()

        @precondition(lambda self: len(self.savepoints) > 0)
        @rule()
        def rollback_savepoint(self) -> None:
            self.sp_txs.pop().rollback()
            level = self.depth
            self.flushed = self.savepoints.pop()
            self.want = self.flushed.copy()
            restored: list[Obj] = []
            for o in self.objs:
                if o.state == "pending" or (o.ins_level is not None and o.ins_level >= level):
                    o.state = "transient"
                    o.ins_level = o.del_level = None
                elif o.state == "marked":
                    o.state = "persistent"
                elif o.state == "deleted" and o.del_level is not None and o.del_level >= level:
                    o.state = "persistent"
                    o.del_level = None
                    restored.append(o)
            for o in self.objs:
                if o.state != "persistent":
                    continue
                # changes at outer levels are kept; those inside may still count for a later
                # rollback of the transaction (which rolls the outer SAVEPOINTs back first)
                mod, weak = o.mod_level, o.weak_level
                inside = max(mod, weak) >= level
                if mod >= level or o.orphan:
                    # changed inside: expired, reloads the row as it was at the SAVEPOINT
                    self.expire(o, self.flushed)
                else:
                    # not changed inside: SQLAlchemy keeps it as it is unless a flush inside
                    # touched it; either way it shows the restored row
                    before = o.rel
                    self.expire(o, self.flushed)
                    o.rel = {r: self.maybe(v) for r, v in before.items()}
                o.mod_level = mod if mod < level else -1
                o.weak_level = max(weak if weak < level else -1, level - 1 if inside else -1)
                if o in restored:
                    for attr, v in o.rel.items():
                        # the flush of its delete may have loaded it
                        if v is OPAQUE:
                            o.rel[attr] = self.restored(o, attr)
            self.check_transaction_rows()
            # nothing is left to flush: read every column (where expired that reloads it, which
            # is the check that the objects show the restored rows)
            assert not self.has_work()
            self.check_values()

        def restored(self, o: Obj, attr: str) -> Any:
            """Maybe(what o.attr holds if the flush of its delete loaded it), or, for the
            many-to-one, Maybe(what loading it gives now) if the identity map holds it."""
            if attr == "parent":
                fk = self.flushed.fk(o.cls, o.id)
                if fk is None:
                    return Maybe(None)
                target = self.idmap("Parent" if o.cls == "Child" else "Node", fk)
                return OPAQUE if target is None else Maybe(target)
            # the rows as the flush saw them, not as restored (their changes in the SAVEPOINT
            # before the flush are rolled back, but SQLAlchemy does not expire an unchanged
            # object, whose collection keeps what the flush loaded)
            snapshot = o.at_delete.get(attr, OPAQUE)
            return OPAQUE if snapshot is OPAQUE else Maybe(list(snapshot))

        @staticmethod
        def maybe(v: Any) -> Any:
            if v is UNLOADED or v is OPAQUE or isinstance(v, Maybe):
                return v
            return Maybe(list(v) if isinstance(v, list) else v)

        @precondition(lambda self: not any(o.state in ("pending", "marked") for o in self.objs))
        @rule()
        def expire_all(self) -> None:
            # not with pending objects (a pending object keeps its side of a relationship to an
            # expired one, which the model would have to rebuild), nor with objects marked for
            # deletion (expiring a parent's unflushed move of a child back to a deleted parent
            # makes SQLAlchemy's flush fail on the foreign key)
            self.session.expire_all()
            self.track_identity_map()  # (as in commit())
            self.want = self.flushed.copy()
            for o in self.objs:
                if o.state == "persistent":
                    # what it flushed inside a SAVEPOINT still counts when that rolls back, what
                    # it only changed does not: either may apply
                    levels = max(o.mod_level, o.weak_level)
                    self.expire(o, self.flushed)
                    o.weak_level = levels
                # objects whose DELETE was flushed left the identity map: left as they are

        # -- checks ---------------------------------------------------------------------------

        def check_values(self) -> None:
            with self.session.no_autoflush:
                for o in self.objs:
                    if o.in_session():
                        if o.expired == {"id"}:
                            # expired, then every other column set: reading the key would
                            # load it in SQLAlchemy (no longer expired as a whole), not in
                            # retort, which never expires keys (it stays expired, and a get()
                            # refreshes it): the key is checked without reading it
                            got = {a: getattr(o.obj, a) for a in COLS[o.cls]}
                            got["id"] = orm.inspect(o.obj).identity[0]
                            assert got == o.cols, (o, got, o.cols)
                            continue
                        # reading reloads what is expired (without autoflush here)
                        got = {a: getattr(o.obj, a) for a in ("id", *COLS[o.cls])}
                        assert got == o.cols, (o, got, o.cols)
                        self.loaded_columns(o)
                    else:
                        for a in ("id", *COLS[o.cls]):
                            if a not in o.expired:
                                assert getattr(o.obj, a) == o.cols[a], (o, a)

        def check_transaction_rows(self) -> None:
            """The rows the session's own transaction sees (flushed work included)."""
            conn = self.session.connection()
            got = {
                table: [
                    tuple(r)
                    for r in conn.exec_driver_sql(f"SELECT {cols} FROM {table} ORDER BY {order}")
                ]
                for table, (cols, order) in TABLES.items()
            }
            assert got == self.flushed.listing()

        def track_identity_map(self) -> None:
            """Track objects a flush loaded into the identity map by itself (a deleted tag's
            parents, for its association rows). Whether it does is up to the library."""
            for obj in list(self.session.identity_map.values()):
                if self.by_obj(obj) is None:
                    cls = type(obj).__name__
                    pk = orm.inspect(obj).identity[0]
                    o = self.loaded_obj(obj, cls, pk)
                    o.expired = set(orm.inspect(obj).unloaded) & {"id", *COLS[cls]}

        @invariant()
        def lifecycles_agree(self) -> None:
            self.track_identity_map()
            for o in self.objs:
                want = "persistent" if o.state == "marked" else o.state
                assert _lifecycle(orm, o.obj) == [want], (o, _lifecycle(orm, o.obj))
                assert (o.obj in self.session) == o.in_session(), o
            with self.session.no_autoflush:
                assert {id(x) for x in self.session.new} == {
                    id(o.obj) for o in self.objs if o.state == "pending"
                }
                assert {id(x) for x in self.session.deleted} == {
                    id(o.obj) for o in self.objs if o.state == "marked"
                }
            assert self.session.in_nested_transaction() == bool(self.savepoints)

        @invariant()
        def relationships_agree(self) -> None:
            with self.session.no_autoflush:
                for o in self.objs:
                    if o.state not in ("persistent", "marked"):
                        continue
                    for attr, v in o.rel.items():
                        if isinstance(v, Maybe) or v is OPAQUE:
                            continue
                        loaded = _loaded(orm, o.obj, attr)
                        assert loaded == (v is not UNLOADED), (o, attr, v, loaded)
                        if v is UNLOADED:
                            continue
                        got = getattr(o.obj, attr)
                        if attr == "parent":
                            assert got is (None if v is None else v.obj), (o, attr)
                        else:
                            assert list(got) == [x.obj for x in v], (o, attr, v)

        @invariant()
        def rows_agree(self) -> None:
            # the model's live objects are what the next flush writes
            for o in self.objs:
                if o.live():
                    assert self.want.tables[o.cls].get(o.id) == o.row(), (o, o.row())
            # the autocommit connection sees only committed data
            assert committed_rows() == self.committed.listing()

    return RelationalMachine


def test_session_matches_a_relational_model(
    orm: Api, models: Models, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    machine = make_machine(orm, models, admin_conn, schema)
    run_state_machine_as_test(machine, settings=_profile())


def test_the_checks_can_fail(
    orm: Api, models: Models, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    """Each kind of check notices a change made behind the model's back."""
    m: Any = make_machine(orm, models, admin_conn, schema)()
    try:
        m.rows_agree()
        m.relationships_agree()
        m.lifecycles_agree()
        # a committed row the model does not know
        admin_conn.execute(f"INSERT INTO {schema}.tags VALUES (7, 'behind')")
        with pytest.raises(AssertionError):
            m.rows_agree()
        admin_conn.execute(f"DELETE FROM {schema}.tags WHERE id = 7")
        m.rows_agree()
        # a relationship loaded behind the model's back
        c3 = m.get_miss("Child", 3)
        m.relationships_agree()
        assert c3.obj.parent.id == 2
        with pytest.raises(AssertionError):
            m.relationships_agree()
        # a row changed in the session's transaction behind its back, seen after a flush
        m.session.connection().exec_driver_sql("UPDATE tags SET label = 'zz' WHERE id = 1")
        with pytest.raises(AssertionError):
            m.flush()
        # an object expunged behind the model's back
        p1 = m.get_miss("Parent", 1)
        m.lifecycles_agree()
        m.session.expunge(p1.obj)
        with pytest.raises(AssertionError):
            m.lifecycles_agree()
    finally:
        m.teardown()


# --------------------------------------------------------------------------------------------
# retort bugs the machine found or steers around, each reproduced deterministically


def both_libraries(found: str) -> pytest.MarkDecorator:
    """Run a regression test of a retort bug the machine `found` on retort and on SQLAlchemy
    2.x: the expected behaviour is SQLAlchemy's."""
    del found  # documentation only
    return pytest.mark.parametrize("lib", ["retort", "sqlalchemy"])


@pytest.fixture
def repro(
    lib: str,
    request: pytest.FixtureRequest,
    dsn: str,
    schema: str,
    admin_conn: psycopg.Connection[Any],
) -> Iterator[tuple[Any, Models, Api]]:
    """(session, models, api) of one library, with tests/_diff_models.py's initial rows."""
    if lib == "retort":
        api = _rel_models.Api("retort", request.getfixturevalue("engine"), [], admin_conn)
    else:
        pytest.importorskip("sqlalchemy")
        api = sqlalchemy_api(dsn, schema, admin_conn)
    models = declare(api)
    reset_rows(admin_conn, schema)
    session = api.Session(api.engine)
    try:
        yield session, models, api
    finally:
        session.close()
        if lib == "sqlalchemy":
            api.engine.dispose()


@both_libraries(
    "found: appending a child to another parent's collection leaves it in the old "
    "parent's loaded collection when child.parent is not loaded; a later delete of the old parent "
    "cascades to it"
)
def test_bug_append_to_another_parent_leaves_child_in_old_collection(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    p1, p2 = s.get(m.Parent, 1), s.get(m.Parent, 2)
    c1, _c2 = p1.children  # loaded; c1.parent is not
    list(p2.children)
    p2.children.append(c1)
    # SQLAlchemy: the backref removes c1 from p1.children (old value from the identity map)
    assert [c.id for c in p1.children] == [2]
    s.delete(p1)  # cascades to p1's children: c2 only
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1, 2), (3, 2), (4, None)]


@both_libraries(
    "found: expire_all() expires objects a flush deleted (no longer in the identity "
    "map); reading their loaded values then raises ObjectDeletedError"
)
def test_bug_expire_all_expires_objects_deleted_by_a_flush(repro: Any) -> None:
    s, m, _api = repro
    tag = s.get(m.Tag, 1)
    s.delete(tag)
    s.flush()
    s.expire_all()
    # SQLAlchemy: expire_all() expires the identity map's objects only
    assert tag.label == "t1"


@both_libraries(
    "found: a child taken out of its parent's collection (delete-orphan) whose parent "
    "is then deleted in the same flush is kept with parent_id NULL instead of being deleted"
)
def test_bug_orphan_of_a_deleted_parent_is_kept_with_a_null_key(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    p1 = s.get(m.Parent, 1)
    c1, _c2 = p1.children
    p1.children.remove(c1)  # an orphan: the next flush deletes it
    s.delete(p1)  # cascades to c2
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(3, 2), (4, None)]


@both_libraries(
    "found (relational nightly): a many-to-one changed, flushed and changed again, then rolled "
    "back, kept the value from before the second change as its history: set again to that "
    "value after the rollback, it counted as unchanged and its UPDATE was lost"
)
def test_bug_many_to_one_set_again_after_a_rollback_is_written(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    c1, p2 = s.get(m.Child, 1), s.get(m.Parent, 2)
    c1.parent = p2
    s.flush()
    c1.parent = None  # history: p2, the value before this change
    s.rollback()  # expires c1 and discards the change, with its history
    c1.parent = p2  # a change from the row's parent (1)
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1, 2), (2, 1), (3, 2), (4, None)]


@both_libraries(
    "found with the test above: the same through a SAVEPOINT rollback, which expires the "
    "objects changed inside it"
)
def test_bug_many_to_one_set_again_after_a_savepoint_rollback_is_written(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    c1, p2 = s.get(m.Child, 1), s.get(m.Parent, 2)
    sp = s.begin_nested()
    c1.parent = p2
    s.flush()
    c1.parent = None
    sp.rollback()  # the row has parent 1 again
    c1.parent = p2
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1, 2), (2, 1), (3, 2), (4, None)]


@both_libraries(
    "found with the test below: the save-update cascade also follows a many-to-one's value "
    "before its change since the last flush (SQLAlchemy's pending history)"
)
def test_bug_the_save_update_cascade_follows_a_many_to_ones_old_value(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    n2 = s.get(m.Node, 2)
    n1 = n2.parent
    s.expunge(n1)
    n2.parent = None  # the old value, n1, is detached
    s.add(n2)  # n2 is in the session: only its cascade does anything
    assert api.inspect(n1).persistent and n1 in s
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.nodes ORDER BY id").fetchall()
    assert rows == [(1, None), (2, None), (3, 2), (4, 1)]


@both_libraries(
    "found (differential nightly): adding an object cascades along its collections to the "
    "members taken out since the last flush too; one the flush deleted meanwhile is refused"
)
def test_bug_cascade_reaches_members_taken_out_of_a_collection(repro: Any) -> None:
    s, m, api = repro
    c1 = s.get(m.Child, 1)
    p4 = m.Parent(id=4, name="p4")
    s.add(p4)
    p4.children.append(c1)
    s.flush()
    s.rollback()  # p4 is transient again, still holding c1
    p4.children.remove(c1)
    s.flush()  # c1 is an orphan: deleted
    with pytest.raises(api.InvalidRequestError, match="deleted"):
        s.add(m.Child(id=5, name="c5", parent=p4))  # cascades to p4, and from p4 to c1


@both_libraries(
    "found (differential nightly): a persistent child taken out of the collection of a "
    "parent that a rollback made transient again is an orphan all the same: the flush deletes it"
)
def test_bug_child_taken_from_a_parent_outside_the_session_is_an_orphan(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    c1 = s.get(m.Child, 1)
    p4 = m.Parent(id=4, name="p4")
    s.add(p4)
    p4.children.append(c1)
    s.flush()
    s.rollback()  # p4 is transient again (still holding c1); c1 is expired
    p4.children.remove(c1)
    s.flush()
    assert c1 in s.deleted or c1 not in s  # deleted by the flush
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(2, 1), (3, 2), (4, None)]


@both_libraries(
    "found: expiring a child after it was taken out of its parent's collection forgets "
    "that it lost its parent (as SQLAlchemy's expiry resets its parent tracking): not an orphan"
)
def test_bug_expiring_a_removed_child_forgets_it_was_orphaned(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    c1 = s.get(m.Child, 1)
    p4 = m.Parent(id=4, name="p4")
    s.add(p4)
    p4.children.append(c1)
    s.flush()
    s.rollback()
    p4.children.remove(c1)
    s.expire(c1)
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1, 1), (2, 1), (3, 2), (4, None)]


@both_libraries(
    "found: a persistent node given a new (pending) node as its parent is UPDATEd "
    "before the new node is INSERTed (IntegrityError on nodes.parent_id)"
)
def test_bug_node_moved_under_a_new_node_is_updated_before_its_insert(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    n2 = s.get(m.Node, 2)
    n5 = m.Node(id=5, name="n5", parent_id=None)
    s.add(n5)
    n2.parent = n5
    s.commit()  # SQLAlchemy: INSERT node 5, then UPDATE node 2
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.nodes ORDER BY id").fetchall()
    assert rows == [(1, None), (2, 5), (3, 2), (4, 1), (5, None)]


@both_libraries(
    "found: add() cascades through an object already in the session into its loaded "
    "collections, re-attaching an expunged child (SQLAlchemy's cascade halts there)"
)
def test_bug_add_cascades_through_objects_already_in_the_session(repro: Any) -> None:
    s, m, _api = repro
    p1 = s.get(m.Parent, 1)
    c1, _c2 = p1.children
    s.expunge(c1)
    c5 = m.Child(id=5, name="c5")
    c5.parent = p1
    s.add(c5)  # cascades to p1, which is in the session already: stops there
    assert c1 not in s


@both_libraries(
    "found: a child given a parent and taken out again before the flush "
    "(delete-orphan) is kept with parent_id NULL instead of being deleted, unless its previous "
    "parent (through a loaded child.parent) recorded the removal"
)
def test_bug_child_appended_then_removed_is_kept_with_a_null_key(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    c2 = s.get(m.Child, 2)  # child.parent not loaded
    p3 = s.get(m.Parent, 3)
    p3.children.append(c2)
    p3.children.remove(c2)  # an orphan now: SQLAlchemy deletes it at the flush
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1, 1), (3, 2), (4, None)]


@both_libraries(
    "found: child.parent = None where the old parent is expired in the identity map "
    "deletes the child as an orphan; SQLAlchemy's old-value lookup (no SQL) skips expired objects, "
    "so it sets parent_id NULL and keeps the child"
)
def test_bug_orphan_of_an_expired_parent_is_deleted(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    p2 = s.get(m.Parent, 2)
    c3 = s.get(m.Child, 3)
    s.expire_all()
    assert c3.name == "c3"  # c3 loaded again, p2 still expired
    c3.parent = None
    s.commit()
    assert p2.id == 2
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1, 1), (2, 1), (3, None), (4, None)]


@both_libraries(
    "found: expunge() of a parent leaves a child deleted by a flush (still in the "
    "parent's loaded collection) deleted, where SQLAlchemy's expunge cascade detaches it (and a "
    "rollback then no longer restores it)"
)
def test_bug_expunge_cascade_leaves_a_deleted_child_deleted(repro: Any) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    _c1, c2 = p1.children
    s.delete(c2)
    s.flush()
    s.expunge(p1)  # cascades along Parent.children to c1 and c2
    assert api.inspect(c2).detached
    s.rollback()  # restores the deletes of this transaction, but c2 has left the session
    assert api.inspect(c2).detached
    assert s.get(m.Child, 2) is not c2


@both_libraries(
    "found: a flush warns (RetortWarning) about the unchanged many-to-one of a node "
    "that became another node's parent, towards a detached node; SQLAlchemy warns only about a "
    "newly added value"
)
def test_bug_flush_warns_about_an_unchanged_reference_to_a_detached_object(repro: Any) -> None:
    s, m, _api = repro
    n1 = s.get(m.Node, 1)
    n5 = m.Node(id=5, name="n5")
    n5.parent = n1
    s.add(n5)
    s.flush()
    s.expunge(n1)
    s.get(m.Node, 4).parent = n5  # n5.parent (to the detached n1) does not change
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.flush()


@both_libraries(
    "found: a collection read while its owner was pending is reported unloaded after "
    "the INSERT, but a backref append goes into the old list and reading it returns that list "
    "without the lazy load (and its autoflush)"
)
def test_bug_collection_read_while_pending_is_not_loaded_after_a_backref(repro: Any) -> None:
    s, m, _api = repro
    p4 = m.Parent(id=4, name="p4", code=None)
    s.add(p4)
    assert list(p4.children) == []
    s.flush()
    c5 = m.Child(id=5, name="c5")
    c5.parent = p4  # backref to p4.children, which is not loaded
    s.add(c5)
    assert list(p4.children) == [c5]  # a lazy load: autoflush first, then SELECT
    assert c5 not in s.new


@both_libraries(
    "found: a node given a new child rewrites its own unchanged many-to-one to a node deleted "
    "(and flushed) since, writing the deleted key back (IntegrityError on nodes.parent_id)"
)
def test_bug_new_parent_rewrites_its_reference_to_a_deleted_node(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    n4 = s.get(m.Node, 4)
    n5 = m.Node(id=5, name="n5", parent_id=None)
    n5.parent = n4
    s.add(n5)
    s.flush()
    s.delete(n4)
    s.flush()  # n5.parent_id is NULLed; n5.parent (loaded) is still n4
    s.get(m.Node, 2).parent = n5
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.nodes ORDER BY id").fetchall()
    assert rows == [(1, None), (2, 5), (3, 2), (5, None)]


@both_libraries(
    "found: a removal queued on an unloaded collection inside a SAVEPOINT survives the "
    "rollback of that SAVEPOINT and is applied when the collection loads"
)
def test_bug_queued_removal_survives_a_savepoint_rollback(repro: Any) -> None:
    s, m, _api = repro
    p1, c1, p2 = s.get(m.Parent, 1), s.get(m.Child, 1), s.get(m.Parent, 2)
    savepoint = s.begin_nested()
    c1.parent = p2  # p1.children is not loaded: the removal waits there
    savepoint.rollback()
    assert p1.name == "p1"
    assert [c.id for c in p1.children] == [1, 2]


@both_libraries(
    "found: an object changed inside a SAVEPOINT only through a backref change queued on its "
    "unloaded collection (loaded since) is not expired by the rollback of that SAVEPOINT: the "
    "collection keeps the rolled-back change"
)
def test_bug_savepoint_rollback_keeps_a_collection_changed_by_a_queued_change(repro: Any) -> None:
    s, m, _api = repro
    p1, c1, p2 = s.get(m.Parent, 1), s.get(m.Child, 1), s.get(m.Parent, 2)
    savepoint = s.begin_nested()
    c1.parent = p2  # p1.children is not loaded: the removal waits there
    assert [c.id for c in p1.children] == [2]  # loads it (autoflush first)
    savepoint.rollback()  # c1 is p1's again
    assert [c.id for c in p1.children] == [1, 2]


@both_libraries(
    "found: get() of an expired identity-map object that has an attribute set since does not "
    "refresh it (no SQL, so no autoflush); SQLAlchemy loads its expired attributes, autoflushing "
    "first"
)
def test_bug_get_of_an_expired_object_with_a_change_does_not_refresh(repro: Any) -> None:
    s, m, _api = repro
    c2 = s.get(m.Child, 2)
    s.expire_all()
    c2.name = "c2b"  # set while expired: the other attributes stay expired
    tag = m.Tag(id=9, label="t9")
    s.add(tag)
    assert s.get(m.Child, 2) is c2
    assert tag not in s.new  # flushed by the refresh's autoflush


@both_libraries(
    "found: a child taken out of a delete-orphan collection while its loaded child.parent is "
    "another instance of the parent's row (the backref leaves it as it is) is kept, not deleted "
    "as an orphan"
)
def test_bug_orphan_whose_parent_is_another_instance_is_kept(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    p1 = s.get(m.Parent, 1)
    c1 = s.get(m.Child, 1)
    assert c1.parent is p1  # loaded
    s.expunge(p1)  # (c1 stays: no expunge cascade along Child.parent)
    p1b = s.get(m.Parent, 1)  # another instance of the row
    p1b.children.remove(c1)  # an orphan; the backref leaves c1.parent (p1) as it is
    assert c1.parent is p1
    s.commit()  # SQLAlchemy: DELETE c1
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(2, 1), (3, 2), (4, None)]


@both_libraries(
    "found: child.parent = None where the old parent (found in the identity map) has a loaded "
    "collection holding another instance of the child's row keeps the child with parent_id NULL; "
    "SQLAlchemy's backref fires the remove event before the list finds nothing to remove, so the "
    "child has no parent and is deleted as an orphan"
)
def test_bug_orphan_missed_when_the_old_collection_holds_another_instance(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    p1 = s.get(m.Parent, 1)
    c1, _c2 = p1.children  # loaded
    s.expunge(c1)
    c1b = s.get(m.Child, 1)  # another instance of the row; p1.children still holds c1
    c1b.parent = None  # the old value is p1 (identity map): the backref removes c1b from it
    s.commit()  # SQLAlchemy: DELETE c1
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(2, 1), (3, 2), (4, None)]


@both_libraries(
    "found: a backref removal from a loaded collection that does not hold the object (it holds "
    "another instance of the row) does not count as a change of the collection's owner; "
    "SQLAlchemy fires the remove event (a change) before the list finds nothing, so a SAVEPOINT "
    "rollback expires the owner"
)
def test_bug_backref_removal_of_a_missing_object_is_not_a_change(repro: Any) -> None:
    s, m, api = repro
    t2 = s.get(m.Tag, 2)
    p1, _p2 = t2.parents  # loaded
    s.expunge(p1)
    p1b = s.get(m.Parent, 1)  # another instance of the row; t2.parents still holds p1
    assert [t.id for t in p1b.tags] == [1, 2]
    savepoint = s.begin_nested()
    p1b.tags.remove(t2)  # the backref does not find p1b in t2.parents
    savepoint.rollback()  # SQLAlchemy expires t2, changed inside the SAVEPOINT
    assert "parents" in api.inspect(t2).unloaded


@both_libraries(
    "found by the differential search: a child outside the session given a persistent parent "
    "whose collection is not loaded (the addition is queued) did not get the parent's key "
    "from the flush, which SQLAlchemy copies into it (with a warning that the child is not "
    "in the session); with the collection loaded retort copied it already"
)
def test_bug_a_queued_child_outside_the_session_does_not_get_the_key(repro: Any) -> None:
    s, m, _api = repro
    p1 = s.get(m.Parent, 1)  # children not loaded
    c = m.Child(id=5, name="out")
    c.parent = p1  # not added: the backref does not cascade it into the session
    assert c not in s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy: not in session, add won't proceed
        s.flush()
    assert c.parent_id == 1


@both_libraries(
    "found by the differential search: a child whose DELETE was flushed, taken out of the "
    "loaded delete-orphan collection that still holds it, made the next flush raise "
    "InvalidRequestError (setting parent_id on a deleted object); SQLAlchemy's flush leaves "
    "it alone"
)
def test_bug_removing_a_flushed_delete_from_its_collection_fails_the_flush(repro: Any) -> None:
    s, m, _api = repro
    p1 = s.get(m.Parent, 1)
    c1, _c2 = p1.children
    s.delete(c1)
    s.flush()
    assert c1 in p1.children  # a loaded collection keeps deleted objects until expired
    p1.children.remove(c1)
    s.flush()
    assert [c.id for c in p1.children] == [2]


@both_libraries(
    "found: a child deleted by an autoflush and then expunged cannot read its parent, which "
    "the identity map held when the DELETE was flushed (SQLAlchemy's flush reads it, no SQL)"
)
def test_bug_many_to_one_of_a_deleted_object_is_read_by_its_flush(repro: Any) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    c1, c3, c4 = s.get(m.Child, 1), s.get(m.Child, 3), s.get(m.Node, 2)
    s.delete(c1)
    p1.children.append(m.Child(id=5, name="c5"))  # loading p1.children autoflushes the DELETE
    s.expunge(c1)
    assert c1.parent is p1
    n1, n2 = s.get(m.Node, 1), c4
    s.delete(n2)
    s.flush()
    s.expunge(n2)
    assert n2.parent is n1
    s.delete(c3)  # parent 2 is not in the identity map: nothing to read without SQL
    s.flush()
    s.expunge(c3)
    with pytest.raises(api.DetachedInstanceError):
        _ = c3.parent


@both_libraries("review of the core's read of deleted objects' many-to-ones")
def test_the_flush_reads_a_deleted_objects_many_to_one_by_its_committed_key(
    repro: Any,
) -> None:
    # a foreign key set by hand (not through the relationship) before the delete: the flush
    # looks the old value up by the committed key, as SQLAlchemy's does
    s, m, _api = repro
    s.get(m.Parent, 2)
    c4 = s.get(m.Child, 4)  # parent_id NULL
    c4.parent_id = 2
    s.delete(c4)
    s.flush()
    s.expunge(c4)
    assert c4.parent is None


@both_libraries(
    "found (differential search): a SAVEPOINT's rollback expired, through the refresh-expire "
    "cascade, the children loaded in the collection of a parent changed inside it; reading one "
    "after a flush failed there raised PendingRollbackError"
)
def test_bug_savepoint_rollback_expires_no_unchanged_child(repro: Any) -> None:
    s, m, api = repro
    c1, c2 = s.get(m.Child, 1), s.get(m.Child, 2)
    p1 = s.get(m.Parent, 1)
    assert p1.children == [c1, c2]
    s.begin_nested()
    p1.children.append(m.Child(id=5, name="c5"))
    s.add(m.Parent(id=1, name="again"))  # the flush fails on parents_pkey
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy warns of the key taken
        with pytest.raises(api.IntegrityError):
            s.flush()
    # p1 changed inside the SAVEPOINT (expired); c1 and c2 did not
    assert "children" in api.inspect(p1).unloaded
    assert (c1.name, c2.name) == ("c1", "c2")
    s.rollback()
    assert c2.name == "c2"


@both_libraries("the differential search")
def test_get_of_an_expired_object_whose_row_is_gone_marks_it_deleted(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    # SQLAlchemy's get() loads the expired object of its identity map, finds no row and marks
    # it deleted (Session._remove_newly_deleted): commit detaches it, rollback brings it back
    s, m, api = repro
    p3, c4 = s.get(m.Parent, 3), s.get(m.Child, 4)
    s.commit()  # expires them
    admin_conn.execute(f"DELETE FROM {schema}.parents WHERE id = 3")
    admin_conn.execute(f"DELETE FROM {schema}.children WHERE id = 4")
    assert s.get(m.Parent, 3) is None
    assert api.inspect(p3).deleted and p3 not in s
    assert s.get(m.Parent, 3) is None  # from the database again
    s.rollback()
    assert api.inspect(p3).persistent and p3 in s
    assert s.get(m.Child, 4) is None
    s.commit()
    assert api.inspect(c4).detached and c4 not in s
    assert api.inspect(p3).persistent


def _new_object_takes_a_gone_key(s: Any, m: Any) -> tuple[Any, Any]:
    """Parent 4 inserted, expunged and merged back (p4b, loaded from the row); a rollback
    undoes the INSERT, leaving p4b expired in the identity map with no row; a new parent 4
    (p4c) is flushed: p4b is found gone and marked deleted, p4c takes its key."""
    p4 = m.Parent(id=4, name="p4", code=None)
    s.add(p4)
    s.flush()
    s.expunge(p4)
    p4b = s.merge(p4)
    s.rollback()
    p4c = m.Parent(id=4, name="p4c", code=None)
    s.add(p4c)
    s.flush()
    return p4b, p4c


@both_libraries("the differential search")
def test_a_new_object_taking_the_key_of_a_gone_row_marks_its_old_object_deleted(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    # SQLAlchemy's flush loads an expired object of its identity map whose key a new object
    # has; with no row, the old object is deleted and the new one inserted
    # (UOWTransaction.was_already_deleted)
    s, m, api = repro
    p4b, p4c = _new_object_takes_a_gone_key(s, m)
    assert s.get(m.Parent, 4) is p4c
    assert api.inspect(p4b).deleted and p4b not in s
    s.commit()
    assert api.inspect(p4b).detached
    rows = admin_conn.execute(f"SELECT id, name FROM {schema}.parents WHERE id = 4").fetchall()
    assert rows == [(4, "p4c")]


@both_libraries("the differential search")
def test_a_new_object_taking_the_key_of_an_expired_object_with_a_row_fails(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    # the expired object is loaded first (its row is there) and the INSERT fails on the key;
    # the old object keeps its place
    s, m, api = repro
    p3 = s.get(m.Parent, 3)
    s.commit()
    p3c = m.Parent(id=3, name="other", code=None)
    s.add(p3c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy warns of the conflict first
        with pytest.raises(api.IntegrityError):
            s.flush()
    s.rollback()
    assert api.inspect(p3).persistent and s.get(m.Parent, 3) is p3
    assert p3.name == "p3"


@both_libraries(
    "found (differential search): a child taken out of its parent's collection and put "
    "back, its parent_id then set to NULL by hand: the flush wrote the parent's key, as if "
    "`child.parent` had changed (SQLAlchemy's history compares with the value before the "
    "first change: no net change, so the hand-set key is written)"
)
def test_bug_a_many_to_one_set_back_to_its_value_is_no_change(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    c1, c2 = p1.children  # their `parent` is not loaded
    c1.parent = None
    p1.children.remove(c2)  # (the backref sets c2.parent to None)
    p1.children.append(c1)
    p1.children.append(c2)
    for c in (c1, c2):
        assert c.parent is p1
        assert not api.inspect(c).attrs.parent.history.has_changes()
        c.parent_id = None
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows[:2] == [(1, None), (2, None)]


@both_libraries(
    "found (differential search): appending a new parent to a tag's parents, where the save-"
    "update cascade reaches a tag whose DELETE was flushed and raises, had already appended "
    "the tag to the parent's tags (the backref ran before the cascade; SQLAlchemy's cascade "
    "listener comes first)"
)
def test_bug_an_append_whose_cascade_fails_changes_no_collection(repro: Any) -> None:
    s, m, api = repro
    t1, t2 = s.get(m.Tag, 1), s.get(m.Tag, 2)
    p4 = m.Parent(id=4, name="p4", code=None)
    p4.tags.append(t1)  # p4 is not in the session: no cascade yet
    s.delete(t1)
    s.flush()
    parents = list(t2.parents)
    with pytest.raises(api.InvalidRequestError):
        t2.parents.append(p4)  # the cascade adds p4, then reaches t1
    assert p4.tags == [t1]
    assert list(t2.parents) == parents


@both_libraries(
    "found (differential search): a new parent whose tags hold a tag deleted by a flush since "
    "(appended before the delete, the parent then added by a cascade that failed on it): the "
    "flush inserted the association "
    "row and failed on its foreign key (SQLAlchemy writes nothing for a deleted member)"
)
def test_bug_no_association_row_for_a_member_deleted_by_a_flush(
    repro: Any, lib: str, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    # (since retort's save-update cascade is all or nothing, p4 stays out of its session, and
    # its commit writes nothing of it; SQLAlchemy's keeps p4 and inserts it, with no
    # association row: test_misuse.py's all-or-nothing tests, and the differential harness's
    # "a save-update cascade that raises attaches nothing")
    s, m, api = repro
    t1, t2 = s.get(m.Tag, 1), s.get(m.Tag, 2)
    p4 = m.Parent(id=4, name="p4", code=None)
    p4.tags.append(t1)  # p4 is not in the session yet
    s.delete(t1)
    s.flush()
    with pytest.raises(api.InvalidRequestError):
        t2.parents.append(p4)  # the cascade adds p4, then fails on t1
    assert p4.tags == [t1] and p4 not in t2.parents
    assert api.inspect(p4).pending == (lib == "sqlalchemy")
    s.commit()
    rows = admin_conn.execute(f"SELECT parent_id, tag_id FROM {schema}.parent_tags").fetchall()
    assert sorted(rows) == [(1, 2), (2, 2)]
    p4_row = admin_conn.execute(f"SELECT id FROM {schema}.parents WHERE id = 4").fetchall()
    assert bool(p4_row) == (lib == "sqlalchemy")


@both_libraries(
    "found (differential search): a new parent whose children hold a child deleted by a flush "
    "since (appended before the delete, the parent then added by a cascade that failed on it): "
    "the flush refused to copy the parent's key into the deleted child (SQLAlchemy writes "
    "nothing for it)"
)
def test_bug_no_foreign_key_for_a_child_deleted_by_a_flush(
    repro: Any, lib: str, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    # (retort's cascade is all or nothing since: as in the test above)
    s, m, api = repro
    c3, c4 = s.get(m.Child, 3), s.get(m.Child, 4)
    p4 = m.Parent(id=4, name="p4", code=None)
    p4.children.append(c3)  # p4 is not in the session yet (no cascade along a backref)
    s.delete(c3)
    s.flush()
    with pytest.raises(api.InvalidRequestError):
        c4.parent = p4  # the cascade adds p4, then fails on c3
    assert p4.children == [c3] and c4.parent is None
    assert api.inspect(p4).pending == (lib == "sqlalchemy")
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id")
    assert rows.fetchall() == [(1, 1), (2, 1), (4, None)]
    p4_row = admin_conn.execute(f"SELECT id FROM {schema}.parents WHERE id = 4").fetchall()
    assert bool(p4_row) == (lib == "sqlalchemy")


@both_libraries("the differential search")
def test_rollback_restores_an_object_whose_key_a_row_switch_took(repro: Any) -> None:
    # undo_log once skipped every deleted object whose key an object inserted in the scope
    # held, instead of those whose own state was inserted there
    s, m, api = repro
    t1, t2 = s.get(m.Tag, 1), s.get(m.Tag, 2)
    s.delete(t1)
    t1b = m.Tag(id=1, label="new")
    s.add(t1b)
    s.flush()  # a row switch: t1's row is t1b's now
    assert api.inspect(t1).deleted and api.inspect(t1b).persistent
    sp = s.begin_nested()
    s.delete(t2)
    t2b = m.Tag(id=2, label="new")
    s.add(t2b)
    s.flush()
    sp.rollback()
    assert api.inspect(t2).persistent and t2 in s and api.inspect(t2b).transient
    assert s.get(m.Tag, 2) is t2 and t2.label == "t2"
    s.rollback()
    assert api.inspect(t1).persistent and t1 in s and api.inspect(t1b).transient
    assert s.get(m.Tag, 1) is t1 and t1.label == "t1"


@both_libraries("the differential search")
def test_rollback_restores_an_object_whose_gone_key_a_new_object_took(
    repro: Any,
) -> None:
    s, m, api = repro
    p4b, p4c = _new_object_takes_a_gone_key(s, m)
    assert api.inspect(p4b).deleted and p4b not in s
    s.rollback()
    assert api.inspect(p4c).transient
    assert api.inspect(p4b).persistent and p4b in s


@both_libraries("the differential search")
def test_a_column_expired_inside_a_rolled_back_savepoint_is_not_loadable_once_transient(
    repro: Any,
) -> None:
    # retort once read None: make_transient_states forgot that the column had been expired
    # (StateInner::expired_insert now remembers that the object's INSERT was undone)
    s, m, api = repro
    c5 = m.Child(id=5, name="c5", parent_id=None)
    s.add(c5)
    s.flush()
    sp = s.begin_nested()
    c5.name = "x"
    s.flush()
    sp.rollback()  # expires c5 (changed inside)
    s.rollback()  # undoes its INSERT
    assert api.inspect(c5).transient
    with pytest.raises(api.DetachedInstanceError):
        c5.name  # noqa: B018


@both_libraries("the differential search")
def test_a_column_expired_by_expire_all_is_not_loadable_once_transient(repro: Any) -> None:
    s, m, api = repro
    p4 = m.Parent(id=4, name="p4", code="q")
    s.add(p4)
    s.flush()
    s.expire_all()
    p4.name = "new"  # (retort: materializes the expiry of the other columns)
    s.rollback()
    assert api.inspect(p4).transient and p4.name == "new"
    with pytest.raises(api.DetachedInstanceError):
        p4.code  # noqa: B018


@both_libraries(
    "found (differential search): merge() of a copy with parent=None and parent_id=None onto "
    "child 1 kept it (its parent_id set to NULL) where SQLAlchemy deletes it as an orphan: the "
    "old value of an unloaded many-to-one was looked up by the foreign key as it is now (NULL, "
    "copied first), not by the committed one (SQLAlchemy's LOAD_AGAINST_COMMITTED)"
)
def test_bug_the_old_parent_of_a_many_to_one_is_found_by_its_committed_key(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    p1, p2 = s.get(m.Parent, 1), s.get(m.Parent, 2)
    c1, c2 = list(p1.children)  # c1.parent is not loaded
    assert [c.id for c in p2.children] == [3]
    c1.parent_id = 2  # by hand
    c1.parent = None  # the old parent is p1 (the committed key), not p2
    assert list(api.inspect(c1).attrs.parent.history.deleted) == [p1]
    assert list(p1.children) == [c2]
    assert [c.id for c in p2.children] == [3]
    s.commit()  # an orphan of p1: deleted
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(2, 1), (3, 2), (4, None)]


@both_libraries(
    "found (differential search): a node expired by a commit, its parent_id set by hand and "
    "then its parent set to None: retort's flush wrote NULL. The old value of the unloaded "
    "many-to-one is looked up by the committed key, which a key set while expired leaves "
    "unknown: SQLAlchemy takes it for NULL (get_committed_value), so the old parent is None "
    "and setting None is no change, and the key set by hand is written; retort took the old "
    "parent for unknown, and the change for one"
)
def test_bug_a_many_to_one_set_to_none_after_its_key_was_set_while_expired_is_no_change(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    n2 = s.get(m.Node, 2)
    s.commit()  # n2 is expired
    n2.parent_id = 3  # by hand, not loaded: its committed value is unknown
    n2.parent = None
    assert not api.inspect(n2).attrs.parent.history.has_changes()
    assert n2.parent is None
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.nodes ORDER BY id").fetchall()
    assert rows == [(1, None), (2, 3), (3, 2), (4, 1)]


@both_libraries(
    "found with the test above: a many-to-one set to None, where the old value (found by the "
    "committed key) was None already, was left unloaded, so reading it loaded the parent the "
    "foreign key set by hand names; SQLAlchemy sets the attribute all the same, and it reads None"
)
def test_bug_a_many_to_one_set_to_none_reads_none_after_its_key_was_set(repro: Any) -> None:
    s, m, _api = repro
    n1 = s.get(m.Node, 1)
    assert n1.parent_id is None
    n1.parent_id = 3  # by hand; the committed key is NULL, so the old parent is None
    n1.parent = None
    with s.no_autoflush:
        assert n1.parent is None


@both_libraries(
    "found (differential search): merge() of a new copy of parent 1 whose children collection "
    "had only been read (empty, never changed) gave parent 1 that empty collection, and the "
    "flush deleted its children as orphans; SQLAlchemy keeps a collection read on a new object "
    "out of its __dict__ until it changes, and merge() passes over it"
)
def test_bug_merge_passes_over_a_collection_only_read_on_a_new_object(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    copy = m.Parent(id=1, name="a")
    assert list(copy.children) == []
    merged = s.merge(copy)
    assert [c.id for c in merged.children] == [1, 2]
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1, 1), (2, 1), (3, 2), (4, None)]


@both_libraries(
    "found (differential search): after a failed flush, reading the unloaded many-to-one of "
    "a child whose parent_id was set to None raised PendingRollbackError; its key is NULL, so "
    "SQLAlchemy's lazy loader answers None with no SQL and no autoflush"
)
def test_bug_a_many_to_one_with_a_null_key_reads_none_after_a_failed_flush(repro: Any) -> None:
    s, m, api = repro
    c2 = s.get(m.Child, 2)
    s.add(m.Child(id=1, name="again"))  # child 1's key, taken
    with pytest.raises(api.IntegrityError):
        s.flush()
    c2.parent_id = None  # (c2 is expired by the failed flush: nothing is loaded)
    assert c2.parent is None
    with pytest.raises(Exception, match="rolled back") as raised:
        c2.name  # noqa: B018
    assert type(raised.value).__name__ == "PendingRollbackError"


@both_libraries(
    "found (differential search): the save-update cascade followed a collection's current "
    "members only; SQLAlchemy's also follows the members taken out since the last flush, so "
    "that s.add() of an object brings back into the session a detached object taken out"
)
def test_bug_the_save_update_cascade_follows_members_taken_out_of_a_collection(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    n1 = s.get(m.Node, 1)
    n2, _n4 = sorted(n1.children, key=lambda n: n.id)
    s.expunge(n2)
    n1.children.remove(n2)  # (the backref sets the detached n2's parent to None)
    s.add(n1)  # n1 is in the session: only its cascade does anything
    assert api.inspect(n2).persistent and n2 in s
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.nodes ORDER BY id").fetchall()
    assert rows == [(1, None), (2, None), (3, 2), (4, 1)]


@both_libraries(
    "differential nightly: a child flushed, expired and made transient by a rollback, then "
    "cascaded back into the session, was inserted with NULL for its expired columns"
)
def test_bug_an_object_expired_before_its_insert_was_rolled_back_is_not_inserted_again(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    c5 = m.Child(id=5, name="c5")
    s.add(c5)
    t1 = s.get(m.Tag, 1)  # (the autoflush inserts c5)
    s.expire_all()
    p4 = m.Parent(id=4, name="p4")
    s.add(p4)
    p4.children.append(c5)
    s.rollback()  # c5 and p4 lose their rows; c5's columns stay expired
    assert api.inspect(c5).transient
    t1.parents.append(p4)  # the cascade brings p4, and through it c5, back
    assert api.inspect(c5).pending
    with pytest.raises(api.InvalidRequestError):
        c5.name  # noqa: B018
    with pytest.raises(api.InvalidRequestError):
        s.flush()
    s.rollback()
    rows = admin_conn.execute(f"SELECT id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1,), (2,), (3,), (4,)]


@both_libraries(
    "differential nightly: a many-to-one set to a parent whose cascade reaches an object "
    "deleted by a flush raised, but kept the new value"
)
def test_bug_a_many_to_one_keeps_its_value_when_the_cascade_of_the_new_one_fails(
    repro: Any,
) -> None:
    s, m, api = repro
    c1 = s.get(m.Child, 1)
    p4 = m.Parent(id=4, name="p4")
    s.add(p4)
    p4.children.append(c1)
    s.rollback()  # p4 is transient again, and still holds c1
    s.delete(c1)
    c1_again = s.merge(c1)  # (the autoflush deletes c1's row): a new, pending child 1
    assert c1_again is not c1 and api.inspect(c1_again).pending
    p1 = s.get(m.Parent, 1)
    with pytest.raises(api.InvalidRequestError):
        c1_again.parent = p4  # the cascade takes p4 in, and through it the deleted c1
    assert c1_again.parent is p1  # by its parent_id, unchanged


@both_libraries(
    "differential nightly: a child taken out of its parent's delete-orphan collection, then "
    "the parent expunged, was given a NULL parent_id by the flush instead of being deleted"
)
def test_bug_a_child_taken_out_of_a_parent_expunged_since_is_an_orphan(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    c1, c2 = p1.children
    p1.children.remove(c2)
    s.expunge(p1)  # (and c1, through the cascade; c2 is no member any more and stays)
    assert c1 not in s and c2 in s
    s.flush()
    assert api.inspect(c2).deleted
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id").fetchall()
    assert rows == [(1, 1), (3, 2), (4, None)]


@both_libraries(
    "differential nightly: objects only marked deleted (or added) inside a SAVEPOINT were "
    "expired by its rollback; SQLAlchemy expires the objects an attribute event touched, so "
    "after a flush failed inside it, a parent whose delete it undid kept its loaded children"
)
def test_bug_a_savepoint_rollback_expires_no_object_only_deleted_or_added_inside(
    repro: Any,
) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    c1, _c2 = p1.children
    c4 = s.get(m.Child, 4)
    s.expunge(c4)
    sp = s.begin_nested()
    s.delete(p1)  # (its children too, through the cascade)
    s.add(c4)
    sp.rollback()
    assert api.inspect(p1).persistent and "name" not in api.inspect(p1).unloaded
    assert "name" not in api.inspect(c1).unloaded and "name" not in api.inspect(c4).unloaded
    s.begin_nested()
    s.delete(p1)
    s.add(m.Parent(id=2, name="again"))  # parent 2's key, taken
    with pytest.raises(api.IntegrityError):
        s.flush()
    # the SAVEPOINT is rolled back: p1 is persistent again, its children still loaded, so
    # appending needs no SQL (which the session refuses until rollback())
    assert api.inspect(p1).persistent and "children" not in api.inspect(p1).unloaded
    p1.children.append(m.Child(id=5, name="c5"))
    assert len(p1.children) == 3


@both_libraries(
    "differential nightly: a child taken out of the delete-orphan children of a parent a "
    "rollback had made new again (outside the session) was deleted as an orphan; its row "
    "never named that parent, and SQLAlchemy's flush finds no change of it"
)
@pytest.mark.parametrize("changed", [False, True])
def test_bug_a_child_taken_out_of_a_parent_without_a_row_is_no_orphan(
    repro: Any, changed: bool
) -> None:
    s, m, api = repro
    p4 = m.Parent(id=4, name="p4")
    s.add(p4)
    s.flush()
    c4 = s.get(m.Child, 4)  # (no parent in its row)
    p4.children.append(c4)
    s.rollback()  # parent 4 is transient, its children still list child 4
    assert api.inspect(p4).transient and c4.name == "c4" and c4.parent_id is None
    p4.children.remove(c4)
    if changed:
        # a change of its own puts it in a flush, whose parent tracking finds it parentless:
        # an orphan, deleted (a value set again is no change in retort: SPEC §5)
        c4.name = "changed"
    s.commit()
    found = s.execute(api.select(m.Child.id).where(m.Child.id == 4)).scalar()
    assert found == (None if changed else 4)


@both_libraries(
    "differential nightly: a child taken out of its parent's delete-orphan children while "
    "persistent, made new again by a rollback and brought back in by a cascade without a "
    "parent, was inserted; SQLAlchemy remembers it was orphaned and its flush expunges it "
    "(unless add() brought it in)"
)
@pytest.mark.parametrize("how", ["cascade", "add", "unflushed"])
def test_bug_an_orphan_made_new_by_a_rollback_and_cascaded_in_is_expunged(
    repro: Any, how: str
) -> None:
    s, m, api = repro
    p4 = m.Parent(id=4, name="p4")
    c5 = m.Child(id=5, name="c5")
    p4.children.append(c5)
    s.add(p4)
    s.flush()
    c5.parent = None  # out of parent 4's children (delete-orphan): the flush deletes it
    if how != "unflushed":  # (else the rollback comes before any flush of the removal)
        s.add(m.Parent(id=1, name="dup"))  # parent 1's key, taken
        with pytest.raises(api.IntegrityError):
            s.flush()
    s.rollback()  # parent 4 and child 5 are transient
    assert api.inspect(c5).transient and api.inspect(p4).transient
    c6 = m.Child(id=6, name="c6")
    c6.parent = p4
    s.add(c6)  # the cascade brings in parent 4, and child 5 (taken out of its children)
    assert c5 in s and api.inspect(c5).pending
    if how == "add":
        s.add(c5)  # the caller wants it: it is inserted, without a parent
    with warnings.catch_warnings():
        # (SQLAlchemy's flush, having expunged it, warns that parent 4's children list it)
        warnings.simplefilter("ignore")
        s.commit()
    rows = s.execute(api.select(m.Child.id, m.Child.parent_id).order_by(m.Child.id)).all()
    if how == "add":
        # (SQLAlchemy's object ends up detached, its row written all the same)
        assert (5, None) in rows
    else:
        assert api.inspect(c5).transient and 5 not in [r[0] for r in rows]
    assert (6, 4) in rows


@both_libraries(
    "differential nightly: a SAVEPOINT's rollback expired an object whose relationship changed "
    "inside it even where expire_all() had discarded the change since; SQLAlchemy's expiry "
    "resets the object's modified flag, so after a flush failed inside the SAVEPOINT, the "
    "parent kept the children its delete cascade had loaded"
)
@pytest.mark.parametrize("expire", ["expire_all", "expire", "flushed_then_expire_all"])
def test_bug_a_savepoint_rollback_expires_no_object_whose_change_an_expiry_discarded(
    repro: Any, expire: str
) -> None:
    s, m, api = repro
    p2 = s.get(m.Parent, 2)
    c4 = s.get(m.Child, 4)
    s.begin_nested()
    c4.parent = p2  # (a backref change of parent 2's children, not loaded)
    if expire == "flushed_then_expire_all":
        # a change written inside the SAVEPOINT: its rollback expires parent 2 all the same
        s.flush()
        s.expire_all()
        s.delete(p2)
        s.add(m.Parent(id=1, name="again"))
        with pytest.raises(api.IntegrityError):
            s.flush()
        assert api.inspect(p2).persistent and "children" in api.inspect(p2).unloaded
        return
    if expire == "expire_all":
        s.expire_all()
    else:
        s.expire(c4)
        s.expire(p2)
    s.delete(p2)  # loads its children for the cascade: child 3 only
    s.add(m.Parent(id=1, name="again"))  # parent 1's key, taken
    with pytest.raises(api.IntegrityError):
        s.flush()
    # the SAVEPOINT is rolled back: parent 2 is persistent again, unchanged inside it, its
    # children still loaded, so appending needs no SQL (which the session refuses)
    assert api.inspect(p2).persistent and "children" not in api.inspect(p2).unloaded
    p2.children.append(m.Child(id=5, name="c5"))
    assert [c.id for c in p2.children] == [3, 5]


@both_libraries(
    "differential nightly: an object holding a relationship change made outside the session, "
    "attached inside a SAVEPOINT whose flush wrote it (a DELETE), was not expired when the "
    "SAVEPOINT rolled back: it kept the change, flushed no more, against its row"
)
@pytest.mark.parametrize("cls", ["Node", "Child"])
def test_bug_a_savepoint_rollback_expires_an_object_attached_inside_with_a_relationship_change(
    repro: Any, cls: str, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    obj = s.get(m.by_name(cls), 2 if cls == "Node" else 3)
    obj.parent = None  # (not flushed: the object leaves the session)
    s.expunge(obj)
    sp = s.begin_nested()
    s.delete(obj)  # attaches it again, with its change
    s.flush()
    sp.rollback()
    # the DELETE is undone and the object expired, its change gone with the SAVEPOINT: it
    # names its row's parent again, and nothing is left to flush
    assert api.inspect(obj).persistent and "parent" in api.inspect(obj).unloaded
    assert obj.parent is not None and obj.parent.id == (1 if cls == "Node" else 2)
    assert obj not in s.dirty
    s.commit()
    rows = fetch_rows(admin_conn, schema)["nodes" if cls == "Node" else "children"]
    assert rows == INITIAL_ROWS["nodes" if cls == "Node" else "children"]


@both_libraries(
    "differential nightly: a SAVEPOINT's rollback expired the objects whose flushed DELETE it "
    "undid; SQLAlchemy expires those changed before the DELETE only, so after a flush failed "
    "inside it, a parent deleted by an earlier flush there kept its loaded children"
)
def test_bug_a_savepoint_rollback_expires_no_unchanged_object_whose_delete_it_undid(
    repro: Any,
) -> None:
    s, m, api = repro
    p1, p2 = s.get(m.Parent, 1), s.get(m.Parent, 2)
    c1, _c2 = p1.children
    sp = s.begin_nested()
    s.delete(p1)  # (its children too, through the cascade)
    p2.name = "changed"
    s.delete(p2)  # (changed first: SQLAlchemy expires it)
    s.flush()
    sp.rollback()
    assert api.inspect(p1).persistent and not api.inspect(p1).deleted
    assert {"name", "children"} & api.inspect(p1).unloaded == set()
    assert "name" not in api.inspect(c1).unloaded
    assert api.inspect(p2).persistent and "name" in api.inspect(p2).unloaded
    assert p2.name == "p2"
    s.begin_nested()
    s.delete(p1)
    s.flush()
    s.add(m.Parent(id=3, name="again"))  # parent 3's key, taken
    with pytest.raises(api.IntegrityError):
        s.flush()
    # the SAVEPOINT is rolled back: p1 is persistent again, its children still loaded, so
    # appending needs no SQL (which the session refuses until rollback())
    assert api.inspect(p1).persistent and "children" not in api.inspect(p1).unloaded
    p1.children.append(m.Child(id=5, name="c5"))
    assert len(p1.children) == 3


@both_libraries(
    "differential nightly: a new node given a parent and then taken out of its children "
    "brought that parent into the session with it; SQLAlchemy's history of a new object's "
    "many-to-one starts with no value, so its cascade does not follow the parent set before"
)
def test_bug_a_new_objects_many_to_one_set_twice_does_not_cascade_to_its_first_value(
    repro: Any,
) -> None:
    s, m, api = repro
    n5, n6 = m.Node(id=5, name="n5"), m.Node(id=6, name="n6")
    n6.parent = n5
    n5.children.remove(n6)  # (the backref sets n6.parent to None)
    n7 = m.Node(id=7, name="n7", parent=n6)
    s.add(n7)
    assert api.inspect(n6).pending and api.inspect(n5).transient
    assert api.inspect(n6).attrs.parent.history.deleted == ()
    s.flush()
    assert api.inspect(n5).transient


@both_libraries(
    "differential nightly: the save-update cascade followed a collection's members in list "
    "order; SQLAlchemy's follows those gained since the last flush first, so that where it "
    "fails on another member (a detached object whose key another instance holds), the new "
    "member is pending already"
)
@pytest.mark.parametrize("listening", [False, True])  # (the core's walk, or Python's)
def test_bug_the_save_update_cascade_follows_members_gained_first(
    repro: Any, lib: str, listening: bool
) -> None:
    s, m, api = repro
    if listening:
        event = importlib.import_module("retort.event" if lib == "retort" else "sqlalchemy.event")
        event.listen(s, "after_attach", lambda session, obj: None)
    p4 = m.Parent(id=4, name="p4", code=None)
    c5 = m.Child(id=5, name="c5")
    p4.children.append(c5)
    s.add(p4)
    s.flush()
    s.expunge(p4)  # with c5 (the expunge cascade)
    other = s.get(m.Child, 5)  # another instance holds child 5's key
    assert other is not c5
    c7 = m.Child(id=7, name="c7")
    p4.children.append(c7)  # (p4 is outside the session: no cascade)
    with pytest.raises(api.InvalidRequestError):
        s.add(p4)  # the cascade takes c7, then c5
    assert api.inspect(c5).detached
    if lib == "retort":
        # all or nothing since (SPEC §4): p4 and c7 leave the session again
        assert api.inspect(c7).transient and api.inspect(p4).detached and not s.new
    else:
        assert api.inspect(c7).pending


@both_libraries(
    "found: merge() of a copy of a parent expired as a whole (detached) loaded the expired "
    "parent of its key, so that a child's many-to-one set to None later found its old parent "
    "and deleted it as an orphan (SQLAlchemy's merge copies nothing, loads nothing, and the "
    "child whose old parent is expired in the identity map keeps its row, its key NULLed)"
)
def test_bug_merge_of_a_wholly_expired_copy_loads_nothing(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    copy = s.get(m.Parent, 1)
    s.expire_all()
    s.expunge(copy)
    p1 = s.get(m.Parent, 1)
    c1 = p1.children[0]
    s.expire_all()
    assert s.merge(copy) is p1
    assert api.inspect(p1).expired
    assert c1.name == "c1"  # (loads the child, not its parent)
    c1.parent = None
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.children ORDER BY id")
    assert rows.fetchall() == [(1, None), (2, 1), (3, 2), (4, None)]


@both_libraries(
    "found (differential search): an object updated by a flush inside a SAVEPOINT, expunged, "
    "and attached again after a flush failed there kept, once the SAVEPOINT was rolled back, "
    "the values whose UPDATE that rollback undid (SQLAlchemy's rollback expires it)"
)
def test_bug_savepoint_rollback_expires_an_object_attached_again_after_a_failed_flush(
    repro: Any,
) -> None:
    s, m, api = repro
    sp = s.begin_nested()
    n1 = s.get(m.Node, 1)
    n1.name = "a"
    s.flush()
    s.expunge(n1)
    s.add(m.Parent(id=1, name="x"))  # the key of a row: the flush fails
    with pytest.raises(api.IntegrityError):
        s.flush()
    n5 = m.Node(id=5, name="n5")
    n5.parent = n1
    s.add(n5)  # the cascade attaches node 1 again
    assert api.inspect(n1).persistent and n1.name == "a"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy: state changed on a non-active transaction
        sp.rollback()
    assert n1.name == "n1"


@both_libraries(
    "found (differential search): after a failed flush, delete() of a detached object attaches "
    "it before it raises PendingRollbackError; the next flush() then raised too, where "
    "SQLAlchemy's finds nothing changed and returns"
)
def test_bug_flush_after_a_failure_with_an_object_attached_again_unchanged(repro: Any) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    s.expunge(p1)
    s.add(m.Parent(id=1, name="a"))  # the key of a row: the flush fails
    with pytest.raises(api.IntegrityError):
        s.flush()
    with pytest.raises(api.PendingRollbackError):
        s.delete(p1)  # (its cascade needs SQL)
    assert p1 in s and not s.new and not s.dirty and not s.deleted
    s.flush()  # nothing to do
    p1.name = "changed"
    with pytest.raises(api.PendingRollbackError):
        s.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy: state changed on a non-active transaction
        s.rollback()


@both_libraries(
    "found (differential search): a detached object holding a value a rollback undid, given "
    "a child outside the session and attached by that child's cascade inside a SAVEPOINT, kept "
    "the value when the SAVEPOINT rolled back (SQLAlchemy expires every object with a change "
    "not flushed, a relationship's too)"
)
def test_bug_savepoint_rollback_expires_an_object_with_a_relationship_change_from_outside(
    repro: Any,
) -> None:
    s, m, _ = repro
    n1 = s.get(m.Node, 1)
    n1.name = "a"
    s.flush()
    s.expunge(n1)
    s.rollback()  # the row is "n1" again; the detached object still says "a"
    sp = s.begin_nested()
    n5 = m.Node(id=5, name="n5")
    n5.parent = n1  # (no session yet: queued for node 1's children)
    s.add(n5)  # the cascade attaches node 1
    assert n1 in s.dirty and n1.name == "a"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp.rollback()
    assert n1.name == "n1"


@both_libraries(
    "found (differential search): expire_all() forgot that a pending child was taken out of "
    "the delete-orphan children of a parent outside the session, so the autoflush of a later "
    "load (after a failed flush) left it pending; SQLAlchemy expires no pending object and "
    "expunges that orphan"
)
def test_bug_expire_all_keeps_a_pending_orphan(repro: Any) -> None:
    s, m, api = repro
    t1 = s.get(m.Tag, 1)
    s.add(m.Parent(id=1, name="a"))  # the key of a row: the flush fails
    with pytest.raises(api.IntegrityError):
        s.flush()
    p4 = m.Parent(id=4, name="p4")
    c6 = m.Child(id=6, name="c6")
    s.add(c6)
    p4.children.append(c6)  # p4 stays outside the session
    c6.parent = None  # an orphan
    s.expire_all()
    assert api.inspect(c6).pending
    with pytest.raises(api.PendingRollbackError):
        t1.parents  # noqa: B018 (the load's autoflush expunges the orphan, then refuses)
    assert api.inspect(c6).transient


@both_libraries(
    "noticed while fixing the merge of a wholly expired copy: merge() of a copy holding its "
    "key and nothing else left the session's expired object of that key expired, where "
    "SQLAlchemy's merge loads it to set the key"
)
def test_bug_merge_of_a_copy_holding_only_its_key_loads_the_expired_object(repro: Any) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    s.commit()
    assert api.inspect(p1).expired
    assert s.merge(m.Parent(id=1)) is p1
    assert not api.inspect(p1).expired
    assert api.inspect(p1).dict["name"] == "p1"


@both_libraries(
    "found by the differential search: a new tag, flushed with parent 1 among its parents, "
    "is made new again by a rollback (which undid the association row); appending parent 1 "
    "again, which its parents still list, was no change in retort, so the commit left the "
    "row out (SQLAlchemy writes it again), also once the tag was inserted again"
)
@pytest.mark.parametrize("inserted_again", [False, True])
def test_bug_a_member_appended_again_to_an_object_made_new_by_a_rollback_is_written(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str, inserted_again: bool
) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    t3 = m.Tag(id=3, label="a")
    s.add(t3)
    t3.parents.append(p1)
    s.flush()
    s.rollback()
    assert api.inspect(t3).transient and t3.parents == [p1]
    p2 = s.get(m.Parent, 2)
    p2.tags.append(t3)  # (its cascade adds the tag again)
    if inserted_again:
        s.flush()  # (the tag has a row again; parent 1's association row is still undone)
    t3.parents.append(p1)
    s.commit()
    rows = admin_conn.execute(f"SELECT parent_id, tag_id FROM {schema}.parent_tags ORDER BY 1, 2")
    assert rows.fetchall() == [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3)]


@both_libraries(
    "found by the differential search: after a flush failed inside a SAVEPOINT, reading a "
    "child's many-to-one whose parent the identity map holds loaded raised "
    "PendingRollbackError in retort; SQLAlchemy's lazy loader answers from the identity map"
)
def test_bug_a_many_to_one_held_by_the_identity_map_reads_after_a_failed_flush(
    repro: Any,
) -> None:
    s, m, api = repro
    p1 = s.get(m.Parent, 1)
    c1 = s.get(m.Child, 1)
    assert "parent" in api.inspect(c1).unloaded
    s.begin_nested()
    s.add(m.Parent(id=2, name="taken"))
    with pytest.raises(api.IntegrityError):
        s.flush()
    assert c1.parent is p1  # (no SQL: the session refuses SQL until the rollback)
    with pytest.raises(api.PendingRollbackError):
        s.get(m.Parent, 3)  # (which loads)
    s.rollback()


@both_libraries(
    "differential nightly: a node outside the session, given a parent whose flush copied its "
    "key into it, then taken out of that parent's children, kept the key when the parent was "
    "deleted (the flush of a parent that stays clears it)"
)
def test_bug_a_parents_delete_clears_the_key_of_a_node_taken_out_outside_the_session(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, _api = repro
    n5 = m.Node(id=5, name="n5")
    s.add(n5)
    n6 = m.Node(id=6, name="n6")
    n6.parent = n5  # (not added: it stays outside the session, in n5's children)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (SQLAlchemy's: n6 is not in the session)
        s.flush()
    assert n6 not in s and n6.parent_id == 5  # the flush copied the key all the same
    n5.children.remove(n6)
    s.delete(n5)
    s.flush()
    assert n6.parent is None and n6.parent_id is None
    s.add(n6)
    s.commit()
    rows = fetch_rows(admin_conn, schema)["nodes"]
    assert rows == [*INITIAL_ROWS["nodes"], (6, "n6", None)]


@both_libraries(
    "differential nightly: the flush of a node's DELETE set parent_id to NULL on each child its "
    "loaded children listed, one whose DELETE an earlier flush ran included, and the flush "
    "raised InvalidRequestError (a change to a deleted object) where SQLAlchemy writes nothing "
    "for it"
)
def test_bug_a_parents_delete_writes_nothing_for_a_child_deleted_by_an_earlier_flush(
    repro: Any, admin_conn: psycopg.Connection[Any], schema: str
) -> None:
    s, m, api = repro
    n1 = s.get(m.Node, 1)
    n2, n4 = n1.children
    assert (n2.id, n4.id) == (2, 4)
    s.delete(n2)
    s.flush()  # (node 3, node 2's child, gets parent_id NULL)
    assert api.inspect(n2).deleted and n2 in n1.children
    s.delete(n1)
    s.flush()
    assert api.inspect(n1).deleted and n2.parent_id is None and n4.parent_id is None
    s.commit()
    rows = admin_conn.execute(f"SELECT id, parent_id FROM {schema}.nodes ORDER BY id")
    assert rows.fetchall() == [(3, None), (4, None)]


@pytest.mark.parametrize("lib", ["retort", "sqlalchemy"])
def test_a_flush_may_load_an_expired_object_changed_by_a_queued_change_netting_to_nothing(
    repro: Any,
) -> None:
    # what the model's note_keys_read_by_the_flush allows for (found with the nightly
    # profile): child 3 is taken out of parent 2's children (an orphan), everything is
    # expired, and child 3 given parent 1 then None: parent 1's unloaded children queue an
    # append and a removal. The flush deletes the orphan; SQLAlchemy's also registers parent
    # 1, changed, reading its expired key, which loads it; retort's has nothing of parent 1
    # to read, and leaves it expired
    s, m, api = repro
    p1, p2 = s.get(m.Parent, 1), s.get(m.Parent, 2)
    c3 = p2.children[0]
    p2.children.remove(c3)
    s.expire_all()
    c3.parent = p1
    c3.parent = None
    assert api.inspect(p1).expired
    s.flush()
    assert api.inspect(c3).deleted
    assert bool(api.inspect(p1).expired) == (api.name == "retort")
    s.rollback()
