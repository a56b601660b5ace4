"""retort through its public API only (``from retort import ...``)."""

from __future__ import annotations

import types

from benches.contenders._orm import OrmContender

_NAMES = (
    "DeclarativeBase",
    "Mapped",
    "mapped_column",
    "relationship",
    "ForeignKey",
    "String",
    "Session",
    "select",
    "create_engine",
)


def retort_api() -> types.SimpleNamespace:
    """The public names the workload needs; a name retort lacks yet is left out, so only
    the scenarios using it fail (with AttributeError, reported as "n/a")."""
    import retort

    return types.SimpleNamespace(
        **{name: getattr(retort, name) for name in _NAMES if hasattr(retort, name)}
    )


class RetortContender(OrmContender):
    name = "retort"

    def __init__(self, dsn: str) -> None:
        self.api = retort_api()
        self.url = dsn
        super().__init__()

    def versions(self) -> dict[str, str]:
        import retort

        return {"retort": getattr(retort, "__version__", "?")}
