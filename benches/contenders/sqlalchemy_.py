"""SQLAlchemy 2.x ORM with the psycopg 3 driver and default settings."""

from __future__ import annotations

import types

import sqlalchemy
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from benches.contenders._orm import OrmContender

API = types.SimpleNamespace(
    DeclarativeBase=DeclarativeBase,
    Mapped=Mapped,
    mapped_column=mapped_column,
    relationship=relationship,
    ForeignKey=ForeignKey,
    String=String,
    Session=Session,
    select=select,
    create_engine=create_engine,
)


def sqlalchemy_url(dsn: str) -> str:
    """A libpq URI as a SQLAlchemy URL for the psycopg 3 driver."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ValueError(f"--dsn must be a postgresql:// URI, got {dsn!r}")
    return "postgresql+psycopg://" + rest


class SQLAlchemyContender(OrmContender):
    name = "sqlalchemy"
    api = API

    def __init__(self, dsn: str) -> None:
        self.url = sqlalchemy_url(dsn)
        super().__init__()

    def versions(self) -> dict[str, str]:
        try:
            from sqlalchemy.util._has_cython import HAS_CYEXTENSION
        except ImportError:  # pragma: no cover - layout differs across 2.x releases
            HAS_CYEXTENSION = None
        return {
            "sqlalchemy": sqlalchemy.__version__,
            "sqlalchemy_compiled_extensions": str(HAS_CYEXTENSION),
        }
