"""The scenario interface every contender implements.

A scenario is a method named after the scenario key, taking ``n`` and a variant label. It
does all setup (sessions, loading rows, building input values) before returning, and returns
a :class:`Prepared`: ``timed`` is the only code the harness times; ``cleanup`` undoes the
setup outside the timed section. A contender without a counterpart for a scenario simply does
not define the method (the harness reports "n/a").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar


class NotApplicable(Exception):
    """The contender has no counterpart for this scenario."""


def _nothing() -> None:
    return None


@dataclass
class Prepared:
    """A scenario after setup.

    ``timed`` returns whatever must stay alive until the timing stops (loaded objects), so
    that freeing it is not timed. ``commit``, if given, makes the scenario's effect visible
    to other connections; the harness uses it on the warm-up pass to check the result.
    """

    timed: Callable[[], object]
    cleanup: Callable[[], None] = _nothing
    commit: Callable[[], None] | None = None


class Contender:
    name: ClassVar[str]
    # scenario key -> variant labels; the first is the primary figure
    variants: ClassVar[dict[str, tuple[str, ...]]] = {}

    def variants_of(self, scenario: str) -> tuple[str, ...]:
        return self.variants.get(scenario, ("",))

    def prepare(self, scenario: str, n: int, variant: str) -> Prepared:
        method = getattr(self, "scenario_" + scenario, None)
        if method is None:
            raise NotApplicable(f"{self.name} has no counterpart for this scenario")
        prepared: Prepared = method(n, variant)
        return prepared

    def versions(self) -> dict[str, str]:
        return {}

    def recover(self) -> None:
        """Return to a clean state after a scenario raised (drop connections, sessions)."""

    def close(self) -> None:
        pass
