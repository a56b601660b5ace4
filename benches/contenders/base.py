"""The scenario interface every contender implements.

A scenario is a method named after the scenario key, taking ``n`` and a variant label. It
does all setup (sessions, loading rows, building input values) before returning, and returns
a :class:`Prepared`: ``timed`` is the only code the harness times; ``cleanup`` undoes the
setup outside the timed section. A contender without a counterpart for a scenario simply does
not define the method (the harness reports "n/a").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

T = TypeVar("T")

# parts of a scenario that the harness interleaves between contenders (see `sliced`)
SLICES = 10


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
    # the work of `timed` in consecutive parts, for scenarios the harness runs interleaved
    # (each contender's part 1, then each one's part 2, ...: see `sliced`)
    slices: list[Callable[[], object]] | None = None


def sliced(
    items: Sequence[T],
    run: Callable[[Sequence[T]], object],
    cleanup: Callable[[], None] = _nothing,
) -> Prepared:
    """A scenario doing `run(items)`, which the harness may also time as `SLICES` parts of
    consecutive items, interleaved with the other contenders' parts."""
    k = min(len(items), SLICES)
    bounds = [len(items) * i // k for i in range(k + 1)]
    parts = [items[a:b] for a, b in itertools.pairwise(bounds)]

    def part(chunk: Sequence[T]) -> Callable[[], object]:
        return lambda: run(chunk)

    return Prepared(part(items), cleanup, slices=[part(chunk) for chunk in parts])


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
