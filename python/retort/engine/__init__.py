"""Running SQL: `create_engine`, `Engine`, `Connection`, transactions and results.

PostgreSQL through psycopg 3 with a psycopg_pool connection pool (SQLite is planned).
"""

from retort.engine.base import (
    Connection,
    Engine,
    NestedTransaction,
    RootTransaction,
    Transaction,
    TwoPhaseTransaction,
    create_engine,
)
from retort.engine.result import MappingResult, Result, Row, RowMapping, ScalarResult
from retort.engine.url import URL, make_url

__all__ = [
    "URL",
    "Connection",
    "Engine",
    "MappingResult",
    "NestedTransaction",
    "Result",
    "RootTransaction",
    "Row",
    "RowMapping",
    "ScalarResult",
    "Transaction",
    "TwoPhaseTransaction",
    "create_engine",
    "make_url",
]
