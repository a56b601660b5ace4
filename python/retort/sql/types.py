"""Column types: how a Python value is stored in PostgreSQL and read back.

A type knows its DDL spelling, the name PostgreSQL uses for it in casts (`%s::int4[]` in the
set-based statements of a flush), and two optional processors. A processor is `None` whenever
psycopg's own adaptation is already exact, so hot paths can skip the call entirely.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import math
import types as _pytypes
import typing
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from psycopg.types.json import Jsonb

from retort import exc

__all__ = [
    "ARRAY",
    "JSON",
    "BigInteger",
    "Boolean",
    "Date",
    "DateTime",
    "Enum",
    "Float",
    "Integer",
    "Interval",
    "LargeBinary",
    "NullType",
    "Numeric",
    "SmallInteger",
    "String",
    "Text",
    "Time",
    "TypeEngine",
    "Uuid",
    "to_instance",
    "type_for_python",
]

Processor = Callable[[Any], Any]


class TypeEngine:
    """Base of every column type. Instances are immutable and may be shared between columns."""

    python_type: ClassVar[type] = object
    #: True when values can change in place (JSON), so change tracking must compare contents.
    mutable: ClassVar[bool] = False
    #: PostgreSQL's name for the type in casts, e.g. ``int4``; see `sql_cast()`.
    cast_name: ClassVar[str] = "text"
    #: Integer types may back an identity (auto-incrementing) primary key.
    _is_integer: ClassVar[bool] = False

    def ddl(self) -> str:
        """The type as written in CREATE TABLE."""
        raise NotImplementedError

    def sql_cast(self) -> str:
        """The type name to use in a cast such as ``%s::int4`` or ``%s::int4[]``."""
        return self.cast_name

    def bind_processor(self) -> Processor | None:
        """A function turning a Python value into a psycopg parameter, or None if not needed."""
        return None

    def result_processor(self) -> Processor | None:
        """A function turning a value fetched by psycopg into the Python value, or None."""
        return None

    def _args(self) -> tuple[Any, ...]:
        return ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, TypeEngine)
        return self._args() == other._args()

    def __hash__(self) -> int:
        return hash((type(self), self._args()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(a) for a in self._args())})"


class NullType(TypeEngine):
    """The type of an expression whose type is unknown (an untyped literal, a text fragment)."""

    def ddl(self) -> str:
        raise exc.CompileError(
            "this column has no type; give it one, or a ForeignKey whose target has a type"
        )


class Integer(TypeEngine):
    python_type = int
    cast_name = "int4"
    _is_integer = True

    def ddl(self) -> str:
        return "INTEGER"


class BigInteger(Integer):
    cast_name = "int8"

    def ddl(self) -> str:
        return "BIGINT"


class SmallInteger(Integer):
    cast_name = "int2"

    def ddl(self) -> str:
        return "SMALLINT"


class String(TypeEngine):
    """VARCHAR, with a length limit when one is given."""

    python_type = str
    cast_name = "varchar"

    def __init__(self, length: int | None = None) -> None:
        if length is not None and (not isinstance(length, int) or length <= 0):
            raise exc.ArgumentError(f"String length must be a positive int, got {length!r}")
        self.length = length

    def ddl(self) -> str:
        return "VARCHAR" if self.length is None else f"VARCHAR({self.length})"

    def _args(self) -> tuple[Any, ...]:
        return () if self.length is None else (self.length,)


class Text(String):
    """TEXT (unlimited length; a ``length`` is accepted for portability and ignored)."""

    cast_name = "text"

    def __init__(self, length: int | None = None) -> None:
        super().__init__(None)

    def ddl(self) -> str:
        return "TEXT"


class Boolean(TypeEngine):
    python_type = bool
    cast_name = "bool"

    def ddl(self) -> str:
        return "BOOLEAN"


class Float(TypeEngine):
    """Double precision floating point (FLOAT(p) when a precision in bits is given)."""

    python_type = float
    cast_name = "float8"

    def __init__(self, precision: int | None = None) -> None:
        self.precision = precision

    def ddl(self) -> str:
        return "DOUBLE PRECISION" if self.precision is None else f"FLOAT({self.precision})"

    def sql_cast(self) -> str:
        if self.precision is not None and self.precision <= 24:
            return "float4"
        return "float8"

    def _args(self) -> tuple[Any, ...]:
        return () if self.precision is None else (self.precision,)


def _decimal_to_float(value: Any) -> Any:
    return None if value is None else float(value)


def _numeric_check(precision: int, scale: int) -> Processor:
    """A bind processor for NUMERIC(p, s): refuses infinities (which it cannot hold), and
    Decimals with more decimal places than it keeps (PostgreSQL would round them away without a
    word)."""
    quantum = decimal.Decimal(1).scaleb(-scale)

    def process(value: Any) -> Any:
        if (isinstance(value, float) and math.isinf(value)) or (
            isinstance(value, decimal.Decimal) and value.is_infinite()
        ):
            raise exc.ArgumentError(
                f"{value!r} cannot be stored in a Numeric({precision}, {scale}) column, which "
                "holds finite numbers only; store None instead, or use a Float column (or "
                "Numeric() without precision) for infinities"
            )
        if isinstance(value, decimal.Decimal) and value.is_finite():
            exponent = value.as_tuple().exponent
            if isinstance(exponent, int) and exponent < -scale:
                try:
                    rounded = value.quantize(quantum)
                except decimal.InvalidOperation:
                    return value  # too many digits anyway: the database reports the overflow
                if rounded != value:
                    raise exc.ArgumentError(
                        f"Decimal('{value}') has more than {scale} decimal place(s), which a "
                        f"Numeric({precision}, {scale}) column would round away; round it "
                        f"yourself first (value.quantize(Decimal('{quantum}'))), or declare "
                        "the column with a larger scale"
                    )
        return value

    return process


class Numeric(TypeEngine):
    """Exact NUMERIC(precision, scale); values come back as Decimal unless asdecimal=False."""

    python_type = decimal.Decimal
    cast_name = "numeric"

    def __init__(
        self, precision: int | None = None, scale: int | None = None, asdecimal: bool = True
    ) -> None:
        if scale is not None and precision is None:
            raise exc.ArgumentError("Numeric(scale=...) needs a precision as well")
        self.precision = precision
        self.scale = scale
        self.asdecimal = asdecimal

    def bind_processor(self) -> Processor | None:
        if self.precision is None:
            return None  # PostgreSQL stores the value as given
        return _numeric_check(self.precision, self.scale or 0)

    def ddl(self) -> str:
        if self.precision is None:
            return "NUMERIC"
        if self.scale is None:
            return f"NUMERIC({self.precision})"
        return f"NUMERIC({self.precision}, {self.scale})"

    def result_processor(self) -> Processor | None:
        return None if self.asdecimal else _decimal_to_float

    def _args(self) -> tuple[Any, ...]:
        return (self.precision, self.scale, self.asdecimal)


class Date(TypeEngine):
    python_type = _dt.date
    cast_name = "date"

    def ddl(self) -> str:
        return "DATE"


class DateTime(TypeEngine):
    """TIMESTAMP, or TIMESTAMP WITH TIME ZONE when timezone=True."""

    python_type = _dt.datetime

    def __init__(self, timezone: bool = False) -> None:
        self.timezone = timezone

    def ddl(self) -> str:
        return "TIMESTAMP WITH TIME ZONE" if self.timezone else "TIMESTAMP WITHOUT TIME ZONE"

    def sql_cast(self) -> str:
        return "timestamptz" if self.timezone else "timestamp"

    def _args(self) -> tuple[Any, ...]:
        return (self.timezone,) if self.timezone else ()


class Time(TypeEngine):
    python_type = _dt.time

    def __init__(self, timezone: bool = False) -> None:
        self.timezone = timezone

    def ddl(self) -> str:
        return "TIME WITH TIME ZONE" if self.timezone else "TIME WITHOUT TIME ZONE"

    def sql_cast(self) -> str:
        return "timetz" if self.timezone else "time"

    def _args(self) -> tuple[Any, ...]:
        return (self.timezone,) if self.timezone else ()


class Interval(TypeEngine):
    python_type = _dt.timedelta
    cast_name = "interval"

    def ddl(self) -> str:
        return "INTERVAL"


def _binary_bind(value: Any) -> Any:
    # PostgreSQL would parse a str as bytea text input ('\\x41' is b'A'): refuse it.
    if isinstance(value, str):
        raise exc.ArgumentError(
            f"{value!r:.60} is a str, but a LargeBinary column holds bytes: encode it first "
            "(value.encode('utf-8')), or declare the column as String or Text"
        )
    return value


class LargeBinary(TypeEngine):
    """BYTEA (a ``length`` is accepted for portability and ignored); psycopg returns bytes."""

    python_type = bytes
    cast_name = "bytea"

    def __init__(self, length: int | None = None) -> None:
        pass

    def ddl(self) -> str:
        return "BYTEA"

    def bind_processor(self) -> Processor | None:
        return _binary_bind


def _uuid_to_str(value: Any) -> Any:
    return None if value is None else str(value)


class Uuid(TypeEngine):
    """UUID; values are `uuid.UUID` objects, or strings when as_uuid=False."""

    python_type = uuid.UUID
    cast_name = "uuid"

    def __init__(self, as_uuid: bool = True) -> None:
        self.as_uuid = as_uuid

    def ddl(self) -> str:
        return "UUID"

    def result_processor(self) -> Processor | None:
        return None if self.as_uuid else _uuid_to_str

    def _args(self) -> tuple[Any, ...]:
        return () if self.as_uuid else (False,)


class _JSONNull:
    """The JSON value ``null`` (as opposed to SQL NULL, which Python None stands for)."""

    _instance: ClassVar[_JSONNull | None] = None

    def __new__(cls) -> _JSONNull:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "JSON.NULL"

    def __reduce__(self) -> str:
        return "_JSON_NULL"


_JSON_NULL = _JSONNull()


def _json_bind(value: Any) -> Any:
    if value is None:
        return None
    if value is _JSON_NULL:
        return Jsonb(None)
    if isinstance(value, Jsonb):
        return value
    return Jsonb(value)


def _json_bind_none_as_json(value: Any) -> Any:
    return Jsonb(None) if value is None else _json_bind(value)


class JSON(TypeEngine):
    """A JSON document, stored as JSONB.

    Python None is SQL NULL (unless ``none_as_null=False``); `JSON.NULL` is always JSON null.
    """

    python_type = dict
    mutable = True
    cast_name = "jsonb"
    NULL: ClassVar[_JSONNull] = _JSON_NULL

    def __init__(self, none_as_null: bool = True) -> None:
        self.none_as_null = none_as_null

    def ddl(self) -> str:
        return "JSONB"

    def bind_processor(self) -> Processor | None:
        return _json_bind if self.none_as_null else _json_bind_none_as_json

    def _args(self) -> tuple[Any, ...]:
        return () if self.none_as_null else (False,)


class ARRAY(TypeEngine):
    """A PostgreSQL array of ``item_type`` values (``INTEGER[]``), as a Python list."""

    python_type = list

    def __init__(self, item_type: Any) -> None:
        self.item_type = to_instance(item_type)
        if isinstance(self.item_type, ARRAY):
            raise exc.ArgumentError("ARRAY(ARRAY(...)): give the item type once; arrays nest")

    @property
    def mutable(self) -> bool:  # type: ignore[override]
        return True

    def ddl(self) -> str:
        return f"{self.item_type.ddl()}[]"

    def sql_cast(self) -> str:
        return f"{self.item_type.sql_cast()}[]"

    def bind_processor(self) -> Processor | None:
        item = self.item_type.bind_processor()
        if item is None:
            return None

        def process(value: Any) -> Any:
            if value is None:
                return None
            return [item(v) for v in value]

        return process

    def result_processor(self) -> Processor | None:
        item = self.item_type.result_processor()
        if item is None:
            return None

        def process(value: Any) -> Any:
            if value is None:
                return None
            return [item(v) for v in value]

        return process

    def _args(self) -> tuple[Any, ...]:
        return (self.item_type,)


class Enum(TypeEngine):
    """A fixed set of values, stored as VARCHAR holding the member *names*.

    ``Enum(MyEnum)`` binds members (or their names) and loads members; ``Enum("a", "b")``
    binds and loads the strings themselves. Anything else raises `retort.exc.ArgumentError`.
    ``values_callable=lambda cls: [m.value for m in cls]`` stores other strings than the
    names; ``create_constraint=True`` adds a CHECK constraint listing the allowed strings.
    """

    cast_name = "varchar"

    def __init__(
        self,
        *enums: Any,
        length: int | None = None,
        name: str | None = None,
        values_callable: Callable[[Any], Sequence[str]] | None = None,
        native_enum: bool = False,
        create_constraint: bool = False,
        validate_strings: bool = True,
    ) -> None:
        # native_enum and validate_strings are accepted for SQLAlchemy compatibility: values
        # are always stored as VARCHAR, and always validated.
        self.enum_class: type[enum.Enum] | None
        if len(enums) == 1 and isinstance(enums[0], type) and issubclass(enums[0], enum.Enum):
            self.enum_class = enums[0]
            members = list(self.enum_class.__members__.values())
            if values_callable is not None:
                stored = [str(v) for v in values_callable(self.enum_class)]
                if len(stored) != len(members):
                    raise exc.ArgumentError(
                        "Enum values_callable must return one string per member of "
                        f"{self.enum_class.__name__}"
                    )
            else:
                stored = list(self.enum_class.__members__)
            # Aliases share a member; the first name (or value) is the one stored.
            self._members: dict[str, Any] = {}
            self._stored: dict[Any, str] = {}
            for text, member in zip(stored, self.enum_class.__members__.values(), strict=True):
                self._members.setdefault(text, member)
                self._stored.setdefault(member, text)
            self.enums: tuple[str, ...] = tuple(self._stored.values())
        else:
            if not enums:
                raise exc.ArgumentError(
                    "Enum() needs an enum.Enum subclass or at least one string value"
                )
            for value in enums:
                if not isinstance(value, str):
                    raise exc.ArgumentError(
                        f"Enum values must be strings (or give one enum.Enum subclass), "
                        f"got {value!r}"
                    )
            self.enum_class = None
            self.enums = tuple(dict.fromkeys(enums))
            self._members = {v: v for v in self.enums}
            self._stored = {}
        longest = max((len(v) for v in self.enums), default=1)
        if length is not None and length < longest:
            raise exc.ArgumentError(
                f"Enum length={length} is shorter than the longest value ({longest} characters)"
            )
        self.length = length if length is not None else longest
        self.name = name or (self.enum_class.__name__.lower() if self.enum_class else None)
        self.create_constraint = create_constraint

    @property
    def python_type(self) -> type:  # type: ignore[override]
        return self.enum_class if self.enum_class is not None else str

    def ddl(self) -> str:
        return f"VARCHAR({self.length})"

    def _label(self) -> str:
        return f"Enum {self.name!r}" if self.name else "Enum"

    def _describe(self) -> str:
        if self.enum_class is not None:
            return f"{self.enum_class.__name__} members or the strings {list(self.enums)}"
        return f"one of {list(self.enums)}"

    def bind_processor(self) -> Processor | None:
        enum_class = self.enum_class
        names = self._members
        stored = self._stored

        def process(value: Any) -> Any:
            if value is None:
                return None
            if enum_class is not None and isinstance(value, enum_class):
                return stored[value]
            if isinstance(value, str) and value in names:
                return value
            raise exc.ArgumentError(
                f"{value!r} is not a valid value for {self._label()}; use {self._describe()}"
            )

        return process

    def result_processor(self) -> Processor | None:
        members = self._members

        def process(value: Any) -> Any:
            if value is None:
                return None
            try:
                return members[value]
            except KeyError:
                raise exc.ArgumentError(
                    f"the database holds {value!r}, which is not a valid value for "
                    f"{self._label()}: expected {self._describe()}"
                ) from None

        return process

    def _args(self) -> tuple[Any, ...]:
        if self.enum_class is not None:
            if self.enums == tuple(self.enum_class.__members__):
                return (self.enum_class,)
            return (self.enum_class, self.enums)
        return self.enums


_JSON_TYPE = JSON()


def to_instance(type_: TypeEngine | type[TypeEngine] | None) -> TypeEngine:
    """Accept a type class (``Integer``) or instance (``String(50)``); None gives NullType."""
    if type_ is None:
        return NullType()
    if isinstance(type_, type) and issubclass(type_, TypeEngine):
        return type_()
    if isinstance(type_, TypeEngine):
        return type_
    raise exc.ArgumentError(f"expected a column type such as Integer or String(50), got {type_!r}")


_PY_TYPES: tuple[tuple[type, Callable[[], TypeEngine]], ...] = (
    # Order matters: bool before int, datetime before date.
    (bool, Boolean),
    (int, Integer),
    (str, String),
    (float, Float),
    (decimal.Decimal, Numeric),
    (_dt.datetime, DateTime),
    (_dt.date, Date),
    (_dt.time, Time),
    (_dt.timedelta, Interval),
    (bytes, LargeBinary),
    (uuid.UUID, Uuid),
    (dict, JSON),
    (list, JSON),
)

_SUPPORTED = (
    "int, str, float, bool, Decimal, datetime, date, time, timedelta, bytes, uuid.UUID, "
    "dict/list (JSON), enum.Enum subclasses and Literal[...] of strings"
)


def type_for_python(py_type: Any) -> TypeEngine:
    """The column type for a Python annotation such as ``int`` or ``dict[str, Any]``."""
    origin = typing.get_origin(py_type)
    if origin is not None:
        args = typing.get_args(py_type)
        if origin is typing.Union or origin is _pytypes.UnionType:
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                return type_for_python(rest[0])
        elif origin is typing.Literal:
            if args and all(isinstance(a, str) for a in args):
                return Enum(*args)
        elif isinstance(origin, type) and issubclass(origin, (dict, list)):
            return JSON()
        raise exc.ArgumentError(
            f"cannot choose a column type for {py_type!r}; supported types are {_SUPPORTED}. "
            "Give the type explicitly, e.g. mapped_column(String(50))"
        )
    if isinstance(py_type, type):
        if issubclass(py_type, enum.Enum):
            return Enum(py_type)
        for base, factory in _PY_TYPES:
            if issubclass(py_type, base):
                return factory()
    raise exc.ArgumentError(
        f"cannot choose a column type for {py_type!r}; supported types are {_SUPPORTED}. "
        "Give the type explicitly, e.g. mapped_column(String(50))"
    )


def infer_bind_type(value: Any) -> TypeEngine | None:
    """A type for an untyped parameter value, when one can be told from the value alone."""
    # psycopg adapts everything else itself (enum members by name, lists as arrays).
    if isinstance(value, dict):
        return _JSON_TYPE
    return None
