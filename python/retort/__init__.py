"""retort: a unit-of-work ORM session for PostgreSQL with a Rust core.

The API follows SQLAlchemy 2.x: declare models on a `DeclarativeBase`, then add, change and
delete objects in a `Session` and `flush()`/`commit()`.
"""

from retort import _core
from retort._version import __version__

if _core.__version__ != __version__:  # pragma: no cover - exercised by a packaging test
    raise ImportError(
        f"retort's native module is version {_core.__version__} but the Python package is "
        f"{__version__}; rebuild the extension (`make build`) or reinstall retort"
    )

from retort import event, exc
from retort.engine import Connection, Engine, Result, Row, create_engine
from retort.inspection import inspect
from retort.loading import joinedload, lazyload, raiseload, selectinload
from retort.mapping import (
    DeclarativeBase,
    Mapped,
    Mapper,
    configure_mappers,
    mapped_column,
    relationship,
)
from retort.session import (
    Session,
    SessionTransaction,
    close_all_sessions,
    make_transient,
    make_transient_to_detached,
    object_session,
    sessionmaker,
)
from retort.sql import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    Time,
    UniqueConstraint,
    Uuid,
    and_,
    asc,
    delete,
    desc,
    func,
    insert,
    literal,
    not_,
    null,
    or_,
    select,
    text,
    update,
)

__all__ = [
    "JSON",
    "BigInteger",
    "Boolean",
    "CheckConstraint",
    "Column",
    "Connection",
    "Date",
    "DateTime",
    "DeclarativeBase",
    "Engine",
    "Enum",
    "Float",
    "ForeignKey",
    "Identity",
    "Index",
    "Integer",
    "Interval",
    "LargeBinary",
    "Mapped",
    "Mapper",
    "MetaData",
    "Numeric",
    "PrimaryKeyConstraint",
    "Result",
    "Row",
    "Session",
    "SessionTransaction",
    "SmallInteger",
    "String",
    "Table",
    "Text",
    "Time",
    "UniqueConstraint",
    "Uuid",
    "__version__",
    "and_",
    "asc",
    "close_all_sessions",
    "configure_mappers",
    "create_engine",
    "delete",
    "desc",
    "event",
    "exc",
    "func",
    "insert",
    "inspect",
    "joinedload",
    "lazyload",
    "literal",
    "make_transient",
    "make_transient_to_detached",
    "mapped_column",
    "not_",
    "null",
    "object_session",
    "or_",
    "raiseload",
    "relationship",
    "select",
    "selectinload",
    "sessionmaker",
    "text",
    "update",
]
