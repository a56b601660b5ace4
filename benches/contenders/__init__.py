"""The contenders: each implements the same scenario methods (see :mod:`.base`)."""

from __future__ import annotations

from benches.contenders.base import Contender


def load(name: str, dsn: str) -> Contender:
    """Create the named contender; raises whatever its imports or setup raise."""
    if name == "retort":
        from benches.contenders.retort_ import RetortContender

        return RetortContender(dsn)
    if name == "sqlalchemy":
        from benches.contenders.sqlalchemy_ import SQLAlchemyContender

        return SQLAlchemyContender(dsn)
    if name == "psycopg":
        from benches.contenders.psycopg_ import PsycopgContender

        return PsycopgContender(dsn)
    raise ValueError(f"unknown contender {name!r}")
