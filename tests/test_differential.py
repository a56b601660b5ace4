"""Differential testing against SQLAlchemy 2.x: random programs run on both, in lockstep.

Hypothesis draws a program step by step: create parents, children, tags and nodes (added
directly, appended to a parent's collection or given a parent), set columns (unique codes and
foreign keys included), move a child between parents, remove a child from a collection
(delete-orphan), link and unlink tags (many-to-many), set a node's parent (self-referential,
cycles included), delete, flush, commit, rollback, begin_nested with release or rollback,
expire_all, expire and refresh (of an object, or of one attribute), expunge, merge (of a
handled object or of a new transient copy), get, query, read an attribute (lazy loads
included), and a fault (a statement the server refuses on the session's connection, a load by
key in the failed transaction, then the rollback of the innermost SAVEPOINT or of the
transaction). Each step runs on SQLAlchemy (the oracle) and on retort, each with its own
Session over the same models (tests/_diff_models.py) in its own schema holding the same initial
rows. Keys are natural, so both produce the same rows.

After every step the two must agree on: the outcome (the normalised result, or the class name
of the error raised: retort.exc.X for sqlalchemy.exc.X / sqlalchemy.orm.exc.X), every handled
object's state (transient/pending/persistent/deleted/detached through `inspect`, membership in
the session, loaded attribute values, related objects by key), `session.new` and
`session.deleted`, and whether a (nested) transaction is open. After a successful flush the
rows each transaction sees must agree; after a commit (and at the end of every program, which
commits) the committed rows of every table, read through `admin_conn`.

Accepted divergences, each encoded by a plain test (here or in test_relationships.py):
- a deleted object's collection that SQLAlchemy's flush loads lists a detached object queued on
  it (appended while outside the session) beside the object loaded for the same row; retort's
  lists the row once (Lockstep.without_detached_twins);
- SPEC §5 improvements: when SQLAlchemy fails with CircularDependencyError (a cycle through the
  nullable nodes.parent_id) or an IntegrityError on the unique parents.code (a value changing
  hands within one flush) and retort succeeds (or gets further), the program stops there after
  checking that retort's rows are what its objects say;
- SPEC §4 (every misuse gets a specific error, before anything changes): changing or relating
  an object whose DELETE was flushed raises InvalidRequestError in retort before any change;
  SQLAlchemy changes the other side of back_populates first, or accepts the change and loses it;
  a save-update cascade refusing an object on its way (InvalidRequestError in both) attaches
  nothing in retort, where SQLAlchemy keeps what it attached before the error, for its next
  flush to write (the program stops there);
- a member given twice (a new object twice, or appended again while the other side was not
  loaded, or two objects with one key, one deleted) is one association row in retort, a
  primary key violation in SQLAlchemy (or one row, by the order of a set, where one side lists
  the member loaded and the other's append is queued: not drawn,
  Drawer.links_again_one_side_queued); a member listed twice whose object is deleted is one
  row to delete in retort, two in SQLAlchemy (StaleDataError); merge() of an object listing a
  member twice (or two objects of one key, which the merge makes one) lists the merged object
  twice on the member's side in retort (once per entry),
  once in SQLAlchemy (not drawn: Drawer.lists_a_member_twice);
- an object made transient by a rollback, whose many-to-many lists members as of the
  rolled-back flush that wrote their association rows: put back in the session, retort's flush
  writes the rows again (the collection is new again, with its object), SQLAlchemy's does not
  (its history says no change), and taken out, SQLAlchemy's flush deletes the row the rollback
  undid (StaleDataError), retort's deletes none (not drawn: Drawer.lists_unwritten_members);
- an object outside the session at a rollback, holding a change queued for an unloaded
  collection (the removal a child's many-to-one set to None queues on its parent's children),
  keeps the queue in both while the rollback undoes the change on the child; put back in the
  session, SQLAlchemy's collection applies the queue once loaded (leaving out a member whose
  row names the parent), retort's lists what the rows say (not drawn:
  Drawer.queued_past_rollback);
- retort copies keys into foreign keys before a flush's first statement, SQLAlchemy table by
  table: after a failed flush, new objects (pending, or made transient again) may differ in
  parent_id, and so may detached ones (neither compared nor read, nor put back in the
  session; see test_improvement_keys_are_copied_before_a_failed_flushs_first_statement);
- the flush of a DELETE reads the object's unloaded many-to-ones from the identity map (no
  SQL), so that they stay readable once it is detached: SQLAlchemy's for the first deleted object
  of each relationship only, retort's for every one (merge() copies what is loaded: the draw
  merges no deleted object whose parent retort's alone holds, nor one whose parent
  SQLAlchemy's holds as None, not found in the identity map:
  Drawer.deleted_many_to_one_may_differ);
- a delete cascade reaching an object whose DELETE was flushed (it stays in the loaded
  collection) passes over it in retort; SQLAlchemy puts it back in the identity map and
  session.deleted, and its next flush sends a second DELETE matching no row, with a warning
  (or, where a new object took its key in a row switch, the identity map refuses it:
  InvalidRequestError) (the program stops there, as for the improvements above);
- after a flush failed inside a SAVEPOINT (rolling it back), SQLAlchemy has expired every
  object an attribute event touched inside it, and reading one raises PendingRollbackError
  until the SAVEPOINT is rolled back; retort expires the objects that changed only, so an
  object given a value it had (a column set again, a backref setting a child's parent to the
  one it has) stays readable (the program stops there, after rolling the SAVEPOINT back and
  checking that retort's objects hold their rows);
- an object loaded from a row inserted inside a SAVEPOINT, by another instance than the one
  that inserted it (expunged since), is expired by the SAVEPOINT's rollback in retort, which
  removed the row; SQLAlchemy's keeps showing the row unless an attribute event touched the
  object inside (the program stops there: Lockstep.holds_a_row_the_savepoint_removed);
- a collection listing a member twice (appended from both sides: one association row) of an
  object given inside a SAVEPOINT a value it had: SQLAlchemy's rollback expires it, and a step
  loading the collection lists the row once; retort's keeps both entries (the program stops
  there: Lockstep.lists_twice_what_sa_loaded_once);
- what each holds expired may differ, and loading it autoflushes: an object given inside a
  SAVEPOINT a value it had (a column set again, a backref setting a child's parent to the one
  it has) stays loaded when the SAVEPOINT rolls back in retort, where SQLAlchemy expires it;
  SQLAlchemy's flush loads an expired parent to read its key for a child's foreign key, where
  retort's reads the key it knows. Before a read, get() or append to a collection that would
  load in one library only, the harness flushes both (Lockstep.loads_in_one_library_only); a
  collection loaded in one of them only may list a member deleted (perhaps by that flush) or
  expunged since, which the other's load leaves out, or lists as a new instance of its row
  (the program stops there: Lockstep.stale_collection_read); where that flush has nothing
  to do and the session refuses SQL (a flush failed inside a SAVEPOINT not rolled back yet),
  the load is refused in the one library that needs it (the program stops there); likewise
  SQLAlchemy's flush loads an expired object before its UPDATE, where retort's sends the
  UPDATE by the key it knows: the draw reads no attribute of a detached object, or one whose
  DELETE was flushed, that is loaded in one library only (Drawer.detached_loaded_differs:
  reading raises in the other, or loads, autoflushing first, and finds no row), nor merges an
  object whose columns SQLAlchemy's holds and retort's does not
  (Drawer.columns_loaded_by_sqlalchemy_only: merge() copies what is loaded), nor gives a new
  parent to an object whose parent_id SQLAlchemy's holds and retort's does not, or whose old
  parent SQLAlchemy's identity map holds loaded and retort's expired (SQLAlchemy's delete()
  loads the object it marks) (Drawer.old_parent_known_differs: the backref looks the old
  parent up by the key, not loading an expired one, and takes the object out of that
  parent's children, a delete-orphan deleting it), nor expunges a parent
  whose children are loaded in one library only (the cascade follows loaded children:
  Drawer.children_loaded_in_one_library_only);
- retort knows a column an INSERT left out is NULL, where SQLAlchemy leaves it unloaded:
  merge() copies what is loaded, and where it reaches two copies of one key (merged onto one
  object, relationships first, then columns, so the first copy's columns win) retort's first
  copy may hold such a column and SQLAlchemy's not, which then keeps the other copy's value
  (the draw merges no such pair: Drawer.merges_copies_of_a_key_loaded_differently), nor such
  a copy onto another object of its key (Drawer.columns_loaded_by_retort_only_onto_another),
  nor such an object at all (a merge loads the row, which another instance may have changed:
  Drawer.merge_copies_a_written_none);
- a child taken out of a collection while its many-to-one names another parent, loaded (its
  key set by hand since): SQLAlchemy's parent tracking records no parent, and its flush clears
  the key; retort's keeps it (the program stops there: Lockstep.removed_naming_another_
  untracked);
- a flush copies a parent's key into a child outside the session (given the parent, not
  added, or given it when detached) in both, into a node outside the session in retort only
  where SQLAlchemy's self-referential flush does it when the parent's children are loaded (the
  draw reads no such node's parent_id, nor merges it or puts it back in the session, which
  would take the key along; test_divergence_a_key_is_copied_into_a_node_outside_the_session,
  test_divergence_a_key_is_copied_into_a_detached_node);
- merge() of a key whose object the identity map holds expired, with no row (a rollback
  undid its INSERT): SQLAlchemy copies onto that object and raises ObjectDeletedError; retort
  looks the key up as get() does (which marks the stale object deleted, as SQLAlchemy's get()
  does) and adds a new object, as for any key without a row (the program stops there);
- reading an expired object whose row is gone, where the autoflush of the load inserts a new
  object with its key (and so marks it deleted): SQLAlchemy loads the new object's row into it,
  retort raises ObjectDeletedError (the program stops there);
- after a failed flush, a flush where the only changes are values set again (to the values
  objects have, as merge() of an unchanged copy does, or a many-to-one of an object that
  SQLAlchemy's SAVEPOINT rollback expired and retort's did not, set to what its foreign key
  names, or a column an INSERT left out set to NULL, which retort knows): SQLAlchemy counts
  them as changes and refuses to flush (PendingRollbackError, also from the autoflush of a
  merge() onto an object the session holds loaded), retort has nothing to flush and succeeds,
  as SQLAlchemy does for a clean session (the program stops there);
- after a failed flush inside a SAVEPOINT, delete() of an object that SQLAlchemy's SAVEPOINT
  rollback expired (for a value set again inside) and retort's did not: SQLAlchemy's delete
  cascade needs a load, refused until rollback() (PendingRollbackError); retort's marks it
  without SQL (the program stops there);
- a flush relating an expired object whose row is gone: SQLAlchemy's loads it to read its
  key and raises ObjectDeletedError (or, where it is the autoflush of get() loading an expired
  object, get() raises PendingRollbackError), retort's sends the key it knows and the database
  refuses the row (IntegrityError; the program stops there); likewise for a flush changing such
  an object: SQLAlchemy's loads it (ObjectDeletedError, or get()'s PendingRollbackError),
  retort's sends nothing for it (a member added to its collection, or removed from it, is
  transient; a parent a merge() cascade loaded included) and succeeds, or sends the UPDATE of
  a column set, which matches no row (StaleDataError); where both
  flushes load such an object (one marked deleted) and fail alike, get()'s autoflush raises
  PendingRollbackError in SQLAlchemy, the flush's ObjectDeletedError in retort (the program
  stops there);
- an object whose row a flush deleted through another instance of it (merge()'s copy),
  attached again by a save-update cascade: both flushes fail on the row that is gone,
  SQLAlchemy's at an UPDATE of it (StaleDataError), retort's at the INSERT of a new object
  naming it, or at a row the database refuses before (IntegrityError; the program stops
  there);
- the same, where a new object holds the key too (merge() of the detached object after the
  DELETE): SQLAlchemy's flush fails at the UPDATE, retort's finds the row gone, marks the
  object deleted and inserts the new one in its place (the program stops there);
- get() of a key whose object is expired with its row gone, where the autoflush inserts a
  new object with the key: SQLAlchemy returns the old object (deleted, loaded with the new
  row), retort the new one (the program stops there);
- an object whose flushed DELETE a failed flush undid, expunged, in a session changed
  otherwise since: SQLAlchemy's rollback() warns, restores its snapshot a second time and puts
  the object back in the session; retort's leaves it detached, as both do where nothing else
  changed (the program stops there);
- a rollback (of a failed flush, or of a SAVEPOINT) undoing the flushed DELETE of an object
  whose key another instance took since (a detached copy of the row, attached again): both
  put the deleted object back in the identity map; SQLAlchemy leaves the other persistent in a
  session that does not hold it, retort detaches it (the program stops there; the harness keeps
  the objects a step takes out of a collection alive, Side.kept, as SQLAlchemy restores a
  deleted object only while it lives);
- a row switch (a new object taking a deleted object's key in one flush) writes NULL for the
  columns the new object leaves unset, where SQLAlchemy keeps the deleted row's values; for a
  node, SQLAlchemy's flush sends the DELETE after the UPDATE, and the row is gone (or the
  DELETE fails on the foreign key); not drawn (test_relationships.py has the tests);
- delete() of a parent with pending children expunges them (SQLAlchemy inserts them and fails
  on the foreign key);
- an object changed inside a SAVEPOINT and made transient by a rollback keeps its values in
  retort; SQLAlchemy leaves it expired, and reading it raises DetachedInstanceError (a column)
  or gives an empty collection (the draw leaves such an object alone but for a column read,
  and every object that reaches it, which a save-update cascade would follow to what it holds:
  Drawer.kept_by_retort_only); likewise one expired by expire_all() before the rollback, or
  whose columns (not relationships) SQLAlchemy's failed flush loaded again before it, and
  retort's expiry keeps the primary key: where no handle refers to such an object, a
  relationship naming it is compared with its key taken as unknown (_unknown_keys_as);
- a new child of one parent appended to another parent's collection moves there in retort;
  SQLAlchemy expunges it as an orphan (not drawn by the search);
- a child taken out of loaded children it is stale in (its foreign key, set by hand and
  flushed, names another parent), its many-to-one not loaded: SQLAlchemy's backref loads the
  many-to-one by that key and leaves it, retort's sets it to None, as the flush of the removal
  clears the key in both (not drawn: Drawer.removes_a_child_its_key_names_elsewhere);
- a child given no parent whose parent's children are loaded in retort and not in
  SQLAlchemy (which expires more after a SAVEPOINT's rollback: a value set again inside it)
  is deleted as an orphan by retort's flush; SQLAlchemy's, knowing no old parent without
  SQL, sets its parent_id to NULL; likewise where the old parent is expired (or held) in one
  library only (not drawn: Drawer.orphan_seen_by_one_library_only);
- a many-to-one set to None over a key set by hand and flushed, where retort holds it loaded
  as None (stale) and SQLAlchemy's SAVEPOINT rollback expired it (a value set again inside):
  a change to SQLAlchemy only, whose flush writes NULL over the key (not drawn:
  Drawer.unsets_a_stale_none_parent_retort_alone_holds);
- merge() of a child taken out of a parent without a row after its parent_id was set by
  hand: SQLAlchemy's backref had set its many-to-one to None, which the merged copy carries
  into its foreign key; retort's found nothing to undo and the copy keeps the key set by hand
  (not drawn: Drawer.taken_from_a_parent_unrowed);
- merge() of a child whose loaded many-to-one is None onto an object the identity map holds
  expired, whose committed key names a delete-orphan parent the identity map holds loaded:
  SQLAlchemy's merge knows no old parent and its flush sets the key to NULL; retort's takes
  the child out of that parent, as SQLAlchemy's merge onto a loaded object does, and deletes
  the orphan (not drawn: Drawer.merges_no_parent_onto_an_expired_child);
- merge() of a child whose loaded many-to-one names another key than its parent_id holds (set
  by hand), onto an object the identity map holds expired: SQLAlchemy's merge counts the
  many-to-one it copies as a change (its old value unknown) and its flush writes that parent's
  key over the one set by hand; retort's counts a change against the committed value, as
  SQLAlchemy's merge onto a loaded object does, and writes the key set by hand (not drawn:
  Drawer.merges_a_key_set_by_hand);
- a save-update cascade reaching an object whose DELETE was flushed (in a collection of an
  object expunged before that flush) raises InvalidRequestError in both, each where its
  cascade meets an object it refuses; SQLAlchemy keeps what it attached before, retort
  attaches nothing (the improvement above, which would end the program; not drawn:
  Drawer.deleted_outside_the_session);
- a backref does not append a second entry of an object its loaded collection holds already
  (SQLAlchemy's does, after a foreign key set by hand left the collection stale, or where it
  does not know the object's old parent without SQL, as after a failed flush; not drawn);
- a child appended again to a delete-orphan collection is listed twice by both; when one entry
  goes, SQLAlchemy takes the child for an orphan (a pending one is expunged, though still
  listed), retort does not, as the other entry is still there (not drawn, nor an append to
  children not loaded that would list the child once loaded: Drawer.may_hold); likewise a
  member of a many-to-many listed twice, one entry taken out, keeps its association row in
  retort, where SQLAlchemy's backref queues the removal on the other side's unloaded
  collection and its flush deletes the row (not drawn: Drawer.removes_a_member_listed_twice);
- delete() of an object given a parent since the last flush (before the delete() or after it),
  or still queued for an unloaded collection of a parent that was outside the session at that
  flush, or counted as gained by the loaded children of such a parent, deletes it in that flush
  in retort; SQLAlchemy's flush UPDATEs the row instead (its one-to-many dependency registers
  added children with cancel_delete) and leaves the DELETE to the next flush (not drawn; where
  the delete cascade of its old parent, whose stale children still list it, marks it deleted,
  the program stops: Lockstep.cascade_marked_a_child_just_given_a_parent).
- a node given again the parent it has, after delete() of that parent: SQLAlchemy's flush
  copies the parent's key into it and sets it to NULL for the parent's DELETE in an order that
  changes between runs (the DELETE succeeds or fails on the foreign key); retort's fails every
  time (not drawn, nor the delete() of a parent a node was just given:
  Drawer.parent_marked_deleted).
- an object made transient by a rollback, holding a parent whose key its parent_id no longer
  holds (a flush of the rolled-back transaction nulled or set it, or a step set it since), is
  inserted again with the key of that parent in retort; SQLAlchemy copies a parent's key only
  for a change of the relationship, which the rolled-back flush recorded, and inserts the
  parent_id it holds (not drawn: Drawer.stale_key, Drawer.sets_a_stale_key);
- a step refused because the session is to be rolled back (PendingRollbackError in both)
  changes nothing in retort (SPEC §4); SQLAlchemy's merge() copies values onto the object of
  the key first, leaving changes to flush (the program stops there);
- a DELETE matching no row raises StaleDataError in retort (its flush checks the row count of
  a DELETE as of an UPDATE), where SQLAlchemy's flush warns (the program stops there);
- a child listed in the loaded children of a parent its many-to-one does not name (the backref
  could not take it out: its old parent was not known without SQL), given another parent: the
  flush has two keys for its foreign key; retort's takes the many-to-one's, SQLAlchemy's either,
  by an order that changes between runs (not drawn: Drawer.listed_elsewhere);
- an object expired in both, loaded by SQLAlchemy's flush (to read its key for a foreign key or
  an association row) and not by retort's, which knows the key, then made transient by a
  rollback of its INSERT: SQLAlchemy's holds its values, retort's cannot load them (reading
  raises, a flush refuses to insert it again; the draw leaves it, and what reaches it, alone:
  Drawer.expired_by_retort_only);
- the objects a failed flush loaded (a deleted parent's tags, to delete their association
  rows) stay in SQLAlchemy's session, held by the parent's expired collection; retort's
  parent forgets the collection and its identity map (weak, as SQLAlchemy's) lets them go:
  attaching a detached copy of such a row (delete(), a cascade) is refused by SQLAlchemy only
  (the program stops there);
- the foreign key of an object marked deleted, set by hand (before or after its delete()):
  the flush of its DELETE reads its unloaded many-to-one by the committed key in retort; in
  SQLAlchemy by that key or the one set by hand, None or nothing, by the order of a set (not
  drawn: Drawer.sets_key_of_an_object_marked_deleted);
- an object inserted and deleted by flushes of a transaction that rolled back, added again
  and flushed: SQLAlchemy's rollback leaves its deleted flag set, so that it reports itself
  deleted while its identity map holds it and its row exists; retort's is persistent (the
  program stops there);
- the flush of a parent's or tag's DELETE deletes the association rows of every member it
  lists, and writes none linking to it: SQLAlchemy's deletes those of the members listed at
  the last flush only (a member listed since, whose row a rollback restored while the object
  was outside the session, keeps its row, and the DELETE fails on the foreign key), and
  inserts the row of a member linked to it since from the other side, failing (the program
  stops there);
- a flush inserting a new object with the key of an expired object whose row is gone (a
  rollback undid its INSERT) that holds a change: SQLAlchemy's also sends that object's
  UPDATE, which the new row takes, and keeps one of the two instances in its identity map by
  the order of a set (with a warning); retort's marks the gone object deleted and inserts the
  new one (the program stops there);
- an object inserted in the scope a rollback undoes, whose instance SQLAlchemy's session freed
  (nothing referred to it: its parent was expired by a SAVEPOINT's rollback, for a value set
  again inside, which retort's kept loaded) before a query loaded its row as another instance:
  SQLAlchemy's rollback makes transient only the instance it inserted, and leaves the one
  loaded since persistent with no row; retort's held on to the inserted one, which its
  rollback makes transient (the program stops there). Where both free it, both leave the
  instance loaded since persistent.
- an object made new again by the rollback of a failed flush, whose collection had a member
  taken out before: retort's rollback forgets the removal (no row of it exists), SQLAlchemy's
  save-update cascade still follows it, attaching the member with the object (the program
  stops there);
- a node given a parent that was outside the session at the flush (which writes nothing for
  the relation, a warning in both), then attached again with the node queued for its
  unloaded children: retort's next flush writes the node's key, as both do for a child of the
  parents table; SQLAlchemy's self-referential flush writes nothing from the queue, and its
  node keeps the key it had (NULL, or its parent before) (the program stops there);
- an instance loaded into a collection of an object expired since, to which the program has
  no handle: retort's expiry is lazy (commit is O(1)), so the expired collection still refers
  to it until its object is next used, and the weak identity map keeps it; SQLAlchemy's expiry
  drops the collection, and the instance goes. Attaching a detached copy of its row then
  raises InvalidRequestError in retort only (the program stops there).

SQLAlchemy's own failures end a program (no oracle past them): an internal assertion, or a
ValueError of its flush applying a queued removal to a collection it loads that does not hold
the object (test_sqlalchemy_bug_a_queued_removal_fails_the_flush_of_a_deleted_node).

Everything else the harness found was a retort bug, now fixed, each with a regression test in
test_relationships.py, test_session.py, test_merge.py or test_relational_state_machine.py
(see the git log).

Settings: the "ci" profile by default, derandomized (the same 40 programs on every run, so a
failure in CI is a regression); `HYPOTHESIS_PROFILE=nightly` (make nightly) searches 1500
random programs of 60 steps.
No `from __future__ import annotations`, as in tests/_rel_models.py.
"""

import gc
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import retort.exc
from retort.engine import Engine
from tests._diff_models import COLUMNS, TABLE_OF, Models, declare, fetch_rows, reset_rows
from tests._rel_models import Api, sqlalchemy_api

pytest.importorskip("sqlalchemy")
from sqlalchemy.orm.attributes import NO_VALUE  # (SQLAlchemy's "not loaded")

# Per-file settings chosen by HYPOTHESIS_PROFILE, like test_session_state_machine.py, without
# registering global profiles (which would replace that file's "ci" and "nightly").
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
_PROFILES = {
    # CI runs the same programs every time (a failure there is a regression, never a new
    # random find); nightly searches
    "ci": settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=_SUPPRESS,
        derandomize=True,
        database=None,
    ),
    "nightly": settings(max_examples=1500, deadline=None, suppress_health_check=_SUPPRESS),
}
_STEPS = {"ci": 30, "nightly": 60}


def _profile_name() -> str:
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    return name if name in _PROFILES else "ci"


# --------------------------------------------------------------------------------------------
# the schema and the values programs use

RELATIONSHIPS: dict[str, tuple[str, ...]] = {
    "Parent": ("children", "tags"),
    "Child": ("parent",),
    "Tag": ("parents",),
    "Node": ("parent", "children"),
}
NAME_ATTR = {"Parent": "name", "Child": "name", "Tag": "label", "Node": "name"}
# column values a step may set (keys never change)
SETTABLE: dict[str, dict[str, list[Any]]] = {
    "Parent": {"name": ["a", "b"], "code": [None, "x", "y", "z"]},
    "Child": {"name": ["a", "b"], "parent_id": [None, 1, 2, 3, 9]},
    "Tag": {"label": ["a", "b"]},
    "Node": {"name": ["a", "b"], "parent_id": [None, 1, 2, 3]},
}
# the keys of the initial rows (tests/_diff_models.py INITIAL_ROWS) and the largest key a new
# object may take when it deliberately reuses one
SEEDED = {"Parent": 3, "Child": 4, "Tag": 2, "Node": 4}
UNIQUE_CODE = "parents_code_key"
# errors raised by a failed flush (which leaves the transaction to be rolled back)
NODE_KEY_WRITTEN = "a node's parent, outside the session at a flush, is written once it is back"
FLUSH_ERRORS = {"IntegrityError", "CircularDependencyError", "FlushError", "StaleDataError"}


# --------------------------------------------------------------------------------------------
# one library's side of a program


class Divergence(AssertionError):
    pass


@dataclass
class Side:
    name: str  # "retort" or "sqlalchemy"
    api: Api
    models: Models
    schema: str
    session: Any = None
    handles: list[Any] = field(default_factory=list)
    # objects a step took out of a collection, kept alive as a caller holding them would:
    # SQLAlchemy's session holds a deleted object weakly (its rollback restores it only while
    # it lives), retort's strongly
    kept: list[Any] = field(default_factory=list)
    index: dict[int, int] = field(default_factory=dict)  # id(obj) -> handle number
    nested: list[Any] = field(default_factory=list)  # begin_nested() transactions
    warned: list[str] = field(default_factory=list)
    writes: list[int] = field(default_factory=lambda: [0])  # statements that change rows
    flush_failed: bool = False  # whether a flush (or autoflush) of the program failed
    # the handles of the objects the session held marked deleted before any step so far
    marked_deleted_once: set[int] = field(default_factory=set)
    # the handles of the objects whose parent_id a step changed in which a flush failed (on
    # retort's side: its flush copies every key before the first statement, SQLAlchemy's as
    # it goes, in an order that may change between runs; see fk_unsettled)
    keys_moved_by_a_failed_flush: set[int] = field(default_factory=set)
    # the handles of the objects outside the session at a rollback (of the transaction or of
    # a SAVEPOINT) holding changes queued for an unloaded collection (SQLAlchemy's side)
    queued_past_rollback: set[int] = field(default_factory=set)

    def start(self) -> None:
        self.session = self.api.Session(self.api.engine)
        self.handles.clear()
        self.kept.clear()
        self.index.clear()
        self.nested.clear()
        self.flush_failed = False
        self.marked_deleted_once.clear()
        self.keys_moved_by_a_failed_flush.clear()
        self.queued_past_rollback.clear()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def handle(self, obj: Any) -> int:
        """The handle number of `obj`, handling it first if it is new to the program."""
        if id(obj) not in self.index:
            self.index[id(obj)] = len(self.handles)
            self.handles.append(obj)
        return self.index[id(obj)]

    def cls_of(self, obj: Any) -> str:
        return type(obj).__name__

    def members(self) -> set[int]:
        """The handles the session holds (pending, persistent or marked deleted)."""
        return {i for i, obj in enumerate(self.handles) if obj in self.session}

    def held(self, cls: str, pk: Any) -> Any:
        """The object of this key the identity map holds, or None."""
        model = self.models.by_name(cls)
        if self.name == "retort":
            return self.session._core.identity_lookup(model.__mapper__._core, (pk,))
        return self.session.identity_map.get(self.session.identity_key(model, pk))

    def expired_handles(self) -> set[int]:
        """The handles of the objects held persistent and expired."""
        return {
            i
            for i, obj in enumerate(self.handles)
            if self.api.inspect(obj).persistent and self.api.inspect(obj).expired
        }

    def held_loaded(self, cls: str, pk: Any) -> bool:
        """Whether the identity map holds an object of this key, not expired as a whole (get()
        answers it without SQL, and without an autoflush)."""
        obj = self.held(cls, pk)
        return obj is not None and not self.api.inspect(obj).expired

    def fk_unsettled(self, obj: Any) -> bool:
        """Whether the parent_id `obj` holds may differ between the libraries: retort copies
        keys into foreign keys before a flush's first statement, SQLAlchemy table by table as
        it goes, so after a failed flush the new objects (made transient by it, or pending
        again since), the detached ones and the deleted ones (whose DELETE an earlier flush
        sent, children of a parent the failed flush deletes) hold the keys copied until then.
        Which of SQLAlchemy's tables comes before the failing statement follows the order of
        a set, which changes from run to run (test_harness_a_deleted_childs_key_after_a_
        failed_flush_is_unsettled). (The persistent objects it changed are expired, and
        reading them raises PendingRollbackError until rollback().)

        Also for a transient node given a parent (outside the session: the backref does not
        cascade), or a detached one: a flush copies the parent's key into it in retort, as
        SQLAlchemy's does for a child of a Parent; SQLAlchemy's self-referential flush does
        only where the parent's children are loaded
        (test_divergence_a_key_is_copied_into_a_node_outside_the_session)."""
        if self.flush_failed and self.lifecycle(obj) in (
            "transient",
            "pending",
            "detached",
            "deleted",
        ):
            # (a detached child of a deleted parent: retort's failed flush nulled its parent_id
            # before its first statement, and nothing restores an object outside the session)
            return True
        return self.node_key_unsettled(obj)

    def node_key_unsettled(self, obj: Any) -> bool:
        """Whether `obj` is a node outside the session (transient, or detached) or pending
        (added since), holding a parent whose key its parent_id does not hold (unset, or left
        by an earlier flush, or loaded before the parent was given): a flush may have set it in
        retort only (see fk_unsettled)."""
        if self.cls_of(obj) != "Node" or self.lifecycle(obj) not in (
            "transient",
            "pending",
            "detached",
        ):
            return False
        d = self.api.inspect(obj).dict
        parent = d.get("parent")
        if parent is None:
            return False
        if "parent_id" not in d:
            return True
        target = self.api.inspect(parent)
        key = target.identity[0] if target.identity else target.dict.get("id")
        # (a parent SQLAlchemy's SAVEPOINT rollback expired, then made transient, holds no key
        # to compare with)
        return key is None or d["parent_id"] != key

    # -- normalised views, comparable between the libraries ---------------------------------

    def key(self, obj: Any) -> tuple[str, Any]:
        insp = self.api.inspect(obj)
        ident = insp.identity
        return (self.cls_of(obj), ident[0] if ident else insp.dict.get("id"))

    def norm(self, value: Any) -> Any:
        if isinstance(value, list | tuple) or type(value).__name__ in (
            "InstrumentedList",
            "_Collection",
        ):
            return [self.norm(v) for v in value]
        if hasattr(type(value), "__mapper__") and not isinstance(value, type):
            if id(value) in self.index:
                return ("h", self.index[id(value)])
            insp = self.api.inspect(value)
            if self.name == "sqlalchemy" and insp.transient and "id" not in insp.dict:
                # made transient by a rollback while expired: SQLAlchemy's holds no key (and
                # cannot load one), retort's keeps the key it had (see _unknown_keys_as)
                return ("o", self.cls_of(value), _UNKNOWN_KEY)
            return ("o", *self.key(value))
        return value

    def norm_collection(self, value: Any) -> Any:
        return [self.norm(v) for v in value]

    def lifecycle(self, obj: Any) -> str:
        insp = self.api.inspect(obj)
        states = [
            s
            for s in ("transient", "pending", "persistent", "deleted", "detached")
            if getattr(insp, s)
        ]
        return "/".join(states)

    def loaded(self, obj: Any) -> dict[str, Any]:
        """Mapped attributes whose value is loaded (reading them sends no SQL)."""
        insp = self.api.inspect(obj)
        cls = self.cls_of(obj)
        d = insp.dict
        unloaded = insp.unloaded
        out = {}
        for attr in (*COLUMNS[cls], *RELATIONSHIPS[cls]):
            if attr in d and attr not in unloaded:
                value = d[attr]
                out[attr] = (
                    [self.norm(v) for v in value]
                    if attr in RELATIONSHIPS[cls] and value is not None and _is_list(value)
                    else self.norm(value)
                )
        return out

    def snapshot(self) -> list[tuple[Any, ...]]:
        s = self.session
        return [
            (i, self.cls_of(obj), self.lifecycle(obj), obj in s, self.loaded(obj))
            for i, obj in enumerate(self.handles)
        ]

    def session_sets(self) -> dict[str, Any]:
        s = self.session
        return {
            "new": sorted(map(repr, (self.norm(o) for o in s.new))),
            "deleted": sorted(map(repr, (self.norm(o) for o in s.deleted))),
            # not in_transaction(): SQLAlchemy also begins one when an attribute of an expired
            # object is set (no SQL is sent), which retort does not; nothing else depends on it
            "in_nested_transaction": s.in_nested_transaction(),
        }

    def transaction_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table as the session's own transaction sees it."""
        conn = self.session.connection()
        from tests._diff_models import TABLES

        return {
            t: [tuple(r) for r in conn.exec_driver_sql(f"SELECT {c} FROM {t} ORDER BY {o}").all()]
            for t, (c, o) in TABLES.items()
        }


def _sqlalchemy_internal_error(err: BaseException | None) -> bool:
    """Whether `err` is a ValueError raised inside SQLAlchemy's own code (a list.remove() of
    an object the list does not hold), rather than an error it reports to its caller."""
    if not isinstance(err, ValueError):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "/sqlalchemy/" in tb.tb_frame.f_code.co_filename


def _constraint(err: BaseException | None) -> str | None:
    """The name of the constraint a database error names, if any."""
    diag = getattr(getattr(err, "orig", None), "diag", None)
    return None if diag is None else diag.constraint_name


def _is_list(value: Any) -> bool:
    return not hasattr(type(value), "__mapper__")


# --------------------------------------------------------------------------------------------
# steps: drawn once, run on both sides


Step = tuple[Any, ...]

_ABSENT = object()  # an attribute not loaded
_UNKNOWN_KEY = "key unknown"  # (Side.norm)


def _unknown_keys_as(sa_value: Any, rt_value: Any) -> Any:
    """`rt_value` (normalised) with the key of each object SQLAlchemy's `sa_value` holds
    without a key at the same place (Side.norm) taken as unknown: an object that a rollback made
    transient while it was expired, which keeps its key in retort only (retort's expiry keeps
    the primary key; test_harness_an_object_expired_before_a_rollback_made_it_transient_has_
    no_key_in_sqlalchemy)."""
    if sa_value == rt_value:
        return rt_value
    if isinstance(sa_value, list) and isinstance(rt_value, list) and len(sa_value) == len(rt_value):
        return [_unknown_keys_as(a, b) for a, b in zip(sa_value, rt_value, strict=True)]
    if (
        isinstance(sa_value, tuple)
        and len(sa_value) == 3
        and sa_value[0] == "o"
        and sa_value[2] == _UNKNOWN_KEY
        and isinstance(rt_value, tuple)
        and rt_value[:2] == sa_value[:2]
    ):
        return sa_value
    return rt_value


def _run(side: Side, step: Step) -> Any:
    """Run `step` on `side`; return a normalised result (handle numbers for objects)."""
    kind, *args = step
    s = side.session
    h = side.handles
    M = side.models
    if kind == "new":
        cls, pk, name, via, target = args
        obj = M.by_name(cls)(id=pk, **{NAME_ATTR[cls]: name})
        side.handle(obj)
        if via == "add":
            s.add(obj)
        elif via == "append":  # Child into Parent.children, Tag into Parent.tags
            coll = h[target].children if cls == "Child" else h[target].tags
            coll.append(obj)
        elif via == "set_parent":  # Child.parent / Node.parent, not added (no backref cascade)
            obj.parent = h[target]
        elif via == "set_parent_add":
            obj.parent = h[target]
            s.add(obj)
        else:  # pragma: no cover
            raise AssertionError(via)
        return None
    if kind == "set":
        target, attr, value = args
        setattr(h[target], attr, value)
        return None
    if kind == "move":  # a child to another parent (or to none: an orphan)
        child, parent, how = args
        if how == "set":
            h[child].parent = None if parent is None else h[parent]
        else:
            h[parent].children.append(h[child])
        return None
    if kind == "remove":  # from a one-to-many or many-to-many collection, by position
        holder, attr, pos = args
        coll = getattr(h[holder], attr)
        if not coll:
            return "empty"
        victim = coll[pos % len(coll)]
        side.kept.append(victim)
        coll.remove(victim)
        return side.norm(victim)
    if kind == "link":
        # a second entry of a member is no change (test_appending_a_member_again_changes_no_
        # association_row in test_relationships.py)
        parent, tag, from_tag = args
        if from_tag:
            h[tag].parents.append(h[parent])
        else:
            h[parent].tags.append(h[tag])
        return None
    if kind == "node_parent":
        node, parent = args
        h[node].parent = None if parent is None else h[parent]
        return None
    if kind == "delete":
        s.delete(h[args[0]])
        return None
    if kind == "flush":
        s.flush()
        return None
    if kind == "commit":
        side.nested.clear()
        s.commit()
        return None
    if kind == "rollback":
        side.nested.clear()
        s.rollback()
        return None
    if kind == "begin_nested":
        side.nested.append(s.begin_nested())
        return None
    if kind in ("release", "rollback_nested"):
        tx = side.nested.pop()
        if kind == "release":
            tx.commit()
        else:
            tx.rollback()
        return None
    if kind == "expire_all":
        s.expire_all()
        return None
    if kind == "expunge":
        s.expunge(h[args[0]])
        return None
    if kind in ("expire", "refresh"):  # one object, or one attribute of it
        target, attr = args
        getattr(s, kind)(h[target], None if attr is None else [attr])
        return None
    if kind in ("merge", "merge_new"):
        if kind == "merge":
            source = h[args[0]]
        else:
            cls, pk, name = args
            source = M.by_name(cls)(id=pk, **{NAME_ATTR[cls]: name})
        return side.handle(s.merge(source))
    if kind == "get":
        cls, pk = args
        obj = s.get(M.by_name(cls), pk)
        return None if obj is None else side.handle(obj)
    if kind == "read":
        target, attr = args
        value = getattr(h[target], attr)
        if attr in RELATIONSHIPS[side.cls_of(h[target])]:
            items = list(value) if _is_list(value) and value is not None else [value]
            for item in items:
                if item is not None:
                    side.handle(item)
            return (
                side.norm(list(value))
                if _is_list(value) and value is not None
                else (side.norm(value))
            )
        return value
    if kind == "bad_sql":
        # a statement the server refuses, run on the session's connection: the transaction
        # fails under the session, which knows nothing of it; a load by primary key (without
        # autoflush) then fails too, and the innermost SAVEPOINT (or the transaction) is
        # rolled back, as a caller recovering from the error would
        cls, pk = args
        seen: list[Any] = []
        try:
            s.connection().exec_driver_sql("SELECT 1/0")
            seen.append("ran")
        except Exception as err:
            seen.append(type(err).__name__)
        try:
            with s.no_autoflush:
                obj = s.get(M.by_name(cls), pk)
            seen.append(None if obj is None else side.handle(obj))
        except Exception as err:
            seen.append(type(err).__name__)
        if side.nested:
            side.nested.pop().rollback()
        else:
            s.rollback()
        return tuple(seen)
    if kind == "rows":  # not drawn: the harness reads the transaction's rows
        return side.transaction_rows()
    if kind == "query":
        model = M.by_name(args[0])
        objs = s.scalars(side.api.select(model).order_by(model.id)).all()
        return [side.handle(o) for o in objs]
    raise AssertionError(kind)  # pragma: no cover


def _collection_or_attribute_read(step: Step) -> tuple[int, str] | None:
    """(handle, attribute) of the attribute a step reads before it changes anything: a "read",
    a collection's "remove", or an append to a collection ("link", "move" by the collection, a
    "new" appended), which loads the collection first when it is not loaded."""
    kind, *args = step
    if kind in ("read", "remove"):
        return args[0], args[1]
    if kind == "link":
        parent, tag, from_tag = args
        return (tag, "parents") if from_tag else (parent, "tags")
    if kind == "move" and args[1] is not None and args[2] != "set":
        return args[1], "children"
    if kind == "new" and args[3] == "append":
        return args[4], "children" if args[0] == "Child" else "tags"
    return None


def _backref_append(step: Step) -> tuple[int, str, int | None] | None:
    """(owner, collection, member) of the append a step's backref makes to a collection
    (member None: the object the step makes, not handled yet)."""
    kind, *args = step
    if kind == "link":
        parent, tag, from_tag = args
        return (parent, "tags", tag) if from_tag else (tag, "parents", parent)
    if kind in ("move", "node_parent") and args[1] is not None and step[-1] != "append":
        return args[1], "children", args[0]
    if kind == "new" and args[3] == "set_parent":  # (not added: it stays transient)
        return args[4], "children", None
    return None


def _unloaded(side: Side, obj: Any) -> set[str]:
    """The attributes of `obj` that reading loads. (SQLAlchemy's `unloaded` leaves out a
    collection that a backref appended to while it was not loaded, which reading loads.)"""
    insp = side.api.inspect(obj)
    rels = RELATIONSHIPS[side.cls_of(obj)]
    return set(insp.unloaded) | {a for a in rels if a not in insp.dict}


def _queued(side: Side, obj: Any) -> bool:
    """Whether SQLAlchemy's `obj` holds changes queued for an unloaded collection (appends or
    removals through the other side of back_populates)."""
    return bool(side.api.inspect(obj).__dict__.get("_pending_mutations"))


# steps whose save-update cascade may attach objects (adding, appending, setting a parent)
_CASCADING = ("new", "move", "link", "node_parent", "merge", "merge_new")


def _one_row_cycle(error: BaseException | None) -> bool:
    """Whether SQLAlchemy's CircularDependencyError names the states of one object only."""
    objects = set(re.findall(r"<\w+ at (0x[0-9a-f]+)>", str(error)))
    return len(objects) == 1


def _objects(step: Step) -> list[int]:
    """The handles a step acts on."""
    kind, *args = step
    if kind in ("set", "delete", "expunge", "merge", "remove", "read", "expire", "refresh"):
        return [args[0]]
    if kind in ("move", "link", "node_parent"):
        return [a for a in args[:2] if a is not None]
    if kind == "new" and args[4] is not None:
        return [args[4]]
    return []


@dataclass(frozen=True)
class Outcome:
    ok: bool
    value: Any  # the result, or the error's class name
    error: BaseException | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"ok {self.value!r}" if self.ok else f"raised {self.value}"

    def detail(self) -> str:
        if self.error is None:
            return str(self)
        lines = str(self.error).splitlines() or [""]
        return f"raised {self.value}: {lines[0][:300]}"


def _attempt(side: Side, step: Step) -> Outcome:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = _run(side, step)
        except Divergence:
            raise
        except Exception as err:
            return Outcome(False, type(err).__name__, err)
        finally:
            side.warned.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    return Outcome(True, result)


# --------------------------------------------------------------------------------------------
# drawing a program


KINDS: list[tuple[str, int]] = [
    ("new", 8),
    ("set", 5),
    ("move", 4),
    ("remove", 3),
    ("link", 3),
    ("node_parent", 4),
    ("delete", 3),
    ("flush", 3),
    ("commit", 2),
    ("rollback", 1),
    ("begin_nested", 2),
    ("release", 1),
    ("rollback_nested", 1),
    ("expire_all", 1),
    ("expire", 2),
    ("refresh", 1),
    ("expunge", 1),
    ("merge", 1),
    ("merge_new", 1),
    ("get", 5),
    ("read", 4),
    ("query", 1),
    ("bad_sql", 1),
]
_KIND_LIST = [k for k, w in KINDS for _ in range(w)]
# every draw of a program (see Drawer.choice)
_CHOICE = st.integers(0, 2**16 - 1)
T = TypeVar("T")


@dataclass
class Drawer:
    """Draws the next step from what the program has handled so far."""

    data: Any
    oracle: Side  # SQLAlchemy's side, inspected (never changed) to leave known bugs out
    retort: Side  # likewise
    next_key: dict[str, int] = field(default_factory=lambda: {c: n + 1 for c, n in SEEDED.items()})

    def pick(self, classes: list[str], *want: str, label: str) -> int | None:
        cands = [i for i, c in enumerate(classes) if c in want]
        choice = self.choice(label)  # drawn whether or not there is a candidate (see choice)
        return cands[choice % len(cands)] if cands else None

    def choice(self, label: str) -> int:
        """A draw of the same bounds at every point of every program. A draw rule reads state
        that can change between runs of one program (SQLAlchemy's flush follows the order of
        its sets), and drawing from lists whose length followed it made a replay of a failing
        program meet other bounds: hypothesis then raised FlakyStrategyDefinition and showed
        no program. Now the replay draws other steps, and a failure it does not see again is
        reported as flaky, with the first run's program in its error."""
        return self.data.draw(_CHOICE, label=label)

    def one(self, options: Sequence[T], label: str = "") -> T:
        return options[self.choice(label) % len(options)]

    def number(self, low: int, high: int, label: str = "") -> int:
        return low + self.choice(label) % (high - low + 1)

    def new_key(self, cls: str) -> int:
        if self.number(0, 5, "reuse key?") == 0:
            return self.number(1, self.next_key[cls], "key")
        pk = self.next_key[cls]
        self.next_key[cls] += 1
        return pk

    def step(self, classes: list[str], nested: int) -> Step | None:
        step = self._draw(classes, nested)
        if step is None:
            return None
        if step[0] in ("new", "move", "remove", "link", "node_parent") and any(
            self.oracle.api.inspect(self.oracle.handles[i]).was_deleted for i in _objects(step)
        ):
            # relating an object whose DELETE was flushed: both raise InvalidRequestError, but
            # SQLAlchemy changes the other side first (an improvement, see
            # test_relating_a_flushed_delete_raises_before_anything_changes in
            # test_relationships.py)
            return None
        if step[0] == "expunge" and self.children_loaded_in_one_library_only(step[1]):
            # expunge() cascades along a parent's children where they are loaded (no SQL):
            # loaded in one library only (SQLAlchemy's SAVEPOINT rollback expires an object
            # given a value it had, retort's keeps it loaded), it takes the children out of
            # one session only
            # (test_the_draw_expunges_no_parent_whose_children_one_library_holds_loaded)
            return None
        if step[0] == "bad_sql" and self.held_by_a_session(step[1], step[2]):
            # the load of the fault step, by a key an identity map holds: it answers without
            # SQL where the object is loaded, and what each library holds expired may differ
            # (see "read"), so it would load (and fail) in one of them only
            # (test_the_draw_faults_no_load_of_a_key_a_session_holds)
            return None
        if step[0] in ("new", "move", "link", "node_parent") and self.reaches(
            _objects(step), self.deleted_outside_the_session
        ):
            # a step whose save-update cascade would reach an object whose DELETE was flushed,
            # outside the session (still in a collection of an object expunged before that
            # flush): both raise InvalidRequestError, each where its cascade meets an object it
            # refuses (SQLAlchemy's sooner where its flush loaded another instance of a row
            # the cascade reaches), so what each attached before that differs
            # (test_the_draw_cascades_to_no_object_whose_delete_was_flushed)
            return None
        if self.loads_in_one_after_a_failure(step):
            # a session to be rolled back (a flush failed), and a step reading an attribute
            # loaded in one library only: it loads, and raises PendingRollbackError, in the
            # other. What a failed flush expired differs: retort's copies every key before its
            # first statement, SQLAlchemy's as it goes, in an order that changes between runs
            # (see Side.fk_unsettled) (test_the_draw_reads_nothing_loaded_in_one_library_only_
            # after_a_failed_flush)
            return None
        if self.parent_read_by_a_failed_delete(step):
            # the many-to-one of an object marked deleted in a flush that failed, which made it
            # new again (the autoflush of a delete cascade had inserted it): the flush read it
            # from the identity map, against the committed key, SQLAlchemy's for the first
            # object it deletes only, whichever its set yields first, retort's for every one
            # (test_improvement_every_deleted_objects_many_to_one_stays_readable). The read
            # then finds the parent in retort, and in SQLAlchemy in some runs only: None in the
            # others, the parent expired by the failure
            # (test_the_draw_reads_no_many_to_one_a_failed_flush_read_for_a_delete)
            return None
        if self.parent_marked_deleted(step):
            # a node given (again) a parent marked deleted, the node listed in its children
            # (or the parent it was given deleted before a flush): SQLAlchemy's flush copies
            # the parent's key into the node and, for the parent's DELETE, sets it to NULL, in
            # an order that changes between runs (the DELETE then succeeds or fails on the
            # foreign key); retort's copies the key last and fails
            # (test_the_draw_gives_no_node_a_parent_marked_deleted,
            # test_the_draw_deletes_no_node_just_given_as_a_parent)
            return None
        if self.orphan_seen_by_one_library_only(step):
            # a child given no parent, its many-to-one unloaded, whose old parent's children
            # are loaded in retort and not in SQLAlchemy (which expires more after a
            # SAVEPOINT's rollback: a value set again inside it), or whose old parent is
            # expired in one library only (SQLAlchemy's flush of a deleted tag's association
            # rows loaded it, retort's did not need to), or in one identity map only: one
            # library's backref takes the
            # child out of its parent's children and the flush deletes the orphan, the other's
            # knows no old parent without SQL and its flush sets parent_id to NULL
            # (test_the_draw_orphans_no_child_of_a_parent_expired_in_sqlalchemy_only,
            # test_the_draw_orphans_no_child_of_a_parent_expired_in_retort_only)
            return None
        if self.may_delete_a_child(step) and self.child_key_taken():
            # a flush would delete a child (an orphan, or by the cascade of its parent's
            # delete) whose key a new child holds: a row switch, as for a new object taking a
            # deleted object's key (see "new" in _draw)
            return None
        if step[0] == "link" and any(self.switched_tag(i) for i in _objects(step)):
            # linking a tag whose row a new tag takes at the next flush (see "new" in _draw)
            return None
        if step[0] in ("new", "move", "link", "node_parent") and self.reaches(
            _objects(step), self.takes_a_deleted_key
        ):
            # a step whose save-update cascade would put in the session a new object holding
            # the key of an object the next flush deletes: a row switch, as for "new" in
            # _draw; for a node, SQLAlchemy's flush also sends the DELETE after the UPDATE
            # (test_improvement_a_row_switch_of_a_self_referential_object_keeps_the_row in
            # test_relationships.py)
            return None
        if step[0] in ("new", "move", "link", "node_parent", "merge") and self.reaches_stale_key(
            _objects(step)
        ):
            # an object made transient by a rollback, whose parent_id no longer names the
            # parent it holds (a flush of the rolled-back transaction nulled or set it), put back
            # in the session: SQLAlchemy inserts the parent_id it holds, retort the parent's key
            # (test_improvement_an_object_added_again_after_a_rollback_keeps_its_parent);
            # likewise where the parent_id of such an object, in the session already, is set
            # to another key than its parent's
            # (test_the_draw_sets_no_parent_id_of_a_new_object_against_a_parent_no_flush_syncs)
            return None
        if self.sets_a_stale_key(step):
            # (the case above, the parent_id set after the object is back in the session)
            return None
        if step[0] in ("new", "move", "link", "node_parent", "merge", "read") and self.reaches(
            _objects(step), self.expired_by_retort_only
        ):
            # an object expired in both, which SQLAlchemy's flush loaded (to read its key for a
            # foreign key or an association row) and retort's did not need to, then made
            # transient by a rollback: SQLAlchemy's holds its values, retort's cannot load
            # them (reading raises, and a flush refuses to insert it again)
            # (test_divergence_an_object_only_sqlalchemys_flush_loaded_stays_expired_when_
            # made_transient)
            return None
        if step[0] in ("move", "node_parent") and self.listed_elsewhere(step[1], step[2]):
            # a child listed in the loaded children of a parent its many-to-one does not name
            # (the backref could not take it out there: its old parent was not known without
            # SQL), given another parent: the flush has two parents to copy a key from;
            # SQLAlchemy's takes either, by an order that changes between runs, retort's the
            # many-to-one's
            # (test_divergence_a_child_listed_by_two_parents_takes_its_many_to_ones_key)
            return None
        if step[0] in ("new", "move", "remove", "link", "node_parent", "merge") and self.reaches(
            _objects(step), self.lists_unwritten_members
        ):
            # an object made transient by a rollback, its many-to-many listing members as of
            # the flush the rollback undid (and their association rows with it), put back in
            # the session or changed: retort's flush writes the rows again, SQLAlchemy's does
            # not (test_improvement_an_object_added_again_after_a_rollback_keeps_its_many_to_
            # many_members), and for a member taken out SQLAlchemy's deletes the row that is
            # gone (test_improvement_a_member_taken_out_after_a_rollback_undid_its_link_
            # deletes_no_row) (test_the_draw_puts_back_no_object_listing_members_a_rollback_
            # unlinked)
            return None
        if step[0] == "link" and self.links_again_one_side_queued(step[1], step[2]):
            # a member appended again where one side of the many-to-many is loaded (listing it)
            # and the other is not (its backref append queued): whether SQLAlchemy's flush
            # inserts the association row twice (a primary key violation, the "member given
            # twice" improvement) or once depends on which side it processes first, by the
            # order of a set, which changes between runs (FlakyStrategyDefinition)
            # (test_the_draw_links_no_member_again_where_one_side_is_queued)
            return None
        if step[0] == "remove" and self.removes_a_child_its_key_names_elsewhere(*step[1:]):
            # a child taken out of loaded children it is stale in (its foreign key, set by
            # hand and flushed, names another parent, or none), its many-to-one not loaded:
            # SQLAlchemy's backref loads the many-to-one by that key and leaves it (the flush
            # then clears the key all the same, for the removal), retort's sets it to None,
            # as the flush will
            # (test_the_draw_takes_no_child_out_of_children_its_key_names_elsewhere)
            return None
        if step[0] == "remove" and self.removes_a_member_listed_twice(*step[1:]):
            # a member of a many-to-many listed twice (appended again), one entry taken out:
            # it is still a member, and retort's flush keeps its association row. SQLAlchemy's
            # backref queues the removal on the other side's unloaded collection (a set, which
            # forgets the second entry) and its flush deletes the row, or inserts none, while
            # its loaded collection still lists the member
            # (test_the_draw_takes_out_no_entry_of_a_member_listed_twice)
            return None
        if step[0] in ("move", "node_parent") and self.old_parent_known_differs(step[1]):
            # a many-to-one set (or an append, whose backref sets it) on an object whose
            # parent_id SQLAlchemy's flush loaded (before its UPDATE of the expired object) and
            # retort's did not (it sent the UPDATE by the key it knows): each looks the old
            # parent up in the identity map without SQL, so only SQLAlchemy's takes the object
            # out of the old parent's children (a delete-orphan: it deletes the child)
            # (test_the_draw_moves_no_object_whose_old_parent_only_sqlalchemy_knows)
            return None
        if self.sets_key_of_an_object_marked_deleted(step):
            # the foreign key of an object marked deleted set by hand: the flush of its DELETE
            # reads its unloaded many-to-one by a key. Retort's reads the committed one (the
            # row's), as SQLAlchemy's does where it held that key before the set; where it
            # did not (the object was expired), SQLAlchemy's reads the key set by hand, None,
            # or nothing, by the order of a set, which changes between runs; and likewise for
            # delete() of an object whose key was set by hand
            # (test_the_draw_sets_no_parent_id_of_an_object_marked_deleted)
            return None
        if step[0] == "set" and step[2] == "parent_id" and self.parent_change_differs(step[1]):
            # a many-to-one set to None that only SQLAlchemy counts as a change (it did not
            # load the NULL key an INSERT left, retort knows it): its flush writes NULL over a
            # key set by hand since, retort's writes that key
            # (test_the_draw_sets_no_key_where_only_sqlalchemy_counts_a_parent_change)
            return None
        if self.unsets_parent_over_a_key_set_by_hand(step):
            # likewise in the other order: the key set by hand first, then the many-to-one
            # set to None where SQLAlchemy knows no old parent
            # (test_the_draw_unsets_no_parent_over_a_key_set_by_hand)
            return None
        if self.unsets_a_stale_none_parent_retort_alone_holds(step):
            # likewise where the key set by hand was flushed since, and the many-to-one, None
            # before, was expired by SQLAlchemy's SAVEPOINT rollback only (a value set again
            # inside): SQLAlchemy counts None as a change and its flush writes NULL over the
            # key; retort's holds None loaded (stale, as both keep a many-to-one past a flush
            # of a key set by hand), which is no change
            # (test_the_draw_unsets_no_stale_parent_only_retort_holds)
            return None
        if step[0] == "merge" and self.reaches(_objects(step), self.merges_a_key_set_by_hand):
            # merge() of a child or node whose loaded many-to-one does not name the key its
            # parent_id holds (set by hand), onto an object SQLAlchemy's identity map holds
            # expired: SQLAlchemy's merge counts the many-to-one it copies as a change (the old
            # value unknown), and its flush writes that parent's key over the key set by hand;
            # retort's counts a change only where the value differs from the committed one, as
            # SQLAlchemy's merge onto a loaded object does, and writes the key set by hand
            # (test_the_draw_merges_no_key_set_by_hand_onto_an_expired_object)
            return None
        if step[0] == "merge" and self.reaches(
            _objects(step), self.merges_no_parent_onto_an_expired_child
        ):
            # merge() of a child whose loaded many-to-one is None onto an object SQLAlchemy's
            # identity map holds expired: SQLAlchemy's merge knows no old parent (the key is
            # not loaded) and takes the child out of no collection, so its flush writes NULL;
            # retort's takes it out of the parent its committed key names, where the identity
            # map holds that parent loaded, as SQLAlchemy's merge onto a loaded object does, and
            # its flush deletes the orphan
            # (test_the_draw_merges_no_parentless_child_onto_an_expired_object)
            return None
        if step[0] == "merge" and self.reaches(
            _objects(step), self.columns_loaded_by_retort_only_onto_another
        ):
            # merge() copies the loaded columns onto the object of the key: retort's copy
            # holds a column an INSERT left out (NULL, which it knows), SQLAlchemy's does not,
            # and the object merged onto keeps the value it has (a key its flush copied)
            # (test_the_draw_merges_no_column_known_to_retort_only_onto_another_object)
            return None
        if step[0] == "merge" and self.reaches(
            _objects(step), self.columns_loaded_by_sqlalchemy_only
        ):
            # merge() copies the loaded columns: SQLAlchemy's flush loaded the object, expired,
            # before its UPDATE, retort's sent the UPDATE by its key and left it expired (where
            # its row is gone, retort's copy then inserts NULL for them)
            # (test_divergence_a_merge_of_an_object_only_sqlalchemys_flush_loaded)
            return None
        if step[0] in ("new", "move", "link", "node_parent", "merge", "delete") and self.reaches(
            _objects(step), self.queued_past_rollback
        ):
            # an object outside the session at a rollback, holding a change queued for an
            # unloaded collection (a child's many-to-one set, whose backref queues its
            # removal from the parent's children), put back in the session: the rollback
            # undid the change on the child in the session, not the queue; SQLAlchemy's
            # collection applies it once loaded (leaving out a member whose row names the
            # parent), retort's lists what the rows say
            # (test_the_draw_attaches_no_object_holding_a_queue_a_rollback_passed_over)
            return None
        if step[0] == "merge" and self.reaches(_objects(step), self.taken_from_a_parent_unrowed):
            # merge() of a child taken out of a parent without a row (a rollback made it
            # transient) after its parent_id was set by hand: SQLAlchemy's backref set its
            # many-to-one to None, which the merged copy carries into its foreign key; retort's
            # found nothing to undo (the "value set again" improvement) and its copy keeps the
            # key set by hand (both delete the child as an orphan in the merge's autoflush,
            # and insert the copy)
            # (test_the_draw_merges_no_child_taken_from_a_parent_without_a_row)
            return None
        if step[0] == "merge" and self.reaches(_objects(step), self.lists_a_member_twice):
            # merge() of an object whose loaded many-to-many lists a member twice (appended
            # again): both copy the list, the member twice; SQLAlchemy's backref then lists
            # the merged object once on the member's side (it replaces the collection as a
            # set), retort's twice, once per entry, as for two appends
            # (test_the_draw_merges_no_collection_listing_a_member_twice)
            return None
        if step[0] == "merge" and self.merges_copies_of_a_key_loaded_differently(_objects(step)):
            # two copies of one key merged onto one object, relationships first, then columns
            # (the first copy's columns win): retort's copy holds a column SQLAlchemy's does
            # not (NULL, known since an INSERT left it out, where SQLAlchemy left it unloaded),
            # which it copies over the other copy's value, where SQLAlchemy's keeps that value
            # (test_the_draw_merges_no_two_copies_of_a_key_one_holding_a_column_retort_only)
            return None
        if step[0] == "merge" and self.reaches(_objects(step), self.deleted_many_to_one_may_differ):
            # merge() cascades along the loaded relationships: the flush of an object's
            # DELETE read its many-to-one from the identity map in retort, in SQLAlchemy only
            # for the first deleted object of the relationship (by the order of a set), so
            # retort's merge may reach (and add again) a parent SQLAlchemy's does not
            # (test_the_draw_merges_no_deleted_object_whose_parent_retort_alone_holds); and
            # SQLAlchemy's holds None where the identity map did not hold the parent, which
            # its merged copy takes for a change, and its flush writes NULL over the parent_id
            # the copy holds (test_the_draw_merges_no_deleted_object_whose_parent_sqlalchemy_
            # holds_as_none)
            return None
        if self.detached_append_loads_in_one(step):
            # (test_the_draw_appends_to_no_detached_collection_loaded_in_one_library_only)
            return None
        if self.backref_queues_in_one(step):
            # (test_the_draw_makes_no_backref_append_queued_in_one_library_only)
            return None
        if step[0] in ("merge", "delete", "new", "move", "link", "node_parent") and self.reaches(
            _objects(step), self.unsettled_key_differs
        ):
            # a parent_id that differs between the libraries after a failed flush
            # (Side.fk_unsettled: neither compared nor read while outside the session): merge()
            # would copy it onto the object of its key
            # (test_the_draw_merges_no_key_that_a_failed_flush_left_unsettled), and the other
            # steps would bring its object back into the session (delete() of a detached object
            # attaches it; so does a cascade from an object related to it), where it is
            # compared again (test_the_draw_attaches_no_object_whose_key_a_failed_flush_left_
            # unsettled)
            return None
        if not (
            step[0] == "read"
            and step[2] in COLUMNS[self.oracle.cls_of(self.oracle.handles[step[1]])]
        ) and self.reaches(_objects(step), self.kept_by_retort_only_obj):
            # an object changed inside a SAVEPOINT, then made transient by a rollback: retort
            # keeps its values, SQLAlchemy expired them (a column read raises
            # DetachedInstanceError: the improvement in Lockstep.improvement, which a column
            # read reaches; a relationship reads empty, and a link appends to that). Nor an
            # object that reaches it: a save-update cascade follows its relationships in retort
            # only (test_improvement_an_object_made_transient_by_a_rollback_stays_readable,
            # test_improvement_a_collection_of_an_object_made_transient_by_a_rollback_is_kept)
            return None
        return step

    def parent_change_differs(self, handle: int) -> bool:
        """Whether one library counts a change of this object's many-to-one `parent` and the
        other does not."""
        sa, rt = self.oracle, self.retort
        if sa.cls_of(sa.handles[handle]) not in ("Child", "Node"):
            return False
        return bool(
            sa.api.inspect(sa.handles[handle]).attrs.parent.history.has_changes()
            != rt.api.inspect(rt.handles[handle]).attrs.parent.history.has_changes()
        )

    def unsets_parent_over_a_key_set_by_hand(self, step: Step) -> bool:
        """Whether this step sets the many-to-one of an object to None while its parent_id
        holds a change set by hand since the last flush, and SQLAlchemy knows no old parent
        (it counts None as a change, which its flush writes over the key; retort compares
        with the committed parent it knows)."""
        if not (step[0] == "node_parent" or (step[0] == "move" and step[3] == "set")):
            return False
        if step[2] is not None:
            return False
        sa = self.oracle
        insp = sa.api.inspect(sa.handles[step[1]])
        if "parent_id" not in insp.dict or not insp.attrs.parent_id.history.has_changes():
            return False
        history = insp.attrs.parent.history
        return not history.deleted and not history.unchanged

    def unsets_a_stale_none_parent_retort_alone_holds(self, step: Step) -> bool:
        """Whether this step sets the many-to-one of an object to None where retort's holds
        it loaded as None and SQLAlchemy's does not hold it loaded, with a key naming a
        parent in retort's."""
        if not (step[0] == "node_parent" or (step[0] == "move" and step[3] == "set")):
            return False
        if step[2] is not None:
            return False
        sa, rt = self.oracle, self.retort
        ours = rt.handles[step[1]].__dict__
        return (
            "parent" in _unloaded(sa, sa.handles[step[1]])
            and "parent" in ours
            and ours["parent"] is None
            and ours.get("parent_id") is not None
        )

    def links_again_one_side_queued(self, parent: int, tag: int) -> bool:
        """Whether (on SQLAlchemy's side) one of the parent's tags and the tag's parents is
        loaded and the other is not, and the loaded one lists the other object already."""
        sa = self.oracle
        p, t = sa.handles[parent], sa.handles[tag]
        tags = sa.api.inspect(p).dict.get("tags")
        parents = sa.api.inspect(t).dict.get("parents")
        if (tags is None) == (parents is None):
            return False
        return any(x is t for x in tags or ()) or any(x is p for x in parents or ())

    def queued_past_rollback(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) was outside the session at a rollback, holding
        a change queued for an unloaded collection, and holds it still."""
        sa = self.oracle
        return sa.index.get(id(obj)) in sa.queued_past_rollback and _queued(sa, obj)

    def lists_unwritten_members(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) is new and its loaded many-to-many lists a
        member as of a flush (no change since: the rollback that made it new again left the
        collection as that flush had it, where retort's collection is new again)."""
        sa = self.oracle
        attr = {"Parent": "tags", "Tag": "parents"}.get(sa.cls_of(obj))
        if attr is None:
            return False
        insp = sa.api.inspect(obj)
        if insp.has_identity or attr not in insp.dict:
            return False
        return bool(insp.attrs[attr].history.unchanged)

    def orphan_seen_by_one_library_only(self, step: Step) -> bool:
        """Whether `step` gives a child, its many-to-one unloaded, no parent where what each
        library knows of its old parent without SQL differs: the parent is in one identity
        map only, or expired (as a whole) in one only, or its children are loaded in one
        library only."""
        if step[0] != "move" or step[2] is not None:
            return False
        sa, rt = self.oracle, self.retort
        child = sa.handles[step[1]]
        if sa.cls_of(child) != "Child" or "parent" in sa.api.inspect(child).dict:
            return False
        key = rt.api.inspect(rt.handles[step[1]]).dict.get("parent_id")
        if key is None:
            return False
        p_sa, p_rt = sa.held("Parent", key), rt.held("Parent", key)
        if p_sa is None or p_rt is None:
            return (p_sa is None) != (p_rt is None)
        sa_p, rt_p = sa.api.inspect(p_sa), rt.api.inspect(p_rt)
        if bool(sa_p.expired) != bool(rt_p.expired):
            return True
        return ("children" in sa_p.dict) != ("children" in rt_p.dict)

    def held_by_a_session(self, cls: str, pk: int) -> bool:
        """Whether either library's identity map holds an object of this key."""
        return any(side.held(cls, pk) is not None for side in (self.oracle, self.retort))

    def merges_a_key_set_by_hand(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) is a child or node outside the session whose
        loaded many-to-one names another key than its parent_id holds, and the identity map
        holds its row's object expired (what merge() copies it onto)."""
        sa = self.oracle
        if sa.cls_of(obj) not in ("Child", "Node") or obj in sa.session:
            return False
        d = sa.api.inspect(obj).dict
        if "parent" not in d or "parent_id" not in d:
            return False
        named = None if d["parent"] is None else sa.api.inspect(d["parent"]).dict.get("id")
        if named == d["parent_id"]:
            return False
        if d.get("id") is None:
            return False
        target = sa.held(sa.cls_of(obj), d["id"])
        return target is not None and bool(sa.api.inspect(target).expired)

    def merges_no_parent_onto_an_expired_child(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) is a child outside the session whose loaded
        many-to-one is None, and the identity map holds its row's object expired (what
        merge() copies it onto)."""
        sa = self.oracle
        if sa.cls_of(obj) != "Child" or obj in sa.session:
            return False
        d = sa.api.inspect(obj).dict
        if d.get("parent", "unloaded") is not None or d.get("id") is None:
            return False
        target = sa.held("Child", d["id"])
        return target is not None and bool(sa.api.inspect(target).expired)

    def taken_from_a_parent_unrowed(self, obj: Any) -> bool:
        """Whether retort's object for `obj` (on SQLAlchemy's side) waits as a child taken out
        of a parent without a row (Session._orphans_if_changed)."""
        i = self.oracle.index.get(id(obj))
        if i is None:
            return False
        return id(self.retort.handles[i]) in self.retort.session._orphans_if_changed

    def deleted_outside_the_session(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) is an object whose DELETE was flushed, outside
        the session."""
        sa = self.oracle
        return bool(sa.api.inspect(obj).was_deleted) and obj not in sa.session

    def lists_a_member_twice(self, obj: Any) -> bool:
        """Whether a loaded many-to-many of `obj` (on SQLAlchemy's side) lists a member twice,
        or two objects of one key (which merge() makes one)."""
        sa = self.oracle
        d = sa.api.inspect(obj).dict
        for attr in ("tags", "parents"):
            coll = d.get(attr) if attr in RELATIONSHIPS[sa.cls_of(obj)] else None
            if coll and len({sa.key(x) for x in coll}) < len(coll):
                return True
        return False

    def removes_a_child_its_key_names_elsewhere(self, holder: int, attr: str, pos: int) -> bool:
        """Whether this removal from loaded children (on SQLAlchemy's side) takes out a child
        whose many-to-one is not loaded and whose committed parent_id is not the holder's
        key."""
        sa = self.oracle
        owner = sa.handles[holder]
        coll = sa.api.inspect(owner).dict.get(attr)
        if attr != "children" or not coll:
            return False
        victim = sa.api.inspect(coll[pos % len(coll)])
        if "parent" in victim.dict or "parent_id" not in victim.dict:
            return False
        history = victim.attrs.parent_id.history
        committed = [*history.deleted, *history.unchanged]
        key = sa.api.inspect(owner).dict.get("id")
        return bool(committed) and committed[0] != key

    def removes_a_member_listed_twice(self, holder: int, attr: str, pos: int) -> bool:
        """Whether this removal from a loaded many-to-many collection (on SQLAlchemy's side)
        takes out an entry of a member listed twice there, or a member whose own loaded
        collection lists the holder twice."""
        sa = self.oracle
        other = {"parents": "tags", "tags": "parents"}.get(attr)
        coll = sa.api.inspect(sa.handles[holder]).dict.get(attr)
        if other is None or not coll:
            return False
        owner, victim = sa.handles[holder], coll[pos % len(coll)]
        back = sa.api.inspect(victim).dict.get(other) or []
        return sum(x is victim for x in coll) > 1 or sum(x is owner for x in back) > 1

    def old_parent_known_differs(self, handle: int) -> bool:
        """Whether SQLAlchemy's object holds its parent_id, to look its old parent up by, and
        retort's holds neither that nor its many-to-one `parent`; or both hold the key, and
        the old parent it names is held loaded in one identity map only. (Whether SQLAlchemy's holds
        `parent` is not asked: its flush of DELETEs reads it for one object of the
        relationship, which one depending on the order of a set, so that the draw would
        depend on that order; retort knowing what SQLAlchemy does not is a deleted object,
        which retort refuses to move.)"""
        sa, rt = self.oracle, self.retort
        if sa.cls_of(sa.handles[handle]) not in ("Child", "Node"):
            return False
        mine = rt.api.inspect(rt.handles[handle]).dict
        if "parent_id" in mine and "parent" not in mine:
            # set by hand since: retort's looks the old parent up by the committed key, unknown
            # where it was set while not loaded (taken for NULL, as SQLAlchemy takes it); where
            # SQLAlchemy's flush had loaded it, SQLAlchemy's knows it
            # (test_the_draw_moves_no_object_whose_key_set_by_hand_only_sqlalchemy_knew)
            obj = rt.handles[handle]
            state = obj.__dict__.get("_retort_state")
            index = type(obj).__mapper__.keys.index("parent_id")
            committed = None if state is None else state.committed_value(index)
            if committed is not None:
                if committed[0]:
                    return False
                theirs = sa.api.inspect(sa.handles[handle]).committed_state
                return theirs.get("parent_id", NO_VALUE) is not NO_VALUE
        theirs = sa.api.inspect(sa.handles[handle]).dict
        if "parent_id" in theirs and not ({"parent", "parent_id"} & mine.keys()):
            return True
        if "parent" in mine or mine.get("parent_id") is None:
            return False
        # both know the key: the old parent is found in the identity map if held there not
        # expired as a whole, which may differ (SQLAlchemy's delete() loads the object it
        # marks, retort's does not need to)
        # (test_the_draw_moves_no_object_whose_old_parent_only_sqlalchemy_holds_loaded)
        target = "Parent" if sa.cls_of(sa.handles[handle]) == "Child" else "Node"
        key = mine["parent_id"]
        return sa.held_loaded(target, key) != rt.held_loaded(target, key)

    def unsettled_key_differs(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) holds a parent_id that may differ between the
        libraries (Side.fk_unsettled) and does: retort's object holds another value, or holds
        one where SQLAlchemy's holds none (or it is no handle, to compare with)."""
        sa, rt = self.oracle, self.retort
        if sa.cls_of(obj) not in ("Child", "Node") or not sa.fk_unsettled(obj):
            return False
        if id(obj) not in sa.index or sa.index[id(obj)] in rt.keys_moved_by_a_failed_flush:
            # (where a failed flush copied a key into it in retort, SQLAlchemy's holds that key
            # or not depending on the order of its flush, which changes between runs: not asked,
            # so that the draw does not depend on it)
            return True
        mine = rt.api.inspect(rt.handles[sa.index[id(obj)]]).dict
        theirs = sa.api.inspect(obj).dict
        return ("parent_id" in mine, mine.get("parent_id")) != (
            "parent_id" in theirs,
            theirs.get("parent_id"),
        )

    def detached_loaded_differs(self, handle: int, attr: str) -> bool:
        """Whether this object is detached, or deleted (its DELETE flushed), and `attr` is
        loaded in one library only: reading it raises in the other (DetachedInstanceError;
        for a deleted object the load's autoflush, then ObjectDeletedError, as its row is
        gone)."""
        sa, rt = self.oracle, self.retort
        if sa.lifecycle(sa.handles[handle]) not in ("detached", "deleted"):
            return False
        return (attr in _unloaded(sa, sa.handles[handle])) != (
            attr in _unloaded(rt, rt.handles[handle])
        )

    def loads_in_one_after_a_failure(self, step: Step) -> bool:
        """Whether the session is to be rolled back and this step reads (or appends to, or
        takes out of) an attribute of a persistent object that is loaded in one library
        only."""
        if self.oracle.session.is_active:
            return False
        read = _collection_or_attribute_read(step)
        if read is None:
            return False
        target, attr = read
        sa, rt = self.oracle, self.retort
        if not sa.api.inspect(sa.handles[target]).persistent:
            return False
        return (attr in _unloaded(sa, sa.handles[target])) != (
            attr in _unloaded(rt, rt.handles[target])
        )

    def relationship_changed(self, handle: int) -> bool:
        """Whether a relationship change since the last flush (on SQLAlchemy's side) involves
        this object: one of its own loaded relationships changed, or another object's
        collection gained or lost it (loaded, or queued for one not loaded)."""
        sa = self.oracle
        obj = sa.handles[handle]
        others = {id(o): o for o in (*sa.handles, *sa.session.identity_map.values())}
        for other in (*others.values(), *sa.session.new):
            insp = sa.api.inspect(other)
            for rel in RELATIONSHIPS[sa.cls_of(other)]:
                if rel not in insp.dict:
                    continue
                history = insp.attrs[rel].history
                if other is obj and history.has_changes():
                    return True
                if any(x is obj for x in (*history.added, *history.deleted)):
                    return True
            for queued in (insp.__dict__.get("_pending_mutations") or {}).values():
                if obj in queued.added_items or obj in queued.deleted_items:
                    return True
        return False

    def merge_copies_a_written_none(self, handle: int) -> bool:
        """Whether merge() of this object would copy, in retort only, a None its INSERT wrote
        for a column the object never set. SQLAlchemy's flush leaves such a column out of the
        object's __dict__ (unloaded, it reads None without SQL); retort's holds the None it
        wrote, and its merge copies that over the value the row has now (test_divergence_
        merge_copies_a_none_retorts_insert_wrote_for_a_column_never_set)."""
        sa, rt = self.oracle, self.retort
        sa_obj, rt_obj = sa.handles[handle], rt.handles[handle]
        sa_unloaded, rt_unloaded = _unloaded(sa, sa_obj), _unloaded(rt, rt_obj)
        return any(
            c in sa_unloaded and c not in rt_unloaded and rt_obj.__dict__.get(c, 0) is None
            for c in COLUMNS[sa.cls_of(sa_obj)][1:]
        )

    def detached_append_loads_in_one(self, step: Step) -> bool:
        """Whether `step` appends to a collection of a detached (or deleted) object that is
        loaded in one library only: the other must load it first, and raises (as for a "read",
        which the draw leaves out likewise)."""
        read = _collection_or_attribute_read(step)
        return read is not None and step[0] != "read" and self.detached_loaded_differs(*read)

    def backref_queues_in_one(self, step: Step) -> bool:
        """Whether `step`'s backref appends to a collection loaded in one library only: the
        other queues the append, which differs from a loaded collection's. SQLAlchemy's flush,
        loading the collection to delete its owner's association rows, leaves a queued object
        outside the session out, and lists a member queued twice once, where its loaded
        collection lists them (as retort's does)."""
        backref = _backref_append(step)
        if backref is None:
            return False
        owner, attr, _member = backref
        sa, rt = self.oracle, self.retort
        return (attr in _unloaded(sa, sa.handles[owner])) != (
            attr in _unloaded(rt, rt.handles[owner])
        )

    def columns_loaded_by_sqlalchemy_only(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) has a key and holds a column retort's object
        does not (SQLAlchemy's flush loaded it before an UPDATE, where retort's sent the UPDATE
        by the key it knows)."""
        sa, rt = self.oracle, self.retort
        if not sa.api.inspect(obj).has_identity or id(obj) not in sa.index:
            return False
        theirs = sa.api.inspect(obj).dict
        mine = rt.api.inspect(rt.handles[sa.index[id(obj)]]).dict
        return any(c in theirs and c not in mine for c in COLUMNS[sa.cls_of(obj)])

    def children_loaded_in_one_library_only(self, handle: int) -> bool:
        """Whether this object is a parent whose children one library holds loaded and the
        other does not."""
        sa, rt = self.oracle, self.retort
        if sa.cls_of(sa.handles[handle]) != "Parent":
            return False
        return ("children" in sa.loaded(sa.handles[handle])) != (
            "children" in rt.loaded(rt.handles[handle])
        )

    def columns_loaded_by_retort_only_onto_another(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) holds no value of a column retort's object
        holds (NULL, known since an INSERT left it out, where SQLAlchemy left it unloaded), and
        another object of its key is held by the identity map, or pending (what merge()
        copies it onto, keeping there the value SQLAlchemy's copy lacks)."""
        sa, rt = self.oracle, self.retort
        if id(obj) not in sa.index:
            return False
        theirs = sa.api.inspect(obj).dict
        mine = rt.api.inspect(rt.handles[sa.index[id(obj)]]).dict
        if not any(c in mine and c not in theirs for c in COLUMNS[sa.cls_of(obj)]):
            return False
        key = sa.key(obj)
        if key[1] is None:
            return False
        held = sa.held(*key)
        if held is not None and held is not obj:
            return True
        return any(o is not obj and sa.key(o) == key for o in sa.session.new)

    def deleted_many_to_one_may_differ(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) is an object whose DELETE was flushed, or is
        marked for deletion (the autoflush of merge() flushes it), and whose many-to-one
        `parent` one library's object may hold and the other's not: retort's holds it where
        the flush of the DELETE found the parent in the identity map; SQLAlchemy's only for the
        first deleted object of the relationship, which one depending on the order of a set
        (so as not to make the draw depend on that order, what SQLAlchemy's holds is not
        asked; see test_improvement_every_deleted_objects_many_to_one_stays_readable), and
        then None where the identity map did not hold the parent (while its parent_id names
        one). So: retort's holds it, or its parent_id names a parent (or is unknown)."""
        sa, rt = self.oracle, self.retort
        if sa.cls_of(obj) not in ("Child", "Node") or id(obj) not in sa.index:
            return False
        mine = rt.handles[sa.index[id(obj)]]
        d = rt.api.inspect(mine).dict
        if mine in rt.session.deleted:
            # marked for deletion: the autoflush of merge() sends its DELETE first; a parent to
            # read unless it has none, and where it has none, retort's reads None (loaded)
            # where SQLAlchemy's may leave it unloaded, unless it is loaded already
            return "parent" not in d or d["parent"] is not None or d.get("parent_id") is not None
        state = rt.api.inspect(mine)
        if state.transient and sa.index[id(obj)] in rt.marked_deleted_once:
            # made transient by a rollback of its INSERT, after a flush of its DELETE may have
            # read its many-to-one (retort's keeps what it read, as it keeps every value)
            return "parent" in d
        if not state.was_deleted:
            return False
        return "parent" in d or d.get("parent_id", 0) is not None

    def merges_copies_of_a_key_loaded_differently(self, handles: list[int]) -> bool:
        """Whether the objects a merge() of these reaches (on SQLAlchemy's side) hold two
        copies of one key, one of which holds a column in one library only (or is no handle,
        to compare with): the copies are merged onto one object, and which copy's value of
        that column it keeps may differ."""
        sa, rt = self.oracle, self.retort
        copies: dict[tuple[str, Any], list[Any]] = {}

        def collect(obj: Any) -> bool:
            key = sa.key(obj)
            if key[1] is not None:
                copies.setdefault(key, []).append(obj)
            return False

        self.reaches(handles, collect)
        for objs in copies.values():
            if len(objs) < 2:
                continue
            for obj in objs:
                if id(obj) not in sa.index:
                    return True
                theirs = sa.api.inspect(obj).dict
                mine = rt.api.inspect(rt.handles[sa.index[id(obj)]]).dict
                if any((c in theirs) != (c in mine) for c in COLUMNS[sa.cls_of(obj)]):
                    return True
        return False

    def kept_by_retort_only(self, handle: int) -> bool:
        """Whether this object is transient, with attributes SQLAlchemy expired and retort's
        object holds (a rollback made it transient after a SAVEPOINT's rollback expired it in
        SQLAlchemy only). Or with a relationship retort's holds (not empty) and SQLAlchemy's
        does not: a flush of SQLAlchemy's loaded the expired columns again before that
        rollback (to see whether the row of a new object's key is deleted), not the
        relationships, which then read empty."""
        insp = self.oracle.api.inspect(self.oracle.handles[handle])
        if not insp.transient:
            return False
        held = self.retort.api.inspect(self.retort.handles[handle]).dict
        if insp.expired_attributes:
            return any(a in held for a in insp.expired_attributes)
        return any(
            held.get(a) and a not in insp.dict
            for a in RELATIONSHIPS[self.oracle.cls_of(self.oracle.handles[handle])]
        )

    def kept_by_retort_only_obj(self, obj: Any) -> bool:
        """kept_by_retort_only() of an object on SQLAlchemy's side (False if it is no
        handle)."""
        handle = self.oracle.index.get(id(obj))
        return handle is not None and self.kept_by_retort_only(handle)

    def expired_by_retort_only(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) is new (transient or pending) and a column its
        values hold is missing from retort's object: expired, then made transient by a
        rollback of its INSERT, where SQLAlchemy's flush loaded it before that rollback (to
        read its key) and retort's did not need to. (A new object's dict holds the same
        columns in both otherwise; retort's holds more after an INSERT, NULL for a column left
        unset.)"""
        sa, rt = self.oracle, self.retort
        if sa.api.inspect(obj).has_identity or id(obj) not in sa.index:
            return False
        theirs = sa.api.inspect(obj).dict
        mine = rt.api.inspect(rt.handles[sa.index[id(obj)]]).dict
        return any(c in theirs and c not in mine for c in COLUMNS[sa.cls_of(obj)])

    def may_delete_a_child(self, step: Step) -> bool:
        """Whether `step` may leave a persistent child to be deleted by the next flush: taken
        out of its parent (delete-orphan) or reached by a parent's delete cascade."""
        kind, *args = step
        if kind == "move":
            return args[1] is None
        if kind == "remove":
            return args[1] == "children"
        if kind == "delete":
            return self.oracle.cls_of(self.oracle.handles[args[0]]) == "Parent"
        return False

    def child_key_taken(self) -> bool:
        """Whether a new child (on SQLAlchemy's side) holds the key of a persistent one."""
        sa = self.oracle
        held = {sa.key(o) for o in sa.session.identity_map.values() if sa.cls_of(o) == "Child"}
        return any(sa.cls_of(o) == "Child" and sa.key(o) in held for o in sa.session.new)

    def takes_a_deleted_key(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) is outside the session without a row and holds
        the key of an object the next flush deletes (marked deleted, or an orphan child)."""
        sa = self.oracle
        return bool(sa.api.inspect(obj).transient) and self.switches_a_row(sa.key(obj))

    def switches_a_row(self, key: tuple[str, Any]) -> bool:
        """Whether a new object with `key` in the session makes a row switch the libraries
        write differently (see "new" in _draw): the key of an object the next flush deletes
        (marked deleted, or an orphan child) whose row switch differs."""
        sa = self.oracle
        if any(sa.key(o) == key and self.row_switch_differs(o) for o in sa.session.deleted):
            return True
        return key[0] == "Child" and self.orphan_of_key(key[1])

    def row_switch_differs(self, deleted: Any) -> bool:
        """Whether a row switch taking the key of `deleted` (on SQLAlchemy's side) differs
        between the libraries: for any object but a tag (the columns the new object leaves
        unset), and for a tag that gained an association since the last flush."""
        return self.oracle.cls_of(deleted) != "Tag" or self.linked_since_flush(deleted)

    def orphan_of_key(self, pk: int) -> bool:
        """Whether the persistent child with key `pk` (on SQLAlchemy's side) was taken out of
        its parent, so that the next flush deletes it."""
        sa = self.oracle
        for o in sa.session.identity_map.values():
            if sa.cls_of(o) == "Child" and sa.key(o) == ("Child", pk):
                insp = sa.api.inspect(o)
                return bool(insp.mapper._is_orphan(insp))
        return False

    def stale_key(self, obj: Any) -> bool:
        """Whether `obj` (on SQLAlchemy's side) is new (transient or pending) and holds a parent
        whose key its parent_id does not hold, with no change of `parent` for a flush to sync
        (a flush recorded it, then a rollback made the object transient again)."""
        sa = self.oracle
        if sa.cls_of(obj) not in ("Child", "Node"):
            return False
        if sa.node_key_unsettled(obj):
            # its parent_id may hold the parent's key in retort only (see Side.fk_unsettled),
            # which merge() copies: the many-to-one then names that parent already, and
            # setting it is no change, where SQLAlchemy's is (it appends to the children)
            return True
        return self.key_of_unsynced_parent_differs(obj, sa.api.inspect(obj).dict.get("parent_id"))

    def key_of_unsynced_parent_differs(self, obj: Any, parent_id: Any) -> bool:
        """Whether `obj` (a Child or Node on SQLAlchemy's side) is new, holds a parent with no
        change of `parent` for a flush to sync, and that parent's key is not `parent_id`."""
        sa = self.oracle
        insp = sa.api.inspect(obj)
        parent = insp.dict.get("parent")
        if insp.has_identity or parent is None:
            # (for a None held: both flushes clear the key for a None set since; with no change
            # left, as after a merge()'s autoflush that a rollback undid, both insert the key
            # set by hand:
            # test_the_draw_sets_a_parent_id_of_a_new_object_holding_a_none_parent_no_flush_syncs)
            return False
        if any(x is not None for x in insp.attrs.parent.history.added):
            return False
        target = sa.api.inspect(parent)
        key = target.identity[0] if target.identity else target.dict.get("id")
        return bool(parent_id != key)

    def sets_a_stale_key(self, step: Step) -> bool:
        """Whether this step sets the parent_id of a new object to a value that leaves it
        stale_key() (its parent's key is another)."""
        if step[0] != "set" or step[2] != "parent_id":
            return False
        obj = self.oracle.handles[step[1]]
        if self.oracle.cls_of(obj) not in ("Child", "Node"):
            return False
        return self.key_of_unsynced_parent_differs(obj, step[3])

    def reaches_stale_key(self, handles: list[int]) -> bool:
        """Whether one of these objects, or an object their loaded relationships reach (which a
        save-update cascade may put in the session), is stale_key()."""
        return self.reaches(handles, self.stale_key)

    def reaches(self, handles: list[int], test: Any) -> bool:
        """Whether one of these objects, or an object their loaded relationships reach (on
        SQLAlchemy's side), passes `test`."""
        sa = self.oracle
        todo = [sa.handles[i] for i in handles]
        seen: set[int] = set()
        while todo:
            obj = todo.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if test(obj):
                return True
            insp = sa.api.inspect(obj)
            for attr in RELATIONSHIPS[sa.cls_of(obj)]:
                value = insp.dict.get(attr)
                if value is not None:
                    todo.extend(value if _is_list(value) else [value])
                # (a cascade also follows what was taken out since the last flush)
                todo.extend(x for x in insp.attrs[attr].history.deleted if x is not None)
        return False

    def holds(self, parent: int, child: int) -> bool:
        """Whether `parent`'s loaded children (on SQLAlchemy's side) hold `child`."""
        sa = self.oracle
        p, c = sa.handles[parent], sa.handles[child]
        if sa.cls_of(p) not in ("Parent", "Node"):
            return False
        loaded = sa.api.inspect(p).dict.get("children") or []
        return any(x is c for x in loaded)

    def may_hold(self, parent: int, child: int) -> bool:
        """Whether `parent`'s children (on SQLAlchemy's side) hold `child` (holds()), or are not
        loaded and would hold it once loaded: its many-to-one names `parent`, or its parent_id
        holds `parent`'s key (or is not loaded, for an object with a row)."""
        if self.holds(parent, child):
            return True
        sa = self.oracle
        p, c = sa.handles[parent], sa.handles[child]
        if sa.cls_of(p) != "Parent" or "children" in sa.api.inspect(p).dict:
            return False
        d = sa.api.inspect(c).dict
        if d.get("parent") is p:
            return True
        if "parent_id" not in d:
            return bool(sa.api.inspect(c).has_identity)
        return bool(d["parent_id"] == sa.key(p)[1])

    def new_child_moving(self, child: int, parent: int) -> bool:
        """Whether `child` is new (pending, or transient and so added by the append) and has
        a parent other than `parent`."""
        sa = self.oracle
        c, p = sa.handles[child], sa.handles[parent]
        if sa.cls_of(c) != "Child" or sa.api.inspect(c).has_identity:
            return False
        old = sa.api.inspect(c).dict.get("parent")
        return old is not None and old is not p

    def just_given_a_parent(self, target: int) -> bool:
        """Whether `target` (a Child or Node) got a parent since the last flush."""
        sa = self.oracle
        obj = sa.handles[target]
        if sa.cls_of(obj) not in ("Child", "Node"):
            return False
        history = sa.api.inspect(obj).attrs.parent.history
        return any(x is not None for x in history.added)

    def listed_elsewhere(self, child: int, target: int | None) -> bool:
        """Whether a handled object other than `target` (on SQLAlchemy's side) lists `child` in
        its loaded children, where the child's many-to-one is not loaded or names another."""
        sa = self.oracle
        obj = sa.handles[child]
        mine = sa.api.inspect(obj)
        parent = mine.dict.get("parent") if "parent" not in mine.unloaded else None
        return any(
            i != target and self.holds(i, child) and sa.handles[i] is not parent
            for i in range(len(sa.handles))
        )

    def queued_in_a_collection(self, target: int) -> bool:
        """Whether `target` (on SQLAlchemy's side) is queued as added to the unloaded
        collection of a handled object (its pending mutations)."""
        return any(self.queued_by(target))

    def queued_by(self, target: int) -> Iterator[Any]:
        """The handled objects (on SQLAlchemy's side) whose unloaded collection queues `target`
        as added."""
        sa = self.oracle
        obj = sa.handles[target]
        for holder in sa.handles:
            queued = sa.api.inspect(holder).__dict__.get("_pending_mutations") or {}
            if any(x is obj for pending in queued.values() for x in pending.added_items):
                yield holder

    def added_to_a_collection(self, target: int) -> bool:
        """Whether `target` (on SQLAlchemy's side) is among the members the loaded children of
        a handled object gained since that object's last flush (which a flush of an object
        outside the session keeps)."""
        return any(self.gained_by(target))

    def gained_by(self, target: int) -> Iterator[Any]:
        """The handled objects (on SQLAlchemy's side) whose loaded children gained `target`
        since their last flush."""
        sa = self.oracle
        obj = sa.handles[target]
        for holder in sa.handles:
            insp = sa.api.inspect(holder)
            if sa.cls_of(holder) not in ("Parent", "Node") or "children" not in insp.dict:
                continue
            if any(x is obj for x in insp.attrs.children.history.added):
                yield holder

    def parents_given(self, target: int) -> list[Any]:
        """The objects (on SQLAlchemy's side) `target`, a Child or Node, was given as parent
        since the last flush (just_given_a_parent), or is queued for or gained by the children
        of (see queued_in_a_collection and added_to_a_collection)."""
        sa = self.oracle
        obj = sa.handles[target]
        if sa.cls_of(obj) not in ("Child", "Node"):
            return []
        given = [x for x in sa.api.inspect(obj).attrs.parent.history.added if x is not None]
        return [*given, *self.queued_by(target), *self.gained_by(target)]

    def parent_read_by_a_failed_delete(self, step: Step) -> bool:
        """Whether this step reads the many-to-one of an object that was marked deleted and has
        no row now, which retort's object holds loaded (see the draw)."""
        if step[0] != "read" or step[2] != "parent":
            return False
        rt = self.retort
        obj = rt.handles[step[1]]
        return (
            step[1] in rt.marked_deleted_once
            and not rt.api.inspect(obj).has_identity
            and "parent" in rt.api.inspect(obj).dict
        )

    def parent_marked_deleted(self, step: Step) -> bool:
        """Whether this step gives a node a parent marked deleted, or marks deleted a node that
        a node was given as its parent since the last flush (on SQLAlchemy's side)."""
        if step[0] == "node_parent":
            return step[2] is not None and self.marked_deleted(step[2])
        if step[0] != "delete":
            return False
        sa = self.oracle
        target = sa.handles[step[1]]
        if sa.cls_of(target) != "Node":
            return False
        return any(
            sa.cls_of(obj) == "Node"
            and any(x is target for x in sa.api.inspect(obj).attrs.parent.history.added)
            for obj in sa.handles
        )

    def sets_key_of_an_object_marked_deleted(self, step: Step) -> bool:
        """Whether this step sets the parent_id of an object marked deleted (SQLAlchemy's), or
        marks deleted an object whose parent_id was set by hand since the last flush, its
        many-to-one not loaded (in either library)."""
        if step[0] == "set":
            return step[2] == "parent_id" and self.marked_deleted(step[1])
        if step[0] != "delete":
            return False
        for side in (self.oracle, self.retort):
            obj = side.handles[step[1]]
            if side.cls_of(obj) not in ("Child", "Node"):
                continue
            insp = side.api.inspect(obj)
            if "parent" not in insp.dict and insp.attrs.parent_id.history.has_changes():
                return True
        return False

    def linked_since_flush(self, tag: Any) -> bool:
        """Whether `tag` (on SQLAlchemy's side) has gained an association since the last
        flush: a parent appended to its loaded parents, or it appended to the loaded tags of
        a parent of the session (or changes queued for unloaded collections, of either)."""
        sa = self.oracle

        def queued(insp: Any, attr: str) -> Any:
            pending = insp.__dict__.get("_pending_mutations") or {}
            return pending[attr].added_items if attr in pending else ()

        insp = sa.api.inspect(tag)
        if ("parents" in insp.dict and insp.attrs.parents.history.added) or queued(insp, "parents"):
            return True
        for o in sa.session:
            if sa.cls_of(o) != "Parent":
                continue
            oi = sa.api.inspect(o)
            added = oi.attrs.tags.history.added if "tags" in oi.dict else ()
            if any(x is tag for x in (*added, *queued(oi, "tags"))):
                return True
        return False

    def switched_tag(self, handle: int) -> bool:
        """Whether this object is a tag marked deleted (on SQLAlchemy's side) whose key a new
        object holds (a row switch at the next flush)."""
        sa = self.oracle
        obj = sa.handles[handle]
        if sa.cls_of(obj) != "Tag" or obj not in sa.session.deleted:
            return False
        key = sa.key(obj)
        return any(o is not obj and sa.key(o) == key for o in sa.session.new)

    def marked_deleted(self, handle: int) -> bool:
        """Whether this object is marked deleted (on SQLAlchemy's side), its DELETE not flushed."""
        sa = self.oracle
        return sa.handles[handle] in sa.session.deleted

    def has_pending_children(self, parent: int) -> bool:
        """Whether a pending Child has `parent` as its parent (or is in its collection)."""
        sa = self.oracle
        p = sa.handles[parent]
        if sa.cls_of(p) != "Parent":
            return False
        for obj in sa.session.new:
            if sa.cls_of(obj) == "Child" and sa.api.inspect(obj).dict.get("parent") is p:
                return True
        loaded = sa.api.inspect(p).dict.get("children") or []
        return any(sa.api.inspect(c).pending for c in loaded)

    def _draw(self, classes: list[str], nested: int) -> Step | None:
        kind = self.one(_KIND_LIST, "kind")
        if kind == "new":
            cls = self.one(["Parent", "Child", "Child", "Tag", "Node", "Node"])
            name = self.one(["a", "b"])
            vias = {
                "Parent": ["add"],
                "Child": ["add", "append", "append", "set_parent", "set_parent_add"],
                "Tag": ["add", "append"],
                "Node": ["add", "set_parent", "set_parent_add", "set_parent_add"],
            }[cls]
            via = self.one(vias, "via")
            target = None
            if via != "add":
                target = self.pick(classes, "Node" if cls == "Node" else "Parent", label="to")
                if target is None:
                    via = "add"
            pk = self.new_key(cls)
            if self.switches_a_row((cls, pk)):
                # a row switch leaving a column unset: retort writes NULL where SQLAlchemy
                # keeps the deleted row's value (the key of an object the next flush deletes,
                # marked or an orphan)
                # (test_improvement_a_row_switch_writes_what_the_new_object_leaves_unset in
                # test_relationships.py); for a tag (no column left unset), where the deleted
                # tag has gained an association since the last flush: SQLAlchemy's flush
                # inserts its row, linking the row the new tag takes; retort's writes none to
                # a tag it deletes (test_the_draw_switches_no_row_of_a_tag_linked_since_flush)
                return None
            return ("new", cls, pk, name, via, target)
        if kind == "set":
            target = self.pick(classes, "Parent", "Child", "Tag", "Node", label="object")
            if target is None:
                return None
            attrs = SETTABLE[classes[target]]
            attr = self.one(sorted(attrs), "attr")
            return ("set", target, attr, self.one(attrs[attr], "value"))
        if kind == "move":
            child = self.pick(classes, "Child", label="child")
            if child is None:
                return None
            how = self.one(["set", "append"], "how")
            parent = self.pick(classes, "Parent", label="parent")
            if parent is None or (how == "set" and self.number(0, 4, "none?") == 0):
                return ("move", child, None, "set")
            if self.marked_deleted(child):
                # given a parent after its delete(), before a flush: SQLAlchemy's flush UPDATEs
                # the row instead of deleting it (cancel_delete), retort's deletes it; see
                # test_improvement_delete_of_an_object_just_given_a_parent_is_honoured
                return None
            if how == "set" and self.holds(parent, child):
                # the parent's loaded collection holds the child already (it went stale when
                # the child's parent_id was set by hand and flushed): SQLAlchemy's backref
                # appends a second entry, retort keeps one; see
                # test_improvement_a_backref_does_not_duplicate_a_member
                return None
            if how == "append" and self.may_hold(parent, child):
                # appended again (or to a collection not loaded, whose load by the append lists
                # it already): both list it twice; taking one entry out later (moving it, or
                # removing it) makes it an orphan in SQLAlchemy (whose has-parent flag is one
                # boolean), not in retort, where the other entry is still there; see
                # test_improvement_a_child_listed_twice_is_no_orphan_when_one_entry_goes
                return None
            if how == "append" and self.new_child_moving(child, parent):
                # SQLAlchemy expunges the child as an orphan of its first parent (the backref
                # takes it out there before the append records the new parent); retort moves
                # it: see test_improvement_a_pending_child_moved_between_pending_parents_stays
                return None
            return ("move", child, parent, how)
        if kind == "remove":
            holder = self.pick(classes, "Parent", "Tag", "Node", label="holder")
            if holder is None:
                return None
            attr = {"Parent": ["children", "children", "tags"], "Tag": ["parents"]}.get(
                classes[holder], ["children"]
            )
            return ("remove", holder, self.one(attr), self.number(0, 3, "pos"))
        if kind == "link":
            parent = self.pick(classes, "Parent", label="parent")
            tag = self.pick(classes, "Tag", label="tag")
            if parent is None or tag is None:
                return None
            return ("link", parent, tag, bool(self.number(0, 1, "from tag")))
        if kind == "node_parent":
            node = self.pick(classes, "Node", label="node")
            if node is None:
                return None
            if self.number(0, 4, "none?") == 0:
                return ("node_parent", node, None)
            parent = self.pick(classes, "Node", label="parent")
            if parent is not None and self.marked_deleted(node):
                return None  # (as for "move" above)
            if parent is not None and self.holds(parent, node):
                # its loaded children hold the node already: SQLAlchemy's backref may append a
                # second entry (where it does not know the node's parent without SQL), retort
                # keeps one (test_improvement_a_backref_does_not_duplicate_a_member)
                return None
            return ("node_parent", node, parent)
        if kind in ("delete", "expunge", "merge"):
            target = self.pick(classes, "Parent", "Child", "Tag", "Node", label="object")
            if target is None:
                return None
            if kind == "delete" and (
                self.just_given_a_parent(target)
                or self.queued_in_a_collection(target)
                or self.added_to_a_collection(target)
            ):
                # SQLAlchemy's next flush does not delete an object added to a one-to-many
                # collection since the last flush (the one after does); retort's does: see
                # test_improvement_delete_of_an_object_just_given_a_parent_is_honoured. Also
                # where its many-to-one change was flushed while the parent was outside the
                # session, which still queues it for its unloaded children, or lists it among
                # the members its loaded children gained (test_the_draw_deletes_no_child_
                # queued_for_the_children_of_a_parent_outside_the_session, test_the_draw_
                # deletes_no_child_a_parent_outside_the_session_gained)
                return None
            if kind == "merge" and self.merge_copies_a_written_none(target):
                return None  # (see merge_copies_a_written_none)
            if kind == "delete" and self.has_pending_children(target):
                # retort expunges them, SQLAlchemy inserts them and fails on the foreign key:
                # see test_improvement_deleting_a_parent_expunges_its_pending_children in
                # test_relationships.py
                return None
            if kind == "delete" and self.row_switch_differs(self.oracle.handles[target]):
                obj = self.oracle.handles[target]
                key = self.oracle.key(obj)
                if any(o is not obj and self.oracle.key(o) == key for o in self.oracle.session.new):
                    # a new object holds its key: a row switch, as for a new object taking a
                    # deleted object's key (see "new" above)
                    return None
            return (kind, target)
        if kind in ("release", "rollback_nested"):
            return (kind,) if nested else None
        if kind in ("merge_new",):
            cls = self.one(["Parent", "Child", "Tag", "Node"], "class")
            pk = self.number(1, self.next_key[cls], "key")
            return ("merge_new", cls, pk, self.one(["a", "b"], "name"))
        if kind in ("get", "bad_sql"):
            cls = self.one(["Parent", "Child", "Tag", "Node"], "class")
            pk = self.number(1, self.next_key[cls], "key")
            return (kind, cls, pk)
        if kind == "read":
            target = self.pick(classes, "Parent", "Child", "Tag", "Node", label="object")
            if target is None:
                return None
            cls = classes[target]
            attrs = [*COLUMNS[cls][1:], *RELATIONSHIPS[cls]]
            attr = self.one(attrs, "attr")
            obj = self.oracle.handles[target]
            if attr == "parent_id" and self.oracle.fk_unsettled(obj):
                return None  # see Side.fk_unsettled
            if self.detached_loaded_differs(target, attr):
                # SQLAlchemy's flush loaded the object, expired, before its UPDATE; retort's
                # sent the UPDATE by its key and left it expired: detached since, or deleted,
                # it cannot load (test_divergence_a_detached_object_only_sqlalchemys_flush_
                # loaded, test_divergence_a_deleted_object_only_sqlalchemys_flush_loaded)
                return None
            return ("read", target, attr)
        if kind == "query":
            return ("query", self.one(["Parent", "Child", "Tag", "Node"]))
        if kind in ("expire", "refresh"):
            target = self.pick(classes, "Parent", "Child", "Tag", "Node", label="object")
            if target is None or not self.oracle.session.is_active:
                return None  # (not in a session to be rolled back)
            if self.relationship_changed(target):
                # expiring it discards its own change (a move between parents) and leaves
                # the collections' (whose orphan check then sees it taken out, and not put
                # back): whether SQLAlchemy's flush deletes it as an orphan follows the order
                # of a set, which changes between runs
                # (test_the_draw_expires_no_object_with_a_relationship_change)
                return None
            cls = classes[target]
            attr = self.one([None, None, *COLUMNS[cls][1:], *RELATIONSHIPS[cls]], "attr")
            return (kind, target, attr)
        return (kind,)


# --------------------------------------------------------------------------------------------
# running a program in lockstep


def _event(what: str) -> None:
    if currently_in_test_context():
        event(what)


def _fmt(step: Step) -> str:
    return f"{step[0]}({', '.join(map(repr, step[1:]))})"


@dataclass
class Lockstep:
    sa: Side
    rt: Side
    admin: psycopg.Connection[Any]
    program: list[str] = field(default_factory=list)
    rt_wrote: bool = False  # whether retort sent INSERT/UPDATE/DELETE in the last step
    # the handles of the objects retort's side held persistent and expired before the step
    rt_expired: set[int] = field(default_factory=set)
    # and those SQLAlchemy's side held persistent and expired before the step
    sa_expired: set[int] = field(default_factory=set)
    # the ids of the objects SQLAlchemy's session held dirty before the step
    sa_dirty_before: set[int] = field(default_factory=set)
    # the keys of the objects retort's identity map held persistent and expired before the step
    rt_expired_keys: set[tuple[str, Any]] = field(default_factory=set)
    # whether retort's session held nothing to flush before the step, and (before a merge)
    # the ids of the objects its identity map held
    rt_clean_before: bool = True
    rt_held_before: set[int] = field(default_factory=set)
    sa_warnings: list[str] = field(default_factory=list)  # SQLAlchemy's, in the last step
    rt_warnings: list[str] = field(default_factory=list)  # retort's, in the last step
    # the values SQLAlchemy's objects held before the last step (loaded attributes)
    sa_before: list[dict[str, Any]] = field(default_factory=list)
    # whether the key a get() or merge() of a new copy looks up was held loaded by SQLAlchemy's
    # identity map before the step, not by retort's (an object only SQLAlchemy's flush loaded)
    held_by_sqlalchemy_only: bool = False
    # whether retort's session held a parent or a tag marked deleted before the step
    rt_deleting_linked: bool = False
    # (handle, parent's key) of each node SQLAlchemy's session queued, before the step, for
    # the unloaded children of a node of the session
    sa_queued_nodes: set[tuple[int, Any]] = field(default_factory=set)
    # the outcomes of the step (SQLAlchemy's, retort's)
    outcomes: tuple[Outcome, Outcome] | None = None
    # (handle, relationship) of each collection retort's object held loaded after a step where
    # SQLAlchemy's did not (an object unchanged inside a rolled back SAVEPOINT stays loaded)
    loaded_by_retort_only: set[tuple[int, str]] = field(default_factory=set)

    def fail(self, what: str, sa: Any, rt: Any) -> None:
        listing = "\n".join(f"  {i:2}. {p}" for i, p in enumerate(self.program))
        raise Divergence(
            f"retort diverges from SQLAlchemy: {what}\n  sqlalchemy: {sa!r}\n  retort:     {rt!r}"
            f"\nprogram:\n{listing}"
        )

    def expect_equal(self, what: str, sa: Any, rt: Any) -> None:
        if sa != rt:
            self.fail(what, sa, rt)

    def compare_objects(self) -> None:
        sa_snap, rt_snap = self.sa.snapshot(), self.rt.snapshot()
        for a, b in zip(sa_snap, rt_snap, strict=True):
            i, cls, sa_state, sa_in, sa_vals = a
            _, rcls, rt_state, rt_in, rt_vals = b
            self.expect_equal(f"class of handle {i}", cls, rcls)
            self.expect_equal(f"state of handle {i} ({cls})", sa_state, rt_state)
            self.expect_equal(f"`in session` of handle {i} ({cls})", sa_in, rt_in)
            for attr in sa_vals.keys() & rt_vals.keys():
                if attr == "parent_id" and (
                    self.sa.fk_unsettled(self.sa.handles[i]) or self.fk_synced_by_sa_only(i)
                ):
                    continue
                sa_val = sa_vals[attr]
                if sa_state in ("deleted", "detached") and isinstance(sa_val, list):
                    sa_val = self.without_detached_twins(sa_val, rt_vals[attr])
                self.expect_equal(
                    f"loaded {cls}.{attr} of handle {i} ({sa_state})",
                    sa_val,
                    _unknown_keys_as(sa_val, rt_vals[attr]),
                )
            # which attributes are loaded may differ: retort knows that a column left out of an
            # INSERT is NULL where SQLAlchemy leaves it unloaded. Reading (step "read") shows
            # whether a value that only one of them holds is stale.
        self.expect_equal("session sets", self.sa.session_sets(), self.rt.session_sets())

    def fk_synced_by_sa_only(self, i: int) -> bool:
        """Whether handle `i` is detached in both libraries with its many-to-one loaded, and
        only SQLAlchemy's parent_id names what that says. SQLAlchemy's flush of a parent the
        object left (the object in the history of removals of the parent's collection) writes
        the key into it in memory though it is outside the session; retort's writes nothing
        into an object outside the session, whose own flush (attached again) writes its key
        (test_divergence_a_flush_writes_no_key_into_a_detached_child_that_left_its_parent)."""

        def parent_key(side: Side) -> tuple[bool, Any]:
            obj = side.handles[i]
            if side.lifecycle(obj) != "detached":
                return False, None
            d = side.api.inspect(obj).dict
            if "parent" not in d or "parent_id" not in d:
                return False, None
            parent = d["parent"]
            want = None if parent is None else side.key(parent)[1]
            return d["parent_id"] == want, side.norm(parent)

        sa_synced, sa_parent = parent_key(self.sa)
        rt_synced, rt_parent = parent_key(self.rt)
        return sa_synced and not rt_synced and sa_parent == rt_parent

    def without_detached_twins(self, values: list[Any], rt_values: Any) -> list[Any]:
        """SQLAlchemy's (normalised) collection of a deleted (or since detached) object
        without the detached objects of the program listed beside a loaded object of the
        same row: a member appended while outside the session (through the backref to an
        unloaded collection) stays queued, and SQLAlchemy's flush, loading the collection to
        delete the object's association rows, lists it beside the object it loads for that
        row; retort's lists the row once
        (test_divergence_a_deleted_objects_collection_lists_a_row_once). One that retort's
        collection lists too stays: appended to the loaded collection (the detached object
        given the deleted parent), it is listed by both
        (test_harness_keeps_a_detached_twin_both_collections_list)."""
        loaded = {v[1:] for v in values if isinstance(v, tuple) and v[0] == "o"}
        listed_by_rt = set(rt_values) if isinstance(rt_values, list) else set()
        out = []
        for v in values:
            if isinstance(v, tuple) and v[0] == "h" and v not in listed_by_rt:
                obj = self.sa.handles[v[1]]
                if self.sa.api.inspect(obj).detached and self.sa.key(obj) in loaded:
                    continue
            out.append(v)
        return out

    def compare_committed(self, when: str) -> None:
        self.expect_equal(
            f"committed rows {when}",
            fetch_rows(self.admin, self.sa.schema),
            fetch_rows(self.admin, self.rt.schema),
        )

    def sa_original_error(self, err: BaseException | None) -> BaseException | None:
        """SQLAlchemy's error `err`, or, for a PendingRollbackError, the error of the failed
        flush that rolled the session back: through its __cause__ / __context__ chain, or as
        SQLAlchemy keeps it on its transaction (naming it in the message only)."""
        if type(err).__name__ != "PendingRollbackError":
            return err
        seen: set[int] = set()
        cause = err
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if type(cause).__name__ != "PendingRollbackError":
                return cause
            cause = cause.__cause__ or cause.__context__
        tx = getattr(self.sa.session, "_transaction", None)
        while tx is not None:
            original = getattr(tx, "_rollback_exception", None)
            if original is not None:
                return original
            tx = tx.parent
        return None

    def sa_changes(self) -> set[int]:
        """The objects SQLAlchemy's session holds changes of (new, dirty or deleted), by id."""
        s = self.sa.session
        return {id(o) for o in (*s.new, *s.dirty, *s.deleted)}

    def loaded_by_sqlalchemy_only(self, step: Step) -> bool:
        """Whether the object this get() or read acts on was expired on retort's side before
        the step and is not on SQLAlchemy's (for a read, or the column it reads: for a
        many-to-one, its foreign key, which says without SQL whether it has a parent)."""
        if step[0] == "get":
            handles = [i for i, o in enumerate(self.sa.handles) if self.sa.key(o) == step[1:]]
        else:
            handles = [step[1]]
            target, attr = step[1], step[2]
            if attr == "parent":
                attr = "parent_id"
            if (
                attr in COLUMNS[self.sa.cls_of(self.sa.handles[target])]
                and attr in self.sa_before[target]
                and attr in _unloaded(self.rt, self.rt.handles[target])
            ):
                return True
        return any(
            i in self.rt_expired and not self.sa.api.inspect(self.sa.handles[i]).expired
            for i in handles
        )

    def gone_object_sa_flush_loaded(self, err: BaseException | None) -> Any:
        """retort's object for the one SQLAlchemy's ObjectDeletedError `err` names, if the error
        was raised inside SQLAlchemy's flush loading a persistent object of the program that
        retort's side held expired before the step (retort keeps its key, so its flush read
        nothing of it), or holds loaded with nothing to flush; else None. The error names the
        object by its id() ("<Parent at 0x...>")."""
        address = _named_by_sa_flush(err)
        if address is None or address not in self.sa.index:
            return None
        handle = self.sa.index[address]
        if handle in self.rt_expired:
            return self.rt.handles[handle]
        obj = self.rt.handles[handle]
        if (
            self.rt.lifecycle(obj) == "persistent"
            and not self.rt.api.inspect(obj).expired
            and obj not in self.rt.session.dirty
            and not self.rt_wrote
        ):
            # held loaded and unchanged by retort (a value set again where SQLAlchemy's object
            # was expired by a SAVEPOINT's rollback, which undid its row's INSERT): retort's
            # flush has nothing to send for it, SQLAlchemy's loads it and finds no row
            # (test_divergence_a_flush_of_a_value_set_again_on_an_object_whose_row_is_gone)
            return obj
        return None

    def gone_key_sa_flush_loaded(self, err: BaseException | None) -> tuple[str, Any] | None:
        """The key of the object SQLAlchemy's ObjectDeletedError `err` names, if the error was
        raised inside SQLAlchemy's flush loading a persistent object of the program (see
        gone_object_sa_flush_loaded), or one the program never handled (a parent a merge()
        cascade loaded) whose key retort's side held persistent and expired before the step
        (its flush read nothing of it; it may be gone from the weak identity map since)."""
        gone = self.gone_object_sa_flush_loaded(err)
        if gone is not None:
            return self.rt.key(gone)
        address = _named_by_sa_flush(err)
        if address is None or address in self.sa.index:
            return None
        sa_obj = next((o for o in self.sa.session.identity_map.values() if id(o) == address), None)
        if sa_obj is None or self.sa.key(sa_obj) not in self.rt_expired_keys:
            return None
        return self.sa.key(sa_obj)

    def sa_sets_what_the_key_names(self, obj: Any) -> bool:
        """Whether SQLAlchemy's `obj` (a handled object) has changes of its many-to-one only,
        set while its old value was not known without SQL to what the foreign key names (None
        for a NULL key, or the persistent object of that key): the object expired by the
        rollback of a SAVEPOINT whose flush failed, where retort's stays loaded (it changed
        nothing inside). SQLAlchemy counts the change (`is_modified`); retort reads the old
        value from the foreign key it holds and counts none."""
        handle = self.sa.index.get(id(obj))
        if handle is None or self.sa.cls_of(obj) not in ("Child", "Node"):
            return False
        insp = self.sa.api.inspect(obj)
        changed = [a.key for a in insp.attrs if a.history.has_changes()]
        if changed != ["parent"]:
            return False
        hist = insp.attrs.parent.history
        if hist.deleted or len(hist.added) != 1 or "parent_id" in insp.dict:
            return False  # (an old value known: a change in both)
        rt_dict = self.rt.api.inspect(self.rt.handles[handle]).dict
        if "parent_id" not in rt_dict:
            return False
        value = hist.added[0]
        if value is None:
            return rt_dict["parent_id"] is None
        target = self.sa.api.inspect(value)
        return bool(target.persistent and target.identity == (rt_dict["parent_id"],))

    def sa_sets_a_column_retort_knows(self, obj: Any) -> bool:
        """Whether SQLAlchemy's `obj` (a handled object) has changes of columns only, each set
        while its old value was not loaded to the value retort's object holds (a column an
        INSERT left out, which retort knows is NULL and SQLAlchemy leaves unloaded): a change
        in SQLAlchemy, none in retort."""
        handle = self.sa.index.get(id(obj))
        if handle is None:
            return False
        insp = self.sa.api.inspect(obj)
        changed = [a for a in insp.attrs if a.history.has_changes()]
        rt_dict = self.rt.api.inspect(self.rt.handles[handle]).dict
        cols = COLUMNS[self.sa.cls_of(obj)]
        return bool(changed) and all(
            a.key in cols
            and not a.history.deleted
            and len(a.history.added) == 1
            and a.key in rt_dict
            and rt_dict[a.key] == a.history.added[0]
            for a in changed
        )

    def held_by_sqlalchemy_unhandled(self, cls: str, pk: int) -> bool:
        """Whether SQLAlchemy's identity map holds an object of this key that has no handle,
        and retort's holds a handled one (that SQLAlchemy's refused to attach: another)."""
        sa_obj, rt_obj = self.sa.held(cls, pk), self.rt.held(cls, pk)
        if sa_obj is None or id(sa_obj) in self.sa.index or rt_obj is None:
            return False
        i = self.rt.index.get(id(rt_obj))
        return i is not None and self.sa.handles[i] is not sa_obj

    def sa_updated_a_key_of_a_pending_node(self, err: BaseException | None) -> bool:
        """Whether SQLAlchemy's failed statement `err` is an UPDATE of nodes.parent_id, or an
        INSERT of nodes, naming the key of a new node its flush had not inserted yet (pending,
        or transient again after the failed flush's rollback)."""
        statement = str(getattr(err, "statement", "") or "")
        params = getattr(err, "params", None)
        if (
            re.match(r"UPDATE (\w+\.)?nodes SET parent_id|INSERT INTO (\w+\.)?nodes", statement)
            is None
        ):
            return False
        rows = params if isinstance(params, list | tuple) else [params]
        keys = {r.get("parent_id") for r in rows if isinstance(r, dict)}
        sa = self.sa
        return any(
            sa.cls_of(o) == "Node"
            and sa.lifecycle(o) in ("pending", "transient")
            and sa.key(o)[1] in keys
            for o in sa.handles
        )

    def held_by_retort_expired_unhandled(self, cls: str, pk: int) -> bool:
        """Whether retort's identity map holds an expired object of this key that has no
        handle (only an expired object's collection refers to it), where SQLAlchemy's holds
        none, or a handled one (the detached copy the step attached)."""
        rt_obj, sa_obj = self.rt.held(cls, pk), self.sa.held(cls, pk)
        return (
            rt_obj is not None
            and id(rt_obj) not in self.rt.index
            and self.rt.api.inspect(rt_obj).expired
            and (sa_obj is None or id(sa_obj) in self.sa.index)
        )

    def attached_again_after_another_instance_deleted_it(self) -> bool:
        """Whether SQLAlchemy's session has attached an object of a key whose other instance
        the program marked deleted (its row gone, where a flush ran that DELETE)."""
        sa = self.sa
        deleted = {sa.key(sa.handles[i]) for i in self.rt.marked_deleted_once}
        return any(
            i not in self.rt.marked_deleted_once
            and sa.lifecycle(obj) == "persistent"
            and sa.key(obj) in deleted
            for i, obj in enumerate(sa.handles)
        )

    def rt_replaced_a_gone_object(self) -> bool:
        """Whether retort's session holds a handled persistent object of the key of a handled
        object it holds deleted."""
        rt = self.rt
        gone = {rt.key(o) for o in rt.handles if rt.lifecycle(o) == "deleted"}
        return any(rt.lifecycle(o) == "persistent" and rt.key(o) in gone for o in rt.handles)

    def updates_a_gone_row_both_hold_changed(self, err: BaseException | None) -> bool:
        """Whether retort's StaleDataError `err` is an UPDATE matching no row of a handled
        object retort held expired before the step (a rollback undid the INSERT of its row),
        which SQLAlchemy holds persistent, with a change to flush before the step too."""
        found = re.search(
            r"UPDATE statement on table '(\w+)'.*Rows not matched: id=(\d+)\.", str(err)
        )
        if found is None:
            return False
        return any(
            TABLE_OF[key[0]] == found[1]
            and key[1] == int(found[2])
            and key in self.rt_expired_keys
            and self.rt.api.inspect(obj).persistent
            and self.sa.api.inspect(sa_obj).persistent
            and id(sa_obj) in self.sa_dirty_before
            for obj, sa_obj in zip(self.rt.handles, self.sa.handles, strict=True)
            for key in [self.rt.key(obj)]
        )

    def names_a_row_a_flush_deleted(self, err: BaseException | None) -> bool:
        """Whether `err` is a foreign key violation naming the key of a row that is gone, of an
        object the program marked deleted (SQLAlchemy's failed flush may have made it
        persistent again since)."""
        found = re.search(r'Key \((\w+)\)=\((\d+)\) is not present in table "(\w+)"', str(err))
        if found is None:
            return False
        return any(
            i in self.rt.marked_deleted_once
            and type(obj).__table__.name == found[3]
            and self.sa.key(obj)[1] == int(found[2])
            for i, obj in enumerate(self.sa.handles)
        )

    def removed_naming_another_untracked(self, step: Step, sa: Outcome) -> bool:
        """Whether this removal from `children` took out (on SQLAlchemy's side) a handled child
        whose loaded many-to-one names an object other than the holder, and for which
        SQLAlchemy's parent tracking records no parent (so its flush clears the child's key,
        where retort's finds the child moved to that object)."""
        if step[2] != "children" or not (isinstance(sa.value, tuple) and sa.value[0] == "h"):
            return False
        owner, child = self.sa.handles[step[1]], self.sa.handles[sa.value[1]]
        back = self.sa.api.inspect(child).dict.get("parent")
        if back is None or back is owner:
            return False
        key = self.sa.api.inspect(owner).identity
        if key is not None and child.__dict__.get("parent_id", _ABSENT) == key[0]:
            # its key names the holder: the many-to-one, read before a flush gave that key,
            # is stale, and both flushes clear it (test_a_child_taken_out_naming_a_stale_
            # loaded_parent_loses_its_key)
            return False
        tracking = type(owner).children.impl  # (SQLAlchemy's parent tracking of the children)
        return not tracking.hasparent(self.sa.api.inspect(child))

    def cascade_marked_a_child_just_given_a_parent(self, target: int) -> bool:
        """Whether SQLAlchemy's session holds marked deleted a handled child other than
        `target` (the object deleted) given since the last flush a parent it does not hold
        marked deleted (Drawer.parents_given): its flush would UPDATE the child (the draw
        deletes no such child itself, see Drawer's "delete")."""
        drawer = Drawer(None, self.sa, self.rt)
        deleted = self.sa.session.deleted
        return any(
            i != target
            and obj in deleted
            and any(p not in deleted for p in drawer.parents_given(i))
            for i, obj in enumerate(self.sa.handles)
        )

    def improvement(self, step: Step, sa: Outcome, rt: Outcome) -> str | None:
        """The SPEC §5 improvement this divergence is, if it is one."""
        if step[0] == "read" and step[2] == "parent_id" and self.fk_synced_by_sa_only(step[1]):
            # (Lockstep.fk_synced_by_sa_only: a key SQLAlchemy's flush wrote into a detached
            # child in memory, read)
            return "a flush writes no key into a detached child that left its parent"
        if sa.ok and rt.ok and self.lost_node_key() is not None:
            # the key retort's autoflush wrote (state_improvement(), below) moved the node
            # into another collection the step then loads or reads
            return NODE_KEY_WRITTEN
        if (
            step[0] == "read"
            and sa.ok
            and rt.ok
            and step[1] in self.sa_expired
            and step[1] not in self.rt_expired
        ):
            # an object SQLAlchemy's SAVEPOINT rollback expired (an attribute event touched it
            # inside, a value set again) and retort's did not (it did not change): SQLAlchemy's
            # reads its row; retort's reads what it held before the SAVEPOINT, a many-to-one
            # towards an object outside the session included, which no flush wrote (a warning
            # in both). check_retort_alone() compares retort's objects with the rows
            # (test_improvement_an_object_unchanged_inside_a_rolled_back_savepoint_keeps_its_parent)
            return "an object unchanged inside a SAVEPOINT stays loaded after its rollback"
        if (
            (sa.ok or sa.value in ("ObjectDeletedError", "InvalidRequestError"))
            and rt.value == "InvalidRequestError"
            and any(self.rt.api.inspect(self.rt.handles[i]).was_deleted for i in _objects(step))
        ):
            # SPEC §4 (every misuse gets a specific error): deleting or changing an object whose
            # DELETE was flushed (or committed) already. SQLAlchemy accepts it and then sends a
            # DELETE matching no row, or forgets the change (or fails later, on a refresh, with
            # ObjectDeletedError)
            # (test_improvement_changing_a_deleted_object_is_an_error)
            return "changing an object already deleted raises"
        # for a PendingRollbackError, the error of the flush that made it
        sa_original = self.sa_original_error(sa.error)
        if (
            type(sa_original).__name__ == "ObjectDeletedError"
            and rt.value == "IntegrityError"
            and "ForeignKeyViolation" in str(rt.error)
        ):
            # a flush relating an expired object whose row is gone (a rollback undid its
            # INSERT): SQLAlchemy's loads it to read its key and raises; retort's knows the key
            # and sends the row, which the database refuses (the documented difference of what
            # a flush loads; test_divergence_a_flush_relating_an_object_whose_row_is_gone).
            # Where the flush is the autoflush of get() loading an expired object, SQLAlchemy's
            # get() takes the ObjectDeletedError for its own object's and goes on to a session
            # rolled back under it: PendingRollbackError
            # (test_divergence_a_get_whose_autoflush_relates_an_object_whose_row_is_gone)
            return "a flush relating an object whose row is gone fails on its foreign key"
        if (
            step[0] == "get"
            and sa.value == "PendingRollbackError"
            and type(sa_original).__name__ == "ObjectDeletedError"
            and rt.value == "ObjectDeletedError"
        ):
            # both autoflushes fail alike, loading an expired object marked deleted whose row
            # is gone (ObjectDeletedError); SQLAlchemy's get() of an expired object takes the
            # error for its own object's and goes on to a session rolled back under it:
            # PendingRollbackError. Retort's get() raises the flush's error
            # (test_divergence_get_raises_its_autoflushs_object_deleted_error)
            return "get() raises its autoflush's ObjectDeletedError"
        gone = (
            self.gone_key_sa_flush_loaded(sa_original)
            if type(sa_original).__name__ == "ObjectDeletedError"
            else None
        )
        if gone is not None and (
            rt.ok
            or (rt.value == "StaleDataError" and f"Rows not matched: id={gone[1]}" in str(rt.error))
        ):
            # a flush changing an expired object whose row is gone (a rollback undid its
            # INSERT), with no row to send for it (a member added to its collection is
            # transient) or a column to UPDATE: SQLAlchemy's flush loads it to read its key and
            # raises; retort's knows the key and sends nothing for it, or the UPDATE, which
            # matches no row (StaleDataError) (the documented difference of what a flush loads,
            # as in the clause above, get()'s PendingRollbackError included). A get() of the
            # object's own key: retort's autoflush succeeds, and its load finds no row (None).
            # Also for a parent the program never handled (a merge() cascade loaded it), held
            # expired, given a removal from its collection
            # (test_divergence_a_flush_sending_nothing_for_an_object_whose_row_is_gone,
            # test_divergence_a_flush_updating_an_object_whose_row_is_gone,
            # test_divergence_a_flush_removing_a_member_of_an_unhandled_parent_whose_row_is_gone)
            return "a flush changing an object whose row is gone does not load it"
        if (
            sa.value == "IntegrityError"
            and rt.value == "StaleDataError"
            and self.updates_a_gone_row_both_hold_changed(rt.error)
        ):
            # likewise, the other way round: SQLAlchemy's flush fails on a row the database
            # refuses (a duplicate key) before it gets to the object, whose UPDATE retort's
            # flush sends first, matching no row (retort orders the UPDATE before the INSERT
            # of an unrelated table; SQLAlchemy would load the object there and raise)
            # (test_divergence_a_flush_updating_an_object_whose_row_is_gone_before_a_row_
            # refused)
            return (
                "a flush changing an object whose row is gone does not load it (its UPDATE "
                "before a row refused)"
            )
        if gone is not None and rt.value == "IntegrityError":
            # likewise, where retort's flush, which does not load the object, fails on another
            # row the database refuses (a duplicate key) before it gets to the object, a
            # statement SQLAlchemy's flush never got to send
            # (test_divergence_a_flush_refused_before_it_gets_to_an_object_whose_row_is_gone)
            return (
                "a flush changing an object whose row is gone does not load it (then a row refused)"
            )
        if (
            sa.value == "StaleDataError"
            and str(sa.error).startswith("UPDATE statement on table")
            and rt.value == "IntegrityError"
            and self.attached_again_after_another_instance_deleted_it()
        ):
            # an object whose row a flush deleted through another instance of it (merge()'s
            # copy), attached again by a save-update cascade: both flushes fail on the row
            # that is gone, SQLAlchemy's at an UPDATE of the object that matches no row,
            # retort's earlier, at the INSERT of a new object naming it, or at another row the
            # database refuses before (a duplicate key)
            # (test_divergence_a_flush_naming_a_row_another_instance_deleted)
            if self.names_a_row_a_flush_deleted(rt.error):
                return "a flush naming a row a DELETE of another instance removed fails in both"
            return (
                "a flush naming a row a DELETE of another instance removed fails in both (then "
                "a row refused)"
            )
        if (
            sa.value == "StaleDataError"
            and str(sa.error).startswith("UPDATE statement on table")
            and rt.ok
            and self.attached_again_after_another_instance_deleted_it()
            and self.rt_replaced_a_gone_object()
        ):
            # likewise, where a new object holds the key too (merge() of the detached object
            # after the DELETE): SQLAlchemy's flush sends the UPDATE first (after warning that
            # the two conflict, where it flushes them together), which matches no row; retort's
            # checks the row of an object whose key a new object has, finds it gone, marks the
            # object deleted and inserts the new one in its place, as both do for an expired
            # object (Session._settle_key_holders)
            # (test_divergence_a_flush_updating_a_row_another_instance_deleted_a_new_one_took)
            return "a new object takes the place of an object a DELETE of another instance removed"
        if sa.value == "CircularDependencyError" and rt.value == "IntegrityError":
            # retort broke the cycle, ran the flush and met the database's refusal of another
            # of its rows (a duplicate key) that SQLAlchemy never got to send
            return "cycle through a nullable foreign key (then a row the database refused)"
        if (
            sa.value == "InvalidRequestError"
            and rt.ok
            and self.sa_cascade_attaches_a_removal_retort_forgot(sa.error)
        ):
            # as Lockstep.state_improvement's member taken out before a rollback made its
            # owner new (or transient, where it was pending): SQLAlchemy's save-update cascade
            # follows the removal still in the collection's history, and fails to attach the
            # member, detached, where the session holds another instance of its row; retort's
            # rollback forgot the removal
            # (test_divergence_a_detached_member_taken_out_before_a_rollback_is_not_cascaded)
            return "a member taken out before a rollback made its owner new is not cascaded"
        if (
            sa.value == "CircularDependencyError"
            and rt.value == "StaleDataError"
            and str(rt.error).startswith(("DELETE statement on table", "UPDATE statement on"))
        ):
            # retort broke the cycle, ran the flush, and its DELETE of a row gone already
            # (another instance of the row, detached, deleted again after a flush deleted the
            # row) matched no row: StaleDataError (the improvement below), for a DELETE
            # SQLAlchemy never got to send
            # (test_improvement_a_cycle_broken_then_a_delete_matching_no_row). Likewise an
            # UPDATE of a row a rollback removed (its INSERT undone), which SQLAlchemy's flush
            # would send as well (test_improvement_a_cycle_broken_then_an_update_matching_no_row)
            what = "a DELETE" if str(rt.error).startswith("DELETE") else "an UPDATE"
            return f"cycle through a nullable foreign key (then {what} matching no row)"
        if (
            sa.ok
            and rt.value == "ObjectDeletedError"
            and step[0] in ("read", "remove")
            and self.sa.api.inspect(self.sa.handles[step[1]]).deleted
            and self.rt.api.inspect(self.rt.handles[step[1]]).deleted
        ):
            # an expired object whose row is gone, marked deleted by the autoflush of its own
            # load, in which a new object took its key: SQLAlchemy then loads the new object's
            # row into it (values of another object), retort raises, as for any expired object
            # it deleted
            # (test_improvement_an_object_found_gone_by_the_autoflush_of_its_load_raises)
            return "an expired object found gone by its load's autoflush raises"
        if (
            sa.value == "PendingRollbackError"
            and rt.ok
            # (or the autoflush of merge() onto an object of the session, which needs no SQL:
            # the object itself, or one the session held loaded, given the copy's values)
            and (
                step[0] == "flush"
                or (
                    step[0] in ("merge", "merge_new")
                    and id(self.rt.handles[rt.value]) in self.rt_held_before
                )
            )
            and (
                self.rt_clean_before
                if step[0] != "flush"
                else not (self.rt.session.new or self.rt.session.dirty or self.rt.session.deleted)
            )
            and not (self.sa.session.new or self.sa.session.deleted)
            and not any(
                self.sa.session.is_modified(o)
                and not self.sa_sets_what_the_key_names(o)
                and not self.sa_sets_a_column_retort_knows(o)
                for o in self.sa.session.dirty
            )
        ):
            # after a failed flush: SQLAlchemy counts an attribute set to the value it has (by
            # merge(), say, or a many-to-one not loaded set to what its foreign key names, or
            # a column not loaded set to the NULL an INSERT left, which retort knows) as a
            # change, so the session is not clean and its flush refuses to begin; retort's has
            # nothing to flush, as after any failed flush, and succeeds
            # (test_improvement_a_value_set_again_leaves_nothing_to_flush_after_a_failed_flush,
            # test_improvement_a_many_to_one_set_to_what_its_key_names_after_a_failed_flush,
            # test_improvement_merge_of_an_object_of_the_session_after_a_failed_flush,
            # test_improvement_a_column_an_insert_left_null_set_to_null_after_a_failed_flush)
            return "a value set again leaves nothing to flush after a failed flush"
        if (
            sa.value == "StaleDataError"
            and "DELETE statement on table 'parent_tags'" in str(sa.error)
            and (rt.ok or rt.value == "IntegrityError")
        ):
            # a member listed twice in a loaded collection (appended again), whose object is
            # then deleted: SQLAlchemy's flush deletes its association row once per entry and
            # fails on the second (no row matched); retort deletes it once, as it inserts it
            # once, and goes on (perhaps to a row the database refuses, which SQLAlchemy never
            # got to send) (test_improvement_a_member_listed_twice_is_one_association_row_to_
            # delete)
            return "a member listed twice is one association row to delete"
        if (
            sa.value == "StaleDataError"
            and "DELETE statement on table 'parent_tags'" in str(sa.error)
            and rt.value == "InvalidRequestError"
            and self.rt_wrote
            and any(self.rt.api.inspect(self.rt.handles[i]).was_deleted for i in _objects(step))
        ):
            # likewise, where the step goes on after retort's autoflush to change an object that
            # flush deleted: InvalidRequestError (SPEC §4), which SQLAlchemy's failed autoflush
            # never got to (test_improvement_a_member_listed_twice_then_a_change_of_a_deleted_
            # object)
            return (
                "a member listed twice is one association row to delete (then a deleted "
                "object's change)"
            )
        if (
            sa.value == "CircularDependencyError"
            and rt.value == "ObjectDeletedError"
            and self.rt_wrote
            and "was deleted in this transaction" in str(rt.error)
        ):
            # a cycle through the nullable nodes.parent_id, broken by retort's autoflush, which
            # also deleted the object the step then loads: ObjectDeletedError, which
            # SQLAlchemy's failed autoflush never got to
            # (test_improvement_a_cycle_broken_then_a_load_of_a_deleted_object)
            return "cycle through a nullable foreign key (then a deleted object's load)"
        if (
            sa.value == "CircularDependencyError"
            and rt.value == "ObjectDeletedError"
            and self.rt_wrote
            and "no longer exists in the database" in str(rt.error)
        ):
            # likewise, where the step then loads an expired object whose row is gone (a detached
            # copy of a row deleted by a commit, attached again): ObjectDeletedError, as
            # SQLAlchemy's load raises once its autoflush succeeds
            # (test_improvement_a_cycle_broken_then_a_load_of_an_object_whose_row_is_gone)
            return "cycle through a nullable foreign key (then a load of a gone row)"
        if (
            sa.value == "CircularDependencyError"
            and rt.value == "InvalidRequestError"
            and self.rt_wrote
            and any(self.rt.api.inspect(self.rt.handles[i]).was_deleted for i in _objects(step))
        ):
            # likewise, where the step goes on to change an object that flush deleted:
            # InvalidRequestError (SPEC §4, as the first clause above)
            # (test_improvement_a_cycle_broken_then_a_change_of_a_deleted_object)
            return "cycle through a nullable foreign key (then a deleted object's change)"
        if (
            sa.value == "CircularDependencyError"
            and rt.value == "InvalidRequestError"
            and self.rt_wrote
            and "another instance with identity" in str(rt.error)
        ):
            # likewise, where the step goes on after retort's autoflush to attach a detached
            # object (through a cascade) whose row the session holds in another instance, loaded
            # by that autoflush's load: the identity conflict SQLAlchemy raises as well, had its
            # autoflush succeeded (test_improvement_a_cycle_broken_then_an_identity_conflict)
            return "cycle through a nullable foreign key (then an identity conflict)"
        if (
            sa.value == "IntegrityError"
            and _constraint(sa.error) == "parent_tags_pkey"
            and rt.value == "ObjectDeletedError"
            and self.rt_wrote
        ):
            # a member given twice is one association row (below), where the step goes on after
            # retort's autoflush to load an object that flush deleted (a tag taking part in a
            # row switch, its key linked by both objects): ObjectDeletedError, which SQLAlchemy's
            # failed autoflush never got to
            # (test_improvement_a_member_given_twice_then_a_load_of_a_deleted_object)
            return "a member given twice is one association row (then a deleted object's load)"
            return "a member given twice is one association row (then a deleted object's load)"
        if (
            sa.value == "IntegrityError"
            and _constraint(sa.error) == "parent_tags_pkey"
            and step[0] == "refresh"
            and rt.value == "InvalidRequestError"
            and str(rt.error).startswith("could not refresh")
            and self.rt_wrote
        ):
            # likewise, where the step goes on after retort's autoflush to refresh an object
            # that flush deleted (marked deleted before): its row is gone, which SQLAlchemy's
            # failed autoflush never got to (test_improvement_a_member_given_twice_then_a_
            # refresh_of_a_deleted_object)
            return "a member given twice is one association row (then a deleted object's refresh)"
        if (
            sa.value == "IntegrityError"
            and (_constraint(sa.error) or "").startswith("parent_tags_")
            and self.rt_deleting_linked
            and self.rt_wrote
        ):
            # a deleted object's association rows go and none is written to it (below), where
            # the step goes on after retort's autoflush to load the object that flush deleted
            # (ObjectDeletedError) or to relate it (InvalidRequestError, SPEC §4), which
            # SQLAlchemy's failed autoflush never got to
            # (test_improvement_no_association_row_to_a_deleted_tag_then_a_load_of_it,
            # test_improvement_no_association_row_to_a_deleted_tag_then_a_change_of_it)
            if rt.value == "ObjectDeletedError" and "was deleted in this transaction" in str(
                rt.error
            ):
                return (
                    "a deleted object's association rows go, and none is written to it (then a "
                    "deleted object's load)"
                )
            if rt.value == "InvalidRequestError" and any(
                self.rt.api.inspect(self.rt.handles[i]).was_deleted for i in _objects(step)
            ):
                return (
                    "a deleted object's association rows go, and none is written to it (then a "
                    "deleted object's change)"
                )
        if (
            sa.value == "IntegrityError"
            and _constraint(sa.error) == "parent_tags_pkey"
            and rt.value == "InvalidRequestError"
            and "another instance with identity" in str(rt.error)
            and _collection_or_attribute_read(step) is not None
        ):
            # likewise, where the step goes on after retort's autoflush to load the collection
            # it appends to, then to attach a detached member (through the save-update cascade)
            # whose row that load brought into the session in another instance: the identity
            # conflict SQLAlchemy raises as well, had its autoflush succeeded
            # (test_improvement_a_member_given_twice_then_an_identity_conflict)
            return "a member given twice is one association row (then an identity conflict)"
        if (
            sa.ok
            and rt.value == "PendingRollbackError"
            and (
                (step[0] in ("get", "read") and self.loaded_by_sqlalchemy_only(step))
                or self.held_by_sqlalchemy_only
            )
        ):
            # a session refusing SQL (a flush failed inside a SAVEPOINT, not rolled back yet,
            # with nothing left to flush): SQLAlchemy's flush loaded the object (to read its
            # key) and answers without SQL, retort's left it expired and its load is refused
            # (the documented difference of what each holds expired, which a flush before the
            # step cannot settle here)
            # (test_divergence_a_get_after_a_failed_flush_of_an_object_only_sqlalchemy_loaded,
            # test_divergence_a_merge_after_a_failed_flush_of_a_key_only_sqlalchemy_loaded)
            return "an object only SQLAlchemy's flush loaded is not loadable after it failed"
        if (
            sa.value == "PendingRollbackError"
            and rt.ok
            and not self.rt_wrote
            and step[0] == "delete"
            and any(
                self.sa.api.inspect(self.sa.handles[i]).expired and i not in self.rt_expired
                for i in _objects(step)
            )
        ):
            # the other way round: the object is expired in SQLAlchemy only (its SAVEPOINT's
            # rollback after a failed flush expired it for a value set again inside), so that
            # its delete cascade needs a load, which the session refuses until rollback();
            # retort's holds it loaded and marks it without SQL
            # (test_divergence_a_delete_after_a_failed_flush_of_an_object_only_sqlalchemy_expired)
            return "an object only SQLAlchemy expired is not loadable after a failed flush"
        if (
            sa.ok
            and rt.value == "StaleDataError"
            and str(rt.error).startswith("DELETE statement on table")
            and any(w.startswith("SAWarning: DELETE statement on table") for w in self.sa_warnings)
        ):
            # a DELETE matching no row (another instance of the row, detached, deleted again
            # after a flush deleted the row): retort's flush checks the row count of a DELETE
            # as of an UPDATE and raises (test_delete_of_a_row_deleted_by_someone_else_is_
            # stale_data in test_errors.py), SQLAlchemy's only warns
            # (test_improvement_a_delete_matching_no_row_raises_stale_data)
            return "a DELETE matching no row raises StaleDataError"
        if (
            sa.ok
            and rt.value == "IntegrityError"
            and "UniqueViolation" in str(rt.error)
            and any("Identity map already had an identity" in w for w in self.sa_warnings)
        ):
            # two new objects of one key, and the object of that key marked deleted: SQLAlchemy's
            # flush takes both for the deleted object's row and UPDATEs it twice, warns that
            # its identity map already had the key, and leaves two persistent objects of one
            # row (a SQLAlchemy bug); retort's switches the row to one of them and INSERTs the
            # other, which the database refuses, as it refuses two new objects of one key
            # (test_sqlalchemy_bug_two_new_objects_take_the_row_of_one_deleted_object)
            return "two new objects of one key and its deleted object: the duplicate is refused"
        if (
            (sa.ok or sa.value in FLUSH_ERRORS)
            and rt.value == "InvalidRequestError"
            and "was expired before a rollback undid its INSERT" in str(rt.error)
            and not self.rt_wrote
        ):
            # SPEC §4 (a misuse gets a specific error before anything changes): a flush of an
            # object whose columns were expired before a rollback undid its INSERT (a cascade
            # brought it back), whose values are unknown. Both refuse it, retort while planning
            # the flush, before any statement; SQLAlchemy when it gets to its table, after
            # statements of other tables, one of which failed first
            # (test_improvement_a_flush_refuses_values_unknown_since_a_rollback_before_any_
            # statement). Expired by name (expire(obj, [name])), SQLAlchemy's inserts the
            # column as never set, NULL (test_relationships.py: test_improvement_a_flush_
            # refuses_a_column_expired_before_a_rollback_undid_the_insert)
            return "a flush refuses an object with values unknown since a rollback before any SQL"
        if (
            step[0] == "read"
            and (sa.ok or sa.value in FLUSH_ERRORS)
            and rt.value == "InvalidRequestError"
            and "was expired before a rollback undid the object's INSERT" in str(rt.error)
            and not self.rt_wrote
        ):
            # likewise for a read of such a column of a pending object: retort refuses it
            # before anything (SPEC §4); SQLAlchemy's load autoflushes first, and fails there
            # (or reads whatever a row of that key holds)
            # (test_a_read_of_a_column_expired_before_a_failed_flush_undid_the_insert_needs_
            # rollback)
            return "a read of a value unknown since a rollback is refused before the autoflush"
        kept = (
            re.search(
                r"another instance with identity \S*?(\w+) \((\d+)\) is already present",
                str(rt.error),
            )
            if sa.ok and rt.value == "InvalidRequestError"
            else None
        )
        if kept is not None and self.held_by_retort_expired_unhandled(kept[1], int(kept[2])):
            # a detached copy of a row attached (by a cascade, or delete()) where retort's
            # session holds another instance of the row and SQLAlchemy's none: one the program
            # has no handle to, loaded into a collection of an object expired since. Retort's
            # expiry is lazy (SPEC: commit is O(1)), so the expired collection still refers to
            # the instance until its object is next used, and the weak identity map keeps it;
            # SQLAlchemy's expiry drops the collection, and the instance goes
            # (test_divergence_a_detached_copy_of_a_row_only_retorts_expired_collection_kept)
            return "a row only retort's expired collection keeps refuses a detached copy"
        if (
            sa.value == "IntegrityError"
            and _constraint(sa.error) == UNIQUE_CODE
            and self.rt_wrote
            and (
                (
                    rt.value == "InvalidRequestError"
                    and "was deleted by a flush in this transaction" in str(rt.error)
                )
                or (
                    rt.value == "ObjectDeletedError"
                    and "deleted in this transaction" in str(rt.error)
                )
            )
        ):
            # a unique value changing hands in one flush (below), where the step goes on to
            # change an object whose DELETE retort's autoflush ran (deletes first, freeing the
            # value), or to relate one, or to load one (expired before its delete()):
            # SQLAlchemy's autoflush fails on the value; retort refuses the change to the
            # deleted object (SPEC §4), or its load
            # (test_improvement_a_unique_value_changing_hands_then_a_change_to_the_deleted_object)
            return (
                "unique value changing hands in one flush (then a deleted object's change refused)"
            )
        if not rt.ok or sa.ok:
            return None
        if (
            sa.value == "IntegrityError"
            and _constraint(sa.error) == "nodes_parent_id_fkey"
            and self.rt_wrote
            and self.sa_updated_a_key_of_a_pending_node(sa.error)
        ):
            # SPEC §5 (ordering): a node's parent_id set by hand to the key of a new node:
            # retort's plan inserts the rows of a table that updated rows of it refer to first
            # (or, for a new node, breaks the cycle the key makes with the new node's own
            # parent); SQLAlchemy's orders by relationships only, sends the UPDATE (or the
            # INSERT) first, and fails on the foreign key
            # (test_improvement_a_new_node_a_key_set_by_hand_names_is_inserted_first,
            # test_improvement_a_new_node_names_by_hand_a_new_node_whose_parent_it_is)
            return "rows a key set by hand names are inserted first"
        if (
            sa.value == "IntegrityError"
            and (_constraint(sa.error) or "").startswith("parent_tags_")
            and self.rt_deleting_linked
        ):
            # SPEC §5: the flush of a parent's or tag's DELETE deletes the association rows of
            # every member it lists, and writes none linking to it. SQLAlchemy's deletes those
            # of the members listed at the last flush only (one listed since, whose row a
            # rollback restored while the object was outside the session, keeps it, and the
            # DELETE fails on the foreign key), and inserts the row of a member linked to it
            # since from the other side (failing on the foreign key, or on the primary key
            # where the row exists)
            # (test_improvement_a_deleted_objects_association_rows_go_and_none_is_written_to_it)
            return "a deleted object's association rows go, and none is written to it"
        taken = re.search(
            r"Can't attach instance .* another instance with key \(<class '[^']*\.(\w+)'>, "
            r"\((\d+),\)",
            str(sa.error),
        )
        if (
            step[0] == "delete"
            and sa.value == "InvalidRequestError"
            and taken is not None
            and any(
                self.rt.api.inspect(o).was_deleted and self.rt.key(o) == (taken[1], int(taken[2]))
                for o in self.rt.handles
            )
        ):
            # the delete cascade reached an object whose DELETE was flushed (it stays in the
            # loaded collection), whose key a new object took in that flush (a row switch):
            # SQLAlchemy's cascade puts it back in the identity map, which refuses it, where
            # retort passes over it (as state_improvement(), the key free)
            # (test_improvement_a_delete_cascade_passes_over_an_object_deleted_by_a_row_switch)
            return "a delete cascade passes over an object already deleted (its key taken)"
        if (
            sa.value == "InvalidRequestError"
            and taken is not None
            and self.held_by_sqlalchemy_unhandled(taken[1], int(taken[2]))
        ):
            # a detached copy of a row attached (by delete(), or a cascade) where SQLAlchemy's
            # session holds another instance of the row and retort's none: one the program has
            # no handle to, which retort's identity map held weakly (as SQLAlchemy's) until
            # nothing referred to it. SQLAlchemy's keeps what its flush loaded (a deleted
            # parent's tags) through the parent's expired collection after the flush failed;
            # retort's parent forgets the collection, and the tags go
            # (test_divergence_a_detached_copy_of_a_row_only_sqlalchemys_failed_flush_kept)
            return "a row only SQLAlchemy's failed flush kept refuses a detached copy"
        if sa.value == "DetachedInstanceError" and any(
            self.sa.api.inspect(self.sa.handles[i]).transient for i in _objects(step)
        ):
            # an object changed inside a SAVEPOINT, then made transient by the rollback of its
            # INSERT: SQLAlchemy leaves it expired (by the SAVEPOINT's rollback), so reading it
            # fails; retort's keeps its values, as a transient object should
            # (test_improvement_an_object_made_transient_by_a_rollback_stays_readable)
            return "an object made transient by a rollback stays readable"
        if (
            sa.value == "DetachedInstanceError"
            and step[0] == "read"
            and step[2] == "parent"
            and self.rt.api.inspect(self.rt.handles[step[1]]).was_deleted
        ):
            # the flush of its DELETE read the many-to-one from the identity map: SQLAlchemy's
            # for the first deleted object of each relationship only (whichever its set
            # yields first), retort's for every one
            # (test_improvement_every_deleted_objects_many_to_one_stays_readable)
            return "the many-to-one of every deleted object stays readable"
        if (
            sa.value == "PendingRollbackError"
            and self.rt.session.in_nested_transaction()
            and (
                (
                    step[0] == "read"
                    and step[2] in self.sa.api.inspect(self.sa.handles[step[1]]).unloaded
                )
                or (
                    # an append to a collection SQLAlchemy's object must load first
                    step[0] != "read"
                    and rt.ok
                    and (read := _collection_or_attribute_read(step)) is not None
                    and read[1] in _unloaded(self.sa, self.sa.handles[read[0]])
                    and read[1] not in _unloaded(self.rt, self.rt.handles[read[0]])
                )
                or (
                    # get() answered from the identity map, where SQLAlchemy's object of the
                    # key is expired
                    step[0] == "get"
                    and rt.ok
                    and any(
                        self.sa.key(o) == step[1:] and self.sa.api.inspect(o).expired
                        for o in self.sa.handles
                    )
                )
            )
        ):
            # after a flush failed inside a SAVEPOINT, which rolled it back: SQLAlchemy expired
            # every object an attribute event touched inside it, a value set again unchanged
            # (or a backref setting a child's parent to the one it has) included; retort
            # expires the objects that changed, so reading one of the others needs no SQL.
            # check_retort_alone() rolls the SAVEPOINT back and compares what retort's
            # objects hold with the rows
            # (test_improvement_an_object_unchanged_inside_a_savepoint_stays_loaded,
            # test_improvement_get_of_an_object_unchanged_inside_a_failed_savepoint,
            # test_improvement_append_to_an_object_unchanged_inside_a_failed_savepoint)
            return "an object unchanged inside a SAVEPOINT stays loaded after its rollback"
        if (
            sa.value == "ObjectDeletedError"
            and step[0] in ("merge", "merge_new")
            and self.rt.lifecycle(self.rt.handles[rt.value]) == "pending"
        ):
            # the identity map holds the key's object expired, and its row is gone (a rollback
            # undid the INSERT): SQLAlchemy's merge() copies onto that object, whose load
            # raises; retort's looks the key up as get() does (the stale object leaves the
            # identity map) and, finding no row, adds a new object, as merge() does for a key
            # without a row (test_improvement_merge_of_a_key_whose_row_is_gone_adds_a_new_object)
            return "merge() of a key whose row is gone adds a new object"
        if sa.value == "IntegrityError":
            diag = getattr(getattr(sa.error, "orig", None), "diag", None)
            if diag is not None and diag.constraint_name == "parent_tags_pkey":
                # SQLAlchemy inserts an association row twice: for a new member given twice
                # (test_improvement_a_new_member_given_twice_is_one_association_row), or for a
                # member appended again while the other side was not loaded
                # (test_appending_a_member_again_changes_no_association_row)
                return "a member given twice is one association row"
        if (
            sa.value == "CircularDependencyError"
            and not self.rt_wrote
            and (
                self.rt_clean_before
                or _one_row_cycle(sa.error)
                or any("so the flush writes nothing for" in w for w in self.rt_warnings)
                or (rt.ok and self.cycle_unchanged_in_retort(sa.error))
            )
        ):
            # a node made its own parent whose parent_id holds its key already (set by hand
            # and flushed): SQLAlchemy's flush (or autoflush, of a step that goes on to change
            # the session) sees a cycle of one row, retort's has nothing to write
            # (check_retort_alone() compares its rows with its objects)
            # (test_improvement_a_cycle_whose_rows_hold_the_keys_already_writes_nothing).
            # Likewise for a node taken out of its own loaded children (its parent_id, set by
            # hand to its own key and flushed, against a many-to-one naming another node):
            # SQLAlchemy sees a cycle of that one row; retort's flush writes nothing, as
            # SQLAlchemy's does for a node taken out of another's children that way
            # (test_improvement_a_node_taken_out_of_its_own_children_writes_nothing). And for a
            # cycle of two nodes whose only change is one's new parent outside the session
            # (expunged), for which both write nothing (with a warning), where SQLAlchemy
            # orders the nodes first (test_improvement_a_cycle_through_a_parent_outside_the_
            # session_writes_nothing). And for a cycle whose nodes retort's session holds
            # unchanged: a node given back the parent it had (None, then that parent again) is
            # no change to retort (the "value set again" improvement), a change making a cycle
            # to SQLAlchemy (test_improvement_a_cycle_of_a_parent_given_back_writes_nothing)
            return "cycle through a nullable foreign key (nothing to write)"
        if not self.rt_wrote:
            return None  # retort did not flush what SQLAlchemy failed to flush
        if sa.value == "CircularDependencyError":
            # a cycle of nodes through the nullable nodes.parent_id, broken by retort
            return "cycle through a nullable foreign key"
        if sa.value == "IntegrityError":
            diag = getattr(getattr(sa.error, "orig", None), "diag", None)
            if diag is not None and diag.constraint_name == UNIQUE_CODE:
                return "unique value changing hands in one flush"

        return None

    def cycle_unchanged_in_retort(self, err: BaseException | None) -> bool:
        """Whether every object SQLAlchemy's CircularDependencyError `err` names is a handled
        node whose many-to-one and foreign key retort's twin holds unchanged."""
        ids = {int(a, 16) for a in re.findall(r"<Node at (0x[0-9a-f]+)>", str(err))}
        if not ids or not ids <= self.sa.index.keys():
            return False
        for i in (self.sa.index[a] for a in ids):
            attrs = self.rt.api.inspect(self.rt.handles[i]).attrs
            if attrs.parent.history.has_changes() or attrs.parent_id.history.has_changes():
                return False
        return True

    def loads_in_one_library_only(self, step: Step) -> bool:
        """Whether this "read" or "get" step loads (and so autoflushes) in one library where
        the other holds what it needs without SQL, with changes waiting for a flush.

        What each holds expired may differ. SQLAlchemy expires more: a SAVEPOINT's rollback
        expires every object an attribute event touched inside it, a value set again unchanged
        (or a backref setting a child's parent to the one it has) included, where retort
        expires the objects that changed; it leaves unloaded a column a flush's INSERT left out
        (retort knows it is NULL). retort expires more where SQLAlchemy's flush loads an
        expired object to read its key (for a child's foreign key, or an UPDATE), which
        retort's flush does not need to; reading a many-to-one then loads its expired target
        in retort only."""
        if not any(
            side.session.new or side.session.dirty or side.session.deleted
            for side in (self.sa, self.rt)
        ):
            return False
        sa, rt = self.sa, self.rt

        def expired_in_one(cls: str, pk: Any) -> bool:
            # the persistent object of this key is expired as a whole in one library only
            for i, obj in enumerate(sa.handles):
                insp = sa.api.inspect(obj)
                if sa.key(obj) == (cls, pk) and insp.persistent:
                    return bool(insp.expired) != bool(rt.api.inspect(rt.handles[i]).expired)
            return False

        if step[0] in ("get", "merge_new"):
            # (or held by one only: SQLAlchemy's flush of a DELETE may load the object's
            # many-to-one target, or a collection's members, where retort's reads it from the
            # identity map or not at all; merge() of a new copy looks its key up as get() does)
            key = step[1:3]
            return expired_in_one(*key) or sa.held_loaded(*key) != rt.held_loaded(*key)
        read = _collection_or_attribute_read(step)
        if read is None:
            return False
        target, attr = read
        sa_obj, rt_obj = sa.handles[target], rt.handles[target]
        if not sa.api.inspect(sa_obj).persistent:
            return False  # (a new object's unloaded attribute is read without SQL)
        needed = [attr]
        if attr == "parent" and sa.cls_of(sa_obj) in ("Child", "Node"):
            needed.append("parent_id")  # a many-to-one's key, for its identity-map lookup
        sa_unloaded, rt_unloaded = _unloaded(sa, sa_obj), _unloaded(rt, rt_obj)
        if any((a in sa_unloaded) != (a in rt_unloaded) for a in needed):
            return True
        if needed[1:] and attr in sa_unloaded and "parent_id" not in sa_unloaded:
            # the many-to-one finds its target in the identity map, and loads it if expired
            # (SQLAlchemy's flush may have loaded it to read its key, retort's did not)
            cls = sa.cls_of(sa_obj)
            key = sa.api.inspect(sa_obj).dict["parent_id"]
            if key is None:
                return False  # (None, without SQL)
            target = "Parent" if cls == "Child" else "Node"
            # (or held loaded by one only: SQLAlchemy's flush of a DELETE reads the deleted
            # object's many-to-one by its committed key, and loads it; retort's reads it from
            # the identity map or not at all)
            # (test_harness_flushes_before_a_many_to_one_read_whose_target_one_library_holds)
            return expired_in_one(target, key) or sa.held_loaded(target, key) != rt.held_loaded(
                target, key
            )
        if attr in RELATIONSHIPS[sa.cls_of(sa_obj)] and attr != "parent":
            # a collection: both load an object expired as a whole first (SQLAlchemy to read
            # its expired key), and SQLAlchemy's flush may have loaded an object retort's left
            # expired (to read its key for an association row). (Every column missing in one
            # library only covers both, and some objects expired by name, for which both
            # flushes first: harmless.)
            cols = COLUMNS[sa.cls_of(sa_obj)][1:]
            return all(c in sa_unloaded for c in cols) != all(c in rt_unloaded for c in cols)
        return False

    def stale_collection_read(self, step: Step) -> bool:
        """Whether the step reads (or appends to) a collection loaded in one library only
        (what each holds expired differs: loads_in_one_library_only) that lists a member no
        longer persistent there: deleted by a flush (perhaps the one the harness sent before
        this step), expunged, or pending. The other library's load lists the rows instead, a
        new instance for an expunged member's row, none for a deleted one; and a loaded
        collection keeps such members in both libraries until it is expired. Where the step's
        outcome or the collection then differs, the program stops there
        (test_harness_stops_where_a_collection_loaded_in_one_library_only_lost_a_member,
        test_harness_stops_where_a_collection_loaded_in_one_library_only_lists_an_expunged_
        member)."""
        read = _collection_or_attribute_read(step)
        return read is not None and self.stale_collection(*read)

    def stale_collection_of_a_deleted_object(self) -> bool:
        """Whether an object marked deleted has a collection that is stale_collection(): the
        flush of its DELETE reads it (to delete association rows, or to cascade): one library
        loads the rows, the other lists the members it holds. Where a step's outcome then
        differs, the program stops there
        (test_harness_stops_where_the_delete_of_an_object_reads_a_stale_collection)."""
        return any(
            self.stale_collection(i, attr)
            for i, obj in enumerate(self.sa.handles)
            if obj in self.sa.session.deleted
            for attr in RELATIONSHIPS[self.sa.cls_of(obj)]
            if attr != "parent"
        )

    def stale_collection(self, target: int, attr: str) -> bool:
        """Whether this collection is loaded in one library only and lists there a member no
        longer persistent (see stale_collection_read)."""
        if attr not in RELATIONSHIPS[self.sa.cls_of(self.sa.handles[target])] or attr == "parent":
            return False
        for holder, other in ((self.sa, self.rt), (self.rt, self.sa)):
            obj = holder.handles[target]
            if attr in _unloaded(holder, obj) or attr not in _unloaded(
                other, other.handles[target]
            ):
                continue
            members = holder.api.inspect(obj).dict.get(attr) or []
            return any(holder.lifecycle(m) != "persistent" for m in members)
        return False

    def collection_differs(self, step: Step) -> bool:
        """Whether the libraries' loaded values of the collection `step` reads differ."""
        read = _collection_or_attribute_read(step)
        assert read is not None
        target, attr = read
        return bool(
            self.sa.loaded(self.sa.handles[target]).get(attr)
            != self.rt.loaded(self.rt.handles[target]).get(attr)
        )

    def gone_get(self, step: Step, sa: Outcome, rt: Outcome) -> str | None:
        """get() of a key whose identity-map object is expired with its row gone, where the
        autoflush of its load flushes a new object with the key (marking the old one deleted):
        SQLAlchemy returns the old object, loaded with the new row; retort the new object."""
        if step[0] != "get" or not (sa.ok and rt.ok) or sa.value is None or rt.value is None:
            return None
        sa_obj, rt_obj = self.sa.handles[sa.value], self.rt.handles[rt.value]
        if (
            self.sa.api.inspect(sa_obj).deleted
            and self.rt.lifecycle(rt_obj) == "persistent"
            and self.rt.key(rt_obj) == self.sa.key(sa_obj)
        ):
            # (test_divergence_get_of_a_key_whose_row_is_gone_returns_the_new_object)
            return "get() of a gone key returns the new object its autoflush inserted"
        return None

    def gone_loaded_by_sa_flush_then_by_the_step(self) -> bool:
        """Whether both raised ObjectDeletedError for one object: SQLAlchemy's inside its
        flush (gone_object_sa_flush_loaded), retort's after its flush wrote, outside it."""
        if self.outcomes is None or not self.rt_wrote:
            return False
        sa, rt = self.outcomes
        if sa.value != "ObjectDeletedError" or rt.value != "ObjectDeletedError":
            return False
        gone = self.gone_object_sa_flush_loaded(sa.error)
        return gone is not None and f"the row of {gone!r} no longer exists" in str(rt.error)

    def holds_a_row_the_savepoint_removed(self) -> bool:
        """Whether retort's identity map holds an object expired by the step (not before),
        whose key SQLAlchemy's holds loaded and whose row the transaction no longer has."""
        rt = self.rt
        keys = [
            key
            for o in rt.session._core.identity_objects()
            if rt.api.inspect(o).persistent
            and rt.api.inspect(o).expired
            and (key := rt.key(o)) not in self.rt_expired_keys
            and self.sa.held_loaded(*key)
        ]
        if not keys:
            return False
        rows = rt.transaction_rows()
        return any(
            all(r[0] != pk for r in rows[rt.models.by_name(cls).__table__.name]) for cls, pk in keys
        )

    def cascades_a_member_taken_out_before_a_rollback(self) -> bool:
        """Whether an object pending in SQLAlchemy's session and transient in retort's (or
        persistent in SQLAlchemy's and detached in retort's) is in the history of removals of
        a relationship of a pending object of SQLAlchemy's."""
        sa, rt = self.sa, self.rt
        for a, b in zip(sa.handles, rt.handles, strict=True):
            # (pending, or persistent where the member is detached)
            if (sa.lifecycle(a), rt.lifecycle(b)) not in (
                ("pending", "transient"),
                ("persistent", "detached"),
            ):
                continue
            for o in sa.handles:
                if sa.lifecycle(o) != "pending":
                    continue
                insp = sa.api.inspect(o)
                if any(
                    any(x is a for x in insp.attrs[key].history.deleted)
                    for key in insp.mapper.relationships.keys()
                ):
                    return True
        return False

    def sa_cascade_attaches_a_removal_retort_forgot(self, err: BaseException | None) -> bool:
        """Whether SQLAlchemy's `err` is its save-update cascade failing to attach an object
        (the member itself, or one the cascade reached through it), where the history of
        removals of a relationship of a pending object of its session lists a handled member
        that retort's session does not hold, and retort's object lists no removal there (its
        rollback forgot it)."""
        if "Can't attach instance" not in str(err):
            return False
        sa, rt = self.sa, self.rt
        for a, b in zip(sa.handles, rt.handles, strict=True):
            if sa.lifecycle(a) != "pending":
                continue
            insp = sa.api.inspect(a)
            for key in insp.mapper.relationships.keys():
                if getattr(b.__dict__.get(key), "_removed", None):
                    continue
                for x in insp.attrs[key].history.deleted:
                    handle = sa.index.get(id(x))
                    if handle is not None and rt.handles[handle] not in rt.session:
                        return True
        return False

    def note_collections_loaded_by_retort_only(self) -> None:
        """Add to `loaded_by_retort_only` each collection retort's object holds loaded now
        where SQLAlchemy's does not."""
        sa, rt = self.sa, self.rt
        for i, (a, b) in enumerate(zip(sa.handles, rt.handles, strict=True)):
            for key in RELATIONSHIPS[sa.cls_of(a)]:
                if (
                    isinstance(b.__dict__.get(key), list)
                    and key in _unloaded(sa, a)
                    and (i, key) not in self.loaded_by_retort_only
                ):
                    self.loaded_by_retort_only.add((i, key))

    def lists_twice_what_sa_loaded_once(self) -> bool:
        """Whether a collection that, at some step, only retort's side held loaded, loaded in
        both now, lists the same members in both, one of them twice in retort's only."""
        sa, rt = self.sa, self.rt
        for i, key in self.loaded_by_retort_only:
            theirs, ours = sa.handles[i].__dict__.get(key), rt.handles[i].__dict__.get(key)
            if not isinstance(theirs, list) or not isinstance(ours, list):
                continue
            a, b = sa.norm(list(theirs)), rt.norm(list(ours))
            if a != b and set(a) == set(b) and len(set(b)) < len(b):
                return True
        return False

    def cascades_a_member_taken_out_of_a_collection_only_retort_held(self) -> bool:
        """Whether an object pending in retort's session and transient in SQLAlchemy's is in
        the removals of a collection of a pending object of retort's which, at some step, only
        retort's side held loaded, and not in the removals of SQLAlchemy's."""
        sa, rt = self.sa, self.rt
        for a, b in zip(sa.handles, rt.handles, strict=True):
            if rt.lifecycle(b) != "pending" or sa.lifecycle(a) != "transient":
                continue
            for i, key in self.loaded_by_retort_only:
                owner = rt.handles[i]
                removed = getattr(owner.__dict__.get(key), "_removed", {})
                if rt.lifecycle(owner) != "pending" or not any(x is b for x in removed.values()):
                    continue
                theirs = sa.api.inspect(sa.handles[i]).attrs[key].history.deleted
                if not any(x is a for x in theirs):
                    return True
        return False

    def sa_nodes_queued_for_children(self) -> set[tuple[int, Any]]:
        """(handle, parent's key) of each handled node queued for the unloaded children of a
        node of SQLAlchemy's session (its pending collection mutations)."""
        sa = self.sa
        out = set()
        for o in sa.handles:
            if sa.cls_of(o) != "Node" or o not in sa.session:
                continue
            insp = sa.api.inspect(o)
            pending = insp._pending_mutations.get("children")
            if pending is None or insp.identity is None:
                continue
            for item in pending.added_items:
                i = sa.index.get(id(item))
                if i is not None:
                    out.add((i, insp.identity[0]))
        return out

    def lost_node_key(self) -> int | None:
        """A handle of a node of both sessions whose parent_id retort's holds as the key of a
        parent that SQLAlchemy's holds (loaded), or that had it queued for its unloaded
        children before the step, where SQLAlchemy's parent_id is another (NULL, or the
        parent before)."""
        sa, rt = self.sa, self.rt
        if len(sa.handles) != len(rt.handles):
            return None  # (the outcomes differ already in what they handed out)
        rows: dict[str, dict[Any, Any]] | None = None
        for i, (a, b) in enumerate(zip(sa.handles, rt.handles, strict=True)):
            if sa.cls_of(a) != "Node" or a not in sa.session or b not in rt.session:
                continue  # (one outside the session writes nothing: Side.fk_unsettled)
            sa_d, rt_d = sa.api.inspect(a).dict, rt.api.inspect(b).dict
            if "parent_id" not in sa_d or "parent_id" not in rt_d:
                queued = [k for j, k in self.sa_queued_nodes if j == i]
                if not queued:
                    continue
                if (
                    "parent_id" not in sa_d
                    and not sa.api.inspect(a).expired
                    and rt_d.get("parent_id", _ABSENT) in queued
                ):
                    # SQLAlchemy's INSERT left the column unloaded, and no flush of it has
                    # set it since (a flush copying a key sets it in memory); retort's holds
                    # the key queued (told without SQL: a classification sends nothing through
                    # the sessions, which could change what they do next)
                    return i
                # expired (a commit wrote it): the committed rows say
                if rows is None:
                    rows = {
                        side.name: {
                            r[0]: r[2] for r in fetch_rows(self.admin, side.schema)["nodes"]
                        }
                        for side in (sa, rt)
                    }
                ident = rt.key(b)[1]
                if any(
                    rows["retort"].get(ident) == k != rows["sqlalchemy"].get(ident) for k in queued
                ):
                    return i
                continue
            key = rt_d.get("parent_id")
            if "parent_id" not in sa_d or key is None or sa_d["parent_id"] == key:
                continue
            parent = sa_d.get("parent")
            if (i, key) in self.sa_queued_nodes or (
                parent is not None and sa.api.inspect(parent).dict.get("id") == key
            ):
                return i
        return None

    def displaced(self) -> bool:
        """Whether an object is persistent on SQLAlchemy's side but not in its session (another
        instance of its key holds its place in the identity map) and detached on retort's, or
        persistent in retort's session where the instance SQLAlchemy's holds is detached on
        retort's. (Which instance SQLAlchemy's rollback keeps in its identity map, where it
        restores two, goes by the order of a set; retort keeps the one whose DELETE the
        rollback undid.)"""
        sa, rt = self.sa, self.rt

        def gone(o: Any) -> bool:
            return rt.lifecycle(o) == "detached" and o not in rt.session

        for i, a in enumerate(sa.handles):
            if sa.lifecycle(a) != "persistent" or a in sa.session:
                continue
            if gone(rt.handles[i]):
                return True
            b = rt.handles[i]
            if rt.lifecycle(b) != "persistent" or b not in rt.session:
                continue
            key = sa.key(a)
            if any(
                o in sa.session and sa.key(o) == key and gone(rt.handles[j])
                for j, o in enumerate(sa.handles)
                if j != i
            ):
                return True
        return False

    def state_improvement(self, step: Step, ok: bool) -> str | None:
        """The SPEC §5 improvement a step both libraries ran with the same outcome is, if the
        states they leave differ by one."""
        sa, rt = self.outcomes
        if (
            step[0] == "refresh"
            and step[2] == "parent"
            and sa.ok
            and rt.ok
            and "parent" in self.rt.handles[step[1]].__dict__
            and "parent" not in self.sa.handles[step[1]].__dict__
        ):
            # a refresh naming a node's many-to-one (self-referential): retort's loads it, as
            # SQLAlchemy documents for a relationship named to refresh(); SQLAlchemy's immediate
            # loader stops at a self-referential relationship and leaves it unloaded, so what
            # the identity maps hold differs from here on (test_relationships.py: test_
            # improvement_a_refresh_naming_a_self_referential_many_to_one_loads_it)
            return "a refresh naming a self-referential many-to-one loads it"
        if (
            sa.value == rt.value == "ObjectDeletedError"
            and not self.sa.session.is_active
            and self.rt.session.is_active
            and self.gone_object_sa_flush_loaded(sa.error) is not None
            and self.rt_replaced_a_gone_object()
        ):
            # a detached copy of a row another instance's DELETE removes, attached again as
            # the parent of a new object of that key: SQLAlchemy's flush runs the DELETE, then
            # loads the copy to copy its key into the new object and finds no row; retort's
            # inserts the new object in the copy's place (Session._settle_key_holders), which
            # it marks deleted, so that the step reading the copy raises the same error
            # (test_divergence_a_flush_naming_a_copy_of_a_row_another_instance_deleted_a_new_
            # one_took; and Lockstep.improvement)
            return "a new object takes the place of an object a DELETE of another instance removed"
        if self.displaced():
            # a rollback (of a failed flush, or rollback()) undid the flushed DELETE of an
            # object whose key another instance took since (a detached copy of the row,
            # attached again by a cascade): SQLAlchemy puts the deleted one back in the
            # identity map and leaves the other claiming to be persistent in a session that
            # does not hold it; retort detaches the other, so that one instance claims the key
            # (test_divergence_a_rollback_detaches_an_object_holding_a_restored_objects_key)
            return "an object displaced by a rollback's restored object is detached"
        if step[0] == "rollback_nested" and self.holds_a_row_the_savepoint_removed():
            # an object loaded from a row inserted inside the SAVEPOINT, by another instance
            # than the one that inserted it (which left the session): retort's rollback expires
            # it, as the row is gone, so that reading it raises ObjectDeletedError; SQLAlchemy's
            # leaves it loaded with the values of no row (unless an attribute event touched it
            # inside, as merge() does)
            # (test_improvement_an_object_loaded_from_a_row_a_savepoint_inserted_is_expired)
            return "an object whose row a SAVEPOINT's rollback removed is expired"
        if self.cascades_a_member_taken_out_before_a_rollback():
            # an object made new again by the rollback of a failed flush (its INSERT undone),
            # whose collection had a member taken out before: retort's rollback forgets the
            # removal (no row of it exists: rows_undone), SQLAlchemy's keeps it in the
            # collection's history, and its save-update cascade follows it, attaching the
            # member when the object is attached again (its flush would then delete an
            # association row that does not exist)
            # (test_divergence_a_member_taken_out_before_a_rollback_is_not_cascaded; and
            # Lockstep.improvement, where SQLAlchemy's cascade fails)
            return "a member taken out before a rollback made its owner new is not cascaded"
        if self.cascades_a_member_taken_out_of_a_collection_only_retort_held():
            # a collection SQLAlchemy's SAVEPOINT rollback expired (an attribute event touched
            # its object inside, a value set again) and retort's did not (the object did not
            # change): a member flushed into it since is in retort's collection, and taken out
            # it is a removal, which the save-update cascade of its owner follows, as
            # SQLAlchemy's does from a loaded collection; SQLAlchemy's collection, loaded
            # after the member's row was gone, never held it
            # (test_divergence_a_member_taken_out_of_a_collection_only_retort_held_is_cascaded)
            return "a collection unchanged inside a SAVEPOINT cascades to a member taken out"
        if self.lists_twice_what_sa_loaded_once():
            # a collection listing a member twice (appended from both sides: one association
            # row, two entries in memory, in both libraries), of an object that SQLAlchemy's
            # SAVEPOINT rollback expired and retort's did not (a value set again inside): a
            # step loading it in SQLAlchemy lists the row once; retort's keeps both entries
            # (test_improvement_a_collection_unchanged_inside_a_savepoint_keeps_a_member_listed_
            # twice)
            return "a collection unchanged inside a SAVEPOINT keeps a member listed twice"
        if self.lost_node_key() is not None:
            # a node given a parent that was expunged before the flush (which writes nothing
            # for the relation: a warning in both), then attached again with the node queued
            # for its unloaded children: retort's next flush writes the node's key, as both
            # do for a child of the parents table (test_a_parent_attached_again_writes_the_key_
            # of_a_child_given_it_while_outside); SQLAlchemy's self-referential flush writes
            # nothing from the queue, and its node keeps naming the parent with a NULL key
            # (test_improvement_a_node_given_a_parent_outside_the_session_gets_its_key_once_
            # the_parent_is_back)
            return NODE_KEY_WRITTEN
        if (
            not ok
            and step[0] == "delete"
            and self.rt.api.inspect(self.rt.handles[step[1]]).was_deleted
            and self.sa.handles[step[1]] in self.sa.session
            and self.rt.handles[step[1]] not in self.rt.session
        ):
            # delete() of an object whose DELETE was flushed: retort refuses it before any
            # change (InvalidRequestError); SQLAlchemy puts the object back in the identity map
            # first, and its delete cascade then raises InvalidRequestError too, reaching a
            # child deleted in that flush whose key a new object took
            # (test_improvement_delete_of_a_deleted_object_refused_by_both_changes_nothing)
            return "changing an object already deleted raises"
        if not ok and self.gone_loaded_by_sa_flush_then_by_the_step():
            # an expired object whose row is gone (a rollback undid its INSERT), which a new
            # object reached by the step's autoflush refers to: SQLAlchemy's flush loads it to
            # read its key and raises ObjectDeletedError, rolling the flush back (its new
            # objects transient again); retort's flush knows the key and succeeds, and the
            # step's own load of the object then raises ObjectDeletedError (the documented
            # difference of what a flush loads)
            # (test_divergence_a_delete_whose_autoflush_relates_an_object_whose_row_is_gone)
            return "a flush relating an object whose row is gone does not load it"
        if not ok:
            return None
        if any("Identity map already had an identity for" in w for w in self.sa_warnings):
            # a flush inserting a new object with the key of an expired object whose row is
            # gone (a rollback undid its INSERT) that holds a change: SQLAlchemy's flush sends
            # that object's UPDATE too, which the new row takes, and keeps one instance of the
            # two in its identity map, which one by the order of a set (its warning); retort's
            # marks the gone object deleted and inserts the new one, as where the gone object
            # holds no change
            # (test_divergence_a_new_object_takes_the_key_of_a_changed_object_whose_row_is_gone)
            return "a new object takes the key of a changed object whose row is gone"
        if step[0] in ("rollback", "rollback_nested", "bad_sql") and self.rowless_sa_persistent():
            # an object inserted in the scope the rollback undid, freed once nothing referred
            # to it (its parent expired by a SAVEPOINT's rollback), and its row loaded again as
            # another instance: SQLAlchemy's rollback knows the inserted instance only (held
            # weakly, gone), so the one loaded since stays persistent with no row; retort's
            # kept the inserted one (its parent unchanged, not expired: the "value set again"
            # improvement), which the rollback makes transient as SQLAlchemy's would have
            # (test_divergence_an_instance_loaded_of_a_row_inserted_stays_persistent_after_
            # rollback)
            return "a rollback leaves no persistent object of a row it removed"
        if (
            step[0] in ("rollback", "rollback_nested", "bad_sql")
            and any("changed on a non-active transaction" in w for w in self.sa_warnings)
            and any(
                self.sa.lifecycle(a) == "persistent" and self.rt.lifecycle(b) == "detached"
                for a, b in zip(self.sa.handles, self.rt.handles, strict=True)
            )
        ):
            # after a failed flush, which restored an object whose DELETE an earlier flush had
            # sent (persistent again), that object was expunged and the session changed
            # otherwise: SQLAlchemy's rollback() warns that the state changed on a non-active
            # transaction, restores its snapshot a second time and puts the expunged object
            # back in the session; retort's rollback leaves it detached, as it would were the
            # session otherwise unchanged (SQLAlchemy too then). Likewise for the rollback
            # that ends the fault step, for the rollback of a SAVEPOINT whose flush failed,
            # and for an object marked deleted (not flushed) before the failed flush
            # (test_divergence_rollback_leaves_detached_an_object_expunged_after_a_failed_flush,
            # test_divergence_the_fault_steps_rollback_leaves_an_expunged_object_detached,
            # test_divergence_a_savepoints_rollback_leaves_an_expunged_object_detached)
            return "rollback() leaves an object expunged after a failed flush detached"
        if step[0] == "delete" and any(
            self.sa.api.inspect(o).was_deleted for o in self.sa.session.deleted
        ):
            # the delete cascade reached an object whose DELETE was flushed (still in a loaded
            # collection): SQLAlchemy puts it back in the identity map and marks it again, and
            # its next flush sends a second DELETE for the row (matching nothing, with a
            # warning); retort passes over it
            # (test_improvement_a_delete_cascade_passes_over_an_object_already_deleted)
            if any(self.rt.api.inspect(o).was_deleted for o in self.rt.session.deleted):
                return None  # retort marked it too: no improvement
            return "a delete cascade passes over an object already deleted"
        if any(
            self.sa.lifecycle(a) == "deleted"
            and a in self.sa.session
            and self.rt.lifecycle(b) == "persistent"
            for a, b in zip(self.sa.handles, self.rt.handles, strict=True)
        ):
            # an object inserted and deleted in a transaction that rolled back (transient
            # again), then added again and flushed: SQLAlchemy's rollback leaves the object's
            # deleted flag set, so that once its INSERT is flushed it reports itself deleted
            # while its identity map holds it and its row exists (and goes on updating and
            # deleting that row as a persistent object's); retort's reports it persistent
            # (test_improvement_an_object_inserted_again_after_a_rollback_is_persistent)
            return "an object inserted again after a rollback undid its delete is persistent"
        waiting = self.rt.session._orphans_if_changed
        if waiting and any(
            id(b) in waiting
            and self.rt.lifecycle(b) == "persistent"
            and self.sa.api.inspect(a).was_deleted
            for a, b in zip(self.sa.handles, self.rt.handles, strict=True)
        ):
            # a child taken out of a parent without a row (outside the session) while it named
            # no parent, then given a value it had (its parent, None): SQLAlchemy counts the
            # set as a change, and its flush deletes the child as an orphan; retort's counts
            # no change (the "value set again" improvement), and the child, which only a
            # change of its own makes an orphan, stays
            # (test_improvement_a_value_set_again_makes_no_orphan_of_a_child_of_no_parent)
            return "a value set again is no change (no orphan of a child that had no parent)"
        return None

    def rowless_sa_persistent(self) -> bool:
        """Whether some objects SQLAlchemy's side holds persistent are transient on retort's,
        and the rows SQLAlchemy's session sees now (its transaction's, or the committed ones
        outside a transaction) hold none of them."""
        split = [
            a
            for a, b in zip(self.sa.handles, self.rt.handles, strict=True)
            if self.sa.lifecycle(a) == "persistent" and self.rt.lifecycle(b) == "transient"
        ]
        if not split:
            return False
        if self.sa.session.in_transaction():
            rows = self.sa.transaction_rows()
        else:
            rows = fetch_rows(self.admin, self.sa.schema)
        return all(
            all(r[0] != self.sa.key(a)[1] for r in rows[TABLE_OF[self.sa.cls_of(a)]]) for a in split
        )

    def check_retort_alone(self) -> None:
        """After an accepted improvement: the rows retort's transaction sees are what its clean
        persistent objects say."""
        rt = self.rt
        s = rt.session
        try:
            rows = rt.transaction_rows()
        except retort.exc.PendingRollbackError:
            if not rt.nested:
                return  # a failed flush earlier: no rows to see until rollback()
            # a flush failed inside a SAVEPOINT: rolled back, the transaction is usable again
            rt.nested.pop().rollback()
            self.check_retort_alone()
            return
        changed = {id(o) for o in (*s.new, *s.dirty, *s.deleted)}
        sa_now = [self.sa.api.inspect(o).dict for o in self.sa.handles]
        with s.no_autoflush:
            for i, obj in enumerate(rt.handles):
                if obj not in s or id(obj) in changed or rt.lifecycle(obj) != "persistent":
                    continue
                cls = rt.cls_of(obj)
                loaded = rt.api.inspect(obj).dict
                if any(c not in loaded for c in COLUMNS[cls]):
                    continue  # expired: reading would load what the rows say
                values = tuple(loaded[c] for c in COLUMNS[cls])
                row = next((r for r in rows[TABLE_OF[cls]] if r[0] == values[0]), None)
                if row is None:
                    # a copy loaded inside a SAVEPOINT that was rolled back, with the insert
                    # of its row (SQLAlchemy keeps such objects persistent too)
                    continue
                # a column may disagree with the row where SQLAlchemy's object holds (or held
                # before the step) the same value: a detached object, changed by a flush a
                # rollback undid, attached again with it, in both
                # (test_retort_alone_check_passes_over_values_both_libraries_hold)
                held = [d[i] for d in (sa_now, self.sa_before) if i < len(d)]
                for c, v, r in zip(COLUMNS[cls], values, row, strict=True):
                    assert v == r or any(h.get(c, _ABSENT) == v for h in held), (
                        cls,
                        values,
                        rows[TABLE_OF[cls]],
                    )

    def step(self, step: Step) -> Outcome | None:
        """Run one step on both sides and compare; its outcome, or None when the program must
        stop (after a documented improvement)."""
        if self.loads_in_one_library_only(step):
            # it would autoflush in one library only: flush both first (the step then compares
            # the values one holds with those the other loads)
            _event(f"flush before a {step[0]} that loads in one library only")
            flushed = self.step(("flush",))
            if flushed is None or not flushed.ok:
                return flushed  # (the read was drawn for a session that had not failed)
        stale = self.stale_collection_read(step)
        stale_deleted = self.stale_collection_of_a_deleted_object()
        self.program.append(_fmt(step))
        sa_warned = len(self.sa.warned)
        # what SQLAlchemy's session holds to flush, when it is to be rolled back (see below)
        sa_changes = None if self.sa.session.is_active else self.sa_changes()
        self.sa_before = [dict(self.sa.api.inspect(o).dict) for o in self.sa.handles]
        # the handles each session holds before a step whose save-update cascade may attach
        members_before = (self.sa.members(), self.rt.members()) if step[0] in _CASCADING else None
        self.held_by_sqlalchemy_only = step[0] in ("get", "merge_new") and (
            self.sa.held_loaded(*step[1:3]) and not self.rt.held_loaded(*step[1:3])
        )
        self.sa_queued_nodes = self.sa_nodes_queued_for_children()
        self.sa_expired = self.sa.expired_handles()
        # (a failed flush of its rolls back, expiring everything and forgetting the changes)
        self.sa_dirty_before = {id(o) for o in self.sa.session.dirty}
        sa = _attempt(self.sa, step)
        self.sa_warnings = self.sa.warned[sa_warned:]
        if step[0] in ("rollback", "rollback_nested", "bad_sql"):
            self.sa.queued_past_rollback.update(
                i
                for i, obj in enumerate(self.sa.handles)
                if obj not in self.sa.session and _queued(self.sa, obj)
            )
        writes = self.rt.writes[0]
        rts = self.rt.session
        self.rt_clean_before = not (rts.new or rts.dirty or rts.deleted)
        self.rt_held_before = (
            {id(o) for o in rts._core.identity_objects()}
            if step[0] in ("merge", "merge_new")
            else set()
        )
        self.rt_expired = self.rt.expired_handles()
        self.rt_expired_keys = {
            self.rt.key(o)
            for o in rts._core.identity_objects()
            if self.rt.api.inspect(o).persistent and self.rt.api.inspect(o).expired
        }
        keys_before = (
            [o.__dict__.get("parent_id", _ABSENT) for o in self.rt.handles]
            if rts.is_active
            else None
        )
        self.rt_deleting_linked = any(type(o).__name__ in ("Parent", "Tag") for o in rts.deleted)
        rt_warned = len(self.rt.warned)
        rt = _attempt(self.rt, step)
        self.outcomes = (sa, rt)
        self.rt_wrote = self.rt.writes[0] > writes
        self.rt_warnings = self.rt.warned[rt_warned:]
        if keys_before is not None and not rts.is_active:
            self.rt.keys_moved_by_a_failed_flush.update(
                i
                for i, key in enumerate(keys_before)
                if self.rt.handles[i].__dict__.get("parent_id", _ABSENT) != key
            )
        if rts.deleted:
            self.rt.marked_deleted_once.update(
                i for i, obj in enumerate(self.rt.handles) if obj in rts.deleted
            )
        self.program[-1] += f"  -> {sa}"
        if not sa.ok and isinstance(sa.error, AssertionError):
            # an internal assertion of SQLAlchemy itself (seen in its unit of work after a
            # rollback left a collection with pending mutations): no oracle past this point
            _event("sqlalchemy failed an internal assertion")
            return None
        if not sa.ok and _sqlalchemy_internal_error(sa.error):
            # an error of SQLAlchemy's own code (its flush applying a queued removal to a
            # collection it loads, which does not hold the object): no oracle past this point;
            # what retort did must hold up on its own
            # (test_sqlalchemy_bug_a_queued_removal_fails_the_flush_of_a_deleted_node)
            _event("sqlalchemy failed with an internal error")
            self.program[-1] += f" / retort: {rt} (SQLAlchemy's internal error)"
            if rt.ok:
                self.check_retort_alone()
            return None
        if (stale and (sa != rt or self.collection_differs(step))) or (stale_deleted and sa != rt):
            why = "a collection loaded in one library only lists a member since gone"
            _event(f"improvement: {why}")
            self.program[-1] += f" / retort: {rt} (improvement: {why})"
            self.check_retort_alone()
            return None
        if sa != rt:
            why = self.improvement(step, sa, rt) or self.gone_get(step, sa, rt)
            if why is None:
                self.fail(f"outcome of step {len(self.program) - 1}", sa.detail(), rt.detail())
            _event(f"improvement: {why}")
            self.program[-1] += f" / retort: {rt} (improvement: {why})"
            self.check_retort_alone()
            return None
        if (
            members_before is not None
            and sa.value == "InvalidRequestError"
            and self.sa.members() - members_before[0]
            and not self.rt.members() - members_before[1]
        ):
            # SPEC §4 (a misuse gets a specific error before anything changes): a save-update
            # cascade refused an object on its way (its DELETE flushed, another instance of its
            # row held). SQLAlchemy's keeps the objects it attached before the error, which its
            # next flush writes; retort's add is all or nothing
            # (test_the_draw_cascades_to_no_object_whose_delete_was_flushed)
            why = "a save-update cascade that raises attaches nothing"
            _event(f"improvement: {why}")
            self.program[-1] += f" (improvement: {why})"
            self.check_retort_alone()
            return None
        if (
            sa.value == "PendingRollbackError"
            and sa_changes is not None
            and self.sa_changes() - sa_changes
        ):
            # SPEC §4 (a misuse gets a specific error before anything changes): a step refused
            # because the session is to be rolled back (a flush failed). SQLAlchemy's merge()
            # copies values onto the object of the key (and the other sides of its
            # relationships) before a load finds the session unusable; retort refuses before
            # changing anything (test_improvement_a_merge_refused_by_a_session_to_be_rolled_
            # back_changes_nothing)
            why = "a step refused by a session to be rolled back changes nothing"
            _event(f"improvement: {why}")
            self.program[-1] += f" (improvement: {why})"
            self.check_retort_alone()
            return None
        if not sa.ok:
            _event(f"error: {sa.value}")
            self.sa.flush_failed = self.sa.flush_failed or sa.value in FLUSH_ERRORS
        why = self.state_improvement(step, sa.ok)
        if why is not None:
            _event(f"improvement: {why}")
            self.program[-1] += f" (improvement: {why})"
            self.check_retort_alone()
            return None
        self.compare_objects()
        self.note_collections_loaded_by_retort_only()
        if step[0] == "remove" and sa.ok and self.removed_naming_another_untracked(step, sa):
            # a child taken out of a collection while its many-to-one names another parent, a
            # value loaded, not set (its key set by hand since): SQLAlchemy's parent tracking,
            # which records appends and sets only, calls it parentless, and its flush clears
            # the key; retort's reads the many-to-one, which says the child moved, and keeps
            # the key (test_divergence_a_child_taken_out_naming_a_loaded_parent_keeps_its_key)
            _event("divergence: a child taken out keeps its key")
            self.program[-1] += " (divergence: a child taken out naming another parent)"
            self.check_retort_alone()
            return None
        if (
            step[0] == "delete"
            and sa.ok
            and self.cascade_marked_a_child_just_given_a_parent(step[1])
        ):
            # the delete cascade reached (through a parent's stale children) a child given
            # another parent since the last flush: retort's next flush deletes it, SQLAlchemy's
            # UPDATEs it and deletes it in the flush after, the accepted divergence of
            # test_improvement_delete_of_an_object_just_given_a_parent_is_honoured, which the
            # draw leaves out for a delete() of the child itself
            # (test_harness_stops_where_a_delete_cascade_marks_a_child_just_given_a_parent)
            _event("improvement: a delete cascade reaching a child just given a parent")
            self.program[-1] += " (improvement: a cascade deletes a child just given a parent)"
            self.check_retort_alone()
            return None
        if sa.ok and step[0] == "flush":
            # after an earlier failed flush a flush with nothing to write succeeds, and the
            # session still refuses SQL until rollback(): then both must refuse
            self.expect_equal(
                "rows seen in the transaction after flush",
                _attempt(self.sa, ("rows",)),
                _attempt(self.rt, ("rows",)),
            )
        if sa.ok and step[0] == "commit":
            self.compare_committed("after commit")
        return sa

    def finish(self) -> None:
        """Commit both (rolling back if that fails) and compare the committed rows."""
        outcome = self.step(("commit",))
        if outcome is None:
            return
        if not outcome.ok:
            self.step(("rollback",))
        self.compare_committed("at the end")


def _named_by_sa_flush(err: BaseException | None) -> int | None:
    """The id() of the object SQLAlchemy's ObjectDeletedError `err` names ("<Parent at
    0x...>"), if it was raised inside SQLAlchemy's flush; else None."""
    if err is None:
        return None
    tb = err.__traceback__
    in_flush = False
    while tb is not None:
        code = tb.tb_frame.f_code
        in_flush |= code.co_name == "_flush" and "/sqlalchemy/orm/" in code.co_filename
        tb = tb.tb_next
    named = re.match(r"Instance '<\w+ at 0x([0-9a-f]+)>'", str(err))
    return int(named[1], 16) if in_flush and named is not None else None


@pytest.fixture
def sides(
    dsn: str, schema: str, sa_schema: str, engine: Engine, admin_conn: psycopg.Connection[Any]
) -> Iterator[tuple[Side, Side]]:
    """(SQLAlchemy side, retort side), each with its models declared in its own schema."""
    sa_api = sqlalchemy_api(dsn, sa_schema, admin_conn)
    rt_api = Api("retort", engine, [], admin_conn)
    try:
        sa = Side("sqlalchemy", sa_api, declare(sa_api), sa_schema)
        rt = Side("retort", rt_api, declare(rt_api), schema)

        def count(sql: str, params: Any) -> None:
            if sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
                rt.writes[0] += 1

        engine._statement_hooks.append(count)
        yield sa, rt
    finally:
        sa_api.engine.dispose()


def _lockstep(sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]) -> Lockstep:
    sa, rt = sides
    for side in sides:
        side.close()
        reset_rows(admin_conn, side.schema)
        side.start()
    return Lockstep(sa, rt, admin_conn)


# --------------------------------------------------------------------------------------------
# the random programs


def test_random_programs_agree_with_sqlalchemy(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    steps = _STEPS[_profile_name()]

    @_PROFILES[_profile_name()]
    @given(data=st.data())
    def program(data: st.DataObject) -> None:
        # No cyclic garbage collection while a program runs: loaded objects that refer to
        # each other (a parent's loaded children, and their parent) leave a weak identity map
        # only when the collector frees them, at a moment that changes between runs of one
        # program; the draw rules that ask what an identity map holds would then draw other
        # steps (FlakyStrategyDefinition). Freed by reference counting alone, they go at the
        # same step every run.
        gc.disable()
        run = _lockstep(sides, admin_conn)
        drawer = Drawer(data, run.sa, run.rt)
        try:
            for _ in range(steps):
                step = drawer.step([run.sa.cls_of(o) for o in run.sa.handles], len(run.sa.nested))
                if step is None:
                    continue
                if run.step(step) is None:
                    return
            run.finish()
        finally:
            for side in sides:
                side.close()
            gc.enable()

    program()


# --------------------------------------------------------------------------------------------
# plain reproductions, run through the same lockstep harness


@contextmanager
def _stepped(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], steps: list[Step]
) -> Iterator[Lockstep]:
    """A lockstep run that has taken `steps` (each compared, none stopping the program), for
    a test to go on with; both sides are closed after it."""
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        yield run
    finally:
        for side in sides:
            side.close()


def _play(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], steps: list[Step]
) -> Lockstep:
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            if run.step(step) is None:
                # stopped at an improvement: commit retort's work for the test to read (unless
                # a failed flush left it to be rolled back)
                if run.rt.session.is_active:
                    run.rt.session.commit()
                else:
                    run.rt.session.rollback()
                break
        else:
            run.finish()
    finally:
        for side in sides:
            side.close()
    return run


def test_harness_sqlalchemy_side_prepares_no_statement(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # SQLAlchemy's connections run without server-side prepared statements (see
    # tests/_rel_models.py sqlalchemy_api); retort's prepare a statement run often enough, as
    # psycopg does (prepare_threshold)
    run = _lockstep(sides, admin_conn)
    try:
        for _ in range(8):
            assert run.step(("query", "Tag")) is not None
        counts = {}
        for side in sides:
            rows = side.session.connection().exec_driver_sql(
                "SELECT count(*) FROM pg_prepared_statements"
            )
            counts[side.name] = rows.scalar()
        assert counts["sqlalchemy"] == 0
        assert counts["retort"] > 0
    finally:
        for side in sides:
            side.close()


def test_harness_bad_sql_fails_the_transaction_under_the_session_and_recovers(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # the step a fault: a statement the server refuses, a load by key in the failed
    # transaction (refused too), then the rollback of the SAVEPOINT; the work before it stays
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("begin_nested",),
            ("new", "Parent", 5, "a", "add", None),
        ],
    ) as run:
        failed = run.step(("bad_sql", "Parent", 1))
        assert failed is not None and failed.value == ("DataError", "InternalError")
        assert run.rt.nested == [] and run.rt.session.is_active
        assert run.step(("get", "Parent", 1)) is not None
        run.finish()
        assert [r[0] for r in fetch_rows(admin_conn, run.rt.schema)["parents"]] == [1, 2, 3, 4]


def test_harness_detects_a_divergence(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # the comparison can fail: make retort's session see one more row than SQLAlchemy's
    run = _lockstep(sides, admin_conn)
    try:
        admin_conn.execute(f"INSERT INTO {run.rt.schema}.tags VALUES (7, 'extra')")
        with pytest.raises(Divergence, match="outcome of step 0"):
            run.step(("get", "Tag", 7))
    finally:
        for side in sides:
            side.close()


def test_harness_flushes_before_a_collection_read_that_loads_in_one_library(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: SQLAlchemy's flush of the association row loads tag 1
    # (expired by the commit) to read its expired key, retort's does not need to; reading
    # the deleted tag's collection then loads it in retort only, whose autoflush deletes its
    # row first (ObjectDeletedError, as SQLAlchemy raises for an expired object there). The
    # harness flushes both before that step
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("query", "Tag"),
            ("commit",),
            ("link", 0, 1, False),
            ("flush",),
            ("delete", 1),
            ("remove", 1, "parents", 0),
        ],
    )
    assert run.program[-2:-1] == ["flush()  -> ok None"]
    assert run.program[-1].startswith("remove(1, 'parents', 0)")


def test_harness_flushes_before_a_many_to_one_read_whose_target_is_expired_in_one_library(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: after expire_all(), get(Child, 5) autoflushes child 6,
    # appended to the expired parent 5; SQLAlchemy's flush loads parent 5 to read its key,
    # retort's reads the key it knows. Reading child 5's parent (parent 5) then finds it
    # expired in retort only, whose load autoflushes the pending parent 7 first. The harness
    # flushes both before that read
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 5, "a", "add", None),
            ("new", "Child", 5, "a", "append", 0),
            ("flush",),
            ("new", "Child", 6, "a", "append", 0),
            ("expire_all",),
            ("get", "Child", 5),
            ("new", "Parent", 7, "a", "add", None),
            ("read", 1, "parent"),
        ],
    )
    assert run.program[-3:-1] == ["flush()  -> ok None", "read(1, 'parent')  -> ok ('h', 0)"]


def test_divergence_a_get_after_a_failed_flush_of_an_object_only_sqlalchemy_loaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: SQLAlchemy's flush inside the SAVEPOINT loads node 1 (its
    # key, for the transient node 5 it is the parent of) before it fails, retort's leaves node 1
    # expired; the SAVEPOINT's rollback leaves nothing to flush. get(Node, 1) then loads in
    # retort only, which refuses (PendingRollbackError: the SAVEPOINT is not rolled back yet),
    # where SQLAlchemy answers from the identity map (a flush before it has nothing to do)
    run = _play(
        sides,
        admin_conn,
        [
            ("query", "Node"),
            ("rollback",),
            ("new", "Node", 5, "a", "set_parent", 0),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("flush",),
            ("get", "Node", 1),
        ],
    )
    assert run.program[-1] == (
        "get('Node', 1)  -> ok 0 / retort: raised PendingRollbackError (improvement: an object "
        "only SQLAlchemy's flush loaded is not loadable after it failed)"
    )


def test_a_rollback_restores_an_object_whose_key_a_new_object_took(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is inserted, expunged and merged back (a second
    # instance, handle 4), and the rollback leaves that instance expired with no row. A new
    # parent 4 is flushed (by merge()'s autoflush): both mark handle 4 deleted and insert the
    # new one. rollback() makes handle 4 persistent again and the new one transient, in both
    # (retort's rollback once left handle 4 deleted); get() then finds its row gone again
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("query", "Parent"),
            ("expunge", 0),
            ("merge", 0),
            ("rollback",),
            ("new", "Parent", 4, "a", "add", None),
            ("merge", 0),
            ("rollback",),
            ("get", "Parent", 4),
        ],
    )
    # (the harness compares the objects' states after each step, the rollback's included)
    assert run.program[7] == "rollback()  -> ok None"
    assert run.program[8] == "get('Parent', 4)  -> ok None"
    assert not _improved(run)


def test_a_parent_attached_again_writes_the_key_of_a_child_given_it_while_outside(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 is given parent 4, which is then expunged; the
    # flush (or commit, which expires the child) writes nothing for the relation (parent 4 is
    # outside the session; a warning in both). A tag's cascade attaches parent 4 again, with
    # the child still queued for its unloaded children: the next flush writes the child's key
    # (retort's once skipped it, as the child's own many-to-one change was flushed already:
    # its parent_id stayed NULL, and parent 4's children loaded without it)
    # (or where the commit is followed by a load of the child's parent: None, as its row says)
    ends: list[list[Step]] = [[("flush",)], [("commit",)], [("commit",), ("read", 0, "parent")]]
    for end in ends:
        run = _play(
            sides,
            admin_conn,
            [
                ("new", "Child", 5, "a", "add", None),
                ("new", "Parent", 4, "a", "add", None),
                ("flush",),
                ("move", 0, 1, "set"),
                ("expunge", 1),
                *end,
                ("new", "Tag", 3, "a", "add", None),
                ("link", 1, 2, True),
                ("read", 1, "children"),
                ("read", 0, "parent_id"),
            ],
        )
        assert run.program[-3:-1] == [
            "read(1, 'children')  -> ok [('h', 0)]",
            "read(0, 'parent_id')  -> ok 4",
        ]
        assert (5, "a", 4) in fetch_rows(admin_conn, run.rt.schema)["children"]
        assert not _improved(run)


def test_a_link_towards_an_object_outside_the_session_is_not_deleted(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 and tag 3 are linked and flushed, then one of them
    # is expunged. Taking the tag out of the parent's tags, or deleting the tag, leaves the
    # association row alone in both, with a warning (the flush writes nothing for a relation
    # towards an object outside the session); the tag's DELETE then fails on the row's foreign
    # key. retort's flush once deleted the row
    linked: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("new", "Tag", 3, "a", "add", None),
        ("link", 0, 1, False),
        ("flush",),
    ]
    run = _play(sides, admin_conn, [*linked, ("expunge", 1), ("remove", 0, "tags", 0), ("flush",)])
    assert run.program[-2] == "flush()  -> ok None"
    assert (4, 3) in fetch_rows(admin_conn, run.rt.schema)["parent_tags"]
    assert not _improved(run)
    assert any("is not in the session" in w for w in run.rt.warned)
    run = _play(sides, admin_conn, [*linked, ("expunge", 0), ("delete", 1), ("flush",)])
    assert run.program[6] == "flush()  -> raised IntegrityError"
    assert not _improved(run)
    assert any("is not in the session" in w for w in run.rt.warned)


def test_a_delete_cascade_attaches_a_detached_child(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5, appended to parent 4's children, is expunged; the
    # delete of parent 4 cascades to it through the loaded collection, which attaches it and
    # marks it deleted in both (retort's cascade once passed over a detached child: it stayed
    # detached, and the flush deleted the parent only)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("new", "Parent", 4, "a", "add", None),
            ("flush",),
            ("move", 0, 1, "append"),
            ("expunge", 0),
            ("delete", 1),
        ],
    ) as run:
        for side in sides:
            assert side.lifecycle(side.handles[0]) == "persistent"
            assert side.handles[0] in side.session.deleted
        assert run.step(("flush",)) is not None
        run.finish()
    assert not _improved(run)
    assert 5 not in [c[0] for c in fetch_rows(admin_conn, run.rt.schema)["children"]]


def test_an_expired_column_of_an_object_made_transient_is_not_loadable(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4, inserted and then expired (expire_all(), which
    # the harness's inspect() materializes in retort), is made transient by the failed
    # autoflush of get() (a new parent takes the key of parent 1). Its expired columns cannot
    # be loaded: merge() of it raises DetachedInstanceError in both (retort's name once read
    # None, and its merge() went on to the SQL)
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("query", "Parent"),
            ("expire_all",),
            ("new", "Parent", 1, "a", "add", None),
            ("get", "Parent", 1),
            ("rollback",),
            ("merge", 0),
        ],
    )
    assert run.program[6] == "merge(0)  -> raised DetachedInstanceError"
    assert not _improved(run)


# --------------------------------------------------------------------------------------------
# documented improvements (SPEC §5), deterministic


def _improved(run: Lockstep) -> list[str]:
    return [p for p in run.program if "(improvement:" in p]


def test_improvement_new_nodes_in_a_cycle(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # SQLAlchemy raises CircularDependencyError for two new rows that reference each other
    # through the nullable nodes.parent_id; retort inserts one with NULL, then UPDATEs it
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("new", "Node", 6, "b", "set_parent_add", 0),
            ("node_parent", 0, 1),
            ("flush",),
        ],
    )
    assert _improved(run) and "CircularDependencyError" in _improved(run)[0]
    assert fetch_rows(admin_conn, run.rt.schema)["nodes"][-2:] == [(5, "a", 6), (6, "b", 5)]


def test_improvement_an_object_made_transient_by_a_rollback_stays_readable(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: the child's INSERT is flushed by begin_nested(), its
    # relationship changed inside the SAVEPOINT; rollback() expires it (SAVEPOINT level) and
    # then makes it transient (transaction level), so SQLAlchemy's merge() cannot read it
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("begin_nested",),
            ("move", 0, None, "set"),
            ("rollback",),
            ("merge", 0),
        ],
    )
    assert _improved(run) and "DetachedInstanceError" in _improved(run)[0]
    assert run.rt.lifecycle(run.rt.handles[0]) == "transient"
    assert run.rt.handles[0].name == "a"


def test_improvement_a_collection_of_an_object_made_transient_by_a_rollback_is_kept(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 1 linked to parent 6 inside a SAVEPOINT (parent 6
    # flushed by begin_nested()), then rollback(): SQLAlchemy expires parent 6 and makes it
    # transient, and its tags read empty; retort keeps [tag 1], so linking tag 1 again lists
    # it twice there, once in SQLAlchemy. The draw leaves such objects alone
    # (Drawer.kept_by_retort_only) but for a column read (the improvement above)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 6, "a", "add", None),
            ("get", "Tag", 1),
            ("begin_nested",),
            ("link", 0, 1, False),
            ("rollback",),
        ],
    ) as run:
        assert Drawer(None, run.sa, run.rt).kept_by_retort_only(0)
        assert not Drawer(None, run.sa, run.rt).kept_by_retort_only(1)
        tags = {side.name: list(side.handles[0].tags) for side in sides}
        assert tags == {"sqlalchemy": [], "retort": [run.rt.handles[1]]}


def test_the_draw_leaves_alone_a_transient_object_whose_columns_sqlalchemy_loaded_again(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 (flushed), given child 1 and changed inside a
    # SAVEPOINT that the failed "bad_sql" step rolls back, is expired by SQLAlchemy only. A new
    # parent 4 is added; the autoflush of a collection load fails on its key, and SQLAlchemy's
    # flush had loaded the first parent 4's columns (to see whether its row is deleted), not
    # its children. The rollback makes it transient: its children read empty in SQLAlchemy,
    # [child 1] in retort, as in the test above. The draw leaves it alone
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Tag", 3, "a", "add", None),
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Child", 1),
            ("move", 2, 1, "append"),
            ("begin_nested",),
            ("set", 1, "code", None),
            ("bad_sql", "Parent", 1),
            ("new", "Parent", 4, "a", "add", None),
        ],
    ) as run:
        assert not Drawer(None, run.sa, run.rt).kept_by_retort_only(1)
        assert not run.step(("remove", 0, "parents", 0)).ok
        assert not run.sa.api.inspect(run.sa.handles[1]).expired_attributes
        assert Drawer(None, run.sa, run.rt).kept_by_retort_only(1)
        assert not Drawer(None, run.sa, run.rt).kept_by_retort_only(2)
        children = {side.name: list(side.handles[1].children) for side in sides}
        assert children == {"sqlalchemy": [], "retort": [run.rt.handles[2]]}


def test_improvement_a_merge_refused_by_a_session_to_be_rolled_back_changes_nothing(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a new child 1 (a key taken) appended to parent 1 fails the
    # flush; merge() of it then raises PendingRollbackError in both, but SQLAlchemy's copies
    # its values onto child 1 (loaded with parent 1's children) first, so that the session
    # holds changes to flush, and its next flush() raises where retort's has nothing to do
    with _stepped(
        sides,
        admin_conn,
        [
            ("merge_new", "Parent", 1, "a"),
            ("new", "Child", 1, "a", "add", None),
            ("rollback",),
            ("move", 1, 0, "append"),
            ("flush",),
        ],
    ) as run:
        assert not run.rt.session.dirty and not run.rt.session.new
        assert run.step(("merge", 1)) is None
        assert not run.rt.session.dirty
    assert run.program[-2:] == [
        "flush()  -> raised IntegrityError",
        "merge(1)  -> raised PendingRollbackError (improvement: a step refused by a session to be "
        "rolled back changes nothing)",
    ]


def test_improvement_an_object_made_transient_by_a_rollback_is_kept_when_a_cascade_reaches_it(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4, flushed before a SAVEPOINT, is given child 6 and
    # tag 3 inside it (after a flush failed there); rollback() makes all three transient, and
    # SQLAlchemy's parent 4 expired. A new parent 4 linked to tag 3 cascades to tag 3 and,
    # through its parents, to parent 4: retort follows parent 4's children to child 6,
    # SQLAlchemy's expired parent 4 has none. The draw leaves alone every object that reaches
    # such an object (Drawer.kept_by_retort_only_obj)
    with _stepped(
        sides,
        admin_conn,
        [
            ("merge_new", "Parent", 4, "a"),
            ("begin_nested",),
            ("new", "Node", 5, "a", "add", None),
            ("delete", 0),
            ("new", "Parent", 1, "a", "add", None),
            ("remove", 1, "children", 0),
            ("new", "Child", 6, "a", "append", 0),
            ("new", "Tag", 3, "a", "append", 0),
            ("rollback",),
            ("new", "Parent", 4, "a", "add", None),
        ],
    ) as run:
        assert run.program[5].endswith("raised IntegrityError")
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.kept_by_retort_only(0)
        assert drawer.reaches([4], drawer.kept_by_retort_only_obj)  # tag 3, through its parents
        assert not drawer.reaches([5], drawer.kept_by_retort_only_obj)  # the new parent 4
        for side in sides:
            side.handles[5].tags.append(side.handles[4])
        assert [side.lifecycle(side.handles[3]) for side in sides] == ["transient", "pending"]


def test_divergence_an_object_only_sqlalchemys_flush_loaded_stays_expired_when_made_transient(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 3 is inserted (by get()'s autoflush) and expired;
    # linking it to parent 5 autoflushes its link to parent 4, where SQLAlchemy's flush loads
    # the tag to read its expired key, retort's knows the key. rollback() makes it transient:
    # SQLAlchemy's holds its label, retort's cannot load it. The draw leaves it alone, and the
    # objects that reach it (parent 4 and 5 hold it in their tags)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Parent", 5, "a", "add", None),
            ("new", "Tag", 3, "a", "add", None),
            ("get", "Parent", 1),
            ("expire_all",),
            ("link", 0, 2, False),
            ("link", 1, 2, False),
            ("rollback",),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        tags = [run.sa.handles[i] for i in range(4)]
        assert [drawer.expired_by_retort_only(t) for t in tags] == [False, False, True, False]
        assert drawer.reaches([0], drawer.expired_by_retort_only)
        assert not drawer.reaches([3], drawer.expired_by_retort_only)
        assert run.sa.handles[2].label == "a"
        with pytest.raises(retort.exc.DetachedInstanceError):
            run.rt.handles[2].label  # noqa: B018


def test_improvement_a_flush_refuses_values_unknown_since_a_rollback_before_any_statement(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 3, inserted by get()'s autoflush and expired, is linked
    # to a new parent 1 (a key taken) and made transient by rollback(); linking parent 1 to tag
    # 1 brings both back. Both flushes refuse tag 3, whose label is unknown (test_bug_an_object_
    # expired_before_its_insert_was_rolled_back_is_not_inserted_again in
    # test_relational_state_machine.py); SQLAlchemy's sends parent 1's INSERT first, which
    # fails, retort's refuses before any statement
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Tag", 3, "a", "add", None),
            ("get", "Parent", 4),
            ("expire_all",),
            ("new", "Parent", 1, "a", "add", None),
            ("link", 1, 0, False),
            ("rollback",),
            ("get", "Tag", 1),
            ("link", 1, 2, True),
        ],
    ) as run:
        writes = run.rt.writes[0]
        assert run.step(("flush",)) is None
        assert run.rt.writes[0] == writes
    assert run.program[-1] == (
        "flush()  -> raised IntegrityError / retort: raised InvalidRequestError (improvement: a "
        "flush refuses an object with values unknown since a rollback before any SQL)"
    )


def test_improvement_a_delete_matching_no_row_raises_stale_data(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 3 is expunged, and parent 2's collection loads another
    # instance of it, taken out (an orphan) and deleted by a flush; delete() of the detached
    # instance then brings it back, and the flush's DELETE matches no row: SQLAlchemy warns,
    # retort raises StaleDataError
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Child", 3),
            ("expunge", 0),
            ("get", "Parent", 2),
            ("remove", 1, "children", 0),
            ("flush",),
            ("delete", 0),
        ],
    ) as run:
        assert run.step(("flush",)) is None
    assert run.program[-1] == (
        "flush()  -> ok None / retort: raised StaleDataError (improvement: a DELETE matching no "
        "row raises StaleDataError)"
    )


def test_improvement_a_pending_child_moved_between_pending_parents_stays(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: appending a new child of a parent to another parent's
    # collection. SQLAlchemy's backref takes it out of the first parent's collection before the
    # append records the new parent, so its orphan check expunges it, and it is never
    # inserted; retort moves it, as it moves a persistent child
    _lockstep(sides, admin_conn)  # fresh sessions and rows
    results = {}
    for side in sides:
        models, s = side.models, side.session
        p4 = models.Parent(id=4, name="p4", code=None)
        c5 = models.Child(id=5, name="c5")
        p4.children.append(c5)
        p5 = models.Parent(id=5, name="p5", code=None)
        s.add_all([p4, p5])
        p5.children.append(c5)
        results[side.name] = side.lifecycle(c5)
        if side.name == "sqlalchemy":
            with pytest.warns(Warning, match="not in session"):
                s.commit()  # and the child is not inserted
        else:
            s.commit()
    for side in sides:
        side.close()
    assert results == {"sqlalchemy": "transient", "retort": "pending"}
    assert (5, "c5", None) not in fetch_rows(admin_conn, sides[0].schema)["children"]
    assert (5, "c5", 5) in fetch_rows(admin_conn, sides[1].schema)["children"]


def test_improvement_every_deleted_objects_many_to_one_stays_readable(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # SQLAlchemy's flush reads the many-to-one of the objects it deletes from the identity map
    # (no SQL) until one of them has a value, so that one stays readable once detached and the
    # others do not (which one depends on the order of a set); retort's flush reads them all
    _lockstep(sides, admin_conn)
    readable = {}
    for side in sides:
        m, s = side.models, side.session
        p1 = s.get(m.Parent, 1)
        c1, c2 = s.get(m.Child, 1), s.get(m.Child, 2)
        s.delete(c1)
        s.delete(c2)
        s.flush()
        s.expunge(c1)
        s.expunge(c2)
        found = []
        for c in (c1, c2):
            try:
                found.append(c.parent is p1)
            except side.api.DetachedInstanceError:
                found.append(None)
        readable[side.name] = found
        s.rollback()
    for side in sides:
        side.close()
    assert sorted(readable["sqlalchemy"], key=str) == [None, True]
    assert readable["retort"] == [True, True]


def test_improvement_delete_of_an_object_just_given_a_parent_is_honoured(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a child moved to another parent, then deleted, before a
    # flush (or deleted, then moved). SQLAlchemy's one-to-many dependency registers the
    # children added to a collection with cancel_delete, so that flush UPDATEs the row and
    # leaves the object persistent (and still marked: the next flush deletes it); retort
    # deletes it in the flush asked for. The draw gives no parent to an object marked deleted
    # (Drawer.marked_deleted), nor deletes one just given a parent
    for delete_first in (False, True):
        _lockstep(sides, admin_conn)
        states = {}
        for side in sides:
            m, s = side.models, side.session
            c3, p1 = s.get(m.Child, 3), s.get(m.Parent, 1)
            side.handle(c3)
            if delete_first:
                s.delete(c3)
            c3.parent = p1
            if not delete_first:
                s.delete(c3)
            assert Drawer(None, side, side).marked_deleted(0)
            s.flush()
            states[side.name] = side.lifecycle(c3)
            s.commit()
        for side in sides:
            side.close()
        assert states == {"sqlalchemy": "persistent", "retort": "deleted"}
        for side in sides:  # the commit's flush deleted it in SQLAlchemy too
            assert all(r[0] != 3 for r in fetch_rows(admin_conn, side.schema)["children"])


def test_improvement_a_backref_does_not_duplicate_a_member(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a child's parent_id set to NULL by hand and flushed leaves
    # the parent's loaded collection holding it; setting child.parent back to that parent then
    # appends it again in SQLAlchemy (two entries), once in retort
    _lockstep(sides, admin_conn)
    held = {}
    for side in sides:
        m, s = side.models, side.session
        p1, c1 = s.get(m.Parent, 1), s.get(m.Child, 1)
        assert c1 in p1.children
        c1.parent_id = None
        s.flush()
        c1.parent = p1
        held[side.name] = sum(1 for c in p1.children if c is c1)
        s.commit()
    for side in sides:
        side.close()
    assert held == {"sqlalchemy": 2, "retort": 1}
    for side in sides:
        assert (1, "c1", 1) in fetch_rows(admin_conn, side.schema)["children"]


def test_the_draw_sets_no_parent_id_of_a_new_object_against_a_parent_no_flush_syncs(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5, flushed under node 1, is made transient by a
    # rollback (still holding node 1, parent_id 1); new node 6 under it puts it back in the
    # session. Its parent_id set to None, SQLAlchemy inserts NULL (the rolled-back flush
    # recorded `parent`: no change to sync), retort the key of the parent the object holds
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Node", 1),
            ("new", "Node", 5, "a", "set_parent_add", 0),
            ("remove", 0, "children", 0),
            ("rollback",),
            ("new", "Node", 6, "a", "set_parent_add", 1),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        stale = ("set", 1, "parent_id", None)
        assert drawer.sets_a_stale_key(stale)
        assert not drawer.sets_a_stale_key(("set", 1, "parent_id", 1))  # (its parent's key)
        assert not drawer.sets_a_stale_key(("set", 2, "parent_id", None))  # (node 6: synced)
        assert not drawer.sets_a_stale_key(("set", 1, "name", None))
        assert run.step(stale) is not None
        with pytest.raises(Divergence, match=r"loaded Node\.parent_id of handle 1"):
            run.step(("flush",))


def test_the_draw_sets_a_parent_id_of_a_new_object_holding_a_none_parent_no_flush_syncs(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new node 5's parent_id and parent are set to None after
    # merge() of new parent 4 (whose load autoflushes node 5), and rollback() makes node 5
    # transient, its parent None with no change left. Put back in the session by new node 6
    # under it and given parent_id 1 by hand, it is inserted with 1 by both libraries (retort
    # wrote the None it holds until the fix tested by test_relationships.py's
    # test_bug_a_key_set_by_hand_after_a_rollback_undid_the_insert_is_written)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Node", 5, "a", "add", None),
            ("merge", 0),
            ("set", 1, "parent_id", None),
            ("node_parent", 1, None),
            ("rollback",),
            ("new", "Node", 6, "a", "set_parent_add", 1),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        by_hand = ("set", 1, "parent_id", 1)
        assert not drawer.sets_a_stale_key(by_hand)
        assert run.step(by_hand) is not None
        assert run.step(("flush",)) is not None
        assert [side.handles[1].parent_id for side in sides] == [1, 1]


def test_divergence_a_merge_after_a_failed_flush_of_a_key_only_sqlalchemy_loaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: inside a SAVEPOINT, parent 1 (its code set again) is
    # deleted and a new parent 2 (a key taken) added; the autoflush of the next step fails.
    # SQLAlchemy's flush had loaded parent 1's tags (tag 1 among them) to delete their
    # association rows, retort's deletes them without loading. merge() of a new tag 1 then
    # answers from SQLAlchemy's identity map and needs a load in retort's, which the session
    # refuses until the SAVEPOINT is rolled back
    run = _play(
        sides,
        admin_conn,
        [
            ("begin_nested",),
            ("get", "Parent", 1),
            ("set", 0, "code", None),
            ("new", "Tag", 3, "a", "add", None),
            ("delete", 0),
            ("new", "Parent", 2, "a", "add", None),
            ("remove", 1, "parents", 0),
            ("merge_new", "Tag", 1, "a"),
        ],
    )
    assert run.program[-2].startswith("remove(1, 'parents', 0)  -> raised IntegrityError")
    assert run.program[-1] == (
        "merge_new('Tag', 1, 'a')  -> ok 3 / retort: raised PendingRollbackError (improvement: "
        "an object only SQLAlchemy's flush loaded is not loadable after it failed)"
    )


def test_divergence_a_detached_copy_of_a_row_only_sqlalchemys_failed_flush_kept(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 1 is loaded and expunged; parent 1 is deleted and a
    # new tag 1 (a key taken) added, and the flush fails. Both flushes had loaded parent 1's
    # tags (another instance of tag 1 among them) to delete their association rows.
    # SQLAlchemy's session keeps them after the failure (through parent 1's expired
    # collection), and refuses to attach the detached tag 1 for its delete(); retort's parent
    # 1 forgets the collection, nothing refers to the tags any more and its identity map (weak,
    # as SQLAlchemy's) lets them go, so that the delete() attaches the detached tag 1
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("expunge", 0),
            ("get", "Parent", 1),
            ("delete", 1),
            ("new", "Tag", 1, "a", "add", None),
            ("flush",),
            ("delete", 0),
        ],
    )
    assert run.program[-2] == "flush()  -> raised IntegrityError"
    assert run.program[-1] == (
        "delete(0)  -> raised InvalidRequestError / retort: ok None (improvement: a row only "
        "SQLAlchemy's failed flush kept refuses a detached copy)"
    )


def test_bug_a_child_deleted_by_an_earlier_flush_taken_out_of_its_parent_writes_nothing(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new node 5 under node 2 (whose children are loaded) is
    # inserted and then deleted, and an autoflush runs its DELETE; node 2's children still
    # list it. Taken out of them, the flush of the removal set its parent_id to NULL through
    # the attribute, which refuses a change to a deleted object, and the flush raised
    # InvalidRequestError. SQLAlchemy writes nothing for it and clears the value in memory, as
    # retort now does (as for a deleted parent's listed children, 5842918)
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Node", 2),
            ("remove", 0, "children", 0),
            ("new", "Node", 5, "a", "set_parent_add", 0),
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Child", 1),  # (its autoflush inserts node 5)
            ("delete", 1),
            ("new", "Child", 5, "a", "append", 2),
            ("remove", 0, "children", 0),
            ("flush",),
        ],
    )
    assert run.program[-2:] == ["flush()  -> ok None", "commit()  -> ok None"]
    assert all(r[0] != 5 for r in fetch_rows(admin_conn, run.rt.schema)["nodes"])


@pytest.mark.parametrize("end", ["flush", "commit"])
def test_bug_a_child_whose_loaded_parent_is_none_taken_from_a_parent_without_a_row_stays(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], end: str
) -> None:
    # found by the nightly search: child 4, appended to parent 4 outside the session (never
    # flushed), is inserted with no parent_id; loaded since, its parent is None. Taken out of
    # parent 4's children, it changes in neither library (the backref has nothing to undo), so
    # the next flush keeps it; retort's deleted it as an orphan, as for a child whose
    # many-to-one still named parent 4. Once a change of its own puts it in a flush, both
    # delete it (SQLAlchemy's parent tracking calls it parentless), unless a commit expired it
    # meanwhile, which forgets the removal (retort's commit forgot it only for an expired
    # child whose parent was not loaded)
    with _stepped(
        sides,
        admin_conn,
        [
            ("merge_new", "Child", 4, "a"),
            ("new", "Parent", 4, "a", "add", None),
            ("expunge", 1),
            ("move", 0, 1, "append"),
            ("commit",),
            ("read", 0, "parent"),
            ("remove", 1, "children", 0),
            (end,),
        ],
    ) as run:
        assert run.rt.lifecycle(run.rt.handles[0]) == "persistent"
        assert run.step(("set", 0, "name", "z")) is not None
        assert run.step(("flush",)) is not None
        expected = "deleted" if end == "flush" else "persistent"
        assert run.rt.lifecycle(run.rt.handles[0]) == expected
        run.finish()


@pytest.mark.parametrize("case", ["deleted-before", "never-added"])
def test_bug_a_deleted_parents_flush_clears_the_key_of_a_child_taken_out_without_a_row(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], case: str
) -> None:
    # found by the nightly search. deleted-before: child 6 is taken out of new parent 4's
    # children, and the parent is expunged before the flush that deletes the child (an
    # orphan), so that no flush of the parent settled the removal; delete() of the parent
    # attaches it again. never-added: child 6, never added, is given parent 4, whose INSERT
    # copies its key into the child (outside the session: nothing is written); the child is
    # taken out of parent 4's children (delete-orphan: nothing to delete) and parent 4
    # deleted. In both, the flush of the parent's DELETE clears, as SQLAlchemy's does, the
    # foreign key of the child taken out (in memory: the child has no row); retort's left it
    # naming the deleted parent
    steps: list[Step] = (
        [
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Child", 6, "a", "append", 0),
            ("flush",),
            ("remove", 0, "children", 0),
            ("expunge", 0),
            ("flush",),  # (deletes child 6, an orphan)
            ("delete", 0),
        ]
        if case == "deleted-before"
        else [
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Child", 6, "a", "set_parent", 0),
            ("flush",),
            ("move", 1, None, "set"),
            ("delete", 0),
        ]
    )
    with _stepped(sides, admin_conn, steps) as run:
        assert run.rt.handles[1].__dict__["parent_id"] == 4
        assert run.step(("flush",)) is not None
        lifecycle = "deleted" if case == "deleted-before" else "transient"
        assert run.rt.lifecycle(run.rt.handles[1]) == lifecycle
        assert run.rt.handles[1].__dict__["parent_id"] is None
        run.finish()


def test_bug_a_deleted_parents_flush_leaves_the_key_of_a_child_a_new_parent_gained(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5 is inserted, and a rollback makes it transient.
    # Node 1 is marked deleted, and node 2 given node 5 as its parent (the backref cascade
    # puts node 5 back in the session, its children listing node 2). expire_all() discards
    # node 2's own change; the autoflush's DELETE of node 1 loads its children (node 2
    # among them, its row still names node 1) and clears their keys. SQLAlchemy's leaves
    # node 2, which node 5's collection gained, with node 5's key; retort's cleared it
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("query", "Node"),  # (nodes 1 to 4: handles 1 to 4)
            ("rollback",),
            ("delete", 1),
            ("node_parent", 2, 0),
            ("expire_all",),
        ],
    ) as run:
        assert run.step(("query", "Parent")) is not None
        assert run.rt.handles[2].__dict__["parent_id"] == 5
        run.finish()


def test_bug_an_object_whose_delete_a_savepoints_rollback_undid_is_held_weakly(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 is loaded and expunged. Inside a SAVEPOINT, parent 1
    # (renamed by merge()) is deleted with its children (another instance of child 1 among
    # them), and a flush sends the DELETEs; a new parent 2 (a key taken) makes the next flush
    # fail, and the SAVEPOINT's rollback makes them persistent again and expires parent 1
    # (changed inside), whose children go. Nothing refers to child 1's instance any more, and
    # SQLAlchemy's session lets it go, so that delete() of the detached child 1 attaches it.
    # Retort's session kept every object whose DELETE a flush of the transaction sent, for
    # deleted_to_detached at commit, and so refused the detached copy (InvalidRequestError)
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Child", 1),
            ("expunge", 0),
            ("begin_nested",),
            ("merge_new", "Parent", 1, "a"),
            ("delete", 1),
            ("flush",),
            ("new", "Parent", 2, "a", "add", None),
            ("flush",),
            ("delete", 0),
        ],
    )
    assert run.program[-4:-1] == [
        "flush()  -> raised IntegrityError",
        "delete(0)  -> ok None",
        "commit()  -> raised PendingRollbackError",
    ]


def test_divergence_a_delete_after_a_failed_flush_of_an_object_only_sqlalchemy_expired(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: inside a SAVEPOINT, parent 2's code is set again to the
    # value it has and parent 2 deleted; a new parent 4 (a key taken) makes the flush fail.
    # SQLAlchemy's SAVEPOINT rollback expires parent 2 (touched inside), retort's keeps it
    # loaded (unchanged). delete() of it again: SQLAlchemy's cascade needs a load, refused
    # until rollback(); retort's marks it without SQL
    run = _play(
        sides,
        admin_conn,
        [
            ("query", "Parent"),  # (parents 1 to 3: handles 0 to 2)
            ("merge_new", "Parent", 4, "a"),
            ("begin_nested",),
            ("set", 1, "code", None),
            ("delete", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("flush",),
            ("delete", 1),
        ],
    )
    assert run.program[-2] == "flush()  -> raised IntegrityError"
    assert run.program[-1] == (
        "delete(1)  -> raised PendingRollbackError / retort: ok None (improvement: an object "
        "only SQLAlchemy expired is not loadable after a failed flush)"
    )


def test_the_draw_faults_no_load_of_a_key_a_session_holds(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4, flushed and then expired by expire_all(), is
    # loaded again by SQLAlchemy's flush before its UPDATE and not by retort's; the fault
    # step's get(Parent, 4) answers from SQLAlchemy's identity map and loads (and fails) in
    # retort's
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("remove", 0, "parents", 0),
            ("new", "Child", 5, "a", "append", 1),
            ("expire_all",),
            ("remove", 0, "parents", 0),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.held_by_a_session("Parent", 4)
        assert not drawer.held_by_a_session("Parent", 9)
        with pytest.raises(Divergence, match="outcome of step 6"):
            run.step(("bad_sql", "Parent", 4))


def test_the_draw_merges_no_child_taken_from_a_parent_without_a_row(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 appended to new parent 4, rollback() (parent 4
    # transient), child 1 given parent_id 1 by hand, then taken out of parent 4's children.
    # merge(child 1) autoflushes its DELETE (an orphan, in both) and inserts a copy:
    # SQLAlchemy's with parent_id NULL (its backref had set the many-to-one to None), retort's
    # with the key set by hand
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("get", "Child", 1),
            ("new", "Tag", 3, "a", "add", None),
            ("new", "Parent", 4, "a", "add", None),
            ("move", 1, 3, "append"),
            ("rollback",),
            ("set", 1, "parent_id", 1),
            ("remove", 3, "children", 0),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.reaches([1], drawer.taken_from_a_parent_unrowed)
        assert not drawer.reaches([0], drawer.taken_from_a_parent_unrowed)
        run.step(("merge", 1))
        with pytest.raises(Divergence, match=r"loaded Child\.parent_id"):
            run.step(("flush",))


def test_the_draw_orphans_no_child_of_a_parent_expired_in_sqlalchemy_only(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 1's children are loaded inside a SAVEPOINT and its
    # code set again to the value it has; the SAVEPOINT's rollback expires parent 1 in
    # SQLAlchemy only. Child 1 given no parent: retort's flush deletes it (an orphan of
    # the children it was taken out of), SQLAlchemy's sets its parent_id to NULL
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Parent", 1),
            ("begin_nested",),
            ("read", 0, "children"),  # (children 1 and 2: handles 1 and 2)
            ("set", 0, "code", "x"),
            ("rollback_nested",),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        orphan = ("move", 1, None, "set")
        assert drawer.orphan_seen_by_one_library_only(orphan)
        assert not drawer.orphan_seen_by_one_library_only(("move", 1, 0, "set"))  # (a parent)
        assert run.step(orphan) is not None
        with pytest.raises(Divergence, match="state of handle 1"):
            run.step(("flush",))


def test_the_draw_orphans_no_child_of_a_parent_expired_in_retort_only(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 1's DELETE is flushed inside a SAVEPOINT (by merge()'s
    # autoflush), and the fault step rolls the SAVEPOINT back; tag 1 is deleted again and
    # flushed by a query's autoflush. Parent 1 is then loaded in SQLAlchemy (its flush read
    # it for the association rows) and expired in retort. Child 1 (loaded by a query, its
    # many-to-one unloaded) given no parent: SQLAlchemy's backref finds parent 1 without SQL
    # and its flush deletes the orphan; retort's knows no old parent without SQL and sets
    # parent_id to NULL
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Tag"),  # (tags 1 and 2: handles 0 and 1)
            ("begin_nested",),
            ("delete", 0),
            ("merge", 0),
            ("bad_sql", "Parent", 2),
            ("delete", 0),
            ("query", "Child"),  # (children 1 to 4: handles 3 to 6)
        ],
    ) as run:
        p1_sa, p1_rt = run.sa.held("Parent", 1), run.rt.held("Parent", 1)
        assert not run.sa.api.inspect(p1_sa).expired and run.rt.api.inspect(p1_rt).expired
        drawer = Drawer(None, run.sa, run.rt)
        orphan = ("move", 3, None, "set")
        assert drawer.orphan_seen_by_one_library_only(orphan)
        assert not drawer.orphan_seen_by_one_library_only(("move", 6, None, "set"))  # (none)
        assert run.step(orphan) is not None
        with pytest.raises(Divergence, match="state of handle 3"):
            run.step(("flush",))


def test_divergence_a_flush_of_a_value_set_again_on_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: inside a SAVEPOINT, new child 6 is inserted (an autoflush),
    # expunged, and loaded again by get() (another instance), given no parent (it has none);
    # the SAVEPOINT's rollback undoes the INSERT and expires the instance: SQLAlchemy's for
    # the parent set, retort's because its row is gone. Its name set again to the value it
    # had: SQLAlchemy's flush loads it and raises ObjectDeletedError; retort's sends the
    # UPDATE, which matches no row (before its rollback expired the instance, it had nothing
    # to flush)
    run = _play(
        sides,
        admin_conn,
        [
            ("begin_nested",),
            ("get", "Tag", 1),
            ("new", "Child", 5, "a", "add", None),
            ("new", "Child", 6, "a", "add", None),
            ("remove", 0, "parents", 0),
            ("expunge", 2),
            ("merge_new", "Child", 1, "a"),
            ("get", "Child", 6),
            ("move", 4, None, "set"),
            ("rollback_nested",),
            ("set", 4, "name", "a"),
            ("flush",),
        ],
    )
    assert run.program[-1] == (
        "flush()  -> raised ObjectDeletedError / retort: raised StaleDataError (improvement: a "
        "flush changing an object whose row is gone does not load it)"
    )


def test_harness_flushes_before_a_many_to_one_read_whose_target_one_library_holds(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new node 6, its parent_id set to 2 by hand and flushed, is
    # deleted; the autoflush of the next step deletes it, and SQLAlchemy's flush reads its
    # many-to-one by the key, loading node 2. Reading node 3's parent (node 2) then needs no
    # SQL in SQLAlchemy and a load (with an autoflush of the new child 5) in retort: the
    # harness flushes both first
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Tag"),
            ("get", "Node", 3),
            ("new", "Node", 5, "a", "set_parent_add", 2),
            ("new", "Node", 6, "a", "add", None),
            ("set", 4, "parent_id", 2),
            ("get", "Parent", 1),
            ("set", 3, "name", "a"),
            ("delete", 4),
            ("new", "Child", 5, "a", "append", 5),
        ],
    ) as run:
        assert run.sa.held_loaded("Node", 2) != run.rt.held_loaded("Node", 2)
        assert run.loads_in_one_library_only(("read", 2, "parent"))
        assert run.step(("read", 2, "parent")) is not None
        assert run.program[-2:] == ["flush()  -> ok None", "read(2, 'parent')  -> ok ('h', 7)"]


def test_the_draw_cascades_to_no_object_whose_delete_was_flushed(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 1, its children loaded (nodes 2 and 4), is expunged,
    # and node 4 deleted and flushed. A new node given node 1 as its parent and added
    # cascades to node 1 and, through its children, to node 4: SQLAlchemy refuses node 1
    # (its flush loaded another instance of its row), retort refuses node 4 (deleted); both
    # raise InvalidRequestError. SQLAlchemy's add keeps the new node it attached before the
    # error (pending), and its commit would insert it; retort's is all or nothing (SPEC §4),
    # and the new node stays transient: the improvement ends the program, which the draw
    # leaves out so as to go on
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Node"),  # (nodes 1 to 4: handles 0 to 3)
            ("remove", 0, "children", 0),  # (node 2)
            ("expunge", 0),
            ("delete", 3),
            ("flush",),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.reaches([0], drawer.deleted_outside_the_session)
        assert not drawer.reaches([2], drawer.deleted_outside_the_session)
        assert run.step(("new", "Node", 5, "a", "set_parent_add", 0)) is None
        assert run.sa.lifecycle(run.sa.handles[4]) == "pending"
        assert run.rt.lifecycle(run.rt.handles[4]) == "transient"
        assert not run.rt.session.new
    assert run.program[-1] == (
        "new('Node', 5, 'a', 'set_parent_add', 0)  -> raised InvalidRequestError (improvement: "
        "a save-update cascade that raises attaches nothing)"
    )


def test_the_draw_cascades_no_new_node_into_a_row_switch(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a new node with key 1, added, made transient by the
    # rollback of the fault step; node 1 marked deleted; node 2 given the new node as its
    # parent, whose backref cascade puts it in the session. The autoflush is a row switch:
    # SQLAlchemy's UPDATEs node 1's row, then DELETEs it too, refused as node 2 names it;
    # retort's UPDATE is the whole change (an improvement the draw leaves out, as for a new
    # object taking a deleted object's key)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 1, "a", "add", None),
            ("bad_sql", "Parent", 1),
            ("query", "Node"),  # (nodes 1 to 4: handles 1 to 4)
            ("delete", 1),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.reaches([2, 0], drawer.takes_a_deleted_key)
        assert not drawer.reaches([2, 3], drawer.takes_a_deleted_key)
        assert run.step(("node_parent", 2, 0)) is not None
        with pytest.raises(Divergence, match="outcome of step 5"):
            run.step(("query", "Node"))


def test_the_draw_unsets_no_parent_over_a_key_set_by_hand(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5 is inserted, given itself as its parent, then
    # parent_id 1 by hand, then no parent. SQLAlchemy, which never loaded the many-to-one,
    # counts None as a change and the autoflush of merge() writes NULL over the key set by
    # hand; retort knows the INSERT left no parent, sees no change and writes 1
    steps: list[Step] = [
        ("new", "Node", 5, "a", "add", None),
        ("flush",),
        ("node_parent", 0, 0),
        ("set", 0, "parent_id", 1),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.unsets_parent_over_a_key_set_by_hand(("node_parent", 0, None))
        assert not drawer.unsets_parent_over_a_key_set_by_hand(("node_parent", 0, 0))
        assert run.step(("node_parent", 0, None)) is not None
        with pytest.raises(Divergence, match=r"Node\.parent_id of handle 0"):
            run.step(("merge", 0))


def test_the_draw_switches_no_row_of_a_tag_linked_since_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new tag 1 is linked to new parent 4, and a rollback makes
    # both transient. merge() of the tag loads tag 1 and cascades to parent 4 (new, listing
    # the loaded tag 1). A second new tag 1 is added and the loaded one deleted: a row switch.
    # SQLAlchemy's flush inserts the association row (4, 1), linking the row the new tag
    # takes; retort's writes none to the tag it deletes. The draw leaves out such a delete
    steps: list[Step] = [
        ("get", "Child", 1),
        ("new", "Tag", 1, "a", "add", None),
        ("new", "Parent", 4, "a", "add", None),
        ("link", 2, 1, False),
        ("rollback",),
        ("merge", 1),  # (tag 1 loaded: handle 3)
        ("new", "Tag", 1, "a", "add", None),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.linked_since_flush(run.sa.handles[3])
        assert not drawer.linked_since_flush(run.sa.handles[4])
        assert not drawer.switched_tag(3)
        assert run.step(("delete", 3)) is not None
        assert drawer.switched_tag(3)
        with pytest.raises(Divergence, match="rows seen in the transaction after flush"):
            run.step(("flush",))


def test_the_draw_takes_no_child_out_of_children_its_key_names_elsewhere(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 1's children loaded (nodes 2 and 4), node 2 given
    # parent_id 2 by hand and flushed: node 1's children are stale. Taking node 2 out of them,
    # SQLAlchemy's backref loads node 2's many-to-one by its key (node 2 itself) and leaves it,
    # retort's sets it to None (both flushes then clear the key, for the removal)
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Node"),  # (nodes 1 to 4: handles 0 to 3)
            ("remove", 0, "children", 1),  # (node 4)
            ("set", 1, "parent_id", 2),
            ("get", "Parent", 1),  # (its autoflush)
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.removes_a_child_its_key_names_elsewhere(0, "children", 0)
        assert not drawer.removes_a_child_its_key_names_elsewhere(1, "children", 0)  # (empty)
        with pytest.raises(Divergence, match=r"loaded Node\.parent of handle 1"):
            run.step(("remove", 0, "children", 0))


def test_the_draw_puts_back_no_object_listing_members_a_rollback_unlinked(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (as a second entry of tag 3 in parent 5's tags): parent 5
    # and tag 3 (in its tags) are inserted by the flush of begin_nested(), with their
    # association row, and rollback() makes both new again, their collections as that flush
    # left them. Put back in the session (by child 6, through parent 4 and tag 3's parents),
    # retort's commit writes the row again, SQLAlchemy's does not
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Parent", 5, "a", "add", None),
            ("new", "Tag", 3, "a", "append", 1),
            ("begin_nested",),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert not drawer.lists_unwritten_members(run.sa.handles[1])  # (its row exists)
        for step in [("rollback",), ("link", 0, 2, False)]:
            assert run.step(step) is not None
        put_back = ("new", "Child", 6, "a", "set_parent_add", 0)
        assert drawer.lists_unwritten_members(run.sa.handles[1])
        assert drawer.lists_unwritten_members(run.sa.handles[2])
        # (parent 4's tag 3 was appended since: a change, written by both)
        assert not drawer.lists_unwritten_members(run.sa.handles[0])
        assert drawer.reaches(_objects(put_back), drawer.lists_unwritten_members)
        assert run.step(put_back) is not None
        with pytest.raises(Divergence, match="committed rows after commit"):
            run.step(("commit",))


def test_the_draw_attaches_no_object_holding_a_queue_a_rollback_passed_over(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 given no parent queues its removal from parent 1's
    # unloaded children; parent 1 is expunged, and rollback() undoes the change on child 1
    # (its parent is parent 1 again), not parent 1's queue. delete(parent 1) loads its
    # children: SQLAlchemy's applies the queued removal (child 2 only, though child 1's row
    # names parent 1), retort's lists children 1 and 2
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Parent"),  # (parents 1 to 3: handles 0 to 2)
            ("get", "Child", 1),
            ("move", 3, None, "set"),
            ("expunge", 0),
            ("rollback",),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.reaches([0], drawer.queued_past_rollback)
        assert not drawer.reaches([1], drawer.queued_past_rollback)
        assert not drawer.reaches([3], drawer.queued_past_rollback)  # (child 1: expired)
        with pytest.raises(Divergence, match=r"loaded Parent\.children of handle 0"):
            run.step(("delete", 0))


def test_the_draw_merges_no_collection_listing_a_member_twice(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: rollback() makes parent 4 and tag 3 (in its tags) transient;
    # tag 3 merged gives copies of both; tag 3 appended again to parent 4's tags, parent 4 is
    # merged: its copy lists tag 3's copy twice in both, and tag 3's copy lists parent 4's
    # copy once in SQLAlchemy, twice in retort
    steps: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("new", "Tag", 3, "a", "append", 0),
        ("rollback",),
        ("merge", 1),
        ("link", 0, 1, False),
    ]
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.reaches([0], drawer.lists_a_member_twice)
        assert not drawer.reaches([2], drawer.lists_a_member_twice)  # (the merged copies)
        with pytest.raises(Divergence, match=r"loaded Tag\.parents of handle 2"):
            run.step(("merge", 0))
    finally:
        for side in sides:
            side.close()
    # two objects of one key listed (merge() makes them one): the same
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 6, "a", "add", None),
            ("new", "Tag", 3, "b", "append", 0),
            ("new", "Tag", 3, "c", "append", 0),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.reaches([0], drawer.lists_a_member_twice)


def test_the_draw_deletes_no_node_just_given_as_a_parent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (a flaky find: SQLAlchemy's outcome changed on replay): node
    # 2, expired by a commit, is given node 1 (its parent) again, and node 1 is then deleted.
    # SQLAlchemy's flush copies node 1's key into node 2 and sets it to NULL for node 1's
    # DELETE in an order that changes between runs; retort's fails every time
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Node"),  # (nodes 1 to 4: handles 0 to 3)
            ("commit",),
            ("node_parent", 1, 0),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.parent_marked_deleted(("delete", 0))
        assert not drawer.parent_marked_deleted(("delete", 2))  # (node 3: nobody's new parent)
        assert not drawer.parent_marked_deleted(("delete", 1))
        _run(run.rt, ("delete", 0))
        with pytest.raises(retort.exc.IntegrityError, match="nodes_parent_id_fkey"):
            _run(run.rt, ("flush",))


def test_the_draw_sets_no_parent_id_of_an_object_marked_deleted(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (a flaky find: SQLAlchemy's outcome changed on replay): node
    # 6, committed and so expired, is marked deleted and given parent_id 2 by hand; node 2 is
    # deleted too (node 7 under node 6, and node 1 under node 5, make a cycle of the flush).
    # The flush reads node 6's many-to-one: retort's by the committed key (NULL: None),
    # SQLAlchemy's by the key set by hand (node 2) in most runs, as None or not at all in
    # the others
    # Likewise the other way round (also a nightly find): node 3's parent_id set to 1 by hand,
    # then node 3 deleted (node 1 too): retort's flush reads node 2, SQLAlchemy's node 1 or
    # node 2 from run to run; the draw leaves that delete() out
    with _stepped(
        sides,
        admin_conn,
        [("query", "Node"), ("set", 2, "parent_id", 1), ("delete", 0)],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.sets_key_of_an_object_marked_deleted(("delete", 2))
        assert not drawer.sets_key_of_an_object_marked_deleted(("delete", 1))
        for side in sides:
            _run(side, ("delete", 2))
            _run(side, ("flush",))
        assert run.rt.api.inspect(run.rt.handles[2]).dict["parent"] is run.rt.handles[1]
        sa_dict = run.sa.api.inspect(run.sa.handles[2]).dict
        assert sa_dict.get("parent", "unloaded") in (
            "unloaded",
            None,
            run.sa.handles[0],
            run.sa.handles[1],
        )
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("new", "Node", 6, "a", "add", None),
            ("commit",),
            ("query", "Node"),  # (nodes 1 to 4: handles 2 to 5)
            ("new", "Node", 7, "b", "set_parent", 1),
            ("node_parent", 2, 0),
            ("delete", 1),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        stale = ("set", 1, "parent_id", 2)
        assert drawer.sets_key_of_an_object_marked_deleted(stale)
        assert not drawer.sets_key_of_an_object_marked_deleted(("set", 0, "parent_id", 2))
        assert not drawer.sets_key_of_an_object_marked_deleted(("set", 1, "name", "z"))
        for side in sides:
            _run(side, stale)
            _run(side, ("delete", 3))
            _run(side, ("flush",))
        sa_node, rt_node = run.sa.handles[1], run.rt.handles[1]
        assert run.rt.api.inspect(rt_node).dict["parent"] is None
        assert rt_node.parent_id == 2
        # SQLAlchemy's: node 2 (by the key set by hand), None or unloaded, from run to run
        sa_dict = run.sa.api.inspect(sa_node).dict
        assert sa_dict.get("parent", "unloaded") in ("unloaded", None, run.sa.handles[3])


def test_improvement_an_object_added_again_after_a_rollback_keeps_its_parent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a new node under node 1 is flushed, then the flush of node
    # 1's delete nulls its parent_id; rollback() makes it transient, still holding node 1 as its
    # parent with parent_id None. Added again, SQLAlchemy inserts parent_id NULL (it copies a
    # parent's key only for a change of `parent`, and the rolled-back flush recorded that one);
    # retort inserts the key of the parent the object holds
    _lockstep(sides, admin_conn)
    for side in sides:
        m, s = side.models, side.session
        n1 = s.get(m.Node, 1)
        n5 = m.Node(id=5, name="n5", parent=n1)
        s.add(n5)
        s.flush()
        s.delete(n1)
        s.flush()
        s.rollback()
        assert side.lifecycle(n5) == "transient"
        assert n5.parent is n1 and n5.parent_id is None
        s.add(n5)
        s.commit()
    for side in sides:
        side.close()
    sa_nodes, rt_nodes = (fetch_rows(admin_conn, side.schema)["nodes"] for side in sides)
    assert (5, "n5", None) in sa_nodes
    assert (5, "n5", 1) in rt_nodes


def _linked_then_rolled_back(side: Side) -> tuple[Any, Any, Any]:
    """New parent 6 linked to new tag 7 and to tag 1, flushed (three INSERTs and two
    association rows), then rollback(): parent 6 and tag 7 are transient again, still listing
    each other (and parent 6 tag 1). Returns (parent 6, tag 7, tag 1)."""
    m, s = side.models, side.session
    p6, t7 = m.Parent(id=6, name="p6", code=None), m.Tag(id=7, label="t7")
    t1 = s.get(m.Tag, 1)
    p6.tags.extend([t1, t7])
    s.add(p6)
    s.flush()
    s.rollback()
    assert side.lifecycle(p6) == side.lifecycle(t7) == "transient"
    assert p6.tags == [t1, t7] and t7.parents == [p6]
    return p6, t7, t1


def test_improvement_an_object_added_again_after_a_rollback_keeps_its_many_to_many_members(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # parent 6 and tag 7, made transient by the rollback of the flush that linked them (and
    # parent 6 to tag 1), are added again: SQLAlchemy inserts both objects but no association
    # row (the collection's history is as the rolled-back flush left it: no change), so parent
    # 6 lists tags the database does not link; retort's collection is new again with its
    # object and the flush writes both rows
    _lockstep(sides, admin_conn)
    listed = {}
    for side in sides:
        p6, _, _ = _linked_then_rolled_back(side)
        s = side.session
        s.add(p6)
        s.commit()
        listed[side.name] = [t.id for t in p6.tags]  # (read again after the commit)
    for side in sides:
        side.close()
    sa_links, rt_links = (fetch_rows(admin_conn, side.schema)["parent_tags"] for side in sides)
    assert (6, 1) not in sa_links and (6, 7) not in sa_links
    assert (6, 1) in rt_links and (6, 7) in rt_links
    assert listed == {"sqlalchemy": [], "retort": [1, 7]}


def test_improvement_a_member_taken_out_after_a_rollback_undid_its_link_deletes_no_row(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # as above, but tag 1 is taken out of parent 6 after the rollback, and tag 7 is added again
    # by itself (its cascade adds parent 6, which its parents list). No row links tag 1 to
    # parent 6: the rollback undid it. SQLAlchemy's flush deletes it all the same, and raises
    # StaleDataError as the DELETE matches no row; retort's sends no DELETE, and writes the
    # row of tag 7
    _lockstep(sides, admin_conn)
    raised = {}
    for side in sides:
        p6, t7, t1 = _linked_then_rolled_back(side)
        s = side.session
        p6.tags.remove(t1)
        side.api.clear_log()
        s.add(t7)
        try:
            s.commit()
        except Exception as e:
            raised[side.name] = type(e).__name__
            s.rollback()
        deletes = [sql for sql in side.api.statements() if sql.lstrip().startswith("DELETE")]
        assert bool(deletes) == (side.name == "sqlalchemy")
    for side in sides:
        side.close()
    assert raised == {"sqlalchemy": "StaleDataError"}
    rt_links = fetch_rows(admin_conn, sides[1].schema)["parent_tags"]
    assert (6, 7) in rt_links and (6, 1) not in rt_links


def test_improvement_keys_are_copied_before_a_failed_flushs_first_statement(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # retort copies node 1's key into the new node before the flush's first statement;
    # SQLAlchemy's INSERT of the duplicate parent fails before it gets to the nodes. The
    # failed flush makes the node transient in both; added again, both insert it under node 1
    _lockstep(sides, admin_conn)
    held = {}
    for side in sides:
        m, s = side.models, side.session
        n1 = s.get(m.Node, 1)
        n5 = m.Node(id=5, name="n5", parent=n1)
        s.add_all([n5, m.Parent(id=1, name="dup", code=None)])
        with pytest.raises(side.api.IntegrityError):
            s.flush()
        assert side.lifecycle(n5) == "transient" and n5.parent is n1
        held[side.name] = n5.parent_id
        s.rollback()
        s.add(n5)
        s.commit()
    for side in sides:
        side.close()
    assert held == {"sqlalchemy": None, "retort": 1}
    for side in sides:
        assert (5, "n5", 1) in fetch_rows(admin_conn, side.schema)["nodes"]


def test_improvement_a_child_listed_twice_is_no_orphan_when_one_entry_goes(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a new child appended twice to its parent's collection is
    # listed twice (in both); given another parent, it leaves one entry. SQLAlchemy's has-parent
    # flag says it has no parent left, so it is expunged as a pending orphan (and never
    # inserted, with a warning at the flush); retort moves it to the new parent
    _lockstep(sides, admin_conn)
    states = {}
    for side in sides:
        m, s = side.models, side.session
        p4, p5 = m.Parent(id=4, name="p4", code=None), m.Parent(id=5, name="p5", code=None)
        c5 = m.Child(id=5, name="c5")
        p4.children.append(c5)
        s.add_all([p4, p5])
        p4.children.append(c5)
        assert p4.children == [c5, c5]
        c5.parent = p5
        assert p4.children == [c5] and p5.children == [c5]
        states[side.name] = side.lifecycle(c5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s.commit()
    for side in sides:
        side.close()
    assert states == {"sqlalchemy": "transient", "retort": "pending"}
    sa_children, rt_children = (fetch_rows(admin_conn, side.schema)["children"] for side in sides)
    assert all(r[0] != 5 for r in sa_children)
    assert (5, "c5", 5) in rt_children


def test_improvement_changing_a_deleted_object_is_an_error(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # delete() of parent 3 (no children) after its DELETE was flushed: SQLAlchemy accepts it
    # (the object goes back in the identity map, marked again; its next flush sends a DELETE
    # matching no row, with a warning), retort raises InvalidRequestError before any change
    run = _play(
        sides,
        admin_conn,
        [("get", "Parent", 3), ("delete", 0), ("flush",), ("delete", 0)],
    )
    assert run.program[3:] == [
        "delete(0)  -> ok None / retort: raised InvalidRequestError (improvement: changing an "
        "object already deleted raises)",
    ]
    assert [r[0] for r in fetch_rows(admin_conn, run.rt.schema)["parents"]] == [1, 2]


def test_improvement_an_object_inserted_again_after_a_rollback_is_persistent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 6 is inserted (with new parent 4) and deleted by two
    # flushes, and rollback() makes both transient again. Child 1 moved to parent 4 brings
    # parent 4 back into the session, and child 6 with it (still in its children); the flush
    # inserts both. SQLAlchemy's rollback left child 6's deleted flag set: it reports
    # 'deleted' though its identity map holds it and its row exists; retort's is persistent
    steps: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("new", "Child", 6, "a", "append", 0),
        ("flush",),
        ("delete", 1),
        ("flush",),
        ("rollback",),
        ("get", "Child", 1),
        ("move", 2, 0, "set"),
        ("flush",),
    ]
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps[:-1]:
            assert run.step(step) is not None
        assert run.step(steps[-1]) is None
        assert run.program[-1] == (
            "flush()  -> ok None (improvement: an object inserted again after a rollback "
            "undid its delete is persistent)"
        )
        sa_child, rt_child = run.sa.handles[1], run.rt.handles[1]
        assert run.sa.lifecycle(sa_child) == "deleted" and sa_child in run.sa.session
        assert run.rt.lifecycle(rt_child) == "persistent" and rt_child in run.rt.session
        # the rows agree: both inserted child 6, SQLAlchemy's object misreports its state
        for side in sides:
            assert (6, "a", 4) in side.transaction_rows()["children"]
    finally:
        for side in sides:
            side.close()


def test_divergence_an_instance_loaded_of_a_row_inserted_stays_persistent_after_rollback(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: merge() of transient parent 4 (child 5 in its children)
    # adds copies of both, which begin_nested() flushes. Parent 4's code set to the value it
    # holds changes it in SQLAlchemy only, so the SAVEPOINT's rollback expires it there, its
    # children go, and child 5's copy (no handle refers to it) is freed; the query loads child
    # 5 as another instance. rollback() then makes transient what SQLAlchemy's session knows
    # it inserted: the freed copy, not the instance loaded since, which stays persistent
    # although its row is gone. Retort's parent is unchanged and keeps its children, so the
    # query finds the inserted copy, which the rollback makes transient
    steps: list[Step] = [
        ("new", "Child", 5, "a", "add", None),
        ("new", "Parent", 4, "a", "add", None),
        ("bad_sql", "Parent", 1),
        ("move", 0, 1, "append"),
        ("merge", 1),
        ("begin_nested",),
        ("set", 2, "code", None),
        ("rollback_nested",),
        ("query", "Child"),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        child = run.sa.handles.index(run.sa.held("Child", 5))
        assert run.step(("rollback",)) is None
        assert run.program[-1] == (
            "rollback()  -> ok None (improvement: a rollback leaves no persistent object of a "
            "row it removed)"
        )
        assert run.sa.lifecycle(run.sa.handles[child]) == "persistent"
        assert run.rt.lifecycle(run.rt.handles[child]) == "transient"
        for side in sides:
            assert all(r[0] != 5 for r in fetch_rows(admin_conn, side.schema)["children"])
        with pytest.raises(Exception) as err:
            run.sa.handles[child].name  # noqa: B018
        assert type(err.value).__name__ == "ObjectDeletedError"


@pytest.mark.parametrize("case", ["listed-since-a-rollback", "linked-then-deleted"])
def test_improvement_a_deleted_objects_association_rows_go_and_none_is_written_to_it(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], case: str
) -> None:
    # listed-since-a-rollback (found by the nightly search): parent 1 is taken out of tag 1's
    # parents and the flush deletes their row; tag 1 is expunged, and the rollback restores
    # the row. Appended again (tag 1 outside the session, so nothing is written), parent 1
    # counts as added in tag 1's parents, and the flush of tag 1's DELETE in SQLAlchemy
    # deletes no row for it and fails on the foreign key; retort's deletes the row.
    # linked-then-deleted: parent 2 appended to tag 1's parents, then tag 1 deleted:
    # SQLAlchemy's flush inserts the row (2, 1) and fails on the foreign key; retort's writes
    # no row to the tag it deletes
    steps: list[Step] = (
        [
            ("get", "Tag", 1),
            ("remove", 0, "parents", 0),
            ("flush",),
            ("get", "Parent", 1),
            ("expunge", 0),
            ("rollback",),
            ("link", 1, 0, True),
            ("flush",),
            ("delete", 0),
        ]
        if case == "listed-since-a-rollback"
        else [("get", "Tag", 1), ("get", "Parent", 2), ("link", 1, 0, True), ("delete", 0)]
    )
    with _stepped(sides, admin_conn, steps) as run:
        assert run.step(("flush",)) is None
        assert run.program[-1] == (
            "flush()  -> raised IntegrityError / retort: ok None (improvement: a deleted "
            "object's association rows go, and none is written to it)"
        )
        assert run.rt.transaction_rows()["parent_tags"] == [(1, 2), (2, 2)]


def test_divergence_a_new_object_takes_the_key_of_a_changed_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (FlakyStrategyDefinition): node 5 is flushed, expunged and
    # merged back (a second instance, persistent); the rollback makes the first transient and
    # leaves the second expired with its row gone. The second is given the first as its parent
    # (the cascade adds the first, pending), and an autoflush inserts it. SQLAlchemy's flush
    # also sends the gone node's UPDATE (parent_id 5), which the new row takes, and warns
    # that its identity map had the key already: which instance it keeps changes between
    # runs. Retort's marks the gone node deleted and inserts the new one with no parent
    steps: list[Step] = [
        ("new", "Node", 5, "a", "add", None),
        ("merge_new", "Parent", 1, "a"),
        ("expunge", 0),
        ("merge", 0),
        ("rollback",),
        ("node_parent", 2, 0),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert run.step(("new", "Child", 5, "a", "append", 1)) is None
        assert run.program[-1] == (
            "new('Child', 5, 'a', 'append', 1)  -> ok None (improvement: a new object takes the "
            "key of a changed object whose row is gone)"
        )
        assert run.rt.lifecycle(run.rt.handles[2]) == "deleted"
        assert run.rt.lifecycle(run.rt.handles[0]) == "persistent"
        assert (5, "a", None) in run.rt.transaction_rows()["nodes"]


def test_improvement_delete_of_a_deleted_object_refused_by_both_changes_nothing(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 1's DELETE is flushed with its children's; new child
    # 1 takes a deleted child's key. delete() of parent 1 again raises InvalidRequestError in
    # both: retort's at once, SQLAlchemy's from its delete cascade, which reaches the deleted
    # child 1 (still in parent 1's loaded children) after the identity map took parent 1 back
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Parent", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("delete", 0),
            ("query", "Parent"),
            ("new", "Child", 1, "a", "add", None),
            ("query", "Parent"),
            ("delete", 0),
        ],
    )
    assert run.program[6:] == [
        "delete(0)  -> raised InvalidRequestError (improvement: changing an object already "
        "deleted raises)",
    ]
    rows = fetch_rows(admin_conn, run.rt.schema)
    assert [r[0] for r in rows["parents"]] == [2, 3, 4]
    assert (1, "a", None) in rows["children"]


def test_improvement_a_delete_cascade_passes_over_an_object_already_deleted(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a child deleted and flushed stays in its parent's loaded
    # collection; delete() of the parent cascades to it. SQLAlchemy's cascade puts it back in
    # the identity map and marks it deleted again, and its flush sends a second DELETE for the
    # row, which matches nothing (with a warning); retort passes over it
    _lockstep(sides, admin_conn)
    marked, warned = {}, {}
    for side in sides:
        m, s = side.models, side.session
        p1, c1 = s.get(m.Parent, 1), s.get(m.Child, 1)
        assert c1 in p1.children
        s.delete(c1)
        s.flush()
        s.delete(p1)
        marked[side.name] = (c1 in s, c1 in s.deleted, side.lifecycle(c1))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s.commit()
        warned[side.name] = [str(w.message)[:40] for w in caught]
    for side in sides:
        side.close()
    assert marked == {"sqlalchemy": (True, True, "deleted"), "retort": (False, False, "deleted")}
    assert warned == {"sqlalchemy": ["DELETE statement on table 'children' exp"], "retort": []}
    for side in sides:
        rows = fetch_rows(admin_conn, side.schema)
        assert [r[0] for r in rows["parents"]] == [2, 3]
        assert [r[0] for r in rows["children"]] == [3, 4]


def test_improvement_a_delete_cascade_passes_over_an_object_deleted_by_a_row_switch(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 is deleted and a new child 1 appended to parent 1,
    # so that the flush switches the row to the new object; child 1 stays in the loaded
    # children. delete() of parent 1 cascades to it: SQLAlchemy puts it back in the identity
    # map, which holds the new child 1 (InvalidRequestError); retort passes over it
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Parent", 1),
            ("read", 0, "children"),
            ("delete", 1),
            ("new", "Child", 1, "a", "append", 0),
            ("flush",),
        ],
    ) as run:
        assert run.step(("delete", 0)) is None
        run.rt.session.commit()
    assert run.program[-1] == (
        "delete(0)  -> raised InvalidRequestError / retort: ok None (improvement: a delete "
        "cascade passes over an object already deleted (its key taken))"
    )
    assert [r[0] for r in fetch_rows(admin_conn, run.rt.schema)["children"]] == [3, 4]


def test_improvement_an_object_unchanged_inside_a_savepoint_stays_loaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a child appended to the collection of the parent it has
    # (the backref sets its parent to the same one) inside a SAVEPOINT, then a flush fails
    # there. SQLAlchemy expires it (an attribute event marked it modified), and reading it
    # raises PendingRollbackError until the SAVEPOINT is rolled back; retort did not change it
    # and leaves it loaded. The same for a column set again to the value it has
    for name, steps in (
        ("c1", [("get", "Child", 1), ("get", "Parent", 1), ("begin_nested",)]),
        ("a", [("get", "Child", 1), ("set", 0, "name", "a"), ("flush",), ("begin_nested",)]),
    ):
        again = ("move", 0, 1, "append") if name == "c1" else ("set", 0, "name", "a")
        duplicate = ("new", "Parent", 1, "a", "add", None)
        run = _play(sides, admin_conn, [*steps, again, duplicate, ("flush",), ("read", 0, "name")])
        assert "IntegrityError" in run.program[-2]
        assert run.program[-1].endswith(
            f"raised PendingRollbackError / retort: ok {name!r} (improvement: an object unchanged "
            "inside a SAVEPOINT stays loaded after its rollback)"
        )
        assert fetch_rows(admin_conn, run.rt.schema)["children"][0] == (1, name, 1)


def test_improvement_get_of_an_object_unchanged_inside_a_failed_savepoint(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 5, flushed, is given the code it has inside a
    # SAVEPOINT whose flush then fails; SQLAlchemy expired it, so get() of it loads and raises
    # PendingRollbackError, retort answers from the identity map
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 5, "a", "add", None),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("set", 0, "code", None),
            ("flush",),
            ("get", "Parent", 5),
        ],
    )
    assert run.program[-1] == (
        "get('Parent', 5)  -> raised PendingRollbackError / retort: ok 0 (improvement: an object "
        "unchanged inside a SAVEPOINT stays loaded after its rollback)"
    )


def test_improvement_append_to_an_object_unchanged_inside_a_failed_savepoint(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 1 (code 'x') is given code 'x' inside a SAVEPOINT,
    # whose flush then fails on a new parent 1. SQLAlchemy expires parent 1 (its children
    # included), so the append must load them and is refused; retort's parent 1 is unchanged
    # and keeps its children loaded
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Parent", 1),
            ("read", 0, "children"),
            ("begin_nested",),
            ("set", 0, "code", "x"),
            ("new", "Parent", 1, "a", "add", None),
            ("flush",),
            ("new", "Child", 5, "a", "append", 0),
        ],
    )
    assert run.program[-2] == "flush()  -> raised IntegrityError"
    assert run.program[-1] == (
        "new('Child', 5, 'a', 'append', 0)  -> raised PendingRollbackError / retort: ok None "
        "(improvement: an object unchanged inside a SAVEPOINT stays loaded after its rollback)"
    )


def test_improvement_an_object_unchanged_inside_a_rolled_back_savepoint_is_not_reloaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # SQLAlchemy's SAVEPOINT rollback expires an object whose column was set again to the
    # value it had (or whose parent a backref set to the one it has), so reading it loads it,
    # autoflushing first; retort's leaves it loaded, and reading it flushes nothing. The
    # lockstep harness flushes both before such a read (Lockstep.loads_in_one_library_only)
    _lockstep(sides, admin_conn)
    seen = {}
    for side in sides:
        m, s = side.models, side.session
        c1, p1 = s.get(m.Child, 1), s.get(m.Parent, 1)
        c2 = s.get(m.Child, 2)
        sp = s.begin_nested()
        c1.name = "c1"
        p1.children.append(c2)  # the backref sets c2.parent to p1, which it has
        sp.rollback()
        p4 = m.Parent(id=4, name="p4", code=None)
        s.add(p4)
        seen[side.name] = [
            sorted(a for a in ("name", "parent_id") if a in side.api.inspect(c).unloaded)
            for c in (c1, c2)
        ]
        assert (c1.name, c2.name) == ("c1", "c2")
        seen[side.name].append(side.lifecycle(p4))
        s.rollback()
    for side in sides:
        side.close()
    assert seen == {
        "sqlalchemy": [["name", "parent_id"], ["name", "parent_id"], "persistent"],
        "retort": [[], [], "pending"],
    }


def test_improvement_an_object_loaded_from_a_row_a_savepoint_inserted_is_expired(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # child 5, inserted inside a SAVEPOINT, is expunged, and its row loaded into another
    # instance. The SAVEPOINT's rollback removes the row: retort expires that instance (reading
    # it raises ObjectDeletedError); SQLAlchemy's keeps showing the row, unless merge() loaded
    # it (an attribute event marks it modified, and the rollback expires it), where both agree
    # (a nightly find, when retort's stayed loaded too)
    inserted = [
        ("begin_nested",),
        ("new", "Child", 5, "a", "add", None),
        ("flush",),
        ("expunge", 0),
    ]
    run = _play(sides, admin_conn, [*inserted, ("get", "Child", 5), ("rollback_nested",)])
    assert run.program[-1] == (
        "rollback_nested()  -> ok None (improvement: an object whose row a SAVEPOINT's "
        "rollback removed is expired)"
    )
    steps = [*inserted, ("merge", 0), ("rollback_nested",), ("read", 1, "name")]
    run = _play(sides, admin_conn, steps)
    assert run.program[-2:] == [
        "read(1, 'name')  -> raised ObjectDeletedError",
        "commit()  -> ok None",
    ]


def test_improvement_a_flush_loads_no_expired_parent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (through a child given a parent and not added): SQLAlchemy's
    # flush of a new child loads its expired parent to read its key, retort's does not need to
    # (the key of an object is never expired in retort). get() of the parent then finds it
    # expired in retort only, whose refresh autoflushes what is pending. The lockstep harness
    # flushes both before such a get() (Lockstep.loads_in_one_library_only)
    _lockstep(sides, admin_conn)
    seen = {}
    for side in sides:
        m, s = side.models, side.session
        p1 = s.get(m.Parent, 1)
        s.expire_all()
        s.add(m.Child(id=5, name="c5", parent=p1))
        s.flush()
        expired = side.api.inspect(p1).expired
        p4 = m.Parent(id=4, name="p4", code=None)
        s.add(p4)
        assert s.get(m.Parent, 1) is p1
        seen[side.name] = (expired, side.lifecycle(p4))
        s.rollback()
    for side in sides:
        side.close()
    assert seen == {"sqlalchemy": (False, "pending"), "retort": (True, "persistent")}


def test_divergence_a_key_is_copied_into_a_node_outside_the_session(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: an object given a parent and not added (the backref does
    # not cascade) stays outside the session, and a flush copies the parent's key into it all
    # the same (writing nothing): SQLAlchemy does for a Child, and for a Node only where the
    # parent's children are loaded (its self-referential flush goes state by state, over the
    # loaded collections); retort always does. The draw reads no such node's parent_id
    # (Side.fk_unsettled)
    _lockstep(sides, admin_conn)
    keys = {}
    for side in sides:
        m, s = side.models, side.session
        p1, n1 = s.get(m.Parent, 1), s.get(m.Node, 1)
        n3 = s.get(m.Node, 3)
        list(n3.children)
        c5 = m.Child(id=5, name="c5", parent=p1)
        n5, n6 = m.Node(id=5, name="n5", parent=n1), m.Node(id=6, name="n6", parent=n3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy: not in session, will not proceed
            s.flush()
        keys[side.name] = (c5.parent_id, n5.parent_id, n6.parent_id)
        assert [side.lifecycle(o) for o in (c5, n5, n6)] == ["transient"] * 3
    for side in sides:
        side.close()
    assert keys == {"sqlalchemy": (1, None, 3), "retort": (1, 1, 3)}


def test_divergence_a_key_is_copied_into_a_detached_node(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as in the test above, for a node expunged and then given a
    # parent (handle 1, node 2, whose children are not loaded): get()'s autoflush copies node
    # 2's key into it in retort only. Side.fk_unsettled leaves its parent_id out of the
    # comparison, and the draw reads it not
    run = _play(
        sides,
        admin_conn,
        [
            ("query", "Node"),
            ("expunge", 0),
            ("node_parent", 0, 1),
            ("get", "Tag", 1),
        ],
    )
    assert not _improved(run)
    assert [side.handles[0].parent_id for side in sides] == [None, 2]
    assert run.sa.fk_unsettled(run.sa.handles[0])  # (the harness asks SQLAlchemy's side)


def test_divergence_a_key_is_copied_into_a_node_made_transient_by_a_rollback(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5 is inserted with no parent (parent_id NULL, loaded),
    # then made transient by a rollback, and given node 1 as a parent (whose children are not
    # loaded): get()'s autoflush copies node 1's key into it in retort only, as in
    # test_divergence_a_key_is_copied_into_a_node_outside_the_session. Side.fk_unsettled
    # leaves its parent_id out of the comparison, and the draw reads it not
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("node_parent", 0, None),
            ("get", "Node", 1),
            ("rollback",),
            ("node_parent", 0, 1),
            ("get", "Tag", 1),
        ],
    )
    assert not _improved(run)
    assert [side.handles[0].parent_id for side in sides] == [None, 1]
    assert run.sa.fk_unsettled(run.sa.handles[0])  # (the harness asks SQLAlchemy's side)


def test_divergence_a_key_is_copied_into_a_node_whose_parent_a_rollback_expired(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: transient node 5 is given new node 6 as a parent (flushed
    # by begin_nested, its children not loaded); the next begin_nested's flush copies node
    # 6's key into it in retort only, as in the tests above. The rollback expires node 6 in
    # SQLAlchemy (changed inside the SAVEPOINT) and makes it transient: its key is unknown
    # there, and Side.fk_unsettled counts node 5's parent_id unsettled all the same
    run = _play(
        sides,
        admin_conn,
        [
            ("merge_new", "Parent", 1, "a"),
            ("new", "Node", 5, "a", "add", None),
            ("rollback",),
            ("new", "Node", 6, "a", "add", None),
            ("set", 1, "parent_id", None),
            ("begin_nested",),
            ("node_parent", 1, 2),
            ("begin_nested",),
            ("rollback",),
        ],
    )
    assert not _improved(run)
    assert [side.handles[1].parent_id for side in sides] == [None, 6]
    assert "id" not in run.sa.handles[2].__dict__
    assert run.sa.fk_unsettled(run.sa.handles[1])


def test_a_member_taken_out_outside_the_session_and_cascaded_in_is_a_pending_orphan(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 and its child 6 are inserted, then made transient
    # by the rollback; the child is taken out of the parent (child.parent = None) in no session.
    # Linking the parent to pending tag 3 cascades to the parent, and from it to the child taken
    # out (the collection's pending history): pending in both libraries, and an orphan that the
    # flush expunges
    steps: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("new", "Child", 6, "a", "append", 0),
        ("flush",),
        ("rollback",),
        ("new", "Tag", 3, "a", "add", None),
        ("move", 1, None, "set"),
        ("link", 0, 2, True),
    ]
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        assert [side.lifecycle(side.handles[1]) for side in sides] == ["pending"] * 2
        assert run.step(("flush",)) is not None
        assert [side.lifecycle(side.handles[1]) for side in sides] == ["transient"] * 2
        run.finish()
    finally:
        for side in sides:
            side.close()


def test_harness_an_object_expired_before_a_rollback_made_it_transient_has_no_key_in_sqlalchemy(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: merge() of transient child 7 (of transient parent 4) adds
    # copies of both; the child's copy is expunged, the flush inserts parent 4's copy (and
    # copies its key into the child's), expire_all() expires it and the rollback makes it
    # transient. SQLAlchemy's copy holds no key (expired, it cannot load one), retort's keeps
    # 4 (its expiry keeps the primary key): the child's copy names that parent in both, which
    # the harness compares with the key unknown
    steps: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("new", "Child", 7, "a", "append", 0),
        ("rollback",),
        ("merge", 1),
        ("expunge", 2),
        ("flush",),
        ("expire_all",),
        ("rollback",),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        sa_parent = run.sa.handles[2].__dict__["parent"]
        rt_parent = run.rt.handles[2].__dict__["parent"]
        assert run.sa.norm(sa_parent) == ("o", "Parent", _UNKNOWN_KEY)
        assert run.rt.norm(rt_parent) == ("o", "Parent", 4)
        assert run.sa.api.inspect(sa_parent).transient
        assert run.rt.api.inspect(rt_parent).transient
    # the comparison takes the key as unknown there only
    assert _unknown_keys_as(("o", "Parent", _UNKNOWN_KEY), ("o", "Parent", 4)) == (
        "o",
        "Parent",
        _UNKNOWN_KEY,
    )
    assert _unknown_keys_as(("o", "Parent", _UNKNOWN_KEY), ("o", "Tag", 4)) == ("o", "Tag", 4)
    assert _unknown_keys_as([("o", "Parent", 3)], [("o", "Parent", 4)]) == [("o", "Parent", 4)]


def test_the_draw_merges_no_key_set_by_hand_onto_an_expired_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 is inserted with no parent, its many-to-one read
    # (None) and the child expunged; its parent_id is set to 1 by hand. merge() of it onto the
    # row's object the identity map holds expired: SQLAlchemy's merge counts the many-to-one
    # None as a change (its old value unknown), and the flush copies None over the key set by
    # hand; retort's counts no change (None was the committed value) and writes 1, as both do
    # where the object merged onto was loaded. The draw leaves that merge out
    steps: list[Step] = [
        ("new", "Child", 5, "a", "add", None),
        ("flush",),
        ("read", 0, "parent"),
        ("expunge", 0),
        ("set", 0, "parent_id", 1),
        ("get", "Child", 5),
        ("expire_all",),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.merges_a_key_set_by_hand(run.sa.handles[0])
        assert run.step(("merge", 0)) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match=r"Child\.parent_id of handle 1"):
            run.step(("flush",))


def test_the_draw_merges_no_parentless_child_onto_an_expired_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a transient child 5 whose many-to-one is set to None,
    # and a persistent child 5 of parent 1 (delete-orphan), expired by a commit; parent 1 is
    # loaded again (read through child 6). merge() of the transient copy onto child 5:
    # SQLAlchemy's merge copies None onto the expired object without knowing the old parent,
    # and its flush sets parent_id to NULL; retort's takes child 5 out of parent 1's
    # children, as SQLAlchemy's merge onto a loaded child 5 does, and its flush deletes the
    # orphan. The draw leaves that merge out
    steps: list[Step] = [
        ("query", "Node"),  # (handles 0 to 3)
        ("new", "Child", 5, "a", "add", None),
        ("move", 4, None, "set"),
        ("rollback",),  # (child 5, handle 4, is transient)
        ("get", "Parent", 1),
        ("new", "Child", 5, "a", "append", 5),
        ("new", "Child", 6, "a", "append", 5),
        ("commit",),
        ("read", 7, "parent"),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.merges_no_parent_onto_an_expired_child(run.sa.handles[4])
        assert not drawer.merges_no_parent_onto_an_expired_child(run.sa.handles[7])
        assert run.step(("merge", 4)) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match="state of handle 6"):
            run.step(("remove", 0, "children", 0))  # (its lazy load's autoflush)


def test_the_draw_merges_no_deleted_object_whose_parent_sqlalchemy_holds_as_none(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 (of parent 1) is deleted, and the autoflush of
    # get() of parent 1 sends its DELETE before loading parent 1. SQLAlchemy's flush reads the
    # deleted child's many-to-one from the identity map, which does not hold parent 1, and
    # stores None; retort's leaves it unloaded. merge() of the child adds a new child 1
    # copying what is loaded: SQLAlchemy's copy takes parent None for a change and its flush
    # inserts parent_id NULL, retort's inserts the parent_id 1 it holds. The draw leaves that
    # merge out
    steps: list[Step] = [
        ("get", "Child", 1),
        ("commit",),
        ("set", 0, "parent_id", 1),
        ("delete", 0),
        ("get", "Parent", 1),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert run.sa.api.inspect(run.sa.handles[0]).dict.get("parent", "unloaded") is None
        assert "parent" not in run.rt.api.inspect(run.rt.handles[0]).dict
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.deleted_many_to_one_may_differ(run.sa.handles[0])
        assert run.step(("merge", 0)) is not None  # (what the draw leaves out)
        with pytest.raises(
            Divergence, match=r"outcome of step 6\n  sqlalchemy: \"ok \[\('h', 3\)\]"
        ):
            run.step(("read", 1, "children"))  # (SQLAlchemy's lists child 2 only)


def test_the_draw_merges_no_deleted_object_without_a_parent_retort_reads_as_none(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new child 5 (no parent) is inserted and deleted; the
    # autoflush of merge() sends its DELETE, before which retort's flush reads its many-to-one
    # (None: parent_id is NULL) into it; SQLAlchemy's leaves it unloaded. The merge adds a new
    # child 5 copying what is loaded: retort's copy takes parent None for a change, which its
    # flush writes over a parent_id set by hand since; SQLAlchemy's inserts that parent_id. The
    # draw leaves that merge out
    steps: list[Step] = [
        ("new", "Child", 5, "a", "add", None),
        ("get", "Parent", 1),  # (its autoflush inserts child 5)
        ("delete", 0),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert "parent" not in run.rt.api.inspect(run.rt.handles[0]).dict
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.deleted_many_to_one_may_differ(run.sa.handles[0])
        assert run.step(("merge", 0)) is not None  # (what the draw leaves out)
        assert run.rt.api.inspect(run.rt.handles[0]).dict.get("parent", "unloaded") is None
        assert "parent" not in run.sa.api.inspect(run.sa.handles[0]).dict
        assert run.step(("set", 2, "parent_id", 1)) is not None
        with pytest.raises(
            Divergence, match=r"parent_id of handle 2 .*\n  sqlalchemy: 1\n  retort:     None"
        ):
            run.step(("flush",))


def test_the_draw_merges_no_object_made_transient_after_its_delete_read_its_parent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as in the test above, child 5 is inserted and deleted, and
    # the flush of its DELETE reads its many-to-one (None) in retort only; then a rollback
    # undoes both, and the transient child keeps what it holds. A merge() of it adds a copy
    # that takes retort's None for a change, and writes NULL over the parent_id set by hand
    # since, which SQLAlchemy's copy inserts. The draw leaves that merge out too
    steps: list[Step] = [
        ("new", "Child", 5, "a", "add", None),
        ("flush",),
        ("delete", 0),
        ("flush",),
        ("rollback",),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert [side.lifecycle(side.handles[0]) for side in sides] == ["transient"] * 2
        assert run.rt.api.inspect(run.rt.handles[0]).dict.get("parent", "unloaded") is None
        assert "parent" not in run.sa.api.inspect(run.sa.handles[0]).dict
        assert Drawer(None, run.sa, run.rt).deleted_many_to_one_may_differ(run.sa.handles[0])
        assert run.step(("set", 0, "parent_id", 1)) is not None
        assert run.step(("merge", 0)) is not None  # (what the draw leaves out)
        with pytest.raises(
            Divergence, match=r"parent_id of handle 1 .*\n  sqlalchemy: 1\n  retort:     None"
        ):
            run.step(("flush",))


def test_the_draw_merges_no_column_known_to_retort_only_onto_another_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 is inserted with no parent (retort knows its
    # parent_id is NULL, SQLAlchemy leaves it unloaded) and made transient by the rollback,
    # then appended to transient parent 4. merge() of it adds copies of both; a second merge()
    # of it (whose autoflush inserts them, the child's copy with parent_id 4) copies the
    # columns it holds: retort's parent_id None too, SQLAlchemy's copy keeps 4. The draw
    # leaves the second merge out
    steps: list[Step] = [
        ("new", "Child", 5, "a", "add", None),
        ("flush",),
        ("rollback",),
        ("new", "Parent", 4, "a", "add", None),
        ("rollback",),
        ("move", 0, 1, "append"),
        ("merge", 0),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.columns_loaded_by_retort_only_onto_another(run.sa.handles[0])
        assert not drawer.columns_loaded_by_retort_only_onto_another(run.sa.handles[2])
        with pytest.raises(Divergence, match=r"Child\.parent_id of handle 2"):
            run.step(("merge", 0))  # (what the draw leaves out)


def test_the_draw_expunges_no_parent_whose_children_one_library_holds_loaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 1's children are loaded (new child 5 appended);
    # inside a SAVEPOINT its code is set to the value it has, and the SAVEPOINT is rolled
    # back: SQLAlchemy's expires parent 1 (and its children), retort's keeps it loaded.
    # expunge() of parent 1 then takes child 5 out of retort's session only. The draw leaves
    # that expunge out
    steps: list[Step] = [
        ("merge_new", "Parent", 1, "a"),
        ("new", "Child", 5, "a", "append", 0),
        ("begin_nested",),
        ("set", 0, "code", "x"),
        ("rollback_nested",),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.children_loaded_in_one_library_only(0)
        assert not drawer.children_loaded_in_one_library_only(1)
        with pytest.raises(Divergence, match=r"state of handle 1 \(Child\)"):
            run.step(("expunge", 0))  # (what the draw leaves out)


def test_improvement_a_cycle_of_a_parent_given_back_writes_nothing(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 2's parent_id is set to 3 by hand and flushed (node 3
    # names node 2), and node 3 is given no parent, then node 2, its parent again. The
    # autoflush of an append to new parent 4's tags (inserted by an earlier autoflush):
    # SQLAlchemy counts node 3's parent as a change and fails on the cycle of the two nodes;
    # retort's session holds node 3 unchanged, and its flush writes nothing
    steps: list[Step] = [
        ("get", "Tag", 1),
        ("new", "Parent", 4, "a", "add", None),
        ("query", "Node"),  # (nodes 1 to 4: handles 2 to 5)
        ("set", 3, "parent_id", 3),
        ("read", 4, "children"),
        ("node_parent", 4, None),
        ("node_parent", 4, 3),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert run.step(("link", 1, 0, False)) is None
        assert run.program[-1].startswith("link(1, 0, False)  -> raised CircularDependencyError")
        assert run.program[-1].endswith(
            "/ retort: ok None (improvement: cycle through a nullable foreign key (nothing to "
            "write))"
        )
        nodes = run.rt.transaction_rows()["nodes"]
        assert (2, "n2", 3) in nodes and (3, "n3", 2) in nodes


def test_the_draw_sets_no_key_where_only_sqlalchemy_counts_a_parent_change(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 6 is inserted with no parent (SQLAlchemy leaves its
    # parent_id unloaded, retort knows it is NULL), then given parent None: a change to
    # SQLAlchemy (old value unknown), none to retort (old value None). With parent_id then set
    # to 1 by hand, SQLAlchemy's flush writes NULL (the relationship's change), retort's 1.
    # The draw leaves that set out
    steps: list[Step] = [
        ("new", "Child", 6, "a", "add", None),
        ("get", "Parent", 4),
        ("move", 0, None, "set"),
    ]
    key: Step = ("set", 0, "parent_id", 1)
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.parent_change_differs(0)
        assert run.step(key) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match=r"Child\.parent_id of handle 0"):
            run.step(("flush",))
    finally:
        for side in sides:
            side.close()


def test_the_draw_unsets_no_stale_parent_only_retort_holds(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5, inserted inside a SAVEPOINT, is given parent None
    # (which it has: a change to SQLAlchemy only, whose INSERT left parent_id unloaded), and
    # the SAVEPOINT is rolled back (a failed statement): SQLAlchemy expires the child, retort
    # keeps it loaded. Its parent_id set to 1 by hand is flushed; retort's many-to-one still
    # holds None (stale, as SQLAlchemy's does for a loaded one). Setting it to None is a
    # change to SQLAlchemy only, whose flush writes NULL over the key. The draw leaves that
    # set out
    steps: list[Step] = [
        ("new", "Child", 5, "a", "add", None),
        ("begin_nested",),
        ("move", 0, None, "set"),
        ("new", "Parent", 4, "a", "add", None),
        ("bad_sql", "Parent", 1),
        ("set", 0, "parent_id", 1),
        ("get", "Parent", 4),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        unset: Step = ("move", 0, None, "set")
        assert drawer.unsets_a_stale_none_parent_retort_alone_holds(unset)
        assert not drawer.unsets_a_stale_none_parent_retort_alone_holds(("move", 0, 1, "set"))
        assert run.step(unset) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match=r"Child\.parent_id of handle 0"):
            run.step(("flush",))


def test_the_draw_links_no_member_again_where_one_side_is_queued(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (FlakyStrategyDefinition): tag 1 is appended twice to
    # parent 2's loaded tags, its own parents not loaded (expired by the commit: the backref
    # queues the append). SQLAlchemy's flush inserted the association row twice in some runs
    # (parent_tags_pkey, the "member given twice" improvement, which stops the program) and
    # once in others, by the order in which it takes the two sides from a set. The draw leaves
    # the second link out; here (fewer objects in the flush) SQLAlchemy's order fails it
    steps: list[Step] = [
        ("get", "Parent", 2),
        ("get", "Tag", 1),
        ("commit",),
        ("link", 0, 1, False),
    ]
    run = _lockstep(sides, admin_conn)
    try:
        drawer = Drawer(None, run.sa, run.rt)
        for step in steps:
            assert run.step(step) is not None
            if step[0] == "commit":
                assert not drawer.links_again_one_side_queued(0, 1)  # (not related yet)
        assert drawer.links_again_one_side_queued(0, 1)
        assert run.step(("link", 0, 1, False)) is not None  # (what the draw leaves out)
        assert run.step(("flush",)) is None
        assert "a member given twice is one association row" in run.program[-1]
    finally:
        for side in sides:
            side.close()


def test_the_draw_takes_out_no_entry_of_a_member_listed_twice(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new parent 4 is appended twice to tag 1's parents (listed
    # twice; the autoflush of get() writes the association row), then one entry is taken out.
    # Parent 4 is still listed, and retort's flush keeps the row; SQLAlchemy's backref queues
    # the removal on parent 4's unloaded tags, and its flush deletes the row. The draw leaves
    # that removal out
    steps: list[Step] = [
        ("get", "Tag", 1),
        ("new", "Parent", 4, "a", "add", None),
        ("link", 1, 0, True),
        ("link", 1, 0, True),
        ("get", "Parent", 2),
    ]
    remove: Step = ("remove", 0, "parents", 1)
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.removes_a_member_listed_twice(*remove[1:])
        assert not drawer.removes_a_member_listed_twice(0, "parents", 0)  # (parent 1, once)
        assert run.step(remove) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match=r"rows seen in the transaction after flush"):
            run.step(("flush",))
    finally:
        for side in sides:
            side.close()


def test_the_draw_moves_no_object_whose_old_parent_only_sqlalchemy_holds_loaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: after a commit, node 4's children are read (a load of node
    # 4, parent_id 1), and node 1 is deleted: SQLAlchemy's delete() loads node 1, retort's
    # leaves it expired. Given node 2 as its parent, node 4 leaves node 1's children in
    # SQLAlchemy only (each finds the old parent in the identity map if it is not expired),
    # so that the collection the DELETE's flush loads lists it in retort's only. The draw
    # leaves that move out
    steps: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("query", "Node"),
        ("commit",),
        ("new", "Node", 5, "a", "set_parent_add", 1),
        ("remove", 4, "children", 0),
        ("delete", 1),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.old_parent_known_differs(4)
        assert not drawer.old_parent_known_differs(5)
        assert run.step(("node_parent", 4, 2)) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match=r"Node\.children of handle 1"):
            run.step(("merge", 0))


def test_the_draw_moves_no_object_whose_old_parent_only_sqlalchemy_knows(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1, expired and renamed, is flushed by the autoflush
    # of a load that brings parent 1 in. SQLAlchemy's flush loads the child's row before its
    # UPDATE, retort's sends the UPDATE by the key it knows. Given parent None, SQLAlchemy's
    # backref finds parent 1 by the loaded parent_id and takes the child out of its
    # delete-orphan children (the flush deletes it); retort's knows no old parent and writes
    # NULL. The draw leaves that move out
    steps: list[Step] = [
        ("get", "Child", 1),
        ("merge_new", "Tag", 1, "a"),
        ("expire_all",),
        ("set", 0, "name", "a"),
        ("remove", 1, "parents", 0),
    ]
    move: Step = ("move", 0, None, "set")
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.old_parent_known_differs(0)
        assert run.step(move) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match=r"state of handle 0 \(Child\)"):
            run.step(("flush",))
    finally:
        for side in sides:
            side.close()


def test_divergence_a_detached_object_only_sqlalchemys_flush_loaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5, expired by the commit, is appended to parent 4's
    # children; SQLAlchemy's flush loads it before its UPDATE, retort's sends the UPDATE by its
    # key and leaves it expired. Expunged, its name reads in SQLAlchemy only (retort raises
    # DetachedInstanceError). The draw leaves that read out
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("new", "Parent", 4, "a", "add", None),
            ("commit",),
            ("move", 0, 1, "append"),
            ("flush",),
            ("expunge", 0),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.detached_loaded_differs(0, "name")
        assert not drawer.detached_loaded_differs(1, "name")  # (not detached)
        with pytest.raises(Divergence, match="DetachedInstanceError"):
            run.step(("read", 0, "name"))


def test_divergence_merge_copies_a_none_retorts_insert_wrote_for_a_column_never_set(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (through a rollback that made the node transient): node 5
    # is inserted without a parent_id. SQLAlchemy's flush leaves parent_id out of its
    # __dict__ (it reads None, unloaded), retort's holds the None it wrote. Expunged, merged
    # after another instance gave the row a parent, it copies that None in retort only. The
    # draw leaves such merges out
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("flush",),
            ("expunge", 0),
            ("get", "Node", 5),
            ("set", 1, "parent_id", 1),
            ("flush",),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.merge_copies_a_written_none(0)
        assert not drawer.merge_copies_a_written_none(1)  # (parent_id loaded in both)
        with pytest.raises(Divergence, match=r"Node\.parent_id of handle 1"):
            run.step(("merge", 0))


def test_improvement_a_member_given_twice_then_a_refresh_of_a_deleted_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new tag 3 is linked to new parent 4 twice, and node 5 is
    # marked deleted, then refreshed. SQLAlchemy's autoflush inserts the association row twice
    # and fails (IntegrityError); retort's inserts one, deletes node 5, and the refresh finds
    # no row (InvalidRequestError, as SQLAlchemy's refresh of an object whose row is gone)
    steps: list[Step] = [
        ("new", "Node", 5, "a", "add", None),
        ("commit",),
        ("new", "Tag", 3, "a", "add", None),
        ("new", "Parent", 4, "a", "add", None),
        ("link", 2, 1, False),
        ("link", 2, 1, False),
        ("delete", 0),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert run.step(("refresh", 0, None)) is None
        assert run.program[-1] == (
            "refresh(0, None)  -> raised IntegrityError / retort: raised InvalidRequestError "
            "(improvement: a member given twice is one association row (then a deleted object's "
            "refresh))"
        )
        rows = run.rt.transaction_rows()
        assert (4, 3) in rows["parent_tags"]
        assert 5 not in [n[0] for n in rows["nodes"]]


def test_improvement_a_refresh_naming_a_node_parent_loads_it(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 2 is expunged and node 3's parent refreshed by name:
    # retort's refresh loads node 2 again (a new instance), SQLAlchemy's leaves the parent
    # unloaded; attaching the expunged node 2 then conflicts with the instance in retort's
    # identity map only. The program stops at the refresh
    steps: list[Step] = [("query", "Node"), ("expunge", 1)]
    with _stepped(sides, admin_conn, steps) as run:
        assert run.step(("refresh", 2, "parent")) is None
        assert run.program[-1] == (
            "refresh(2, 'parent')  -> ok None (improvement: a refresh naming a "
            "self-referential many-to-one loads it)"
        )


def test_a_child_moved_to_a_parent_outside_the_session_is_no_stale_many_to_one(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5, flushed under parent 4, is appended to parent 5,
    # which a SAVEPOINT's rollback put outside the session, and taken out of parent 4's
    # children. Its many-to-one, set by that append's back reference (no history), names
    # parent 5 while its key still names parent 4: a move, not a read before a flush gave the
    # key (test_a_child_taken_out_naming_a_stale_loaded_parent_loses_its_key), and the child
    # is no orphan of parent 4 (retort's flush deleted it; both keep it)
    steps: list[Step] = [
        ("new", "Tag", 3, "a", "add", None),
        ("new", "Parent", 4, "a", "add", None),
        ("get", "Parent", 4),
        ("new", "Child", 5, "a", "add", None),
        ("set", 0, "label", "a"),
        ("move", 2, 1, "append"),
        ("begin_nested",),
        ("new", "Child", 1, "a", "append", 1),
        ("new", "Parent", 5, "a", "add", None),
        ("bad_sql", "Parent", 1),
        ("move", 2, 4, "append"),
        ("remove", 1, "children", 0),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert run.step(("flush",)) is not None
        assert [side.lifecycle(side.handles[2]) for side in (run.sa, run.rt)] == [
            "persistent",
            "persistent",
        ]


def test_a_child_taken_out_naming_a_stale_loaded_parent_loses_its_key(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 4's many-to-one reads node 1 (loaded with node 1's
    # children, inside a SAVEPOINT rolled back since); its parent_id is set to 2 by hand, and
    # the autoflush of loading node 2's children writes it, so node 2's children list it.
    # Taken out there, SQLAlchemy's flush clears its key (its parent tracking records no
    # parent for node 4: the many-to-one was loaded, not set). Retort's found node 4 moved to
    # node 1 and kept the key (a divergence the program stopped at); its key names node 2,
    # so the many-to-one is stale, and retort's flush clears the key too
    steps: list[Step] = [
        ("query", "Node"),  # (nodes 1 to 4: handles 0 to 3)
        ("begin_nested",),
        ("delete", 3),
        ("remove", 0, "children", 0),
        ("rollback_nested",),
        ("node_parent", 2, None),
        ("set", 3, "parent_id", 2),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert run.step(("remove", 1, "children", 0)) is not None
        assert run.step(("flush",)) is not None
        assert run.sa.handles[3].parent_id is None
        assert run.rt.handles[3].parent_id is None


def test_the_draw_expires_no_object_with_a_relationship_change(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (reported flaky): child 5, pending under parent 3 and
    # flushed, is moved to parent 2 and expired; SQLAlchemy's next flush deleted it as parent
    # 3's orphan in one run of four, retort's keeps it. The draw expires (or refreshes) no
    # object a relationship change since the last flush involves
    steps: list[Step] = [
        ("query", "Parent"),  # (parents 1 to 3: handles 0 to 2)
        ("read", 2, "children"),
        ("new", "Child", 5, "a", "set_parent_add", 2),
        ("flush",),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        child = len(run.sa.handles) - 1
        assert not drawer.relationship_changed(child)
        assert run.step(("move", child, 1, "set")) is not None
        assert drawer.relationship_changed(child)
        assert drawer.relationship_changed(2)  # (parent 3's children lost it)
        assert not drawer.relationship_changed(0)
        assert run.step(("flush",)) is not None
        assert not drawer.relationship_changed(child)


def test_the_draw_reads_nothing_loaded_in_one_library_only_after_a_failed_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (reported flaky): inside a SAVEPOINT, a flush that nulls node
    # 6's key (its parent deleted) fails on another row; retort's failed flush, which copies
    # every key before its first statement, expired node 6, SQLAlchemy's in some runs only (the
    # order of its tables follows a set). Taking a child out of node 6's children, loaded
    # before, then raised PendingRollbackError in retort only. Here one library's expiry is
    # made by hand, after a failure of both
    steps: list[Step] = [
        ("query", "Node"),  # (nodes 1 to 4: handles 0 to 3)
        ("read", 0, "children"),
        ("read", 1, "children"),
        ("begin_nested",),
        ("new", "Parent", 1, "a", "add", None),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        step: Step = ("remove", 0, "children", 0)
        run.rt.session.expire(run.rt.handles[0], ["children"])
        assert not drawer.loads_in_one_after_a_failure(step)  # (no failure yet)
        flushed = run.step(("flush",))  # (parent 1's key is taken)
        assert flushed is not None and not flushed.ok
        assert drawer.loads_in_one_after_a_failure(step)
        assert not drawer.loads_in_one_after_a_failure(("remove", 1, "children", 0))
        with pytest.raises(Divergence, match="PendingRollbackError"):
            run.step(step)


def test_an_object_whose_last_column_is_expired_by_name_is_not_expired_as_a_whole(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 1, marked deleted, has its label (its only column but
    # the key) expired by name. Retort took it for expired as a whole (every column but the
    # key missing), and the flush of its DELETE loaded it; SQLAlchemy's does not, and merge()
    # then copies no label into the new object it makes (the row is gone), whose INSERT fails
    # on the NOT NULL label. Now neither loads it, and both flushes fail
    with _stepped(sides, admin_conn, [("get", "Tag", 1), ("get", "Parent", 1)]) as run:
        for step in [("delete", 0), ("expire", 0, "label"), ("merge", 0)]:
            assert run.step(step) is not None
        for side in sides:
            assert "label" not in side.handles[0].__dict__
        outcome = run.step(("flush",))
        assert outcome is not None and outcome.value == "IntegrityError"
    assert not _improved(run)


def test_divergence_a_deleted_object_only_sqlalchemys_flush_loaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5, expired, is renamed; the flush of begin_nested()
    # sends its UPDATE, which SQLAlchemy's flush loads it for (its key is expired) and
    # retort's sends by the key it knows. Deleted, its DELETE flushed by the autoflush of a
    # collection load, it holds parent_id in SQLAlchemy only: reading it answers there, and
    # loads in retort, whose autoflush fails on a new parent 1 (and with nothing to flush,
    # the load finds no row: ObjectDeletedError). The draw leaves that read out
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("get", "Parent", 1),
            ("expire_all",),
            ("set", 0, "name", "b"),
            ("begin_nested",),
            ("delete", 0),
            ("remove", 1, "children", 0),
            ("new", "Parent", 1, "a", "add", None),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert run.sa.lifecycle(run.sa.handles[0]) == "deleted"
        assert drawer.detached_loaded_differs(0, "parent_id")
        assert not drawer.detached_loaded_differs(0, "name")  # (loaded in both)
        assert not drawer.detached_loaded_differs(1, "name")  # (persistent)
        with pytest.raises(Divergence, match="UniqueViolation"):
            run.step(("read", 0, "parent_id"))  # (what the draw leaves out)


def test_divergence_a_column_only_sqlalchemys_flush_loaded_read_after_a_failed_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1, expired by the commit, is given no parent; the
    # flush of begin_nested() sends its UPDATE, which SQLAlchemy's flush loads it for and
    # retort's sends by the key it knows. A flush fails inside the SAVEPOINT: reading child 1's
    # name answers in SQLAlchemy, and must load in retort, which the session refuses
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Child", 1),
            ("commit",),
            ("move", 0, None, "set"),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("flush",),
            ("read", 0, "name"),
        ],
    )
    assert run.program[-1] == (
        "read(0, 'name')  -> ok 'c1' / retort: raised PendingRollbackError (improvement: an "
        "object only SQLAlchemy's flush loaded is not loadable after it failed)"
    )


def test_divergence_a_merge_of_an_object_only_sqlalchemys_flush_loaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as above, child 5 is loaded by SQLAlchemy's flush of its
    # UPDATE only. Deleted, then merged (whose autoflush deletes its row): the merge copies it
    # into a new object, with its name in SQLAlchemy, without it in retort, whose INSERT then
    # fails on the NOT NULL name. The draw leaves that merge out
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("new", "Parent", 4, "a", "add", None),
            ("commit",),
            ("move", 0, 1, "append"),
            ("flush",),
            ("delete", 0),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.columns_loaded_by_sqlalchemy_only(run.sa.handles[0])
        assert not drawer.columns_loaded_by_sqlalchemy_only(run.sa.handles[1])
        assert run.step(("merge", 0)) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match="NotNullViolation"):
            run.step(("flush",))


def test_retort_alone_check_passes_over_values_both_libraries_hold(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 1, renamed by a flush inside a SAVEPOINT, is expunged;
    # the SAVEPOINT's rollback undoes the UPDATE but not the detached object's value, which a
    # cascade attaches again: both libraries hold "a" for a row named "n1"
    with _stepped(
        sides,
        admin_conn,
        [
            ("begin_nested",),
            ("get", "Node", 1),
            ("set", 0, "name", "a"),
            ("flush",),
            ("expunge", 0),
            ("rollback_nested",),
            ("new", "Node", 7, "b", "set_parent_add", 0),
            ("flush",),
            ("read", 0, "name"),
        ],
    ) as run:
        assert run.program[-1] == "read(0, 'name')  -> ok 'a'"
        run.check_retort_alone()
        # where retort's object alone holds a value the rows do not, the check fails
        run.rt.handles[0].__dict__["name"] = "z"
        with pytest.raises(AssertionError, match="'z'"):
            run.check_retort_alone()


def test_the_draw_gives_no_node_a_parent_marked_deleted(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (a flaky find: SQLAlchemy's outcome changed on replay):
    # node 4, a child of node 2, is given node 2 again after delete(node 2)
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Node", 4),
            ("get", "Node", 2),
            ("node_parent", 0, 1),
            ("commit",),
            ("delete", 1),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        again = ("node_parent", 0, 1)
        assert drawer.parent_marked_deleted(again)
        assert not drawer.parent_marked_deleted(("node_parent", 1, 0))
        assert not drawer.parent_marked_deleted(("node_parent", 0, None))
        # retort's flush sets node 4's key to NULL for node 2's DELETE, then copies node 2's
        # key along node 4's changed many-to-one: the database refuses the DELETE, every time
        _run(run.rt, again)
        with pytest.raises(retort.exc.IntegrityError, match="nodes_parent_id_fkey"):
            _run(run.rt, ("flush",))


def test_the_draw_reads_no_many_to_one_a_failed_flush_read_for_a_delete(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (a flaky find: SQLAlchemy's outcome changed on replay): the
    # delete of parent 1 autoflushes new child 5, which holds its key, and cascades to it;
    # the flush of those DELETEs fails on new parent 2's key, and its rollback makes child 5
    # new again. SQLAlchemy's flush read the many-to-one of one of children 1, 2 and 5
    # (whichever its set yields first), retort's of all three
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "b", "add", None),
            ("set", 0, "parent_id", 1),
            ("get", "Parent", 1),
            ("delete", 1),
            ("set", 0, "parent_id", None),  # (the flush reads against the committed key)
            ("new", "Parent", 2, "p", "add", None),
        ],
    ) as run:
        assert run.rt.marked_deleted_once == {0, 1}  # (child 5 and parent 1)
        flushed = run.step(("flush",))
        assert flushed is not None and flushed.value == "IntegrityError"
        drawer = Drawer(None, run.sa, run.rt)
        read = ("read", 0, "parent")
        assert drawer.parent_read_by_a_failed_delete(read)
        assert not drawer.parent_read_by_a_failed_delete(("read", 0, "name"))
        assert not drawer.parent_read_by_a_failed_delete(("read", 1, "children"))
        assert run.rt.lifecycle(run.rt.handles[0]) == "transient"  # (its INSERT undone)
        # retort's flush read it, against the committed key; SQLAlchemy's did in some runs
        assert _run(run.rt, read) == ("h", 1)
        assert _run(run.sa, read) in (None, ("h", 1))


def test_a_child_taken_out_while_persistent_made_new_and_cascaded_in_is_a_pending_orphan(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 (handle 3) is taken out of new parent 4's children
    # after a flush; a failed flush makes both transient; new child 6 given parent 4 and added
    # brings in parent 4 and, through its children taken out, child 5: a pending orphan, which
    # the autoflush of the merge() expunges before the session refuses it
    # (test_bug_an_orphan_made_new_by_a_rollback_and_cascaded_in_is_expunged)
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Child", 5, "a", "append", 1),
            ("merge_new", "Parent", 1, "a"),
            ("move", 2, None, "set"),
            ("new", "Child", 1, "a", "add", None),
            ("move", 2, 3, "append"),
            ("new", "Child", 6, "a", "set_parent_add", 1),
            ("merge", 0),
        ],
    )
    assert run.program[7:9] == [
        "new('Child', 6, 'a', 'set_parent_add', 1)  -> ok None",
        "merge(0)  -> raised PendingRollbackError",
    ]
    assert run.rt.lifecycle(run.rt.handles[2]) == "transient"


def test_a_pending_orphan_expunged_and_cascaded_in_again_is_expunged_again(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 (handle 3), made new by a rollback, is taken out of
    # new parent 4's children, both outside the session; a new child given parent 4 brings
    # them in, child 5 as a pending orphan, which the failing flush expunges; a child of the
    # session given parent 4 brings them in again, and the flush after the failure expunges
    # child 5 again before it refuses
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Child", 5, "a", "append", 0),
            ("merge_new", "Child", 1, "a"),
            ("rollback",),
            ("move", 1, None, "set"),
            ("new", "Child", 1, "a", "set_parent_add", 0),
            ("flush",),
            ("move", 2, 0, "set"),
            ("flush",),
        ],
    )
    assert run.program[6:9] == [
        "flush()  -> raised IntegrityError",
        "move(2, 0, 'set')  -> ok None",
        "flush()  -> raised PendingRollbackError",
    ]
    assert run.rt.lifecycle(run.rt.handles[1]) == "transient"


def test_improvement_a_value_set_again_makes_no_orphan_of_a_child_of_no_parent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 4 (no parent in its row) is appended to new parent 4,
    # a rollback makes parent 4 new again (its children still list child 4), child 4 is taken
    # out of them, then given no parent (the value it has)
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("query", "Child"),
            ("move", 4, 0, "append"),
            ("rollback",),
            ("read", 4, "name"),
            ("remove", 0, "children", 0),
            ("move", 4, None, "set"),
            ("flush",),
        ],
    )
    assert run.program[-1] == (
        "flush()  -> ok None (improvement: a value set again is no change (no orphan of a "
        "child that had no parent))"
    )
    assert (4, "c4", None) in fetch_rows(admin_conn, run.rt.schema)["children"]


def test_a_read_of_a_column_expired_before_a_failed_flush_undid_the_insert_needs_rollback(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is inserted, its name expired, and an autoflush
    # fails (a new parent 1 takes a key that has a row): the rollback undid parent 4's INSERT.
    # A child's cascade adds it again; reading its name raises PendingRollbackError in both
    # (SQLAlchemy's load would need SQL). Retort raised its "expired before a rollback undid
    # the INSERT" error first, which it raises once the session is rolled back
    steps: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("flush",),
        ("new", "Parent", 1, "a", "add", None),
        ("expire", 0, "name"),
        ("get", "Parent", 1),
        ("new", "Child", 1, "a", "set_parent_add", 0),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        outcome = run.step(("read", 0, "name"))
        assert outcome is not None and outcome.value == "PendingRollbackError"
        assert run.step(("rollback",)) is not None
        with pytest.raises(retort.exc.InvalidRequestError, match="expired before a rollback"):
            run.rt.handles[0].name  # noqa: B018
    # after the rollback (found next): SQLAlchemy's read autoflushes, and fails on another
    # new parent 1; retort's refuses the read first
    with _stepped(sides, admin_conn, [*steps[:5], ("rollback",), *steps[5:], steps[2]]) as run:
        assert run.step(("read", 0, "name")) is None
        assert run.program[-1].endswith(
            "(improvement: a read of a value unknown since a rollback is refused before the "
            "autoflush)"
        )


def test_improvement_a_unique_value_changing_hands_then_a_change_to_the_deleted_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 3 (code y) is deleted and parent 1 given code y; a
    # tag appended to parent 3's tags loads them. SQLAlchemy's autoflush sends the UPDATE
    # before the DELETE and fails on the unique code; retort's deletes first and succeeds,
    # and the append to parent 3, whose DELETE it ran, is refused. Likewise for an append of
    # a deleted tag to parent 1's tags, and for an append to the parents of a deleted tag,
    # expired before (ObjectDeletedError: its load finds no row)
    steps: list[Step] = [
        ("get", "Parent", 1),
        ("get", "Parent", 3),
        ("get", "Tag", 1),
        ("delete", 1),
        ("set", 0, "code", "y"),
    ]
    for extra, link, gone in [
        ([], ("link", 1, 2, False), 1),
        ([("delete", 2)], ("link", 0, 2, False), 2),
        ([("expire", 2, None), ("delete", 2)], ("link", 0, 2, True), 2),
    ]:
        with _stepped(sides, admin_conn, [*steps, *extra]) as run:
            assert run.step(link) is None
            assert run.program[-1].endswith(
                "(improvement: unique value changing hands in one flush (then a deleted "
                "object's change refused))"
            )
            assert run.rt.lifecycle(run.rt.handles[gone]) == "deleted"
            assert (1, "p1", "y") in run.rt.transaction_rows()["parents"]


def test_harness_stops_where_a_delete_cascade_marks_a_child_just_given_a_parent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parents 1 and 2 are loaded (tag 2's), new parent 4 is made
    # transient by a rollback, and child 1 appended to its children; parent 1's children,
    # loaded after the rollback had expired parent 1 (the queued removal of child 1 went with
    # the expiry, in both libraries), still list child 1. A tag's cascade attaches parent 4,
    # and parent 1 is deleted: its cascade marks child 1 deleted. Retort's flush deletes it,
    # SQLAlchemy's UPDATEs it (child 1 is among parent 4's added children) and deletes it in
    # the next flush: the accepted divergence of test_improvement_delete_of_an_object_just_
    # given_a_parent_is_honoured. The program stops at the delete
    steps: list[Step] = [
        ("get", "Tag", 2),
        ("new", "Parent", 4, "a", "add", None),
        ("get", "Child", 1),
        ("read", 0, "parents"),  # (parents 1 and 2: handles 3 and 4)
        ("rollback",),
        ("move", 2, 1, "append"),
        ("read", 3, "children"),
        ("link", 1, 0, True),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.added_to_a_collection(2)  # (of parent 4, outside at the autoflush)
        assert not run.cascade_marked_a_child_just_given_a_parent(3)
        assert run.step(("delete", 3)) is None
        assert run.program[-1].endswith(
            "(improvement: a cascade deletes a child just given a parent)"
        )
        states = []
        for side in (run.sa, run.rt):
            side.session.flush()
            states.append(side.lifecycle(side.handles[2]))
        assert states == ["persistent", "deleted"]
        run.sa.session.flush()
        assert run.sa.lifecycle(run.sa.handles[2]) == "deleted"


def test_the_draw_deletes_no_child_a_parent_outside_the_session_gained(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 is appended to the children of parent 5, made
    # transient by a rollback; the flush writes nothing for the relation, and parent 5's
    # children still count child 1 as gained. Child 1 is deleted, and parent 5 attached again
    # by the cascade of child 5's many-to-one: the autoflush of merge() UPDATEs child 1 in
    # SQLAlchemy (its one-to-many dependency cancels the delete of a child it adds, the
    # accepted divergence of test_improvement_delete_of_an_object_just_given_a_parent_is_
    # honoured) and deletes it in retort. The draw leaves that delete out
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Parent", 5, "a", "add", None),
            ("rollback",),
            ("get", "Child", 1),
            ("new", "Child", 5, "a", "add", None),
            ("move", 2, 1, "append"),
            ("flush",),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.added_to_a_collection(2)
        assert not drawer.just_given_a_parent(2) and not drawer.queued_in_a_collection(2)
        assert not drawer.added_to_a_collection(3)
        for step in [
            ("delete", 2),  # (what the draw leaves out)
            ("move", 3, 1, "set"),
        ]:
            assert run.step(step) is not None
        with pytest.raises(Divergence, match="state of handle 2"):
            run.step(("merge", 0))


def test_the_draw_deletes_no_child_queued_for_the_children_of_a_parent_outside_the_session(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 is given parent 4, which is expunged; the flush
    # writes nothing for the relation, and parent 4 still queues child 5 for its unloaded
    # children. Child 5 is deleted, and parent 4 attached again by a tag's cascade: the
    # autoflush of a load of its children UPDATEs child 5 in SQLAlchemy (its one-to-many
    # dependency cancels the delete of a child it adds, the accepted divergence of
    # test_improvement_delete_of_an_object_just_given_a_parent_is_honoured) and deletes it in
    # retort. The draw leaves that delete out
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("new", "Child", 6, "a", "add", None),
            ("new", "Parent", 4, "a", "add", None),
            ("flush",),
            ("move", 0, 2, "set"),
            ("expunge", 2),
            ("flush",),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.queued_in_a_collection(0) and not drawer.just_given_a_parent(0)
        assert not drawer.queued_in_a_collection(1)
        for step in [
            ("delete", 0),  # (what the draw leaves out)
            ("new", "Tag", 3, "a", "add", None),
            ("link", 2, 3, True),
        ]:
            assert run.step(step) is not None
        with pytest.raises(Divergence, match="state of handle 0"):
            run.step(("move", 1, 2, "append"))


def test_the_draw_merges_no_key_that_a_failed_flush_left_unsettled(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new child 1 (handle 2, child 1's key) is appended to new
    # parent 4; a flush fails (on parent 1's key), after retort copied parent 4's key into the
    # child and before SQLAlchemy did, and the rollback makes both transient. merge() of
    # parent 4 cascades to the child and copies its parent_id onto child 1 (handle 1): 4 in
    # retort, none in SQLAlchemy (which sets child 1's parent instead, for the flush to copy).
    # The draw leaves the merge out
    steps: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("get", "Child", 1),
        ("new", "Child", 1, "a", "append", 0),
        ("new", "Parent", 1, "a", "add", None),
        ("merge_new", "Parent", 1, "a"),
        ("rollback",),
    ]
    merge: Step = ("merge", 0)
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        # the key the failed flush copied into new child 1 in retort (before the flush's first
        # statement; SQLAlchemy's had not got to it): the draw asks no more, as SQLAlchemy's
        # order, and so whether it had, changes between runs
        assert run.rt.keys_moved_by_a_failed_flush == {2}
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.reaches(_objects(merge), drawer.unsettled_key_differs)
        assert not drawer.reaches([1], drawer.unsettled_key_differs)
        run.rt.keys_moved_by_a_failed_flush.clear()  # (what SQLAlchemy holds decides, then)
        assert drawer.reaches(_objects(merge), drawer.unsettled_key_differs)
        with pytest.raises(Divergence, match=r"loaded Child\.parent_id of handle 1"):
            run.step(merge)  # (what the draw leaves out)
    finally:
        for side in sides:
            side.close()


@pytest.mark.parametrize(
    "attach",
    [
        # delete() of the detached child attaches it
        [("delete", 0)],
        # parent 4, made transient by the rollback, is added again by a new tag's cascade,
        # which follows the child it lost since the last flush
        [("new", "Tag", 3, "a", "add", None), ("link", 1, 2, True)],
    ],
    ids=["delete", "cascade"],
)
def test_the_draw_attaches_no_object_whose_key_a_failed_flush_left_unsettled(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], attach: list[Step]
) -> None:
    # found by the nightly search: child 1, flushed into parent 4's children, is given parent
    # None (an orphan), then parent 4 is deleted and the child expunged. The flush fails (the
    # child's row still names parent 4); SQLAlchemy's had cleared the parent_id of the child
    # taken out of the deleted parent's children, retort's left the child, outside the
    # session, alone. A step attaching the detached child again has its parent_id compared:
    # None in SQLAlchemy, 4 in retort. The draw leaves that step out
    steps: list[Step] = [
        ("get", "Child", 1),
        ("new", "Parent", 4, "a", "add", None),
        ("move", 0, 1, "append"),
        ("merge_new", "Child", 1, "a"),
        ("move", 0, None, "set"),
        ("delete", 1),
        ("expunge", 0),
        ("flush",),
        *attach[:-1],
    ]
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        assert run.program[7] == "flush()  -> raised IntegrityError"
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.reaches(_objects(attach[-1]), drawer.unsettled_key_differs)
        if len(attach) > 1:
            assert not drawer.reaches([2], drawer.unsettled_key_differs)  # (the new tag alone)
        with pytest.raises(Divergence, match=r"loaded Child\.parent_id of handle 0"):
            run.step(attach[-1])  # (what the draw leaves out)
    finally:
        for side in sides:
            side.close()


def test_harness_flushes_before_a_get_of_a_key_one_library_holds_only(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: SQLAlchemy's flush of a node's DELETE had loaded node 1
    # (still held then), which retort's did not need; get(Node, 1) then loaded in retort
    # only, whose autoflush inserted parent 4 first. A get() of a key one identity map holds
    # loaded and the other does not makes the harness flush both first
    run = _lockstep(sides, admin_conn)
    try:
        assert run.step(("new", "Parent", 4, "a", "add", None)) is not None
        get: Step = ("get", "Node", 1)
        assert not run.loads_in_one_library_only(get)
        with run.sa.session.no_autoflush:
            node = run.sa.session.get(run.sa.models.by_name("Node"), 1)  # (held below)
        assert run.loads_in_one_library_only(get)
        assert run.step(get) is not None
        assert run.program[-2:] == ["flush()  -> ok None", "get('Node', 1)  -> ok 1"]
        assert node is run.sa.handles[1]
    finally:
        for side in sides:
            side.close()


def test_harness_keeps_a_detached_twin_both_collections_list(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 is expunged, parent 1 deleted (its delete cascade
    # loads another instance of child 1), and the detached child 1 given parent 1: the backref
    # appends it to parent 1's loaded children in both libraries, beside the loaded instance.
    # After the flush both still list it; the harness took it out of SQLAlchemy's list only
    # (as for a twin appended to an unloaded collection, which SQLAlchemy alone lists)
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Parent", 2),
            ("get", "Child", 1),
            ("expunge", 1),
            ("merge_new", "Node", 1, "a"),
            ("query", "Parent"),  # (parents 1 to 3: handles 3, 0, 4)
            ("delete", 3),
            ("move", 1, 3, "set"),
            ("new", "Child", 5, "a", "append", 0),
        ],
    )
    assert run.program[-2:] == [
        "new('Child', 5, 'a', 'append', 0)  -> ok None",
        "commit()  -> ok None",
    ]
    for side in sides:
        listed = [side.norm(c) for c in side.api.inspect(side.handles[3]).dict["children"]]
        assert listed == [("o", "Child", 1), ("o", "Child", 2), ("h", 1)]


def test_harness_stops_where_the_delete_of_an_object_reads_a_stale_collection(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4's tags are loaded in retort only (as above), and
    # list tag 1, expunged since. Parent 4 is deleted: SQLAlchemy's flush loads its tags (a
    # new instance of tag 1's row) and deletes the association row; retort's, like
    # SQLAlchemy's for a loaded collection, writes nothing towards the tag outside the session
    # (with a warning), and the DELETE of parent 4 fails on the foreign key. The program
    # stops there
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("new", "Parent", 4, "p", "add", None),
            ("link", 1, 0, False),
            ("begin_nested",),
            ("set", 1, "code", None),
            ("rollback_nested",),
            ("expunge", 0),
            ("delete", 1),
            ("flush",),
        ],
    )
    assert run.program[-1] == (
        "flush()  -> ok None / retort: raised IntegrityError (improvement: a collection loaded "
        "in one library only lists a member since gone)"
    )


def test_improvement_a_column_an_insert_left_null_set_to_null_after_a_failed_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4's INSERT left its code out (NULL: retort knows it,
    # SQLAlchemy leaves it unloaded). After a flush failed inside a SAVEPOINT, code is set to
    # None: a change in SQLAlchemy, whose autoflush of merge() then refuses to flush; none in
    # retort, whose merge() of an object of the session returns it
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Parent", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("remove", 0, "children", 0),
            ("set", 1, "code", None),
            ("merge", 0),
        ],
    )
    assert run.program[-1].startswith("merge(0)  -> raised PendingRollbackError / retort: ok 0")
    assert run.program[-1].endswith(
        "(improvement: a value set again leaves nothing to flush after a failed flush)"
    )


# found by the nightly search, as above: merge() after the failed flush onto an object the
# session holds loaded, where SQLAlchemy's autoflush refuses to flush a value set again and
# retort has nothing to flush and copies the copy's values without SQL. The object: parent 1
# (a new copy merged; or a copy made earlier, which the failed flush left outside the
# session), or node 3, loaded with node 2's children and taken out (not handled)
_MERGES_AFTER_A_FAILED_FLUSH = {
    "new copy": (
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("remove", 0, "children", 0),
            ("set", 0, "code", None),
            ("merge_new", "Parent", 1, "a"),
        ],
        "merge_new('Parent', 1, 'a')  -> raised PendingRollbackError / retort: ok 1 ",
    ),
    "onto an object not handled": (
        [
            ("merge_new", "Node", 2, "a"),
            ("get", "Parent", 1),
            ("remove", 0, "children", 0),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("merge", 0),
            ("set", 0, "name", "a"),
            ("merge_new", "Node", 3, "a"),
        ],
        "merge_new('Node', 3, 'a')  -> raised PendingRollbackError / retort: ok 3 ",
    ),
    "copy made earlier": (
        [
            ("new", "Parent", 4, "a", "add", None),
            ("merge_new", "Parent", 1, "a"),
            ("get", "Parent", 2),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("merge", 0),
            ("set", 0, "code", None),
            ("merge", 3),
        ],
        "merge(3)  -> raised PendingRollbackError / retort: ok 1 ",
    ),
}


@pytest.mark.parametrize("case", list(_MERGES_AFTER_A_FAILED_FLUSH))
def test_improvement_merge_onto_a_loaded_object_after_a_failed_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], case: str
) -> None:
    steps, outcome = _MERGES_AFTER_A_FAILED_FLUSH[case]
    run = _play(sides, admin_conn, steps)
    assert run.program[-1] == (
        outcome + "(improvement: a value set again leaves nothing to flush after a failed flush)"
    )


def test_the_draw_appends_to_no_detached_collection_loaded_in_one_library_only(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4's tags are loaded in retort only (the SAVEPOINT's
    # rollback expires parent 4 in SQLAlchemy, which counts the code set again as a change);
    # parent 4 is expunged. Appending tag 1 to its tags then loads them in SQLAlchemy, which
    # raises DetachedInstanceError. The draw leaves the append out
    steps: list[Step] = [
        ("get", "Tag", 1),
        ("new", "Parent", 4, "p", "add", None),
        ("link", 1, 0, False),
        ("begin_nested",),
        ("set", 1, "code", None),
        ("rollback_nested",),
        ("expunge", 1),
    ]
    link: Step = ("link", 1, 0, False)
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.detached_append_loads_in_one(link)
        assert not drawer.detached_append_loads_in_one(("link", 1, 0, True))  # (tag 1's parents)
        with pytest.raises(Divergence, match=r"outcome of step 7"):
            run.step(link)  # (what the draw leaves out)
    finally:
        for side in sides:
            side.close()


def test_the_draw_makes_no_backref_append_queued_in_one_library_only(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4's tags are loaded in retort only (as in the test
    # above); transient tag 3 (handle 1) appends parent 4 to its parents, whose backref
    # appends the tag to parent 4's tags: at once in retort, queued in SQLAlchemy. Deleting
    # parent 4, SQLAlchemy's flush loads its tags without the queued tag; retort's lists it,
    # as SQLAlchemy's loaded collection does. (Likewise a persistent tag appended twice is
    # queued once.) The draw leaves such appends out
    steps: list[Step] = [
        ("get", "Tag", 1),
        ("new", "Tag", 3, "a", "add", None),
        ("expunge", 1),
        ("new", "Parent", 4, "p", "add", None),
        ("link", 2, 0, False),
        ("begin_nested",),
        ("set", 2, "code", None),
        ("rollback_nested",),
    ]
    link: Step = ("link", 2, 1, True)
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.backref_queues_in_one(link)
        assert drawer.backref_queues_in_one(("link", 2, 0, True))  # (tag 1 is persistent)
        assert not drawer.backref_queues_in_one(("link", 2, 0, False))  # (to tag 1's parents)
        run.step(link)
        run.step(("delete", 2))
        with pytest.raises(Divergence, match=r"loaded Parent\.tags of handle 2"):
            run.step(("flush",))  # (what the draw leaves out)
    finally:
        for side in sides:
            side.close()


def test_a_changed_object_deleted_inside_a_savepoint_a_failed_flush_rolled_back_is_expired(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5, renamed while detached, is attached by its
    # delete() inside a SAVEPOINT; the autoflush of a load fails (parent 1's key is taken),
    # rolling the SAVEPOINT back. Both expire the child (it holds a change), so get() must
    # load it, which the session refuses; retort kept its unflushed name, out of the dirty
    # set, and get() returned it
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("new", "Parent", 4, "a", "add", None),
            ("flush",),
            ("set", 0, "name", "b"),
            ("expunge", 0),
            ("new", "Tag", 3, "a", "add", None),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("delete", 0),
            ("remove", 2, "parents", 0),
            ("get", "Child", 5),
            ("rollback_nested",),
            ("read", 0, "name"),
        ],
    )
    assert run.program[9:] == [
        "remove(2, 'parents', 0)  -> raised IntegrityError",
        "get('Child', 5)  -> raised PendingRollbackError",
        "rollback_nested()  -> ok None",
        "read(0, 'name')  -> ok 'a'",
        "commit()  -> ok None",
    ]


def test_a_parent_made_transient_by_a_rollback_writes_no_key_into_a_member_it_had(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 (committed) is given new parent 4, whose INSERT
    # and the child's UPDATE a rollback undoes. A tag's cascade adds parent 4 again, and the
    # flush inserts it: both leave child 5's row alone (its membership in parent 4's children
    # was settled by the rolled-back flush); retort wrote parent 4's key into it, as the
    # harness had loaded the child's values again
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("rollback",),
            ("new", "Child", 5, "a", "add", None),
            ("new", "Tag", 3, "a", "add", None),
            ("commit",),
            ("move", 1, 0, "set"),
            ("get", "Parent", 1),
            ("rollback",),
            ("link", 0, 2, True),
            ("flush",),
        ],
    )
    assert not _improved(run)
    assert (5, "a", None) in fetch_rows(admin_conn, run.rt.schema)["children"]


def test_a_link_kept_by_a_tags_unloaded_parents_is_written_once_the_tag_is_back(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (minimised): new tag 3 (flushed) is linked to parent 1
    # through parent 1's loaded tags, its own parents not loaded, then expunged. The flush
    # writes no association row towards it (outside the session, a warning) and settles
    # parent 1's side; the link again brings tag 3 back and is no change of parent 1's tags
    # (a member already). SQLAlchemy's next flush writes the row from tag 3's side (its
    # pending collection mutation); retort had ignored the link queued on tag 3's unloaded
    # parents, and wrote nothing
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Parent", 1),
            ("new", "Tag", 3, "a", "add", None),
            ("flush",),
            ("link", 0, 1, False),
            ("expunge", 1),
            ("flush",),
            ("link", 0, 1, False),
            ("flush",),
        ],
    )
    assert not _improved(run)
    assert (1, 3) in fetch_rows(admin_conn, run.rt.schema)["parent_tags"]


def test_deleting_a_detached_parent_loads_no_child_it_was_given_outside_the_session(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 (flushed, then expunged) is given new child 5,
    # which is not added (no cascade from the child's side) and queued for parent 4's unloaded
    # children. delete() attaches parent 4 again; in SQLAlchemy it is modified (its pending
    # collection mutation), so the autoflush of the delete cascade's load flushes it first
    # (child 5 gets its key, no row; the mutation is settled) and the children loaded are the
    # rows: none. retort had not counted it among the objects to flush, and loaded the queued
    # child 5 into its children
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Child", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("flush",),
            ("expunge", 1),
            ("new", "Child", 5, "a", "set_parent", 1),
            ("delete", 1),
            ("read", 1, "children"),
        ],
    )
    assert not _improved(run)
    assert run.program[-2].endswith("read(1, 'children')  -> ok []")
    assert (4, "a", None) not in fetch_rows(admin_conn, run.rt.schema)["parents"]


def test_a_node_taken_out_of_its_parents_children_and_deleted_keeps_its_parent_id(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (minimised): node 2 taken out of node 1's loaded children
    # (no delete-orphan: it loses its parent) and deleted. The flush deletes its row; its
    # parent_id stays 1 in SQLAlchemy, whose one-to-many clears no key of an object it deletes;
    # retort's nulled it
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Node", 1),
            ("read", 0, "children"),
            ("remove", 0, "children", 0),
            ("delete", 1),
            ("flush",),
        ],
    )
    assert not _improved(run)
    assert run.rt.handles[1].parent_id == 1
    assert 2 not in [r[0] for r in fetch_rows(admin_conn, run.rt.schema)["nodes"]]


def test_a_child_made_transient_and_taken_out_of_a_deleted_parent_loses_its_key(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5, appended to parent 2 and inserted inside a
    # SAVEPOINT, is made transient when it rolls back; parent 2 is marked deleted and child 5
    # taken out of its children (delete-orphan: no orphan to delete, being transient). The
    # commit's flush, deleting parent 2, clears child 5's foreign key in SQLAlchemy; retort
    # left it naming the deleted parent
    run = _play(
        sides,
        admin_conn,
        [
            ("begin_nested",),
            ("get", "Parent", 2),
            ("new", "Child", 5, "a", "add", None),
            ("move", 1, 0, "append"),
            ("flush",),
            ("expunge", 0),
            ("rollback_nested",),
            ("delete", 0),
            ("remove", 0, "children", 0),
            ("remove", 0, "children", 0),
        ],
    )
    assert not _improved(run)
    assert [side.lifecycle(side.handles[1]) for side in sides] == ["transient", "transient"]
    assert [side.handles[1].parent_id for side in sides] == [None, None]


def test_a_collection_load_refreshes_an_expired_object_whose_column_was_set(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5, expired by the commit, is marked deleted and
    # renamed; loading its children refreshes it first (SQLAlchemy needs its expired key),
    # whose autoflush deletes its row: ObjectDeletedError in both; retort loaded the
    # collection, as a column set since made the node look loaded
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("commit",),
            ("delete", 0),
            ("set", 0, "name", "a"),
            ("remove", 0, "children", 0),
        ],
    )
    assert run.program[4] == "remove(0, 'children', 0)  -> raised ObjectDeletedError"


def test_a_merge_reaching_two_copies_of_one_key_merges_them_onto_one_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5 (handle 0), made transient by a rollback, holds in
    # its children a second node 5 (handle 1, never added). merge() of node 0 reaches both
    # copies and merges them onto one new object (relationships first, then columns: node 0's
    # name), its own parent and child; retort made two pending objects of key 5. The flush is
    # then the improvement of a cycle through the nullable nodes.parent_id
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("new", "Node", 5, "b", "set_parent", 0),
            ("rollback",),
            ("merge", 0),
            ("read", 2, "children"),
            ("read", 2, "name"),
            ("flush",),
        ],
    )
    assert run.program[3:6] == [
        "merge(0)  -> ok 2",
        "read(2, 'children')  -> ok [('h', 2)]",
        "read(2, 'name')  -> ok 'a'",
    ]
    assert _improved(run) and "CircularDependencyError" in _improved(run)[0]
    assert fetch_rows(admin_conn, run.rt.schema)["nodes"][-1] == (5, "a", 5)


def test_the_draw_merges_no_two_copies_of_a_key_one_holding_a_column_retort_only(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as above, but node 0 was inserted (then made transient by
    # the rollback): retort's holds parent_id None since that INSERT, SQLAlchemy's leaves it
    # unloaded; node 1's is 5, copied by the flush (its parent's children are loaded). The
    # merge copies node 1's parent_id, then node 0's columns: None in retort, none (so 5
    # stays) in SQLAlchemy. The draw leaves that merge out
    steps: list[Step] = [
        ("new", "Node", 5, "a", "add", None),
        ("new", "Node", 5, "a", "set_parent", 0),
        ("new", "Node", 6, "a", "add", None),
        ("flush",),
        ("rollback",),
    ]
    merge: Step = ("merge", 0)
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.merges_copies_of_a_key_loaded_differently(_objects(merge))
        assert not drawer.merges_copies_of_a_key_loaded_differently([2])  # one copy
        with pytest.raises(Divergence, match=r"loaded Node\.parent_id of handle 3"):
            run.step(merge)  # (what the draw leaves out)
    finally:
        for side in sides:
            side.close()


def test_the_draw_merges_no_deleted_object_whose_parent_retort_alone_holds(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 of parent 2 is deleted by the cascade of parent
    # 2's delete; the flush of the DELETEs reads the child's many-to-one from the identity map
    # in retort, not in SQLAlchemy (there, only for the first deleted object of the
    # relationship, whichever its set yields first). merge() of the child then cascades to
    # parent 2 in retort only, which adds a new parent 2. The draw leaves that merge out
    steps: list[Step] = [
        ("get", "Parent", 1),
        ("get", "Parent", 2),
        ("commit",),
        ("flush",),
        ("commit",),
        ("new", "Node", 5, "a", "add", None),
        ("set", 1, "name", "b"),
        ("new", "Child", 5, "a", "append", 1),
        ("commit",),
        ("delete", 1),
        ("flush",),
    ]
    merge: Step = ("merge", 3)
    # SQLAlchemy's flush reads the child's parent in some runs (when it comes first): the
    # program is played again until it does not (a third of the runs, or so)
    for _ in range(30):
        run = _lockstep(sides, admin_conn)
        try:
            for step in steps:
                assert run.step(step) is not None
            if "parent" in run.sa.api.inspect(run.sa.handles[3]).dict:
                continue
            drawer = Drawer(None, run.sa, run.rt)
            assert drawer.reaches(_objects(merge), drawer.deleted_many_to_one_may_differ)
            assert not drawer.deleted_many_to_one_may_differ(run.sa.handles[2])
            with pytest.raises(Divergence, match="session sets"):
                run.step(merge)  # (what the draw leaves out)
            break
        finally:
            for side in sides:
                side.close()
    else:
        pytest.fail("SQLAlchemy's flush read the deleted child's parent in every run")
    # likewise where the DELETE is the one the autoflush of merge() sends (child 2 marked
    # for deletion by the cascade of parent 1's delete; also a nightly find), where retort's
    # merge adds a new parent 1
    for _ in range(30):
        run = _lockstep(sides, admin_conn)
        try:
            for step in [("merge_new", "Child", 2, "a"), ("get", "Parent", 1), ("delete", 1)]:
                assert run.step(step) is not None
            drawer = Drawer(None, run.sa, run.rt)
            assert drawer.deleted_many_to_one_may_differ(run.sa.handles[0])
            try:
                run.step(("merge", 0))  # (what the draw leaves out)
            except Divergence as e:
                assert "session sets" in str(e)
                return
        finally:
            for side in sides:
                side.close()
    pytest.fail("SQLAlchemy's flush read the deleted child's parent in every run")


def test_the_draw_appends_no_child_to_unloaded_children_that_hold_it(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 of parent 1 is appended to parent 1's children, not
    # loaded: the append loads them (listing child 1) and lists it again, the accepted
    # divergence of test_improvement_a_child_listed_twice_is_no_orphan_when_one_entry_goes
    # (one entry taken out: an orphan in SQLAlchemy only). The draw leaves that append out
    steps: list[Step] = [("get", "Parent", 1), ("merge_new", "Child", 1, "a")]
    run = _lockstep(sides, admin_conn)
    try:
        for step in steps:
            assert run.step(step) is not None
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.may_hold(0, 1) and not drawer.holds(0, 1)
        assert run.step(("get", "Child", 3)) is not None  # child 3 is parent 2's
        assert not drawer.may_hold(0, 2)
        for step in [("move", 1, 0, "append"), ("remove", 0, "children", 0)]:
            assert run.step(step) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match=r"state of handle 1 \(Child\)"):
            run.step(("remove", 0, "tags", 0))
    finally:
        for side in sides:
            side.close()


def test_divergence_a_failed_flush_nulls_the_key_of_a_detached_child_first(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 1's children are loaded and node 2 expunged; node 1's
    # delete is flushed with a new parent 1 (its key taken). retort's flush nulls node 2's
    # parent_id before its first statement, SQLAlchemy's at the nodes table, which may come
    # after the parents INSERT failed: node 2, outside the session, keeps the None in retort
    # only then. Its parent_id
    # is neither compared nor read after a failed flush (Side.fk_unsettled)
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Node", 1),
            ("get", "Parent", 1),
            ("read", 0, "children"),
            ("expunge", 2),
            ("new", "Parent", 1, "a", "add", None),
            ("delete", 0),
            ("flush",),
            ("rollback",),
        ],
    )
    assert run.program[6] == "flush()  -> raised IntegrityError"
    # SQLAlchemy's order of the two tables changes between runs: 1 where the parents INSERT
    # came first and failed
    assert run.sa.api.inspect(run.sa.handles[2]).dict["parent_id"] in (1, None)
    assert run.rt.api.inspect(run.rt.handles[2]).dict["parent_id"] is None
    assert run.sa.fk_unsettled(run.sa.handles[2])


def test_sqlalchemy_bug_a_queued_removal_fails_the_flush_of_a_deleted_node(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: a new node is given a flushed node as its parent without
    # being added (the parent's children collection, not loaded, queues the append), then
    # taken away from it (a queued removal) after the parent's delete(). SQLAlchemy's flush
    # loads the deleted parent's children (none) and applies the queue to them, and the
    # removal raises ValueError (list.remove). retort deletes the parent. The lockstep stops
    # there (no oracle past an internal error)
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("query", "Node"),
            ("new", "Node", 6, "a", "set_parent", 0),
            ("get", "Parent", 1),
            ("delete", 0),
            ("node_parent", 5, None),
            ("flush",),
        ],
    )
    assert run.program[-1] == (
        "flush()  -> raised ValueError / retort: ok None (SQLAlchemy's internal error)"
    )
    assert [n[0] for n in fetch_rows(admin_conn, run.rt.schema)["nodes"]] == [1, 2, 3, 4]


def test_sqlalchemy_bug_two_new_objects_take_the_row_of_one_deleted_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new tags 3 and 3 again, and the flushed tag 3 deleted
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Tag", 3, "a", "add", None),
            ("flush",),
            ("new", "Tag", 3, "b", "add", None),
            ("delete", 0),
            ("new", "Tag", 3, "c", "add", None),
        ],
    ) as run:
        assert run.step(("flush",)) is None
        assert run.program[-1] == (
            "flush()  -> ok None / retort: raised IntegrityError (improvement: two new objects "
            "of one key and its deleted object: the duplicate is refused)"
        )
        # SQLAlchemy's flush sent one UPDATE for both, and both objects say they are the row
        sa, rt = run.sa, run.rt
        assert any("Identity map already had an identity" in w for w in sa.warned)
        assert [sa.lifecycle(o) for o in sa.handles[1:]] == ["persistent", "persistent"]
        # retort's refused the second, undoing the transaction (the first flush's INSERT too),
        # as SQLAlchemy undoes a failed flush: the three objects are transient
        assert [rt.lifecycle(o) for o in rt.handles] == ["transient"] * 3
        assert not any(o in rt.session for o in rt.handles)
        rt.session.rollback()
        assert _run(rt, ("query", "Tag")) == [3, 4]  # tags 1 and 2, as seeded


def test_improvement_merge_of_a_key_whose_row_is_gone_adds_a_new_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is inserted, expunged, merged back (a second
    # instance, loaded from the row) and the transaction rolled back, which leaves that
    # instance expired in the identity map with no row. SQLAlchemy's merge() of the first
    # instance copies onto the expired one and raises ObjectDeletedError; retort's finds no
    # row (as get() does) and adds a new object, which the commit inserts
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("query", "Parent"),
            ("expunge", 0),
            ("merge", 0),
            ("rollback",),
            ("merge", 0),
        ],
    )
    assert run.program[-1].endswith(
        "raised ObjectDeletedError / retort: ok 5 (improvement: merge() of a key whose row "
        "is gone adds a new object)"
    )
    assert fetch_rows(admin_conn, run.rt.schema)["parents"][-1] == (4, "a", None)


def test_improvement_an_object_found_gone_by_the_autoflush_of_its_load_raises(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is inserted, expunged and merged back (a second
    # instance, handle 4), and the rollback leaves that instance expired with no row. A new
    # parent 4 is added; reading handle 4 autoflushes it, and the flush marks handle 4
    # deleted (its row is gone, the new object takes its key). SQLAlchemy then loads the new
    # row into handle 4; retort raises ObjectDeletedError (it read None before, loading the
    # row into the new object)
    steps = [
        ("new", "Parent", 4, "a", "add", None),
        ("query", "Parent"),
        ("expunge", 0),
        ("merge", 0),
        ("rollback",),
        ("new", "Parent", 4, "b", "add", None),
    ]
    for attr in ("name", "children"):
        run = _play(sides, admin_conn, [*steps, ("read", 4, attr)])
        sa_value = "'b'" if attr == "name" else "[]"
        assert run.program[-1] == (
            f"read(4, {attr!r})  -> ok {sa_value} / retort: raised ObjectDeletedError "
            "(improvement: an expired object found gone by its load's autoflush raises)"
        )
        assert run.rt.lifecycle(run.rt.handles[4]) == "detached"  # (committed by _play)
        assert fetch_rows(admin_conn, run.rt.schema)["parents"][-1] == (4, "b", None)
    # marked deleted by an earlier flush (merge()'s autoflush): the read autoflushes first in
    # both, and the flush fails on parent 1 (retort raised ObjectDeletedError before its
    # autoflush)
    duplicate = ("new", "Parent", 1, "a", "add", None)
    run = _play(sides, admin_conn, [*steps, ("merge", 0), duplicate, ("read", 4, "name")])
    assert run.program[8].startswith("read(4, 'name')  -> raised IntegrityError")


def test_improvement_a_value_set_again_leaves_nothing_to_flush_after_a_failed_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 1 is expunged and merged back (a second instance),
    # then a flush fails inside a SAVEPOINT (a new parent 1). merge() of the first instance
    # again copies the values the second has: SQLAlchemy marks it modified all the same, so
    # its next flush finds the session not clean and refuses (PendingRollbackError until the
    # SAVEPOINT is rolled back); retort's flush has nothing to do
    run = _play(
        sides,
        admin_conn,
        [
            ("query", "Parent"),
            ("expunge", 0),
            ("merge", 0),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("flush",),
            ("merge", 0),
            ("flush",),
        ],
    )
    assert run.program[5].startswith("flush()  -> raised IntegrityError")
    assert run.program[-1] == (
        "flush()  -> raised PendingRollbackError / retort: ok None (improvement: a value set "
        "again leaves nothing to flush after a failed flush)"
    )
    assert fetch_rows(admin_conn, run.rt.schema)["parents"][0] == (1, "p1", "x")


def test_improvement_merge_of_an_object_of_the_session_after_a_failed_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5, flushed with no parent, is given None after a
    # flush failed inside a SAVEPOINT; merge() of it autoflushes: SQLAlchemy counts the
    # many-to-one set as a change and refuses (PendingRollbackError), retort has nothing to
    # flush and returns the object
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
            ("flush",),
            ("move", 0, None, "set"),
            ("merge", 0),
        ],
    )
    assert run.program[3].startswith("flush()  -> raised IntegrityError")
    assert run.program[-1] == (
        "merge(0)  -> raised PendingRollbackError / retort: ok 0 (improvement: a value set "
        "again leaves nothing to flush after a failed flush)"
    )


def test_improvement_a_many_to_one_set_to_what_its_key_names_after_a_failed_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (minimised): child 4 (parent_id NULL) is given its name
    # again inside a SAVEPOINT whose flush fails (a new parent 1): SQLAlchemy's rollback of the
    # SAVEPOINT expires it, retort's leaves it loaded (it did not change). Then it is given no
    # parent: SQLAlchemy does not know the old value without SQL and counts a change
    # (is_modified), so its next flush refuses (PendingRollbackError until the SAVEPOINT is
    # rolled back); retort reads the old value from the foreign key, has nothing to flush,
    # and succeeds
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Child", 4),
            ("begin_nested",),
            ("set", 0, "name", "c4"),
            ("new", "Parent", 1, "a", "add", None),
            ("flush",),
            ("move", 0, None, "set"),
            ("flush",),
        ],
    )
    assert run.program[4].startswith("flush()  -> raised IntegrityError")
    assert run.program[-1] == (
        "flush()  -> raised PendingRollbackError / retort: ok None (improvement: a value set "
        "again leaves nothing to flush after a failed flush)"
    )
    assert fetch_rows(admin_conn, run.rt.schema)["children"][3] == (4, "c4", None)


def test_the_harness_takes_no_other_change_of_an_expired_many_to_one_for_a_value_set_again(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # the narrow side of the improvement above: a many-to-one whose key names another parent,
    # or a column changed too, is a change in both, and no improvement
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Child", 4),
            ("get", "Child", 3),  # parent_id 2
            ("begin_nested",),
            ("set", 0, "name", "c4"),
            ("set", 1, "name", "c3"),
            ("new", "Parent", 1, "a", "add", None),
            ("flush",),
        ],
    ) as run:
        c4, c3 = run.sa.handles[:2]
        c4.parent = None
        assert run.sa_sets_what_the_key_names(c4)
        c3.parent = None
        assert not run.sa_sets_what_the_key_names(c3)
        c4.name = "x"
        assert not run.sa_sets_what_the_key_names(c4)


def test_divergence_a_deleted_objects_collection_lists_a_row_once(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 1, its tags loaded, is expunged; tag 1 is marked
    # deleted, then appended again to the detached parent's tags (the backref queues parent 1
    # on tag 1's unloaded parents). The flush loads tag 1's parents to delete its association
    # rows: SQLAlchemy lists the new Parent 1 it loads and the detached one queued, retort
    # the loaded one only (Lockstep.without_detached_twins)
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Parent", 1),
            ("read", 0, "tags"),
            ("expunge", 0),
            ("delete", 1),
            ("link", 0, 1, False),
            ("flush",),
        ],
    )
    sa_tag = run.sa.handles[1]
    assert [run.sa.key(p) for p in sa_tag.parents] == [("Parent", 1), ("Parent", 1)]
    assert run.rt.norm(run.rt.handles[1].__dict__["parents"]) == [("o", "Parent", 1)]


def test_improvement_a_member_listed_twice_then_a_change_of_a_deleted_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 1 appended again to tag 1's loaded parents, and
    # marked deleted; a new tag appended to its tags autoflushes first. SQLAlchemy's flush
    # deletes the association row (1, 1) twice and fails (StaleDataError); retort's deletes
    # parent 1, and the append to the deleted parent's collection is refused
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("read", 0, "parents"),
            ("delete", 1),
            ("link", 1, 0, True),
            ("new", "Tag", 3, "a", "append", 1),
        ],
    )
    assert run.program[-1] == (
        "new('Tag', 3, 'a', 'append', 1)  -> raised StaleDataError / retort: raised "
        "InvalidRequestError (improvement: a member listed twice is one association row to "
        "delete (then a deleted object's change))"
    )
    assert [p[0] for p in fetch_rows(admin_conn, run.rt.schema)["parents"]] == [2, 3]  # 1 deleted


def test_improvement_a_member_listed_twice_is_one_association_row_to_delete(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 1 appended again to parent 1's tags (loaded by the
    # append: it holds tag 1 already), then tag 1 deleted. SQLAlchemy's flush deletes the
    # association row (1, 1) twice and fails with StaleDataError; retort deletes it once
    run = _play(
        sides,
        admin_conn,
        [("get", "Parent", 1), ("get", "Tag", 1), ("link", 0, 1, False), ("delete", 1), ("flush",)],
    )
    assert run.program[-1] == (
        "flush()  -> raised StaleDataError / retort: ok None (improvement: a member listed twice "
        "is one association row to delete)"
    )
    rows = fetch_rows(admin_conn, run.rt.schema)
    assert rows["parent_tags"] == [(1, 2), (2, 2)]
    assert [t[0] for t in rows["tags"]] == [2]
    # the search's find: retort's flush goes on to a new parent 1, which the database refuses
    duplicate = ("new", "Parent", 1, "a", "add", None)
    run = _lockstep(sides, admin_conn)
    try:
        for step in [("get", "Parent", 1), ("get", "Tag", 1), ("link", 0, 1, False), duplicate]:
            assert run.step(step) is not None
        assert run.step(("delete", 1)) is not None
        assert run.step(("flush",)) is None
    finally:
        for side in sides:
            side.close()
    assert run.program[-1] == (
        "flush()  -> raised StaleDataError / retort: raised IntegrityError (improvement: a "
        "member listed twice is one association row to delete)"
    )


def test_divergence_a_flush_relating_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is inserted, expunged and merged back (handle 4);
    # the rollback undoes the INSERT and leaves handle 4 expired with no row. Tag 1 is given
    # it as a parent; the next flush (merge()'s autoflush) of the association row: SQLAlchemy
    # loads handle 4 to read its key (ObjectDeletedError), retort sends the row with the key
    # it knows, and the database refuses it (IntegrityError, on the foreign key)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Tag", 1),
            ("expunge", 0),
            ("merge", 0),
            ("rollback",),
            ("link", 2, 1, True),
        ],
    ) as run:
        assert run.step(("merge", 0)) is None
    assert run.program[-1] == (
        "merge(0)  -> raised ObjectDeletedError / retort: raised IntegrityError (improvement: a "
        "flush relating an object whose row is gone fails on its foreign key)"
    )


def test_divergence_a_get_whose_autoflush_relates_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as in the test above, but the flush is the autoflush of
    # get(Parent, 4), whose identity-map object (handle 2) is expired with its row gone.
    # SQLAlchemy's get() loads it, the autoflush of that load raises ObjectDeletedError (loading
    # handle 2 for its key), and get() then raises PendingRollbackError (the session was rolled
    # back under it); retort's autoflush sends the association row, which the database refuses
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Tag", 1),
            ("expunge", 0),
            ("merge", 0),
            ("rollback",),
            ("link", 2, 1, True),
        ],
    ) as run:
        assert run.step(("get", "Parent", 4)) is None
    assert run.program[-1] == (
        "get('Parent', 4)  -> raised PendingRollbackError / retort: raised IntegrityError "
        "(improvement: a flush relating an object whose row is gone fails on its foreign key)"
    )


def test_divergence_a_flush_sending_nothing_for_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: handle 2 (parent 4 merged back) is expired with no row after
    # the rollback, which made tag 3 (handle 3) transient; tag 3 is given it as a parent (the
    # backref changes handle 2's tags, and nothing puts tag 3 back in the session). The flush
    # has no row to send: SQLAlchemy's loads handle 2 to read its key as it registers it
    # persistent again (ObjectDeletedError), retort's succeeds
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("expunge", 0),
            ("merge", 0),
            ("new", "Tag", 3, "a", "add", None),
            ("rollback",),
            ("link", 2, 3, True),
            ("flush",),
        ],
    )
    assert run.program[-1] == (
        "flush()  -> raised ObjectDeletedError / retort: ok None (improvement: a flush changing "
        "an object whose row is gone does not load it)"
    )
    assert fetch_rows(admin_conn, run.rt.schema) == fetch_rows(admin_conn, run.sa.schema)


def test_divergence_a_flush_removing_a_member_of_an_unhandled_parent_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new parent 4 is inserted (an autoflush) and expunged; new
    # child 5, given it, is merged, and the merge cascade loads another instance of parent 4,
    # which the program never handles. The rollback undoes the INSERT, expires that instance
    # and makes the merged child transient; the child given no parent changes the instance's
    # children (the backref). The flush has no row to send: SQLAlchemy's loads the instance
    # (ObjectDeletedError), retort's succeeds
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("expunge", 0),
            ("new", "Child", 5, "a", "set_parent", 0),
            ("merge", 2),
            ("rollback",),
            ("move", 3, None, "set"),
            ("flush",),
        ],
    )
    assert run.program[-1] == (
        "flush()  -> raised ObjectDeletedError / retort: ok None (improvement: a flush changing "
        "an object whose row is gone does not load it)"
    )
    assert fetch_rows(admin_conn, run.rt.schema) == fetch_rows(admin_conn, run.sa.schema)


def test_divergence_a_flush_updating_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: handle 2 (parent 4 merged back) is expired with no row after
    # the rollback, and given a code. The flush: SQLAlchemy's loads handle 2 to read its key
    # for the UPDATE (ObjectDeletedError), retort's sends the UPDATE with the key it knows,
    # which matches no row (StaleDataError)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("expunge", 0),
            ("merge", 0),
            ("rollback",),
            ("set", 2, "code", None),
        ],
    ) as run:
        assert run.step(("flush",)) is None
    assert run.program[-1] == (
        "flush()  -> raised ObjectDeletedError / retort: raised StaleDataError (improvement: a "
        "flush changing an object whose row is gone does not load it)"
    )


def test_divergence_a_get_whose_autoflush_updates_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as in the test above, the flush being the autoflush of
    # get(Parent, 1), whose object (handle 1) is expired: SQLAlchemy's get() takes the
    # ObjectDeletedError of its autoflush (loading handle 2) for its own object's and raises
    # PendingRollbackError, retort's autoflush fails with StaleDataError
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("expunge", 0),
            ("merge", 0),
            ("rollback",),
            ("set", 2, "code", None),
        ],
    ) as run:
        assert run.step(("get", "Parent", 1)) is None
    assert run.program[-1] == (
        "get('Parent', 1)  -> raised PendingRollbackError / retort: raised StaleDataError "
        "(improvement: a flush changing an object whose row is gone does not load it)"
    )


def test_divergence_get_of_an_object_whose_row_is_gone_after_a_change_sending_nothing(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as in
    # test_divergence_a_flush_sending_nothing_for_an_object_whose_row_is_gone, then get() of
    # handle 2's own key: SQLAlchemy's autoflush loads handle 2 (ObjectDeletedError), which its
    # get() takes for the load of handle 2 and goes on to a session rolled back under it
    # (PendingRollbackError); retort's autoflush sends nothing and its load finds no row
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("expunge", 0),
            ("merge", 0),
            ("new", "Tag", 3, "a", "add", None),
            ("rollback",),
            ("link", 2, 3, True),
            ("get", "Parent", 4),
        ],
    )
    assert run.program[-1] == (
        "get('Parent', 4)  -> raised PendingRollbackError / retort: ok None (improvement: a "
        "flush changing an object whose row is gone does not load it)"
    )


def test_divergence_get_of_a_key_whose_row_is_gone_returns_the_new_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: handle 2 (parent 4 merged back) is expired with no row after
    # the rollback; handle 0 (parent 4, detached) is added again by the cascade of a link.
    # get(Parent, 4) autoflushes handle 0, which marks handle 2 deleted: SQLAlchemy returns
    # handle 2, loaded with handle 0's row; retort returns handle 0
    run = _play(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Tag", 1),
            ("expunge", 0),
            ("merge", 0),
            ("rollback",),
            ("link", 0, 1, True),
            ("get", "Parent", 4),
        ],
    )
    assert run.program[-1] == (
        "get('Parent', 4)  -> ok 2 / retort: ok 0 (improvement: get() of a gone key returns "
        "the new object its autoflush inserted)"
    )


def test_improvement_a_member_given_twice_then_a_load_of_a_deleted_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new parent 6 is linked to a new tag 1 and to tag 1 (handle
    # 0), which is then deleted (the new tag takes its key in a row switch). Linking it again
    # from its side loads its parents (it is expired), whose autoflush: SQLAlchemy's inserts
    # (6, 1) twice (parent_tags_pkey), retort's once, after which the load of the tag it
    # deleted raises ObjectDeletedError
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("new", "Parent", 6, "a", "add", None),
            ("new", "Tag", 1, "a", "append", 1),
            ("link", 1, 0, False),
            ("delete", 0),
            ("expire_all",),
        ],
    ) as run:
        assert run.step(("link", 1, 0, True)) is None
    assert run.program[-1] == (
        "link(1, 0, True)  -> raised IntegrityError / retort: raised ObjectDeletedError "
        "(improvement: a member given twice is one association row (then a deleted object's "
        "load))"
    )


def test_improvement_no_association_row_to_a_deleted_tag_then_a_load_of_it(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new parent 4 is linked to tag 1 (expired by a commit),
    # which is then deleted. Taking a parent out of the tag's parents loads them, whose
    # autoflush: SQLAlchemy's inserts the association row (4, 1) and fails on the foreign key
    # at the tag's DELETE; retort's writes no row to the tag it deletes (6b6569d), after which
    # the load of that tag raises ObjectDeletedError
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("commit",),
            ("new", "Parent", 4, "a", "add", None),
            ("link", 1, 0, False),
            ("delete", 0),
        ],
    ) as run:
        assert run.step(("remove", 0, "parents", 0)) is None
    assert run.program[-1] == (
        "remove(0, 'parents', 0)  -> raised IntegrityError / retort: raised ObjectDeletedError "
        "(improvement: a deleted object's association rows go, and none is written to it (then "
        "a deleted object's load))"
    )


def test_improvement_no_association_row_to_a_deleted_tag_then_a_change_of_it(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new parent 4 is linked to tag 1, which is then deleted.
    # Linking the tag to parent 1 loads parent 1's tags, whose autoflush: SQLAlchemy's inserts
    # the association row (4, 1) and fails on the foreign key at the tag's DELETE; retort's
    # writes no row to the tag it deletes (6b6569d), after which the append of that tag
    # raises InvalidRequestError (SPEC §4)
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("link", 1, 0, False),
            ("delete", 0),
        ],
    ) as run:
        assert run.step(("link", 2, 0, False)) is None
    assert run.program[-1] == (
        "link(2, 0, False)  -> raised IntegrityError / retort: raised InvalidRequestError "
        "(improvement: a deleted object's association rows go, and none is written to it (then "
        "a deleted object's change))"
    )


def test_improvement_a_member_given_twice_then_an_identity_conflict(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 2 is linked again to tag 2, which it has (tag 2's
    # parents not loaded); parent 1 is expunged, then appended to tag 2's parents. Loading
    # them autoflushes: SQLAlchemy's inserts (2, 2) again (parent_tags_pkey), retort's has
    # nothing to write, and its load brings parent 1's row in as a new instance, so that the
    # cascade cannot attach the detached parent 1
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Tag", 2),
            ("query", "Parent"),
            ("expunge", 1),
            ("link", 2, 0, False),
            ("link", 1, 0, True),
        ],
    )
    assert run.program[-1] == (
        "link(1, 0, True)  -> raised IntegrityError / retort: raised InvalidRequestError "
        "(improvement: a member given twice is one association row (then an identity "
        "conflict))"
    )


def test_divergence_the_fault_steps_rollback_leaves_an_expunged_object_detached(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 1 is marked deleted; a merge()'s autoflush fails (a new
    # parent 1, a key taken), and tag 1 is expunged, a new parent 5 added. The rollback that
    # ends the fault step: SQLAlchemy's warns that the state changed on a non-active
    # transaction and puts tag 1 back in the session (persistent); retort's leaves it detached
    run = _play(
        sides,
        admin_conn,
        [
            ("merge_new", "Child", 1, "a"),
            ("get", "Tag", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("merge_new", "Child", 1, "a"),
            ("delete", 1),
            ("link", 2, 1, False),
            ("new", "Parent", 1, "a", "add", None),
            ("merge", 0),
            ("new", "Parent", 5, "a", "add", None),
            ("expunge", 1),
            ("bad_sql", "Parent", 1),
        ],
    )
    assert run.program[-4].startswith("merge(0)  -> raised IntegrityError")
    assert run.program[-1] == (
        "bad_sql('Parent', 1)  -> ok ('PendingRollbackError', 'PendingRollbackError') "
        "(improvement: rollback() leaves an object expunged after a failed flush detached)"
    )
    assert run.rt.lifecycle(run.rt.handles[1]) == "detached"


def test_divergence_a_savepoints_rollback_leaves_an_expunged_object_detached(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4's DELETE is flushed inside a SAVEPOINT, whose next
    # flush fails (a duplicate key); parent 4 is expunged and a new parent added. Rolling the
    # SAVEPOINT back: SQLAlchemy warns that the state changed on a non-active transaction and
    # puts parent 4 back in the session; retort leaves it detached
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("begin_nested",),
            ("delete", 0),
            ("get", "Parent", 2),  # (its autoflush deletes parent 4)
            ("new", "Parent", 1, "a", "add", None),
        ],
    ) as run:
        failed = run.step(("get", "Child", 1))
        assert failed is not None and failed.value == "IntegrityError"
        assert run.step(("expunge", 0)) is not None
        assert run.step(("new", "Parent", 5, "a", "add", None)) is not None
        assert run.step(("rollback_nested",)) is None
        assert [s.lifecycle(s.handles[0]) for s in sides] == ["persistent", "detached"]
    assert run.program[-1] == (
        "rollback_nested()  -> ok None (improvement: rollback() leaves an object expunged after "
        "a failed flush detached)"
    )


def test_divergence_rollback_leaves_detached_an_object_expunged_after_a_failed_flush(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 3's DELETE is flushed in both (during the step that
    # appends child 1), then a flush fails (child 1's key, taken), which restores node 3
    # (persistent, expired). A new child is added and node 3 expunged. rollback(): SQLAlchemy
    # warns, restores its snapshot again and puts node 3 back in the session; retort leaves it
    # detached. Without the new child (the session otherwise unchanged) both leave it detached
    def play(steps: list[Step]) -> tuple[Lockstep, list[str]]:
        run = _lockstep(sides, admin_conn)
        try:
            for step in steps:
                if run.step(step) is None:
                    break
            return run, [side.lifecycle(side.handles[3]) for side in sides]
        finally:
            for side in sides:
                side.close()

    before: list[Step] = [
        ("new", "Parent", 4, "a", "add", None),
        ("query", "Node"),
        ("delete", 3),
        ("new", "Child", 1, "a", "append", 0),
        ("merge_new", "Parent", 5, "a"),
    ]
    run, states = play([*before, ("new", "Child", 7, "a", "add", None), ("expunge", 3)])
    assert states == ["detached", "detached"]
    run, states = play(
        [*before, ("new", "Child", 7, "a", "add", None), ("expunge", 3), ("rollback",)]
    )
    assert run.program[-1] == (
        "rollback()  -> ok None (improvement: rollback() leaves an object expunged after a "
        "failed flush detached)"
    )
    assert states == ["persistent", "detached"]
    run, states = play([*before, ("expunge", 3), ("rollback",)])
    assert not _improved(run)
    assert states == ["detached", "detached"]


def test_divergence_get_raises_its_autoflushs_object_deleted_error(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 2 (handle 0) is expunged expired, and another instance
    # of its row is deleted by an autoflush; delete() then attaches handle 0 with the free key.
    # get() of parent 4 (expired) autoflushes, and both flushes fail loading handle 0, whose
    # row is gone. SQLAlchemy's get() takes the ObjectDeletedError for parent 4's, then
    # raises PendingRollbackError; retort's raises the flush's error
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 2),
            ("commit",),
            ("expunge", 0),
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 1),
            ("expire_all",),
            ("get", "Tag", 2),
            ("delete", 3),
            ("get", "Parent", 1),  # (its autoflush deletes handle 3)
            ("delete", 0),
        ],
    ) as run:
        assert run.step(("get", "Parent", 4)) is None
        # (both rolled back under the failed flush: parent 4, inserted in it, is new again)
        assert [s.session.is_active for s in sides] == [False, False]
        assert [s.lifecycle(s.handles[1]) for s in sides] == ["transient", "transient"]
    assert run.program[-1] == (
        "get('Parent', 4)  -> raised PendingRollbackError / retort: raised ObjectDeletedError "
        "(improvement: get() raises its autoflush's ObjectDeletedError)"
    )


@pytest.mark.parametrize(
    ("node", "end", "last"),
    [(0, "flush", "flush"), (0, "commit", "flush"), (3, "flush", "flush"), (3, "flush", "commit")],
)
def test_improvement_a_node_given_a_parent_outside_the_session_gets_its_key_once_the_parent_is_back(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], node: int, end: str, last: str
) -> None:
    # found by the nightly search: node 1 is given parent node 2, which is expunged before the
    # flush (nothing written for the relation; a warning in both). New node 5 is given parent
    # node 2, whose cascade attaches it again, with node 1 still queued for its unloaded
    # children. The next flush: retort's writes node 1's parent_id (2), as both libraries do
    # for a child of the parents table; SQLAlchemy's writes nothing from the queue, and its
    # node 1 keeps parent_id NULL, in memory and in its row (naming node 2 where it was not
    # expired by a commit)
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Node"),
            ("node_parent", node, 1),
            ("expunge", 1),
            (end,),
            ("new", "Node", 5, "a", "set_parent_add", 1),
        ],
    ) as run:
        assert (node, 2) in run.sa_nodes_queued_for_children()  # (and new node 5)
        assert run.step((last,)) is None
        assert run.lost_node_key() == node
        for side in sides:
            side.session.commit()
    assert run.program[-1] == f"{last}()  -> ok None (improvement: {NODE_KEY_WRITTEN})"
    rows = {side.name: fetch_rows(admin_conn, side.schema)["nodes"] for side in sides}
    # (node 1 had no parent, node 4 had node 1)
    name, before = ("n1", None) if node == 0 else ("n4", 1)
    assert (node + 1, name, 2) in rows["retort"]
    assert (node + 1, name, before) in rows["sqlalchemy"]


def test_improvement_a_node_key_written_once_its_parent_is_back_then_a_read_of_children(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as above, node 4 (of node 1) is given node 2 while node 2
    # is outside the session. Loading node 1's children autoflushes: retort's flush writes
    # node 4's key (2), so node 1's children are node 2 alone; SQLAlchemy's are nodes 2 and 4,
    # and taking the second out differs
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Node"),
            ("node_parent", 3, 1),
            ("expunge", 1),
            ("flush",),
            ("new", "Node", 5, "a", "set_parent_add", 1),
        ],
    ) as run:
        assert run.step(("remove", 0, "children", 1)) is None
    assert run.program[-1].startswith("remove(0, 'children', 1)  -> ok ('h', 3) / retort: ")
    assert run.program[-1].endswith(f"(improvement: {NODE_KEY_WRITTEN})")


def test_improvement_a_node_key_written_once_its_parent_is_back_unloaded_in_sqlalchemy(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new node 6 is given parent node 1 (queued for its unloaded
    # children), node 1 expunged and the node flushed (nothing written for the relation).
    # New node 7 given node 1 attaches it again; loading node 1's children autoflushes:
    # retort's flush writes node 6's key (1), and node 1's children list it. SQLAlchemy's
    # writes nothing from the queue, and its node 6 holds parent_id unloaded since its INSERT,
    # so only the rows of the transaction (not committed) tell the two apart
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("set", 0, "parent_id", 1),
            ("flush",),
            ("read", 0, "parent"),  # (node 1: handle 1)
            ("new", "Node", 6, "a", "set_parent_add", 1),
            ("expunge", 1),
            ("get", "Parent", 1),  # (its autoflush inserts node 6)
            ("new", "Node", 7, "a", "set_parent_add", 1),
        ],
    ) as run:
        assert "parent_id" not in run.sa.api.inspect(run.sa.handles[2]).dict
        assert run.step(("remove", 1, "children", 0)) is None
        assert run.lost_node_key() == 2
        assert (6, "a", 1) in run.rt.transaction_rows()["nodes"]
        assert (6, "a", None) in run.sa.transaction_rows()["nodes"]
    assert run.program[-1].endswith(f"(improvement: {NODE_KEY_WRITTEN})")


def test_divergence_a_delete_whose_autoflush_relates_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is inserted, expunged and merged back as another
    # instance (handle 1); a failed statement rolls the transaction back, and parent 4's row
    # is gone, handle 1 expired. New child 5 is given handle 1 as its parent (not added) and
    # new parent 5 added. delete() of handle 1 loads it, autoflushing first: SQLAlchemy's
    # flush reaches child 5 through handle 1's children, loads handle 1 for its key and raises
    # ObjectDeletedError (parent 5 transient again); retort's flush inserts parent 5, and
    # delete()'s load of handle 1 raises ObjectDeletedError
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 4),
            ("expunge", 0),
            ("merge", 0),
            ("bad_sql", "Parent", 1),
            ("new", "Parent", 5, "a", "add", None),
            ("new", "Child", 5, "a", "set_parent", 1),
        ],
    ) as run:
        assert run.step(("delete", 1)) is None
        assert run.gone_loaded_by_sa_flush_then_by_the_step()
        assert [s.lifecycle(s.handles[2]) for s in sides] == ["transient", "persistent"]
    assert run.program[-1] == (
        "delete(1)  -> raised ObjectDeletedError (improvement: a flush relating an object whose "
        "row is gone does not load it)"
    )


def test_improvement_a_new_node_a_key_set_by_hand_names_is_inserted_first(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 2 is deleted, and merge() of a new node 2 (whose
    # autoflush sends the DELETE) adds another node 2; node 1's parent_id is then set to 2 by
    # hand. The flush: retort's plan inserts node 2 before the UPDATE of node 1 (rows of a
    # table that updated rows refer to go first); SQLAlchemy's sends the UPDATE first and
    # fails on the foreign key
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Node"),
            ("delete", 1),
            ("merge_new", "Node", 2, "a"),
            ("set", 0, "parent_id", 2),
        ],
    ) as run:
        plan = run.rt.session.flush_plan()
        assert [(s["operation"], s["dependency"]) for s in plan] == [
            ("insert", None),
            ("update", "rows of this table referenced by updated rows are inserted first"),
        ]
        assert run.step(("flush",)) is None
    assert run.program[-1] == (
        "flush()  -> raised IntegrityError / retort: ok None (improvement: rows a key set by "
        "hand names are inserted first)"
    )


def test_improvement_a_new_node_names_by_hand_a_new_node_whose_parent_it_is(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (in a longer program): new node 5's parent_id is set to 6
    # by hand, and new node 6 is given node 5 as its parent. SQLAlchemy's flush inserts
    # node 5 first (its relationship makes it node 6's parent) and fails on the foreign key;
    # retort's breaks the cycle through the nullable parent_id (SPEC §5)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("set", 0, "parent_id", 6),
            ("new", "Node", 6, "a", "set_parent_add", 0),
        ],
    ) as run:
        assert run.step(("flush",)) is None
        assert (5, "a", 6) in run.rt.transaction_rows()["nodes"]
    assert run.program[-1] == (
        "flush()  -> raised IntegrityError / retort: ok None (improvement: rows a key set by "
        "hand names are inserted first)"
    )


def test_divergence_a_flush_refused_before_it_gets_to_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is inserted, expunged, and loaded again as another
    # instance (handle 6); a failed statement rolls the transaction back (its row is gone,
    # handle 6 expired). New child 1 (a key taken) and child 5 are added, child 5 given the
    # expunged parent 4, and handle 6's code is changed. Loading tag 1's parents autoflushes:
    # SQLAlchemy's flush loads handle 6 to read its key and raises ObjectDeletedError;
    # retort's knows the key, and the database refuses child 1 first
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Tag", 1),
            ("expunge", 0),
            ("new", "Parent", 5, "a", "add", None),
            ("query", "Parent"),
            ("new", "Parent", 6, "a", "add", None),
            ("bad_sql", "Child", 1),
            ("new", "Child", 1, "a", "add", None),
            ("new", "Child", 5, "a", "add", None),
            ("move", 8, 0, "set"),
            ("set", 6, "code", None),
        ],
    ) as run:
        assert run.sa.key(run.sa.handles[6]) == ("Parent", 4)
        assert run.step(("remove", 1, "parents", 0)) is None
    assert run.program[-1] == (
        "remove(1, 'parents', 0)  -> raised ObjectDeletedError / retort: raised IntegrityError "
        "(improvement: a flush changing an object whose row is gone does not load it (then a "
        "row refused))"
    )


def test_divergence_a_flush_updating_an_object_whose_row_is_gone_before_a_row_refused(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 is inserted, expunged, and got again as another
    # instance (handle 1); a rollback undoes the INSERT (handle 1 stays, expired). New tag 1
    # (a key taken) is added, and handle 1 is taken from its parent. SQLAlchemy's flush
    # inserts the tag first and fails on its key; retort's sends the UPDATE of child 5 first,
    # which matches no row (StaleDataError). Had SQLAlchemy's got there, it would load child 5
    # and raise (test_divergence_a_flush_updating_an_object_whose_row_is_gone)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("flush",),
            ("expunge", 0),
            ("get", "Child", 5),
            ("rollback",),
            ("new", "Tag", 1, "a", "add", None),
            ("move", 1, None, "set"),
        ],
    ) as run:
        assert run.step(("flush",)) is None
    assert run.program[-1] == (
        "flush()  -> raised IntegrityError / retort: raised StaleDataError (improvement: a "
        "flush changing an object whose row is gone does not load it (its UPDATE before a row "
        "refused))"
    )


def test_divergence_a_flush_naming_a_row_another_instance_deleted(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5 is inserted, expunged, and merged back as another
    # instance (handle 1), whose DELETE a flush runs. New node 6 is given the expunged node 5
    # as its parent, and its save-update cascade attaches node 5 again. merge()'s autoflush:
    # SQLAlchemy's UPDATE of node 5 matches no row (StaleDataError), retort's INSERT of node
    # 6 names the row that is gone (IntegrityError)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("begin_nested",),
            ("expunge", 0),
            ("merge", 0),
            ("delete", 1),
            ("flush",),
            ("set", 0, "parent_id", None),
            ("new", "Node", 6, "a", "set_parent_add", 0),
        ],
    ) as run:
        assert [side.lifecycle(side.handles[1]) for side in sides] == ["deleted"] * 2
        assert run.step(("merge", 0)) is None
    assert run.program[-1] == (
        "merge(0)  -> raised StaleDataError / retort: raised IntegrityError (improvement: a "
        "flush naming a row a DELETE of another instance removed fails in both)"
    )


def test_divergence_a_flush_updating_a_row_another_instance_deleted_a_new_one_took(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 2, expunged and given no parent, is merged back as
    # another instance, whose DELETE a flush runs; merged again, it makes a new node 2. New node
    # 5 is given the expunged node 2 as its parent, and its save-update cascade attaches it.
    # SQLAlchemy's flush warns that the new node 2 conflicts with the attached one, whose
    # UPDATE matches no row (StaleDataError). Retort's inserted the new node 2 and node 5
    # first, and the UPDATE then changed the new row: two persistent objects of one row. Now
    # it finds the row gone, as for an expired object, marks the attached node deleted, and
    # the new node 2 takes its place. Likewise where the new node 2 is given the expunged one
    # as its parent (SQLAlchemy then flushes the two apart, and does not warn)
    steps: list[Step] = [
        ("get", "Node", 2),
        ("expunge", 0),
        ("node_parent", 0, None),
        ("merge", 0),
        ("delete", 1),
        ("flush",),
        ("merge", 0),
    ]
    for last in [("new", "Node", 5, "a", "set_parent_add", 0), ("node_parent", 2, 0)]:
        with _stepped(sides, admin_conn, [*steps, last]) as run:
            assert run.step(("flush",)) is None
            assert run.program[-1] == (
                "flush()  -> raised StaleDataError / retort: ok None (improvement: a new object "
                "takes the place of an object a DELETE of another instance removed)"
            )
            rt = run.rt
            assert [rt.lifecycle(rt.handles[i]) for i in (0, 2)] == ["deleted", "persistent"]
            assert rt.session.get(rt.models.Node, 2) is rt.handles[2]
            assert (2, "n2") in [n[:2] for n in rt.transaction_rows()["nodes"]]


def test_divergence_a_flush_naming_a_copy_of_a_row_another_instance_deleted_a_new_one_took(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 3, expired, is expunged; another instance of its row,
    # loaded since, is deleted and the DELETE flushed. A new node 3 is given the expunged copy
    # as its parent, and its save-update cascade attaches the copy. Reading the copy
    # autoflushes: SQLAlchemy's flush loads the copy to copy its key into the new node, finds
    # no row and fails (ObjectDeletedError), rolling back. Retort's finds the copy's row gone
    # (Session._settle_key_holders), marks it deleted and inserts the new node in its place,
    # naming itself; its read of the copy then raises the same error
    steps: list[Step] = [
        ("query", "Node"),
        ("commit",),
        ("expunge", 2),
        ("query", "Node"),
        ("delete", 4),
        ("flush",),
        ("new", "Node", 3, "a", "set_parent_add", 2),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        assert run.step(("read", 2, "name")) is None
        assert run.program[-1] == (
            "read(2, 'name')  -> raised ObjectDeletedError (improvement: a new object takes "
            "the place of an object a DELETE of another instance removed)"
        )
        rt = run.rt
        assert [rt.lifecycle(rt.handles[i]) for i in (2, 5)] == ["deleted", "persistent"]
        assert (3, "a", 3) in [n[:3] for n in rt.transaction_rows()["nodes"]]
        assert not run.sa.session.is_active


def test_divergence_a_read_of_a_parent_after_a_failed_flush_where_sqlalchemy_loaded_the_key(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 1, expired by a commit, is renamed, and begin_nested()
    # flushes it: SQLAlchemy's flush of the UPDATE loads the node's other columns, retort's
    # leaves them expired. A flush then fails inside the SAVEPOINT; reading node 1's parent:
    # SQLAlchemy knows its parent_id is NULL and answers None without SQL, retort's needs the
    # row, and the session refuses SQL until the rollback (PendingRollbackError)
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Node"),
            ("commit",),
            ("set", 0, "name", "a"),
            ("begin_nested",),
            ("new", "Parent", 1, "a", "add", None),
        ],
    ) as run:
        failed = run.step(("flush",))
        assert failed is not None and failed.value == "IntegrityError"
        assert "parent_id" in run.sa.api.inspect(run.sa.handles[0]).dict
        assert "parent_id" not in run.rt.api.inspect(run.rt.handles[0]).dict
        assert run.step(("read", 0, "parent")) is None
    assert run.program[-1] == (
        "read(0, 'parent')  -> ok None / retort: raised PendingRollbackError (improvement: an "
        "object only SQLAlchemy's flush loaded is not loadable after it failed)"
    )


def test_the_draw_moves_no_object_whose_key_set_by_hand_only_sqlalchemy_knew(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1, expired by a commit, is renamed and flushed
    # (SQLAlchemy's flush of the UPDATE loads its columns, retort's does not); its parent_id
    # is then set by hand to the value it has. Giving it no parent: SQLAlchemy's finds the old
    # parent (parent 1, by the committed key it loaded), counts a change and its flush writes
    # NULL; retort's takes the committed key for unknown (NULL, as SQLAlchemy does where it
    # did not load it), finds no change and keeps the key set by hand. The draw leaves that
    # step out
    steps: list[Step] = [
        ("get", "Child", 1),
        ("commit",),
        ("set", 0, "name", "a"),
        ("flush",),
        ("set", 0, "parent_id", 1),
    ]
    with _stepped(sides, admin_conn, steps) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.old_parent_known_differs(0)
        assert run.step(("move", 0, None, "set")) is not None  # (what the draw leaves out)
        with pytest.raises(Divergence, match=r"parent_id of handle 0 .*\n  sqlalchemy: None"):
            run.step(("flush",))


def test_improvement_an_object_unchanged_inside_a_rolled_back_savepoint_keeps_its_parent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new node 6 is given new node 5 as its parent, and node 5 is
    # expunged; begin_nested() flushes node 6 (nothing written for the relation: node 5 is
    # outside the session, a warning in both). Inside the SAVEPOINT node 6's name is set
    # again to the value it has, and a failed statement rolls the SAVEPOINT back: SQLAlchemy
    # expires node 6 (an attribute event touched it), whose parent then reads None from its
    # row; retort's node 6 did not change and keeps its parent, node 5
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("new", "Node", 6, "b", "set_parent_add", 0),
            ("expunge", 0),
            ("begin_nested",),
            ("set", 1, "name", "b"),
            ("bad_sql", "Parent", 1),
        ],
    ) as run:
        assert run.sa.api.inspect(run.sa.handles[1]).expired
        assert not run.rt.api.inspect(run.rt.handles[1]).expired
        assert run.step(("read", 1, "parent")) is None
    assert run.program[-1] == (
        "read(1, 'parent')  -> ok None / retort: ok ('h', 0) (improvement: an object unchanged "
        "inside a SAVEPOINT stays loaded after its rollback)"
    )


def test_divergence_a_member_taken_out_before_a_rollback_is_not_cascaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new tag 4 is appended to new parent 4, both are flushed,
    # then the tag is taken out of the parent's tags; a failed flush rolls back, making both
    # new again. Child 5 (persistent) is given parent 4, whose save-update cascade attaches
    # parent 4: SQLAlchemy's also follows tag 4, taken out before the rollback (still in the
    # collection's history), and attaches it; retort's rollback forgot the removal (no row of
    # it exists), and tag 4 stays transient
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("commit",),
            ("new", "Parent", 4, "a", "add", None),
            ("new", "Tag", 4, "a", "append", 1),
            ("flush",),
            ("remove", 2, "parents", 0),
            ("new", "Parent", 1, "a", "add", None),
        ],
    ) as run:
        failed = run.step(("flush",))
        assert failed is not None and failed.value == "IntegrityError"
        assert run.step(("move", 0, 1, "set")) is None
        assert run.cascades_a_member_taken_out_before_a_rollback()
        assert [s.lifecycle(s.handles[2]) for s in sides] == ["pending", "transient"]
    assert run.program[-1] == (
        "move(0, 1, 'set')  -> ok None (improvement: a member taken out before a rollback made "
        "its owner new is not cascaded)"
    )


def test_divergence_a_detached_member_taken_out_before_a_rollback_is_not_cascaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new tag 3 is made transient by a rollback (a failed
    # statement), then linked to parent 1, loaded as a member of tag 1's parents (handle 5),
    # which attaches it again. Handle 5 is expunged, parent 1 got again as another instance
    # (handle 6), and handle 5 taken out of tag 3's parents; a rollback makes tag 3 transient.
    # Linked to parent 2, tag 3 is attached again by the save-update cascade: SQLAlchemy's
    # follows handle 5 (in the collection's history still) and fails to attach it beside
    # handle 6; retort's rollback forgot the removal
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("get", "Parent", 2),
            ("get", "Tag", 1),
            ("new", "Tag", 3, "a", "add", None),
            ("new", "Child", 1, "a", "add", None),
            ("bad_sql", "Parent", 1),
            ("read", 2, "parents"),
            ("link", 5, 3, False),
            ("expunge", 5),
            ("get", "Parent", 1),
            ("remove", 3, "parents", 0),
            ("rollback",),
        ],
    ) as run:
        assert run.step(("link", 1, 3, False)) is None
    assert run.program[-1] == (
        "link(1, 3, False)  -> raised InvalidRequestError / retort: ok None (improvement: a "
        "member taken out before a rollback made its owner new is not cascaded)"
    )


def test_divergence_a_member_taken_out_before_a_rollback_is_not_cascaded_to_its_members(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as above, where the object SQLAlchemy's cascade fails to
    # attach is reached through the member taken out: tag 2 (handle 2, expunged), one of
    # parent 2's tags, where the session holds another instance of tag 2
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("remove", 0, "children", 0),
            ("get", "Parent", 1),
            ("get", "Tag", 2),
            ("new", "Child", 5, "a", "add", None),
            ("new", "Tag", 3, "a", "add", None),
            ("bad_sql", "Parent", 4),
            ("read", 2, "parents"),
            ("link", 5, 4, False),
            ("expunge", 2),
            ("expunge", 5),
            ("remove", 0, "children", 0),
            ("move", 3, 1, "append"),
            ("get", "Parent", 1),
            ("remove", 4, "parents", 0),
            ("rollback",),
        ],
    ) as run:
        assert run.step(("link", 1, 4, False)) is None
    assert run.program[-1] == (
        "link(1, 4, False)  -> raised InvalidRequestError / retort: ok None (improvement: a "
        "member taken out before a rollback made its owner new is not cascaded)"
    )


def test_divergence_a_detached_member_taken_out_before_a_rollback_is_not_attached(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as above, with no other instance of parent 2 (handle 5) in
    # the session: SQLAlchemy's cascade attaches handle 5 (persistent again), retort's leaves
    # it detached
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("remove", 0, "children", 0),
            ("get", "Parent", 1),
            ("get", "Tag", 2),
            ("new", "Child", 5, "a", "add", None),
            ("new", "Tag", 3, "a", "add", None),
            ("bad_sql", "Parent", 2),
            ("read", 2, "parents"),
            ("node_parent", 0, None),
            ("link", 5, 4, False),
            ("new", "Parent", 4, "a", "add", None),
            ("expunge", 5),
            ("move", 3, 1, "append"),
            ("remove", 4, "parents", 0),
            ("rollback",),
        ],
    ) as run:
        assert run.step(("link", 1, 4, False)) is None
        assert [s.lifecycle(s.handles[5]) for s in sides] == ["persistent", "detached"]
    assert run.program[-1] == (
        "link(1, 4, False)  -> ok None (improvement: a member taken out before a rollback made "
        "its owner new is not cascaded)"
    )


def test_divergence_a_flush_writes_no_key_into_a_detached_child_that_left_its_parent(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 1 is given parent 4 (flushed), then taken out of it
    # (child.parent = None); parent 4 is expunged, and the commit deletes child 1 as an orphan
    # (detached since). Deleting parent 4 again, SQLAlchemy's flush clears child 1's
    # parent_id in memory (it is in the history of removals of the parent's children);
    # retort's writes nothing into an object outside the session. The compare passes over it
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Child", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Parent", 4),
            ("move", 0, 1, "append"),
            ("remove", 1, "tags", 0),
            ("move", 0, None, "set"),
            ("expunge", 1),
            ("commit",),
            ("delete", 1),
        ],
    ) as run:
        assert run.step(("get", "Parent", 1)) is not None
        assert [s.handles[0].__dict__["parent_id"] for s in sides] == [None, 4]
        assert run.fk_synced_by_sa_only(0)
        assert run.step(("read", 0, "parent_id")) is None
    assert run.program[-1] == (
        "read(0, 'parent_id')  -> ok None / retort: ok 4 (improvement: a flush writes no key "
        "into a detached child that left its parent)"
    )


def test_harness_a_deleted_childs_key_after_a_failed_flush_is_unsettled(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search (FlakyStrategyDefinition with it): node 6, child of node 5,
    # is deleted and flushed; inside a SAVEPOINT node 5 is deleted and a flush fails on a
    # duplicate parent. Retort's flush nulls node 6's parent_id before its first statement;
    # SQLAlchemy's as it reaches the nodes, before or after the failing INSERT by the order of
    # a set. The compare passes over that key
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("new", "Node", 6, "a", "add", None),
            ("node_parent", 1, 0),
            ("commit",),
            ("read", 0, "children"),
            ("delete", 1),
            ("flush",),
            ("begin_nested",),
            ("delete", 0),
            ("new", "Parent", 1, "b", "add", None),
        ],
    ) as run:
        failed = run.step(("flush",))
        assert failed is not None and failed.value == "IntegrityError"
        assert [s.lifecycle(s.handles[1]) for s in sides] == ["deleted", "deleted"]
        assert run.rt.handles[1].parent_id is None
        assert run.sa.fk_unsettled(run.sa.handles[1])


def test_improvement_a_collection_unchanged_inside_a_savepoint_keeps_a_member_listed_twice(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: new parent 4 is linked to tag 1 from both sides, so that
    # tag 1's loaded parents list it twice (one association row). Tag 1's label, set again
    # inside a SAVEPOINT that is rolled back, makes SQLAlchemy expire it; retort keeps it
    # loaded (it did not change). The delete of parent 4 loads tag 1's parents in SQLAlchemy,
    # listing the row once; retort's still list both entries. The program stops there
    # (the label is set to "b" before the SAVEPOINT too)
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("new", "Parent", 4, "a", "add", None),
            ("link", 1, 0, True),
            ("set", 0, "label", "b"),
            ("link", 1, 0, False),
            ("begin_nested",),
            ("set", 0, "label", "b"),
            ("rollback_nested",),
            ("delete", 0),
        ],
    ) as run:
        assert (0, "parents") in run.loaded_by_retort_only
        assert not run.lists_twice_what_sa_loaded_once()
        assert run.step(("delete", 1)) is None
        assert run.lists_twice_what_sa_loaded_once()
        assert [s.norm(list(s.handles[0].parents)).count(("h", 1)) for s in sides] == [1, 2]
    assert run.program[-1] == (
        "delete(1)  -> ok None (improvement: a collection unchanged inside a SAVEPOINT keeps a "
        "member listed twice)"
    )


def test_divergence_a_member_taken_out_of_a_collection_only_retort_held_is_cascaded(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5 (inserted) has its name set again and its children
    # read inside a SAVEPOINT that is rolled back; SQLAlchemy expires it (an attribute event
    # touched it), retort keeps it loaded (it did not change). New node 6 is given parent 5
    # and flushed: retort's loaded collection now holds it, SQLAlchemy's, unloaded, does not.
    # A failed flush rolls back, making both nodes new again. Node 6 is taken out of node 5's
    # children: a removal in retort's collection, which the save-update cascade of node 5
    # follows when node 1 is given parent 5 (as SQLAlchemy's does from a loaded collection:
    # test_relationships.py, test_a_member_taken_out_after_a_rollback_is_cascaded_with_its_
    # owner); SQLAlchemy's collection, first loaded after the rollback, never held node 6
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("flush",),
            ("begin_nested",),
            ("set", 0, "name", "a"),
            ("remove", 0, "children", 0),
            ("rollback_nested",),
            ("new", "Node", 6, "a", "set_parent_add", 0),
            ("flush",),
            ("new", "Parent", 1, "a", "add", None),
        ],
    ) as run:
        assert (0, "children") in run.loaded_by_retort_only
        failed = run.step(("flush",))
        assert failed is not None and failed.value == "IntegrityError"
        assert run.step(("rollback",)) is not None
        assert run.step(("node_parent", 1, None)) is not None
        assert run.step(("get", "Node", 1)) is not None
        assert run.step(("node_parent", 3, 0)) is None
        assert run.cascades_a_member_taken_out_of_a_collection_only_retort_held()
        assert [s.lifecycle(s.handles[1]) for s in sides] == ["transient", "pending"]
    assert run.program[-1] == (
        "node_parent(3, 0)  -> ok None (improvement: a collection unchanged inside a SAVEPOINT "
        "cascades to a member taken out)"
    )


def test_divergence_a_detached_copy_of_a_row_only_retorts_expired_collection_kept(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 2 (handle 0) is expunged and given transient parent 1
    # (handle 1), whose children also list a new child 1. merge() of a tag listing parent 1
    # loads parent 1 and merges its children: child 1 onto handle 3, handle 0 onto another
    # instance of child 2, to which the program has no handle. After expire_all(),
    # SQLAlchemy's parent no longer refers to its children, and that instance goes; retort's
    # expiry is lazy (commit is O(1)), so the parent's expired collection keeps it, and its
    # weak identity map too, until the parent is next used. Giving handle 3 parent 1 cascades
    # to handle 0, which SQLAlchemy attaches; retort refuses it (another instance of its row)
    gc.disable()  # (as while a drawn program runs: what is freed, only by reference counts)
    try:
        with _stepped(
            sides,
            admin_conn,
            [
                ("get", "Child", 2),
                ("new", "Parent", 1, "a", "add", None),
                ("new", "Tag", 1, "a", "add", None),
                ("delete", 0),
                ("rollback",),
                ("read", 0, "name"),
                ("expunge", 0),
                ("merge_new", "Child", 1, "a"),
                ("new", "Child", 5, "a", "add", None),
                ("new", "Child", 6, "a", "add", None),
                ("new", "Child", 7, "a", "add", None),
                ("new", "Child", 8, "a", "add", None),
                ("new", "Tag", 3, "a", "append", 1),
                ("new", "Child", 9, "a", "add", None),
                ("new", "Child", 1, "a", "append", 1),
                ("move", 0, 1, "set"),
                ("merge", 8),
                ("new", "Child", 10, "a", "add", None),
                ("expire_all",),
            ],
        ) as run:
            held = run.rt.held("Child", 2)
            assert held is not None and id(held) not in run.rt.index
            assert run.sa.held("Child", 2) is None
            assert run.step(("move", 3, 1, "set")) is None
    finally:
        gc.enable()
    assert run.program[-1] == (
        "move(3, 1, 'set')  -> ok None / retort: raised InvalidRequestError (improvement: a row "
        "only retort's expired collection keeps refuses a detached copy)"
    )


def test_divergence_either_instance_sqlalchemys_rollback_restores_displaces_the_other(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 1 (handle 0) is expunged, and another instance of its
    # row (handle 4) is deleted by an autoflush; delete() then attaches handle 0 with the free
    # key. merge(0)'s autoflush fails (ObjectDeletedError: handle 0's row is gone), and the
    # rollback of the failed flush restores both: retort keeps handle 4, whose DELETE it
    # undid, and detaches handle 0; SQLAlchemy keeps either in its identity map, by the order
    # of a set, leaving the other claiming to be persistent. Either way one instance is
    # displaced (the divergence above)
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("commit",),
            ("expunge", 0),
            ("new", "Parent", 4, "a", "add", None),
            ("get", "Tag", 1),
            ("delete", 2),
            ("get", "Parent", 1),  # (its autoflush deletes handle 2)
            ("delete", 0),
        ],
    ) as run:
        assert run.step(("merge", 0)) is None
        assert run.program[-1] == (
            "merge(0)  -> raised ObjectDeletedError (improvement: an object displaced by a "
            "rollback's restored object is detached)"
        )
        rt = run.rt
        assert rt.handles[2] in rt.session and rt.lifecycle(rt.handles[2]) == "persistent"
        assert rt.lifecycle(rt.handles[0]) == "detached"
        sa = run.sa
        kept, other = (sa.handles[0], sa.handles[2])
        if kept not in sa.session:
            kept, other = other, kept
        assert sa.lifecycle(other) == "persistent" and other not in sa.session
        assert run.displaced()
        # SQLAlchemy's other order: the other instance in its identity map
        sa.session.identity_map.replace(sa.api.inspect(other))
        assert other in sa.session and kept not in sa.session
        assert run.displaced()


def test_divergence_a_rollback_detaches_an_object_holding_a_restored_objects_key(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 3 (handle 0) is expunged, and another instance of its
    # row, loaded by parent 2's children, is deleted as an orphan by an autoflush. Handle 0 is
    # then appended to parent 1's children, which attaches it with the free key. Undoing the
    # DELETE (the failed flush that follows, or a SAVEPOINT's rollback) puts the deleted
    # instance back in the identity map: SQLAlchemy leaves handle 0 persistent, though the
    # session does not hold it; retort detaches it (it once kept it in the session, where
    # get() found the other instance)
    def play(steps: list[Step], last: Step) -> Lockstep:
        run = _lockstep(sides, admin_conn)
        try:
            for step in steps:
                assert run.step(step) is not None
            assert run.step(last) is None
            for side in sides:
                side.session.rollback()
                c3 = side.handles[0]
                other = side.session.get(side.models.Child, 3)
                assert other is not None and other is not c3 and c3 not in side.session
                assert other.parent_id == 2
            assert [side.lifecycle(side.handles[0]) for side in sides] == [
                "persistent",
                "detached",
            ]
        finally:
            for side in sides:
                side.close()
        return run

    run = play(
        [
            ("get", "Child", 3),
            ("move", 0, None, "set"),
            ("get", "Parent", 2),  # (its autoflush deletes child 3, an orphan)
            ("expunge", 0),
            ("rollback",),
            ("remove", 1, "children", 0),
            ("get", "Parent", 1),  # (likewise, another instance of child 3)
            ("move", 0, 2, "append"),
        ],
        ("flush",),  # UPDATE of child 3's parent_id: no row (StaleDataError)
    )
    assert run.program[-1] == (
        "flush()  -> raised StaleDataError (improvement: an object displaced by a rollback's "
        "restored object is detached)"
    )
    run = play(
        [
            ("get", "Child", 3),
            ("expunge", 0),
            ("get", "Parent", 2),
            ("begin_nested",),
            ("remove", 1, "children", 0),
            ("get", "Parent", 1),
            ("move", 0, 2, "append"),
        ],
        ("rollback_nested",),
    )
    assert run.program[-1] == (
        "rollback_nested()  -> ok None (improvement: an object displaced by a rollback's "
        "restored object is detached)"
    )


def test_improvement_a_cycle_broken_then_a_load_of_a_deleted_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 5 is deleted and node 5 made its own parent; reading
    # the child's (expired) name autoflushes: SQLAlchemy's flush fails on the cycle, retort's
    # breaks it (SPEC 5) and deletes child 5, whose load then raises ObjectDeletedError
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Child", 5, "a", "add", None),
            ("new", "Node", 5, "a", "add", None),
            ("commit",),
            ("delete", 0),
            ("node_parent", 1, 1),
        ],
    ) as run:
        assert run.step(("read", 0, "name")) is None
    assert run.program[-1] == (
        "read(0, 'name')  -> raised CircularDependencyError / retort: raised ObjectDeletedError "
        "(improvement: cycle through a nullable foreign key (then a deleted object's load))"
    )


def test_improvement_a_cycle_broken_then_a_delete_matching_no_row(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 2 (handle 0) is expunged, and another instance of its
    # row is deleted by a flush; delete() then attaches handle 0 with the free key, and node 6
    # is made its own parent. Loading the tag's parents autoflushes: SQLAlchemy's flush fails
    # on the cycle, retort's breaks it (SPEC 5), and the DELETE of handle 0 matches no row
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 2),
            ("expunge", 0),
            ("get", "Tag", 2),
            ("delete", 1),
            ("flush",),
            ("delete", 0),
            ("new", "Node", 6, "a", "add", None),
            ("node_parent", 2, 2),
        ],
    ) as run:
        assert run.step(("remove", 0, "parents", 0)) is None
    assert run.program[-1] == (
        "remove(0, 'parents', 0)  -> raised CircularDependencyError / retort: raised "
        "StaleDataError (improvement: cycle through a nullable foreign key (then a DELETE "
        "matching no row))"
    )


def test_improvement_a_cycle_broken_then_an_update_matching_no_row(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 5, inserted by a flush, is expunged, and merge() loads
    # its row into another instance (handle 1); a rollback undoes the INSERT, and handle 1
    # stays, expired (in both libraries: its instance did not insert the row). Made its own
    # parent, it is flushed by the commit: SQLAlchemy's flush fails on the cycle, retort's
    # breaks it (SPEC 5), and its UPDATE matches no row (StaleDataError, as SQLAlchemy's would)
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Node", 5, "a", "add", None),
            ("flush",),
            ("expunge", 0),
            ("merge", 0),
            ("bad_sql", "Parent", 1),
            ("node_parent", 1, 1),
        ],
    ) as run:
        assert run.step(("commit",)) is None
    assert run.program[-1] == (
        "commit()  -> raised CircularDependencyError / retort: raised StaleDataError "
        "(improvement: cycle through a nullable foreign key (then an UPDATE matching no row))"
    )


def test_improvement_a_cycle_broken_then_a_load_of_an_object_whose_row_is_gone(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: tag 2 (handle 0) is expunged, and another instance of its
    # row is deleted and committed; delete() attaches handle 0 again (a rollback leaves it in
    # the session, expired), and node 6 is made its own parent. Loading the tag autoflushes:
    # SQLAlchemy's flush fails on the cycle, retort's breaks it (SPEC 5), and the load of
    # handle 0 finds no row
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Tag", 2),
            ("expunge", 0),
            ("get", "Tag", 2),
            ("delete", 1),
            ("commit",),
            ("delete", 0),
            ("rollback",),
            ("new", "Node", 6, "a", "add", None),
            ("node_parent", 2, 2),
        ],
    ) as run:
        assert run.step(("remove", 0, "parents", 0)) is None
    assert run.program[-1] == (
        "remove(0, 'parents', 0)  -> raised CircularDependencyError / retort: raised "
        "ObjectDeletedError (improvement: cycle through a nullable foreign key (then a load of "
        "a gone row))"
    )


def test_improvement_a_cycle_broken_then_a_change_of_a_deleted_object(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is deleted and node 5 made its own parent; linking
    # a new tag to parent 4 loads its tags, which autoflushes: SQLAlchemy's flush fails on the
    # cycle, retort's breaks it (SPEC 5) and deletes parent 4, whose change then raises
    # InvalidRequestError
    with _stepped(
        sides,
        admin_conn,
        [
            ("new", "Parent", 4, "a", "add", None),
            ("flush",),
            ("new", "Node", 5, "a", "add", None),
            ("delete", 0),
            ("node_parent", 1, 1),
        ],
    ) as run:
        assert run.step(("new", "Tag", 3, "a", "append", 0)) is None
    assert run.program[-1] == (
        "new('Tag', 3, 'a', 'append', 0)  -> raised CircularDependencyError / retort: raised "
        "InvalidRequestError (improvement: cycle through a nullable foreign key (then a deleted "
        "object's change))"
    )


def test_improvement_a_cycle_broken_then_an_identity_conflict(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 1 is expunged and node 5 made its own parent;
    # appending the detached parent 1 to tag 1's parents loads them, which autoflushes:
    # SQLAlchemy's flush fails on the cycle, retort's breaks it (SPEC 5), and the load puts a
    # new Parent 1 in the session, so the cascade of the detached one raises
    # InvalidRequestError
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("get", "Parent", 1),
            ("expunge", 1),
            ("new", "Node", 5, "a", "add", None),
            ("node_parent", 2, 2),
            ("link", 1, 0, True),
        ],
    )
    assert len(run.program) == 6
    assert run.program[-1] == (
        "link(1, 0, True)  -> raised CircularDependencyError / retort: raised "
        "InvalidRequestError (improvement: cycle through a nullable foreign key (then an "
        "identity conflict))"
    )


@pytest.mark.parametrize("last", [("flush",), ("remove", 0, "children", 0)])
def test_improvement_a_cycle_whose_rows_hold_the_keys_already_writes_nothing(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any], last: Step
) -> None:
    # found by the nightly search: node 3's parent_id is set to its own key by hand and
    # flushed; making it its own parent is then a cycle of one row to SQLAlchemy's flush,
    # nothing to write to retort's. (The removal's autoflush fails likewise in SQLAlchemy;
    # retort's loads node 3's children, node 3 itself, and takes it out: its parent None.)
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Node", 3),
            ("set", 0, "parent_id", 3),
            ("flush",),
            ("node_parent", 0, 0),
        ],
    ) as run:
        writes = run.rt.writes[0]
        assert run.step(last) is None
        assert run.rt.writes[0] == writes
        run.rt.session.commit()
    outcome = "ok None" if last[0] == "flush" else "ok ('h', 0)"
    assert run.program[-1] == (
        f"{_fmt(last)}  -> raised CircularDependencyError / retort: {outcome} (improvement: "
        "cycle through a nullable foreign key (nothing to write))"
    )
    parent = 3 if last[0] == "flush" else None
    assert (3, "n3", parent) in fetch_rows(admin_conn, run.rt.schema)["nodes"]


def test_improvement_a_node_taken_out_of_its_own_children_writes_nothing(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 1 is given node 2 as its parent and its parent_id is
    # set to 1 by hand; the autoflush of loading node 1's children writes 1 (in both), so node
    # 1 is listed among them. Taken out, node 1's many-to-one still names node 2 (the backref
    # leaves it), and SQLAlchemy's flush sees a cycle of node 1's row; retort's writes nothing,
    # as both do for a node taken out of another node's children that way
    with _stepped(
        sides,
        admin_conn,
        [
            ("query", "Node"),  # (nodes 1 to 4: handles 0 to 3)
            ("node_parent", 0, 1),
            ("remove", 1, "children", 1),  # (node 3, from node 2's children: node 3, node 1)
            ("set", 0, "parent_id", 1),
            ("remove", 0, "children", 0),
        ],
    ) as run:
        assert run.program[-1] == "remove(0, 'children', 0)  -> ok ('h', 0)"
        writes = run.rt.writes[0]
        assert run.step(("flush",)) is None
        assert run.rt.writes[0] == writes
        run.rt.session.commit()
    assert run.program[-1] == (
        "flush()  -> raised CircularDependencyError / retort: ok None (improvement: cycle "
        "through a nullable foreign key (nothing to write))"
    )
    assert (1, "n1", 1) in fetch_rows(admin_conn, run.rt.schema)["nodes"]


def test_improvement_a_cycle_through_a_parent_outside_the_session_writes_nothing(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: node 1 is given node 2 as its parent (flushed: the rows
    # hold a cycle, node 2's parent being node 1), and node 2 a new node 5, then expunged. The
    # autoflush of loading node 2's children has node 2's new parent to write, outside the
    # session: nothing, with a warning. SQLAlchemy's raises CircularDependencyError (nodes 1
    # and 2) first; retort's writes nothing and loads the children
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Node", 2),
            ("get", "Node", 1),
            ("new", "Node", 5, "a", "add", None),
            ("node_parent", 1, 0),
            ("get", "Parent", 1),  # (its autoflush writes node 1's parent_id in both)
            ("node_parent", 0, 2),
            ("expunge", 2),
        ],
    ) as run:
        writes = run.rt.writes[0]
        assert run.step(("remove", 0, "children", 0)) is None
        assert run.rt.writes[0] == writes
        assert any("so the flush writes nothing for Node.parent" in w for w in run.rt.warned)
        run.rt.session.commit()
    assert run.program[-1] == (
        "remove(0, 'children', 0)  -> raised CircularDependencyError / retort: ok ('h', 1) "
        "(improvement: cycle through a nullable foreign key (nothing to write))"
    )
    nodes = fetch_rows(admin_conn, run.rt.schema)["nodes"]
    assert (1, "n1", None) in nodes and (2, "n2", 1) in nodes  # (node 1 taken out: NULL)


def test_divergence_a_child_listed_by_two_parents_takes_its_many_to_ones_key(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: child 3 appended to a new parent 5, then rollback(): parent
    # 5 is transient and still lists it, child 3 is expired. Parent 5 comes back (a cascade)
    # and child 3 is given parent 6: its old parent is not known without SQL, so it stays in
    # parent 5's children in both. The flush has two keys for child 3's parent_id: SQLAlchemy's
    # takes parent 5's (its collection) or parent 6's, by an order that changes from one run
    # to the next; retort's takes parent 6's (the many-to-one set last), always. The draw gives
    # no parent to such a child (Drawer.listed_elsewhere)
    with _stepped(
        sides,
        admin_conn,
        [
            ("get", "Child", 3),
            ("new", "Parent", 5, "a", "add", None),
            ("move", 0, 1, "append"),
            ("rollback",),
            ("new", "Parent", 6, "a", "add", None),
            ("new", "Child", 5, "a", "set_parent_add", 1),
        ],
    ) as run:
        drawer = Drawer(None, run.sa, run.rt)
        assert drawer.listed_elsewhere(0, 2) and not drawer.listed_elsewhere(0, 1)
        assert not drawer.listed_elsewhere(3, 2)  # child 5, whose parent is parent 5
        keys = {}
        for side in sides:
            side.handles[0].parent = side.handles[2]
            side.session.flush()
            keys[side.name] = side.handles[0].parent_id
    assert keys["retort"] == 6
    assert keys["sqlalchemy"] in (5, 6)  # (seen both, from one run to the next)


def test_improvement_unique_code_swap(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # SQLAlchemy updates parents 1 and 3 in key order and violates parents_code_key; retort
    # goes through NULL
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Parent", 1),
            ("get", "Parent", 3),
            ("set", 0, "code", "y"),
            ("set", 1, "code", "x"),
            ("commit",),
        ],
    )
    assert _improved(run) and "IntegrityError" in _improved(run)[0]
    assert fetch_rows(admin_conn, run.rt.schema)["parents"] == [
        (1, "p1", "y"),
        (2, "p2", None),
        (3, "p3", "x"),
    ]


def test_improvement_delete_frees_a_unique_code_for_a_new_row(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # SQLAlchemy inserts parent 7 before deleting parent 3, which still holds "y"
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Parent", 3),
            ("delete", 0),
            ("new", "Parent", 7, "n", "add", None),
            ("set", 1, "code", "y"),
            ("flush",),
        ],
    )
    assert _improved(run) and "IntegrityError" in _improved(run)[0]
    parents = fetch_rows(admin_conn, run.rt.schema)["parents"]
    assert (7, "n", "y") in parents and all(p[0] != 3 for p in parents)


def test_improvement_deleting_two_nodes_in_a_cycle(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # nodes 3 and 4 point at each other (and nothing else points at them): SQLAlchemy finds a
    # cycle between the two DELETEs; retort deletes both in one statement
    run = _lockstep(sides, admin_conn)
    for side in sides:
        admin_conn.execute(f"UPDATE {side.schema}.nodes SET parent_id = 7 - id WHERE id IN (3, 4)")
    try:
        for step in [("get", "Node", 3), ("get", "Node", 4), ("delete", 0), ("delete", 1)]:
            assert run.step(step) is not None
        assert run.step(("flush",)) is None
        run.rt.session.commit()
    finally:
        for side in sides:
            side.close()
    assert "CircularDependencyError" in _improved(run)[0]
    assert [n[0] for n in fetch_rows(admin_conn, run.rt.schema)["nodes"]] == [1, 2]


def test_harness_stops_where_a_collection_loaded_in_one_library_only_lost_a_member(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: parent 4 is given inside a SAVEPOINT the code it has (NULL,
    # left out of its INSERT), and the SAVEPOINT's rollback expires it in SQLAlchemy only
    # (the unchanged-inside-a-SAVEPOINT improvement). Appending tag 1 to its tags, after tag 1
    # is deleted, then loads the collection in SQLAlchemy only: the harness flushes both first
    # (deleting tag 1), and both refuse the deleted tag. SQLAlchemy's collection, loaded after
    # that flush, no longer lists tag 1; retort's, loaded before it, still does, as a loaded
    # collection does in both libraries. The program stops there
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("new", "Parent", 4, "p", "add", None),
            ("link", 1, 0, False),
            ("begin_nested",),
            ("set", 1, "code", None),
            ("rollback_nested",),
            ("delete", 0),
            ("link", 1, 0, False),
        ],
    )
    assert run.program[-2] == "flush()  -> ok None"
    assert run.program[-1] == (
        "link(1, 0, False)  -> raised InvalidRequestError / retort: raised InvalidRequestError "
        "(improvement: a collection loaded in one library only lists a member since gone)"
    )


def test_harness_stops_where_a_collection_loaded_in_one_library_only_lists_an_expunged_member(
    sides: tuple[Side, Side], admin_conn: psycopg.Connection[Any]
) -> None:
    # found by the nightly search: as above, parent 4's tags are loaded in retort only; tag 1
    # is expunged. Appending tag 1 again loads the collection in SQLAlchemy, which lists a
    # new instance of tag 1's row, and then refuses the expunged one (another instance has
    # its key); retort's collection lists the expunged tag, whose append is no change and
    # attaches it again. The program stops there
    run = _play(
        sides,
        admin_conn,
        [
            ("get", "Tag", 1),
            ("new", "Parent", 4, "p", "add", None),
            ("link", 1, 0, False),
            ("begin_nested",),
            ("set", 1, "code", None),
            ("rollback_nested",),
            ("expunge", 0),
            ("link", 1, 0, False),
        ],
    )
    assert run.program[-1] == (
        "link(1, 0, False)  -> raised InvalidRequestError / retort: ok None (improvement: a "
        "collection loaded in one library only lists a member since gone)"
    )
