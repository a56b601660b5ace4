"""`inspect()`: the state of a mapped object, or the mapper of a mapped class."""

from __future__ import annotations

import builtins
from typing import Any, NamedTuple

from retort import exc
from retort.mapping import _NOT_SET, Mapper, _Unsettled, object_mapper

__all__ = ["AttributeState", "History", "InstanceState", "inspect"]


class History(NamedTuple):
    """An attribute's change since it was loaded: values added, unchanged and deleted."""

    added: tuple[Any, ...]
    unchanged: tuple[Any, ...]
    deleted: tuple[Any, ...]

    def has_changes(self) -> bool:
        return bool(self.added or self.deleted)

    def empty(self) -> bool:
        return not (self.added or self.unchanged or self.deleted)


class _MappedAttributeState:
    """An attribute (column or relationship) of an inspected object."""

    def __init__(self, owner: InstanceState, key: str) -> None:
        self._owner = owner
        self.key = key

    @property
    def value(self) -> Any:
        return getattr(self._owner.object, self.key)

    @property
    def loaded_value(self) -> Any:
        return self._owner.object.__dict__.get(self.key)


class AttributeState(_MappedAttributeState):
    """One column attribute of an inspected object."""

    def __init__(self, owner: InstanceState, key: str, index: int) -> None:
        super().__init__(owner, key)
        self._index = index

    @property
    def history(self) -> History:
        obj = self._owner.object
        state = self._owner._state
        present = self.key in obj.__dict__ and not (state is not None and state.stale)
        current = obj.__dict__.get(self.key)
        if state is None or not state.has_identity:
            # Transient or pending: everything set is an addition.
            return History((current,), (), ()) if present else History((), (), ())
        committed = state.committed_value(self._index)
        if committed is None:
            return History((), (current,), ()) if present else History((), (), ())
        known, old = committed
        return History((current,), (), (old,) if known else ())


_NOTHING: Any = object()


class RelationshipState(_MappedAttributeState):
    """One relationship of an inspected object."""

    @property
    def history(self) -> History:
        obj = self._owner.object
        if self.key not in obj.__dict__:
            return History((), (), ())
        value = obj.__dict__[self.key]
        added = getattr(value, "_added", None)
        if added is not None:  # a collection
            new = tuple(added.values())
            return History(
                new,
                tuple(x for x in value if not any(x is n for n in new)),
                tuple(value._removed.values()),
            )
        before = obj.__dict__.get("_retort_history", {}).get(self.key, _NOTHING)
        if type(before) is _Unsettled:
            # (a change whatever the value: see mapping._Unsettled)
            old = before.value
            return History((value,), (), () if old is None or old is value else (old,))
        if before is _NOT_SET:
            # set, the value before not known without SQL (or none, for an object that never
            # had a row): a change, None included, which the flush writes (as SQLAlchemy's
            # history of a value set over NO_VALUE)
            return History((value,), (), ())
        if before is _NOTHING or before is value:
            return History((), (value,), ()) if value is not None else History((), (), ())
        return History(
            (value,) if value is not None else (),
            (),
            (before,) if before is not None else (),
        )


class Attrs(builtins.dict[str, "AttributeState | RelationshipState"]):
    """`InstanceState.attrs`: attribute states by name, as a mapping or as attributes."""

    def __getattr__(self, name: str) -> AttributeState | RelationshipState:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no mapped attribute {name!r}") from None


