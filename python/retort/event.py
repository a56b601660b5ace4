"""Session events, with SQLAlchemy 2.x's `event` API.

``event.listen(target, "before_flush", fn)`` or ``@event.listens_for(target, "before_flush")``,
where `target` is a `Session`, a `sessionmaker` (every session it makes, including the ones it
made already) or the `Session` class or a subclass (every instance of it). Listeners are called
with the session first, then the arguments the event documents.

A session keeps a dict from event name to the tuple of its listeners, holding only events that
have listeners and rebuilt whenever a listener is added or removed anywhere that applies to it;
a session nobody listens to carries an empty dict, and every dispatch point in the session
tests that dict before doing anything else.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from retort import exc

if TYPE_CHECKING:
    from retort.session import Session

__all__ = ["contains", "listen", "listens_for", "remove"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: Session events and the arguments their listeners receive, in order.
SESSION_EVENTS: dict[str, tuple[str, ...]] = {
    "before_flush": ("session", "flush_context", "instances"),
    "after_flush": ("session", "flush_context"),
    "after_flush_postexec": ("session", "flush_context"),
    "after_begin": ("session", "transaction", "connection"),
    "before_commit": ("session",),
    "after_commit": ("session",),
    "after_rollback": ("session",),
    "after_soft_rollback": ("session", "previous_transaction"),
    "after_attach": ("session", "instance"),
    "transient_to_pending": ("session", "instance"),
    "pending_to_persistent": ("session", "instance"),
    "persistent_to_deleted": ("session", "instance"),
    "deleted_to_detached": ("session", "instance"),
    "persistent_to_detached": ("session", "instance"),
}

_Registry = dict[str, list["_Listener"]]

# Listeners on the Session class and its subclasses.
_class_registries: weakref.WeakKeyDictionary[type, _Registry] = weakref.WeakKeyDictionary()
# Registration order across targets (``insert=True`` listeners get negative numbers).
_seq = itertools.count(1)


class _Listener:
    __slots__ = ("call", "fn", "seq")

    def __init__(self, fn: Callable[..., Any], call: Callable[..., Any], seq: int) -> None:
        self.fn = fn
        self.call = call
        self.seq = seq


def _once(fn: Callable[..., Any]) -> Callable[..., Any]:
    fired = False

    def call(*args: Any) -> Any:
        nonlocal fired
        if fired:
            return None
        fired = True
        return fn(*args)

    return call


def _named(fn: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return fn(**dict(zip(names, args, strict=True)))

    return call


def _describe_targets() -> str:
    return "a Session, a sessionmaker, or the Session class (or a subclass of it)"


def _registry(target: Any, create: bool) -> _Registry | None:
    """The listener registry of `target` (a Session, a sessionmaker or a Session class)."""
    from retort.session import Session, sessionmaker

    if isinstance(target, Session | sessionmaker):
        reg: _Registry | None = target.__dict__.get("_retort_listeners")
        if reg is None and create:
            reg = target.__dict__["_retort_listeners"] = {}
        return reg
    if isinstance(target, type) and issubclass(target, Session):
        reg = _class_registries.get(target)
        if reg is None and create:
            reg = _class_registries[target] = {}
        return reg
    raise exc.InvalidRequestError(
        f"no events for target {target!r}: retort has session events only, so the target "
        f"must be {_describe_targets()}; events are: {', '.join(SESSION_EVENTS)}"
    )


def _check_name(target: Any, identifier: str) -> tuple[str, ...]:
    try:
        return SESSION_EVENTS[identifier]
    except (KeyError, TypeError):
        raise exc.InvalidRequestError(
            f"no such event {identifier!r} for target {target!r}; session events are: "
            f"{', '.join(SESSION_EVENTS)}"
        ) from None


def _dispatch_of(session: Session) -> dict[str, tuple[Callable[..., Any], ...]]:
    """The listeners that apply to `session`, by event name (only events that have some).

    Listeners of the Session class (and subclasses) and of the sessionmaker come first, in the
    order they were registered, then the session's own."""
    shared: list[_Registry] = []
    if _class_registries:
        for cls in type(session).__mro__:
            reg = _class_registries.get(cls)
            if reg:
                shared.append(reg)
    maker = session.__dict__.get("_retort_maker")
    if maker is not None:
        reg = maker.__dict__.get("_retort_listeners")
        if reg:
            shared.append(reg)
    own = session.__dict__.get("_retort_listeners")
    out: dict[str, tuple[Callable[..., Any], ...]] = {}
    for name in SESSION_EVENTS:
        first = sorted((li for reg in shared for li in reg.get(name, ())), key=lambda li: li.seq)
        last = sorted(own.get(name, ()), key=lambda li: li.seq) if own else []
        if first or last:
            out[name] = tuple(li.call for li in (*first, *last))
    return out


