"""The scenarios and targets of BENCHMARKS.md, encoded as data.

Every scenario names what its timed section covers. A contender implements a scenario as a
method that does the setup and returns a :class:`~benches.contenders.base.Prepared` whose
``timed`` callable is the only thing the harness times (see ``benches/contenders``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

CONTENDERS = ("retort", "sqlalchemy", "psycopg")
LABELS = {"retort": "retort", "sqlalchemy": "SQLAlchemy", "psycopg": "psycopg"}

X = "\N{MULTIPLICATION SIGN}"

# How many objects "few dirty of many" changes.
FEW = 10
# Children per parent in "insert graph".
CHILDREN_PER_PARENT = 10


def item_row(i: int) -> tuple[str, int, float, str | None]:
    """Column values (name, qty, price, note) of the i-th item, the same for every contender."""
    return (f"item {i}", i, i * 0.25, None if i % 2 else f"note {i}")


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run: N objects, and the number of small transactions."""

    n: int
    tx: int


@dataclass(frozen=True)
class Target:
    """A bound on retort's cost relative to a peer: ``retort / peer <= max_ratio``.

    ``peer`` is a contender name, or ``"scaling"`` for retort at N against retort at N/10.
    For memory the cost is bytes per object; for everything else it is time.
    """

    peer: str
    max_ratio: float
    text: str

    def met(self, ratio: float) -> bool:
        return ratio <= self.max_ratio


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    # whether the scenario's targets judge this figure; one that does not is reported with
    # its ratios and no verdict
    judged: bool = True


SECONDS = Metric("seconds", "")
MEMORY_METRICS = (
    Metric("tracemalloc_bytes", " (tracemalloc)"),
    # BENCHMARKS.md sets the memory target on tracemalloc's count; RSS growth, which also
    # sees a native extension's heap, is shown beside it
    Metric("rss_bytes", " (RSS)", judged=False),
)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    timed: str
    rows: Callable[[int], int]  # rows touched, from the size n given to the contender
    preload: bool = False  # the item table holds n rows (ids 1..n) before setup
    per_op: str | None = None  # show the per-operation figure in this unit ("tx", "get")
    scaling: bool = False  # also run at N/10 to show whether the cost depends on N
    memory: bool = False
    # contenders take turns by parts of the work within each round (Prepared.slices), so
    # that all see the same machine load: for short per-operation costs that a load spike
    # of a few hundred milliseconds would otherwise skew for one contender
    interleave: bool = False
    targets: tuple[Target, ...] = ()
    reference: dict[str, str] = field(default_factory=dict)

    def size(self, sizes: Sizes) -> int:
        """The n this scenario hands to a contender: TX for small transactions, else N."""
        return sizes.tx if self.per_op == "tx" else sizes.n

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return MEMORY_METRICS if self.memory else (SECONDS,)


def _faster(times: float) -> Target:
    return Target("sqlalchemy", 1 / times, f"≥ {times:g}{X} faster than SQLAlchemy")


def _psycopg(times: float) -> Target:
    return Target("psycopg", times, f"≤ {times:g}{X} psycopg")


_SCALING = Target("scaling", 2.5, f"O(changed): t(N) ≤ 2.5 {X} t(N/10)")

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "insert",
        "insert",
        "build N Item objects, add_all, commit",
        rows=lambda n: n,
        targets=(_faster(8),),
        reference={"sqlalchemy": "1,731 ms"},
    ),
    Scenario(
        "insert_flush",
        "insert, flush only",
        "flush() of N pending Items built and added beforehand (no commit)",
        rows=lambda n: n,
        targets=(_faster(12), _psycopg(1.5)),
        reference={
            "sqlalchemy": "1,035 ms",
            "psycopg": "74 ms (COPY), 271 ms (executemany RETURNING)",
        },
    ),
    Scenario(
        "insert_graph",
        "insert graph",
        f"build N/{CHILDREN_PER_PARENT} parents with {CHILDREN_PER_PARENT} children each, "
        "add_all, commit",
        rows=lambda n: (n // CHILDREN_PER_PARENT) * (CHILDREN_PER_PARENT + 1),
        targets=(_faster(10),),
        reference={"sqlalchemy": "2,515 ms"},
    ),
    Scenario(
        "load",
        "load",
        "select(Item) of N rows into a fresh session (.scalars().all())",
        rows=lambda n: n,
        preload=True,
        targets=(_faster(2.5),),
        reference={"sqlalchemy": "84 ms"},
    ),
    Scenario(
        "update_all",
        "update all",
        "change qty on N loaded items, flush()",
        rows=lambda n: n,
        preload=True,
        targets=(_faster(6), _psycopg(1.3)),
        reference={"sqlalchemy": "895 ms", "psycopg": "150 ms (unnest), 255 ms (executemany)"},
    ),
    Scenario(
        "few_dirty",
        "few dirty of many",
        f"N loaded, {FEW} changed, flush()",
        rows=lambda n: n,
        preload=True,
        scaling=True,
        targets=(_SCALING,),
        reference={"sqlalchemy": "2.1 ms"},
    ),
    Scenario(
        "noop_flush",
        "no-op flush",
        "N loaded, nothing changed, flush()",
        rows=lambda n: n,
        preload=True,
        scaling=True,
        targets=(_SCALING,),
    ),
    Scenario(
        "commit_large",
        "commit large session",
        "N loaded (expire_on_commit=True), commit()",
        rows=lambda n: n,
        preload=True,
        scaling=True,
        targets=(_SCALING,),
    ),
    Scenario(
        "get_identity",
        "get from identity map",
        "session.get(Item, pk) for each of N loaded pks",
        rows=lambda n: n,
        preload=True,
        per_op="get",
        targets=(_faster(10),),
        reference={"sqlalchemy": "86 ms (4.3 µs/get)"},
    ),
    Scenario(
        "delete_all",
        "delete all",
        "session.delete() each of N loaded items, flush()",
        rows=lambda n: n,
        preload=True,
        targets=(_faster(6), _psycopg(1.5)),
        reference={"sqlalchemy": "422 ms", "psycopg": "50 ms (= ANY)"},
    ),
    Scenario(
        "tx_add_commit",
        "small tx: add+commit",
        "per transaction: new session, add one Item, commit, close (TX transactions)",
        rows=lambda n: n,
        per_op="tx",
        interleave=True,
        targets=(_psycopg(1.15),),
        reference={"sqlalchemy": "1,160 µs/tx", "psycopg": "506 µs/tx"},
    ),
    Scenario(
        "tx_get_set_commit",
        "small tx: get+set+commit",
        "per transaction: new session, get one Item by pk, change qty, commit, close",
        rows=lambda n: n,
        preload=True,
        per_op="tx",
        interleave=True,
        targets=(_psycopg(1.15),),
        reference={"sqlalchemy": "1,668 µs/tx", "psycopg": "731 µs/tx"},
    ),
    Scenario(
        "memory",
        "memory per object",
        "bytes still held per persistent object after loading N into a session",
        rows=lambda n: n,
        preload=True,
        memory=True,
        targets=(Target("sqlalchemy", 0.4, f"≤ 0.4{X} SQLAlchemy"),),
        reference={"sqlalchemy": "1,108 B", "psycopg": "290 B per row tuple"},
    ),
)

BY_KEY = {s.key: s for s in SCENARIOS}
