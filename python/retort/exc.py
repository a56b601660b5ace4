"""The exceptions retort raises.

Every misuse gets its own class and a message that says what to do. Database errors raised by
psycopg are wrapped in a `DBAPIError` subclass that keeps the original error, the statement and
its parameters, and whose message ends with advice for the common causes (a value too long, a
NOT NULL or unique violation, a value of the wrong type, ...). Any other error raised while a
statement's parameters are sent (a value psycopg cannot encode) becomes a `StatementError`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class RetortError(Exception):
    """Base class of every error retort raises."""


class RetortWarning(UserWarning):
    """A warning about something retort did not do, and why (SQLAlchemy's SAWarning)."""


def warn(message: str) -> None:
    """Issue a RetortWarning attributed to the first caller outside retort (the user's
    flush(), commit() or the statement that autoflushed)."""
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RetortWarning, stacklevel=level)


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


class IllegalStateChangeError(InvalidRequestError):
    """A Session method was called at a point where it would change the session's state under
    an operation in progress (e.g. commit() or rollback() from inside a flush event)."""


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


class StatementError(RetortError):
    """A statement failed: its parameters could not be sent (`orig` is the Python error, e.g. a
    TypeError for a value that cannot be encoded), or, as a `DBAPIError`, the driver or the
    database reported an error. Keeps the statement and its parameters."""

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


class DBAPIError(StatementError):
    """An error raised by the database driver, wrapped with the statement that caused it."""


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


_STATEMENT_SHOWN = 2000  # characters of a statement an error message shows


def _short_statement(statement: str) -> str:
    """A statement for an error message: a long one (a multi-row VALUES list) cut in the
    middle; the whole is the error's `statement` attribute."""
    if len(statement) <= _STATEMENT_SHOWN:
        return statement
    head, tail = statement[: _STATEMENT_SHOWN - 200], statement[-200:]
    return f"{head} ... ({len(statement):,} characters in all, see .statement) ... {tail}"


_TYPE_ADVICE = (
    "use a value of the column's Python type (int for Integer, Decimal for Numeric, datetime "
    "for DateTime, uuid.UUID for Uuid, ...), converting it before the flush or query"
)
_NUL_ADVICE = (
    "PostgreSQL text and JSON cannot hold NUL (\\x00) characters: remove them (value.replace("
    "'\\x00', '')), or store binary data in a LargeBinary column"
)

# Advice by SQLSTATE for the errors that misuse causes most often.
_ADVICE_BY_SQLSTATE: dict[str, str] = {
    "23502": (  # not_null_violation
        "give the attribute a value before the flush, or declare the column nullable "
        "(Mapped[... | None]) or with a default=/server_default="
    ),
    "23505": (  # unique_violation
        "another row already holds this value: use a different value, or load the existing "
        "row (session.get / select) and change it instead of adding a new one"
    ),
    "23503": (  # foreign_key_violation
        "the referenced row does not exist (or rows still reference the one deleted): add and "
        "flush the parent first, delete the children first, or use a relationship with "
        "cascade='all, delete-orphan' or ForeignKey(..., ondelete='CASCADE')"
    ),
    "23514": (  # check_violation
        "the value breaks a CHECK constraint of the table: change the value to satisfy it"
    ),
    "22001": (  # string_data_right_truncation
        "the value is longer than the column allows: shorten it, or declare the column with a "
        "larger String(n) (or Text)"
    ),
    "22003": (  # numeric_value_out_of_range
        "the number does not fit the column's type: use a smaller value, or declare the column "
        "as BigInteger or a Numeric with more precision"
    ),
    "22P02": _TYPE_ADVICE,  # invalid_text_representation
    "22007": _TYPE_ADVICE,  # invalid_datetime_format
    "22008": _TYPE_ADVICE,  # datetime_field_overflow
    "42804": (  # datatype_mismatch
        "the value's Python type does not match the column: convert it first (int(...) for "
        "Integer, bool(...) for Boolean, bytes for LargeBinary, ...)"
    ),
    "42883": (  # undefined_function: e.g. integer = boolean
        "a value's Python type does not match the column it is compared with: convert it to "
        "the column's type first"
    ),
    "22P05": _NUL_ADVICE,  # untranslatable_character (\u0000 in JSON)
    "25P02": (  # in_failed_sql_transaction
        "an earlier statement of this transaction failed: call rollback() (session.rollback()) "
        "before running more SQL"
    ),
    "42P01": (  # undefined_table
        "the table does not exist in this database: create it (Base.metadata.create_all(engine)) "
        "or fix the table name or search_path"
    ),
    "42703": (  # undefined_column
        "the column does not exist in the table: create or migrate the table to match the model, "
        "or fix the column name"
    ),
    "40001": "the transaction conflicted with another one: roll back and retry it",
    "40P01": "the transaction deadlocked with another one: roll back and retry it",
}


_JSON_ADVICE = (
    "a JSON column holds dict, list, str, int, float, bool and None only: convert other values "
    "first (str(...) for datetime, Decimal or UUID, list(...) for a set or tuple, "
    "bytes.decode() or base64 for bytes), and store None or a string for NaN and Infinity"
)


def _advice(err: BaseException) -> str | None:
    """What to do about a driver error, when its cause is a common one."""
    sqlstate = getattr(err, "sqlstate", None)
    text = str(err)
    if sqlstate == "22P02" and "type json" in text:
        return _JSON_ADVICE  # NaN or Infinity in a JSON value
    if sqlstate is not None:
        return _ADVICE_BY_SQLSTATE.get(sqlstate)
    if "NUL (0x00)" in text:
        return _NUL_ADVICE
    if "cannot adapt type" in text or "cannot dump" in text:
        return "psycopg cannot send this Python type to PostgreSQL: " + _TYPE_ADVICE
    return None


def _describe(
    err: BaseException, statement: str | None, params: Sequence[Any] | Mapping[str, Any] | None
) -> str:
    text = f"({type(err).__module__}.{type(err).__qualname__}) {err}".rstrip()
    if statement is not None:
        text += f"\n[SQL: {_short_statement(statement)}]"
        if params:
            text += f"\n[parameters: {_short_params(params)}]"
    return text


def wrap_dbapi_error(
    err: BaseException,
    statement: str | None,
    params: Sequence[Any] | Mapping[str, Any] | None,
) -> DBAPIError:
    """Return the `DBAPIError` subclass that matches the psycopg error `err`, its message ending
    in advice when the cause is a common one."""
    cls: type[DBAPIError] = DBAPIError
    for source, target in _WRAPPERS:
        if isinstance(err, source):
            cls = target
            break
    text = _describe(err, statement, params)
    advice = _advice(err)
    if advice is not None:
        text += f"\n[what to do: {advice}]"
    return cls(text, err, statement, params)


def wrap_statement_error(
    err: BaseException,
    statement: str | None,
    params: Sequence[Any] | Mapping[str, Any] | None,
) -> StatementError:
    """A `StatementError` for a non-driver error raised while a statement's parameters were
    being sent, e.g. a TypeError or UnicodeEncodeError while encoding a value."""
    if "JSON serializable" in str(err) or "not JSON compliant" in str(err):
        advice = _JSON_ADVICE
    elif isinstance(err, UnicodeError):
        advice = (
            "a string holds characters that cannot be encoded (e.g. a lone surrogate such as "
            "'\\ud800'): clean the string, e.g. value.encode('utf-8', 'replace').decode()"
        )
    else:
        advice = "a parameter value cannot be sent to PostgreSQL: " + _TYPE_ADVICE
    text = _describe(err, statement, params) + f"\n[what to do: {advice}]"
    return StatementError(text, err, statement, params)
