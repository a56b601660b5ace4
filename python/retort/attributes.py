"""Relationship attributes: the descriptor, list collections and their in-memory events.

A relationship's value lives in the instance ``__dict__`` like a column's: the related object
(or None) for a scalar, an `InstrumentedList` for a collection. Changing either fires the events
here: the other side of ``back_populates`` is kept in step, related objects join the owner's
session (save-update cascade), orphans are expunged or remembered for deletion, and the owner is
registered with its session so that the next flush copies keys into foreign keys.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, SupportsIndex, overload

from retort import exc

if TYPE_CHECKING:
    from retort.mapping import RelationshipProperty
    from retort.session import Session

__all__ = ["InstrumentedList", "RelationshipAttribute"]

_STATE = "_retort_state"


def _state(obj: Any) -> Any:
    return obj.__dict__.get(_STATE)


def object_session_of(obj: Any) -> Session | None:
    state = obj.__dict__.get(_STATE)
    if state is None:
        return None
    session: Session | None = state.session
    return session


def _has_identity(obj: Any) -> bool:
    state = obj.__dict__.get(_STATE)
    return bool(state is not None and state.has_identity)


def deleted_by_flush(obj: Any) -> bool:
    """Whether `obj`'s DELETE was flushed in the current transaction."""
    state = obj.__dict__.get(_STATE) if obj is not None else None
    return bool(state is not None and state.has_identity and state.lifecycle == "deleted")


def holds_related_change(obj: Any) -> bool:
    """Whether a relationship of `obj` changed: a collection's gains or losses, a
    many-to-one's history, or changes queued for an unloaded collection (an object attached
    again with none of these counts among those to look at, unchanged)."""
    d = obj.__dict__
    state = d.get("_retort_state")
    if state is not None and state.stale:
        # expired since (commit, rollback, expire_all): its changes are forgotten, though its
        # __dict__ holds them until next used (as the flush's sync does, flush.sync_related)
        return False
    if d.get("_retort_pending") or d.get("_retort_history"):
        return True
    mapper = getattr(type(obj), "__mapper__", None)
    for key in getattr(mapper, "relationships", ()):
        value = d.get(key)
        if getattr(value, "_added", None) or getattr(value, "_removed", None):
            return True
    return False


def refuse_if_deleted(owner: Any, prop: RelationshipProperty) -> None:
    """A relationship of an object whose DELETE was flushed cannot change any more (nothing of
    it would be written): raise before anything changes."""
    if deleted_by_flush(owner):
        raise exc.InvalidRequestError(
            f"cannot change {prop} of {owner!r}: it was deleted by a flush in this transaction, "
            "so the change would never be written; call rollback() to undo the delete, or "
            "make_transient() after the commit to insert it again as a new object"
        )


def refuse_deleted_item(item: Any, prop: RelationshipProperty) -> None:
    """An object whose DELETE was flushed cannot be related to another (its row is gone, and
    the save-update cascade cannot bring it back): raise before anything changes."""
    if deleted_by_flush(item):
        raise exc.InvalidRequestError(
            f"{item!r} was deleted by a flush in this transaction and cannot be put in {prop}; "
            "call rollback() to undo the delete, or make_transient() after the commit to "
            "insert it again as a new object"
        )


def _note_change(owner: Any, prop: RelationshipProperty) -> None:
    """Tell the owner's session (if any) that a relationship of `owner` changed."""
    session = object_session_of(owner)
    if session is not None:
        session._related_changed[id(owner)] = owner
        if session._nested:
            # expired if the SAVEPOINT rolls back (SessionTransaction._touched)
            session._nested[-1]._touched[id(owner)] = owner


def _cascade_add(owner: Any, prop: RelationshipProperty, item: Any) -> None:
    """save-update cascade: a related object joins the owner's session."""
    if item is None or "save-update" not in prop.cascade:
        return
    session = object_session_of(owner)
    if session is not None and object_session_of(item) is not session:
        session._cascade_add(item)


# Objects without a row taken out of a delete-orphan collection while in no session: id ->
# (weak reference to the object, the name of its relationship back to the parent); an entry
# leaves when its object is freed. SQLAlchemy remembers that such an object was orphaned
# outside a session, and its flush expunges it if a cascade has brought it into the session
# since as a pending orphan (Session._expunge_pending_orphans).
orphaned_outside: dict[int, tuple[weakref.ref[Any], str]] = {}


def _forget_orphaned_outside(key: int, ref: weakref.ref[Any]) -> None:
    entry = orphaned_outside.get(key)
    if entry is not None and entry[0] is ref:  # (not a later entry of the same id)
        del orphaned_outside[key]


