"""retort through its public API only (``from retort import ...``)."""

from __future__ import annotations

import types
from typing import Any

from benches.contenders._orm import OrmContender

# Needed by every scenario; the rest (relationships) only by "insert graph".
_CORE = (
    "DeclarativeBase",
    "Mapped",
    "mapped_column",
    "String",
    "Session",
    "select",
    "create_engine",
)
_GRAPH = ("relationship", "ForeignKey")


class _Api(types.SimpleNamespace):
    def __getattr__(self, name: str) -> Any:
        # Only called for names retort does not export (yet): say so plainly.
        raise AttributeError(f"retort has no public {name!r} yet")


def retort_api() -> types.SimpleNamespace:
    """The public names the workload needs, taken from the ``retort`` package."""
    import retort

    missing = [name for name in _CORE if not hasattr(retort, name)]
    if missing:
        raise ImportError(f"retort does not export {', '.join(missing)} yet")
    return _Api(**{name: getattr(retort, name) for name in _CORE + _GRAPH if hasattr(retort, name)})


class RetortContender(OrmContender):
    name = "retort"

    def __init__(self, dsn: str) -> None:
        self.api = retort_api()
        self.url = dsn
        super().__init__()

    def versions(self) -> dict[str, str]:
        import retort

        return {"retort": getattr(retort, "__version__", "?")}