def _refresh(target: Any) -> None:
    """Rebuild the dispatch of every live session `target`'s listeners apply to."""
    from retort.session import Session, _sessions, sessionmaker

    if isinstance(target, Session):
        target._dispatch = _dispatch_of(target)
        return
    for session in list(_sessions):
        if isinstance(target, sessionmaker):
            applies = session.__dict__.get("_retort_maker") is target
        else:
            applies = isinstance(session, target)
        if applies:
            session._dispatch = _dispatch_of(session)


def listen(
    target: Any,
    identifier: str,
    fn: Callable[..., Any],
    *,
    once: bool = False,
    named: bool = False,
    insert: bool = False,
    propagate: bool = True,
) -> None:
    """Call `fn` on event `identifier` of `target`.

    ``once=True`` calls it the first time only; ``named=True`` passes the event's arguments as
    keywords; ``insert=True`` puts it before the listeners already registered. Registering the
    same function twice for the same target and event registers it once. (`propagate` is
    accepted for compatibility: class listeners always apply to subclasses.)"""
    names = _check_name(target, identifier)
    if not callable(fn):
        raise exc.ArgumentError(f"event listener must be callable, got {fn!r}")
    reg = _registry(target, create=True)
    assert reg is not None
    listeners = reg.setdefault(identifier, [])
    if any(li.fn == fn for li in listeners):
        return
    call = _named(fn, names) if named else fn
    if once:
        call = _once(call)
    seq = next(_seq)
    listeners.append(_Listener(fn, call, -seq if insert else seq))
    _refresh(target)


def listens_for(target: Any, identifier: str, **kw: Any) -> Callable[[_F], _F]:
    """Decorator form of `listen`: ``@event.listens_for(Session, "before_commit")``."""
    _check_name(target, identifier)
    _registry(target, create=False)

    def decorate(fn: _F) -> _F:
        listen(target, identifier, fn, **kw)
        return fn

    return decorate


def remove(target: Any, identifier: str, fn: Callable[..., Any]) -> None:
    """Unregister a listener added with `listen` or `listens_for`."""
    _check_name(target, identifier)
    reg = _registry(target, create=False)
    listeners = reg.get(identifier, []) if reg else []
    for i, li in enumerate(listeners):
        if li.fn == fn:
            del listeners[i]
            break
    else:
        raise exc.InvalidRequestError(
            f"{fn!r} is not a listener of event {identifier!r} on {target!r}"
        )
    if not listeners:
        assert reg is not None
        del reg[identifier]
        if not reg and isinstance(target, type):
            del _class_registries[target]  # new sessions skip the lookup again
    _refresh(target)


def contains(target: Any, identifier: str, fn: Callable[..., Any]) -> bool:
    """Whether `fn` is registered for event `identifier` on `target` itself."""
    _check_name(target, identifier)
    reg = _registry(target, create=False)
    if not reg:
        return False
    return any(li.fn == fn for li in reg.get(identifier, ()))