def orphaned_outside_entries() -> list[tuple[int, tuple[weakref.ref[Any], str]]]:
    """A copy of `orphaned_outside`'s entries. Copying allocates, so the collector may run
    meanwhile and free an object of an entry, whose callback deletes that entry; then Python
    raises "dictionary changed size during iteration", and the copy starts again. (Another
    thread's `orphaned` can likewise add one while the collector's callbacks run.)"""
    while True:
        try:
            return list(orphaned_outside.items())
        except RuntimeError:
            continue


def remember_orphaned(item: Any, prop: RelationshipProperty) -> None:
    """Remember that `item`, without a row, was taken out of the delete-orphan collection
    `prop` where its session could not expunge it then (see `orphaned_outside`)."""
    back = prop.back
    if back is None:
        return  # (no other side to say whether another parent took it)
    key = id(item)
    ref = weakref.ref(item, lambda r: _forget_orphaned_outside(key, r))
    orphaned_outside[key] = (ref, back.key)


def orphaned(item: Any, prop: RelationshipProperty, owner: Any) -> None:
    """`item` left the delete-orphan collection `prop` of `owner` (loaded or not): a pending
    one leaves the session now, a persistent one is deleted by the flush unless another parent
    takes it meanwhile (`flush._delete_unparented`). As in SQLAlchemy, a pending one taken
    from an owner outside its session stays until the flush, which expunges it unless another
    parent took it meanwhile (`Session._expunge_pending_orphans`)."""
    session = object_session_of(item)
    if session is None:
        if prop.back is not None and not _has_identity(item):
            remember_orphaned(item, prop)
        return
    if not _has_identity(item):
        if item in session:
            if (
                prop.back is not None
                and owner is not None
                and object_session_of(owner) is not session
            ):
                session._orphan_children[id(item)] = (item, prop)
            else:
                session.expunge(item)
    elif prop.back is not None:
        session._orphan_children[id(item)] = (item, prop)
        session._orphans_taken.append((item, prop))


def rows_undone(objs: list[Any]) -> None:
    """A rollback undid the INSERT of each of `objs` (the core's, of classes with
    relationships), and with it the rows of the members its collections list then
    (association rows, children's foreign keys), which they keep listing, as in SQLAlchemy.

    The object is new again, and so is each of its many-to-manys: every member listed is
    gained, and the flush that inserts the object again writes its association row (as for
    any new object, and as for a many-to-one, whose key an INSERT copies from the object it
    names). SQLAlchemy keeps the history the rolled-back flush left, in which the members
    are no change, and writes no association row for them: the collection lists a member the
    database does not link (test_improvement_an_object_added_again_after_a_rollback_keeps_
    its_many_to_many_members). Nothing taken out since is removed: no row of it exists.

    A one-to-many's members get the key of a new owner at its INSERT whatever its history
    (sync.rs); a member appended again is no member whose row exists, and is written again,
    where SQLAlchemy's second entry writes it too."""
    for obj in objs:
        d = obj.__dict__
        for prop in type(obj).__mapper__.relationships.values():
            coll = d.get(prop.key)
            if not isinstance(coll, InstrumentedList):
                continue
            if prop.direction == "MANYTOMANY":
                coll._removed.clear()
                for x in coll:
                    coll._added.setdefault(id(x), x)
            elif coll:
                coll._unwritten = {id(x) for x in coll if id(x) not in coll._added}