class InstanceState:
    """What `inspect(obj)` returns for a mapped object."""

    def __init__(self, obj: Any) -> None:
        self.mapper: Mapper = object_mapper(obj)
        self.object = obj
        self.class_ = type(obj)

    @property
    def _state(self) -> Any:
        return self.object.__dict__.get("_retort_state")

    def _lifecycle(self) -> str:
        state = self._state
        return "transient" if state is None else str(state.lifecycle)

    @property
    def transient(self) -> bool:
        return self._lifecycle() == "transient"

    @property
    def pending(self) -> bool:
        return self._lifecycle() == "pending"

    @property
    def persistent(self) -> bool:
        return self._lifecycle() == "persistent"

    @property
    def deleted(self) -> bool:
        return self._lifecycle() == "deleted"

    @property
    def detached(self) -> bool:
        return self._lifecycle() == "detached"

    @property
    def was_deleted(self) -> bool:
        state = self._state
        return bool(state is not None and state.was_deleted)

    @property
    def has_identity(self) -> bool:
        state = self._state
        return bool(state is not None and state.has_identity)

    @property
    def identity(self) -> tuple[Any, ...] | None:
        if not self.has_identity:
            return None
        return tuple(self.mapper._core.primary_key_of(self.object))

    @property
    def identity_key(self) -> tuple[type, tuple[Any, ...], None] | None:
        ident = self.identity
        return None if ident is None else (self.mapper.class_, ident, None)

    key = identity_key

    @property
    def session(self) -> Any:
        state = self._state
        return None if state is None else state.session

    @property
    def modified(self) -> bool:
        state = self._state
        return bool(state is not None and state.changed)

    @property
    def expired(self) -> bool:
        """Whether the object was expired as a whole (by commit, rollback, expire_all() or
        expire() without attribute names) and not loaded since; expiring some attributes does
        not count, as in SQLAlchemy."""
        state = self._state
        return bool(state is not None and state.has_identity and state.expired)

    @property
    def expired_attributes(self) -> set[str]:
        """The attributes the next load brings in: expired columns, and the relationships of
        an object expired as a whole (not a relationship never loaded). The primary key is
        never expired."""
        state = self._state
        if state is None or not state.has_identity:
            return set()
        if state.stale or state.expired:
            return self._missing([*self.mapper.keys, *self.mapper.relationships], state.stale)
        return self._missing(self.mapper.keys, False)

    @property
    def unloaded(self) -> set[str]:
        """The attributes not loaded: expired ones, and relationships not loaded yet."""
        state = self._state
        if state is None or not state.has_identity:
            return set()
        return self._missing([*self.mapper.keys, *self.mapper.relationships], state.stale)

    def _missing(self, names: list[str], stale: bool) -> set[str]:
        pk = {c.key for c in self.mapper.primary_key}
        if stale:  # (the expiry is not applied yet: nothing in __dict__ is loaded)
            return {k for k in names if k not in pk}
        d = self.object.__dict__
        return {k for k in names if k not in d or getattr(d[k], "_virgin", False)}

    @property
    def dict(self) -> dict[str, Any]:
        state = self._state
        if state is not None and state.stale:
            state.apply_expiry(self.object)  # expired values are not loaded values
        row = state is not None and state.has_identity
        return {
            k: v
            for k, v in self.object.__dict__.items()
            if k not in ("_retort_state", "_retort_history", "_retort_pending")
            # an empty collection read before the object had its row is not loaded
            and not (row and getattr(v, "_virgin", False))
        }

    @property
    def attrs(self) -> Attrs:
        """The state of each mapped attribute by name: ``attrs["name"]`` or ``attrs.name``."""
        out = Attrs({k: AttributeState(self, k, i) for i, k in enumerate(self.mapper.keys)})
        for k in self.mapper.relationships:
            out[k] = RelationshipState(self, k)
        return out

    def __repr__(self) -> str:
        return f"<InstanceState of {self.object!r}: {self._lifecycle()}>"


def inspect(subject: Any, raiseerr: bool = True) -> Any:
    """The `Mapper` of a mapped class, or the `InstanceState` of a mapped object."""
    if isinstance(subject, type):
        mapper = subject.__dict__.get("__mapper__")
        if isinstance(mapper, Mapper):
            return mapper
    elif isinstance(getattr(type(subject), "__mapper__", None), Mapper):
        return InstanceState(subject)
    elif isinstance(subject, Mapper):
        return subject
    if raiseerr:
        raise exc.NoInspectionAvailable(
            f"no inspection is available for {subject!r}: pass a mapped class or an instance of one"
        )
    return None
