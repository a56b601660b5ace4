"""The exceptions retort raises.

Every misuse gets its own class and a message that says what to do. Database errors raised by
psycopg are wrapped in a `DBAPIError` subclass that keeps the original error, the statement and
its parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg


class RetortError(Exception):
    """Base class of every error retort raises."""


class ArgumentError(RetortError):
    """A mapping, a column or a function was given arguments that do not fit."""


class CompileError(RetortError):
    """A statement cannot be turned into SQL."""


class InvalidRequestError(RetortError):
    """The call does not make sense in the current state of the session or object."""


class NoInspectionAvailable(InvalidRequestError):
    """`inspect()` was called on something retort knows nothing about."""


class UnmappedInstanceError(InvalidRequestError):
    """An object of a class that is not mapped was given where a mapped one is needed."""


class UnmappedClassError(InvalidRequestError):
    """A class that is not mapped was given where a mapped one is needed."""


class DetachedInstanceError(InvalidRequestError):
    """An attribute of a detached object needs the database, but the object has no session."""


class ObjectDeletedError(InvalidRequestError):
    """An expired object's row no longer exists in the database."""


class StaleDataError(RetortError):
    """An UPDATE or DELETE matched a different number of rows than expected."""


class FlushError(RetortError):
    """The session cannot flush its pending changes as they stand."""


class CircularDependencyError(FlushError):
    """Rows depend on each other in a cycle that no nullable foreign key can break."""

    def __init__(self, message: str, cycles: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.cycles = list(cycles)


class PendingRollbackError(InvalidRequestError):
    """An earlier flush failed; call `Session.rollback()` before using the session again."""


class ResourceClosedError(InvalidRequestError):
    """The result, connection or transaction was already closed."""


class NoResultFound(InvalidRequestError):
    """A result expected exactly one row and found none."""


class MultipleResultsFound(InvalidRequestError):
    """A result expected at most one row and found more."""


class ConcurrentUseError(InvalidRequestError):
    """A session was used from two threads at once, or re-entered from a callback."""


class DBAPIError(RetortError):
    """An error raised by the database driver, wrapped with the statement that caused it."""

    def __init__(
        self,
        message: str,
        orig: BaseException | None,
        statement: str | None,
        params: Sequence[Any] | Mapping[str, Any] | None,
    ) -> None:
        super().__init__(message)
        self.orig = orig
        self.statement = statement
        self.params = params

    def __reduce__(self) -> Any:  # keep pickling working despite the extra arguments
        return (self.__class__, (self.args[0], self.orig, self.statement, self.params))


class InterfaceError(DBAPIError):
    pass


class DatabaseError(DBAPIError):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


_WRAPPERS: tuple[tuple[type[BaseException], type[DBAPIError]], ...] = (
    (psycopg.errors.IntegrityError, IntegrityError),
    (psycopg.errors.DataError, DataError),
    (psycopg.errors.OperationalError, OperationalError),
    (psycopg.errors.ProgrammingError, ProgrammingError),
    (psycopg.errors.InternalError, InternalError),
    (psycopg.errors.NotSupportedError, NotSupportedError),
    (psycopg.errors.InterfaceError, InterfaceError),
    (psycopg.errors.DatabaseError, DatabaseError),
    (psycopg.errors.Error, DBAPIError),
)

_PARAMS_SHOWN = 10


def _short_params(params: Any) -> str:
    if params is None:
        return ""
    if isinstance(params, Mapping):
        items = list(params.items())
        shown = ", ".join(f"{k!r}: {v!r}" for k, v in items[:_PARAMS_SHOWN])
        more = f", ... {len(items) - _PARAMS_SHOWN} more" if len(items) > _PARAMS_SHOWN else ""
        return "{" + shown + more + "}"
    if isinstance(params, Sequence) and not isinstance(params, str | bytes):
        seq = list(params)
        shown = ", ".join(repr(v) for v in seq[:_PARAMS_SHOWN])
        more = f", ... {len(seq) - _PARAMS_SHOWN} more" if len(seq) > _PARAMS_SHOWN else ""
        return "[" + shown + more + "]"
    return repr(params)


def wrap_dbapi_error(
    err: BaseException,
    statement: str | None,
    params: Sequence[Any] | Mapping[str, Any] | None,
) -> DBAPIError:
    """Return the `DBAPIError` subclass that matches the psycopg error `err`."""
    cls: type[DBAPIError] = DBAPIError
    for source, target in _WRAPPERS:
        if isinstance(err, source):
            cls = target
            break
    text = f"({type(err).__module__}.{type(err).__qualname__}) {err}".rstrip()
    if statement is not None:
        text += f"\n[SQL: {statement}]"
        if params:
            text += f"\n[parameters: {_short_params(params)}]"
    return cls(text, err, statement, params)