class InstrumentedList(list[Any]):
    """A list collection of a relationship: every change is seen by the unit of work."""

    __slots__ = (
        "__weakref__",
        "_added",
        "_dup",
        "_owner_ref",
        "_prop",
        "_removed",
        "_unwritten",
        "_virgin",
    )

    def __init__(self, owner: Any, prop: RelationshipProperty, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self._owner_ref = weakref.ref(owner)
        self._prop = prop
        # The change history is of membership, as SQLAlchemy computes it at flush: an object
        # appended while already a member, or removed while still a member (the list held it
        # twice), is no change. `_dup` says the list may hold an object twice, so that a
        # removal only scans the list when it could matter.
        self._added: dict[int, Any] = {}
        self._removed: dict[int, Any] = {}
        self._dup = False
        # an empty collection read from an object without a row, never changed: not loaded
        # once the object has its row (SQLAlchemy does not keep it either)
        self._virgin = False
        # ids of members listed when a rollback undid the owner's INSERT, and with it their
        # rows (association rows, foreign keys): appended again, such a member is written
        # again (see rows_undone)
        self._unwritten: set[int] | None = None

    # -- the events ------------------------------------------------------------------------

    def _owner(self) -> Any:
        owner = self._owner_ref()
        if owner is None:  # pragma: no cover - the owner holds the list
            raise exc.InvalidRequestError("the object owning this collection is gone")
        return owner

    def _fire_add(self, item: Any, *, back: bool = True, member: bool | None = None) -> None:
        if item is None:
            raise exc.InvalidRequestError(
                f"None cannot be added to collection {self._prop}; remove the item instead"
            )
        prop = self._prop
        prop.target.check_related(item, prop)
        if back:
            refuse_deleted_item(item, prop)
        owner = self._owner()
        tracked = _STATE in owner.__dict__
        if back and tracked:
            # the save-update cascade comes first, as SQLAlchemy's listeners: where it fails
            # (it reaches an object whose DELETE was flushed), neither this collection nor
            # the other side has changed. (An object that was never added has no session to
            # tell: add() cascades later; the other side of a back_populates event does not
            # cascade, as in SQLAlchemy 2.x)
            _cascade_add(owner, prop, item)
        self._virgin = False
        key = id(item)
        changed = True  # whether membership changed (the history of this collection)
        if key in self._removed:
            del self._removed[key]
        elif key in self._added:
            self._dup = True  # appended twice
            changed = False
        elif (
            member
            if member is not None
            else (
                _has_identity(item)
                and _has_identity(owner)
                and not (self._unwritten and key in self._unwritten)
                and self._holds(item)
            )
        ):
            # a member already. A new object cannot have been one, nor own one; nor can one
            # whose row a rollback undid (see rows_undone): appended again, it is written
            self._dup = True
            changed = False
        else:
            self._added[key] = item
            if self._unwritten:
                self._unwritten.discard(key)
        if back and prop.back is not None:
            prop.back._set_backref(item, owner, prop, changed=changed)
            if tracked:
                # the backref may have taken a new item out of its old parent's delete-orphan
                # collection, and a pending orphan leaves the session: it moves here, so it
                # joins again (test_improvement_a_pending_child_moved_between_pending_parents_
                # stays in test_differential.py)
                _cascade_add(owner, prop, item)
        if tracked:
            _note_change(owner, prop)

    def _holds(self, item: Any) -> bool:
        return any(x is item for x in self)

    def _fire_remove(self, item: Any, *, back: bool = True) -> None:
        self._virgin = False
        prop = self._prop
        owner = self._owner()
        if self._dup and self._holds(item):
            # one of two entries went: still a member; a many-to-many's other side drops one
            # entry too, a many-to-one keeps its value (as SQLAlchemy)
            if back and prop.back is not None and prop.back.uselist:
                prop.back._unset_backref(item, owner, prop, changed=False)
            elif (
                not back
                and "delete-orphan" in prop.cascade
                and prop.back is not None
                and not prop.back.uselist
                and item.__dict__.get(prop.back.key, False) is None
            ):
                # taken out from the other side (child.parent = None): an orphan all the same,
                # as SQLAlchemy's parent tracking goes by the last event
                orphaned(item, prop, owner)
            return
        key = id(item)
        came_and_went = key in self._added
        if came_and_went:
            del self._added[key]
        else:
            self._removed[key] = item
        orphan = "delete-orphan" in prop.cascade
        session = object_session_of(item)
        outside = owner is not None and object_session_of(owner) is not session
        # (asked before the backref sets the object's many-to-one)
        unchanged = (
            orphan
            and outside
            and prop.back is not None
            and _has_identity(item)
            and prop.back._names_other_than_new(item, owner)
        )
        if back and prop.back is not None:
            prop.back._unset_backref(item, owner, prop)
        if orphan:
            if not _has_identity(item):
                orphaned(item, prop, owner)  # a pending orphan never reaches the database
            elif unchanged:
                # taken from a parent without a row outside its session (one a rollback made
                # new again, say) while its loaded foreign key names, without SQL, no parent or
                # another one: SQLAlchemy's backref finds no change of the object (nor does
                # retort's, _unset_backref), so its flush deletes it only once a change of its
                # own puts it in a flush
                if session is not None:
                    session._orphans_if_changed[id(item)] = (item, prop)
                    session._orphans_taken.append((item, prop))
            elif (came_and_went and prop.back is not None and prop.uselist) or outside:
                # appended and taken out again (this collection's history nets out), or taken
                # from a parent outside its session (one a rollback made transient again, say:
                # no flush of that parent settles the removal): the object lost its parent all
                # the same, as SQLAlchemy's parent tracking has it; the flush deletes it unless
                # another parent takes it meanwhile
                orphaned(item, prop, owner)
            elif session is not None and prop.back is not None:
                # (the flush deletes it; noted should a rollback undo its INSERT, see
                # Session._forget_orphan_children; orphaned() notes it in the cases above)
                session._orphans_taken.append((item, prop))
        _note_change(owner, prop)

    # -- list API ----------------------------------------------------------------------------

    def _check(self) -> None:
        refuse_if_deleted(self._owner(), self._prop)

    def append(self, item: Any) -> None:
        self._check()
        self._fire_add(item)
        super().append(item)

    def _append_quiet(self, item: Any, *, twice: bool = False) -> None:
        """Append as the other side of a back_populates event (no event back). An object
        already here is appended again only when `twice` (the other side is a collection too,
        which held this one already: both sides keep the duplicate, as in SQLAlchemy)."""
        if not twice and self._holds(item):
            return
        self._fire_add(item, back=False)
        super().append(item)

    def _remove_quiet(self, item: Any) -> bool:
        """Remove as the other side of a back_populates event (no event back); False when
        `item` is not here."""
        for i, x in enumerate(self):
            if x is item:
                super().__delitem__(i)
                self._fire_remove(item, back=False)
                return True
        return False

    def extend(self, items: Iterable[Any]) -> None:
        for item in items:
            self.append(item)

    def __iadd__(self, items: Iterable[Any]) -> InstrumentedList:  # type: ignore[misc]
        self.extend(items)
        return self

    def insert(self, index: SupportsIndex, item: Any) -> None:
        self._check()
        self._fire_add(item)
        super().insert(index, item)

    def remove(self, item: Any) -> None:
        self._check()
        for i, x in enumerate(self):
            if x is item or x == item:
                super().__delitem__(i)
                self._fire_remove(x)
                return
        raise ValueError(f"{item!r} is not in the collection")

    def pop(self, index: SupportsIndex = -1) -> Any:
        self._check()
        item = super().pop(index)
        self._fire_remove(item)
        return item

    def clear(self) -> None:
        self._check()
        items = list({id(x): x for x in self}.values())
        super().clear()
        self._dup = False
        for item in items:
            self._fire_remove(item)

    @overload
    def __setitem__(self, index: SupportsIndex, value: Any) -> None: ...

    @overload
    def __setitem__(self, index: slice, value: Iterable[Any]) -> None: ...

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check()
        before = {id(x) for x in self}
        if isinstance(index, slice):
            old = list.__getitem__(self, index)
            new = list(value)
            for item in new:
                refuse_deleted_item(item, self._prop)
            super().__setitem__(index, new)
        else:
            old = [list.__getitem__(self, index)]
            new = [value]
            refuse_deleted_item(value, self._prop)
            super().__setitem__(index, value)
        now = {id(x) for x in self}
        if len(now) < len(self):
            self._dup = True
        for item in old:
            if id(item) not in now:
                self._fire_remove(item)
        for item in new:
            if id(item) not in before:
                self._fire_add(item, member=False)
                before.add(id(item))

    def __delitem__(self, index: Any) -> None:
        self._check()
        old = list.__getitem__(self, index)
        super().__delitem__(index)
        for item in old if isinstance(index, slice) else [old]:
            self._fire_remove(item)

    def __reduce__(self) -> Any:
        return (list, (list(self),))

    def __repr__(self) -> str:
        return list.__repr__(self)


class RelationshipAttribute:
    """The class attribute of a relationship (``User.addresses``)."""

    def __init__(self, prop: RelationshipProperty) -> None:
        self.prop = prop
        self.key = prop.key

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        d = obj.__dict__
        key = self.key
        state = d.get(_STATE)
        if state is not None and state.stale:
            state.apply_expiry(obj)
            d.pop("_retort_pending", None)
        try:
            value = d[key]
        except KeyError:
            pass
        else:
            if value.__class__ is not InstrumentedList or not value._virgin:
                return value
            if not _has_identity(obj):
                return value
            del d[key]  # the object got its row since: load what the database holds
        prop = self.prop
        if not _has_identity(obj):
            if prop.uselist:
                value = InstrumentedList(obj, prop)
                value._virgin = True
                d[key] = value
                return value
            return None
        return prop._load(obj)

    def __set__(self, obj: Any, value: Any) -> None:
        prop = self.prop
        if prop.uselist:
            prop._replace_collection(obj, value)
        else:
            prop._set_scalar(obj, value, back=True)

    def __delete__(self, obj: Any) -> None:
        self.__set__(obj, [] if self.prop.uselist else None)

    # expression support for joins: select(User).join(User.addresses)
    def __join_info__(self) -> Any:
        return self.prop._join_info()

    def __repr__(self) -> str:
        return f"<RelationshipAttribute {self.prop}>"
