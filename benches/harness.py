"""Rounds, timing, medians: runs every (scenario, contender, variant) and collects figures.

Per round, each scenario runs every contender in turn (the order rotates between rounds),
so that slow drift of the machine spreads over all contenders. Each run is:

1. reset: TRUNCATE all tables RESTART IDENTITY, then COPY the preloaded rows (untimed);
2. setup: the contender's scenario method (untimed), returning a ``Prepared``;
3. ``gc.collect()``, then only ``Prepared.timed()`` between two ``perf_counter`` calls;
4. cleanup (untimed), and for scenarios that commit, a check of the database state.

Scenarios marked ``interleave`` (the small transactions) run their contenders together
instead: after one reset, each contender's first part of the work (``Prepared.slices``, a tenth
of the transactions), then each one's second part, and so on, in an order that rotates; a
contender's figure for the round is the sum of its parts. A load spike on the shared machine
then costs every contender alike.

A warm-up pass at a small size runs first (compiles statement caches, configures mappers)
and also commits and checks the effect of the flush-only scenarios once. The figures are the
medians over the rounds.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import psycopg

from benches import contenders as contender_registry
from benches.contenders.base import Contender, NotApplicable, Prepared
from benches.db import Admin
from benches.progress import Progress
from benches.scenarios import BY_KEY, CHILDREN_PER_PARENT, FEW, Scenario, Sizes

WARMUP_SIZE = 100
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESSAGE_LIMIT = 300


@dataclass
class Config:
    n: int
    tx: int
    rounds: int
    scenarios: list[str]
    contenders: list[str]
    warmup: bool = True
    gc: bool = True  # leave the garbage collector enabled inside timed sections
    db_description: str = ""


@dataclass
class Job:
    """One (scenario, contender, variant) and its raw figures."""

    scenario: Scenario
    contender: str
    variant: str
    status: str = "ok"  # ok | n/a | error
    message: str | None = None
    raw: dict[str, list[float]] = field(default_factory=dict)
    raw_small: list[float] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status == "ok"

    def fail(self, exc: BaseException) -> None:
        self.status, self.message = classify(exc)


def classify(exc: BaseException) -> tuple[str, str]:
    """'n/a' for a missing feature (the ORM not written yet), 'error' for anything else."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, NotApplicable):
        return "n/a", text
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    message = message[:MESSAGE_LIMIT]
    if isinstance(exc, NotImplementedError | ImportError | AttributeError):
        return "n/a", message
    return "error", message


# -- measurement --------------------------------------------------------------------------


class GcClock:
    """Time spent in the cyclic garbage collector (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.collections += 1


def _time(prepared: Prepared, gc_enabled: bool = True) -> dict[str, float]:
    """Time ``prepared.timed()`` alone, and how much of it the garbage collector took."""
    gc.collect()
    clock = GcClock()
    gc.callbacks.append(clock)
    if not gc_enabled:
        gc.disable()
    try:
        t0 = time.perf_counter()
        result = prepared.timed()
        t1 = time.perf_counter()
    finally:
        gc.enable()
        gc.callbacks.remove(clock)
    del result  # freeing what the timed section built is not part of it
    return {"seconds": t1 - t0, "gc_seconds": clock.seconds, "gc_collections": clock.collections}


_libc: Any = None


def trim() -> None:
    """Give freed heap back to the OS (glibc) so RSS reflects what is held."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
        except OSError:
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


def rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def measure_tracemalloc(contender: Contender, key: str, n: int, variant: str) -> float:
    """Python-heap bytes still held per object after loading n (setup not counted)."""
    prepared = contender.prepare(key, n, variant)
    try:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        result = prepared.timed()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        del result
    finally:
        tracemalloc.stop()
        prepared.cleanup()
    return held / n


def expected_state(key: str, n: int) -> list[tuple[str, int]]:
    """Queries and their values once a scenario's effect is committed."""
    base_qty = n * (n - 1) // 2  # preloaded item i has qty i
    parents = n // CHILDREN_PER_PARENT
    return {
        "insert": [("SELECT count(*) FROM item", n)],
        "insert_flush": [("SELECT count(*) FROM item", n)],
        "tx_add_commit": [("SELECT count(*) FROM item", n)],
        "insert_graph": [
            ("SELECT count(*) FROM parent", parents),
            ("SELECT count(*) FROM child", parents * CHILDREN_PER_PARENT),
            (
                # each child under the parent it was built with ("parent 7" / "child 7.3")
                "SELECT count(*) FROM child c JOIN parent p ON p.id = c.parent_id"
                " WHERE c.name LIKE 'child ' || substr(p.name, 8) || '.%'",
                parents * CHILDREN_PER_PARENT,
            ),
        ],
        "update_all": [("SELECT coalesce(sum(qty), 0) FROM item", base_qty + n)],
        "few_dirty": [("SELECT coalesce(sum(qty), 0) FROM item", base_qty + min(FEW, n))],
        "tx_get_set_commit": [("SELECT coalesce(sum(qty), 0) FROM item", base_qty + n)],
        "delete_all": [("SELECT count(*) FROM item", 0)],
    }.get(key, [])


class CheckFailed(Exception):
    pass


class ProbeFailed(Exception):
    pass


class Runner:
    def __init__(self, config: Config, dsn: str) -> None:
        self.config = config
        self.dsn = dsn
        self.admin = Admin(dsn)
        self.contenders: dict[str, Contender] = {}
        self.jobs: list[Job] = []
        self.sizes = Sizes(n=config.n, tx=min(config.tx, config.n))

    # -- one run --------------------------------------------------------------------------

    def _run(self, job: Job, n: int, verify: bool = False) -> dict[str, float]:
        contender = self.contenders[job.contender]
        scenario = job.scenario
        if scenario.memory:
            return self._measure_memory(job, n)
        self.admin.reset(n if scenario.preload else 0)
        prepared = contender.prepare(scenario.key, n, job.variant)
        expected = expected_state(scenario.key, n)
        try:
            figures = _time(prepared, self.config.gc)
            if verify and prepared.commit is not None:
                prepared.commit()
        finally:
            prepared.cleanup()
        if expected and (verify or prepared.commit is None):
            for query, value in expected:
                got = self.admin.scalar(query)
                if got != value:
                    raise CheckFailed(f"wrong result: {query!r} gave {got}, expected {value}")
        return figures

    def _measure_memory(self, job: Job, n: int) -> dict[str, float]:
        """Bytes per loaded object by RSS and by tracemalloc, in a fresh process for each
        contender (in this one, what earlier scenarios left behind changes the figures: a
        class whose instances stopped sharing their attribute-name table, reused arenas)."""
        self.admin.reset(0)
        command = [sys.executable, "-m", "benches.memory_probe", job.contender, job.variant]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
        probe = subprocess.Popen(
            [*command, str(n), self.dsn],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert probe.stdin is not None and probe.stdout is not None
            ready = probe.stdout.readline().strip()
            if ready == "ready":
                self.admin.reset(n)
                probe.stdin.write("go\n")
                probe.stdin.flush()
                answer = probe.stdout.readline()
            _, err = probe.communicate(timeout=600)
            if ready != "ready" or probe.returncode != 0:
                lines = [line for line in err.strip().splitlines() if line.strip()]
                raise ProbeFailed(lines[-1] if lines else f"exit status {probe.returncode}")
        finally:
            if probe.poll() is None:
                probe.kill()
                probe.wait()
        measured = json.loads(answer)
        figures = {"tracemalloc_bytes": measured["tracemalloc_bytes"]}
        if measured.get("rss_bytes") is not None:
            figures["rss_bytes"] = measured["rss_bytes"]
        return figures

    def _attempt(self, job: Job, n: int, verify: bool = False) -> dict[str, float] | None:
        try:
            return self._run(job, n, verify)
        except Exception as exc:
            self._give_up(job, exc)
            gc.collect()
            return None

    # -- the whole run --------------------------------------------------------------------

    def setup(self) -> None:
        self.admin.create_schema()
        for name in self.config.contenders:
            scenarios = [BY_KEY[key] for key in self.config.scenarios]
            try:
                contender = contender_registry.load(name, self.dsn)
            except Exception as exc:
                for scenario in scenarios:
                    job = Job(scenario, name, "")
                    job.fail(exc)
                    self.jobs.append(job)
                continue
            self.contenders[name] = contender
            for scenario in scenarios:
                for variant in contender.variants_of(scenario.key):
                    job = Job(scenario, name, variant)
                    if not hasattr(contender, "scenario_" + scenario.key):
                        job.fail(NotApplicable("no counterpart"))
                    self.jobs.append(job)

    def _runs_per_job(self, job: Job) -> int:
        return 2 if job.scenario.scaling else 1

    def run(self) -> None:
        cfg = self.config
        active = [j for j in self.jobs if j.active]
        total = sum(self._runs_per_job(j) for j in self.jobs) * cfg.rounds
        total += len(active) if cfg.warmup else 0
        progress = Progress(total)
        if cfg.warmup:
            for job in active:
                progress.step(f"warm-up  {job.scenario.title} · {job.contender}")
                size = job.scenario.size(self.sizes)
                self._attempt(job, max(1, min(size, WARMUP_SIZE)), verify=True)
                progress.advance()
        names = list(cfg.contenders)
        for r in range(cfg.rounds):
            shift = r % len(names)
            order = names[shift:] + names[:shift]
            for key in cfg.scenarios:
                if BY_KEY[key].interleave:
                    jobs = [
                        job
                        for name in order
                        for job in self.jobs
                        if job.scenario.key == key and job.contender == name
                    ]
                    progress.step(
                        f"round {r + 1}/{cfg.rounds}  {BY_KEY[key].title} · "
                        + ", ".join(order)
                        + " (interleaved)"
                    )
                    self._collect_interleaved([job for job in jobs if job.active])
                    for _ in jobs:
                        progress.advance()
                    continue
                for name in order:
                    for job in self.jobs:
                        if job.scenario.key != key or job.contender != name:
                            continue
                        for small in (False, True)[: self._runs_per_job(job)]:
                            progress.step(
                                f"round {r + 1}/{cfg.rounds}  {job.scenario.title} · {name}"
                                + (f" [{job.variant}]" if job.variant else "")
                                + (" @N/10" if small else "")
                            )
                            if job.active:
                                self._collect(job, small)
                            progress.advance()
        progress.finish()

    def _collect(self, job: Job, small: bool) -> None:
        size = job.scenario.size(self.sizes)
        n = max(1, size // 10) if small else size
        figures = self._attempt(job, n)
        if figures is None:
            return
        if small:
            job.raw_small.append(figures["seconds"])
        else:
            for metric, value in figures.items():
                job.raw.setdefault(metric, []).append(value)

    def _collect_interleaved(self, jobs: list[Job]) -> None:
        """One round of an interleaved scenario: every job's parts in turns (see the module
        docstring); a job that fails stops there, the others go on."""
        if not jobs:
            return
        scenario = jobs[0].scenario
        n = scenario.size(self.sizes)
        try:
            self.admin.reset(n if scenario.preload else 0)
        except Exception as exc:
            for job in jobs:
                job.fail(exc)
            return
        prepared: dict[int, Prepared] = {}
        for j, job in enumerate(jobs):
            try:
                prepared[j] = self.contenders[job.contender].prepare(scenario.key, n, job.variant)
            except Exception as exc:
                self._give_up(job, exc)
        seconds = dict.fromkeys(prepared, 0.0)
        parts = {j: p.slices or [p.timed] for j, p in prepared.items()}
        gc.collect()
        for i in range(max((len(ps) for ps in parts.values()), default=0)):
            turn = list(seconds)
            shift = i % len(turn) if turn else 0
            for j in turn[shift:] + turn[:shift]:
                if i >= len(parts[j]):
                    continue
                try:
                    t0 = time.perf_counter()
                    result = parts[j][i]()
                    seconds[j] += time.perf_counter() - t0
                    del result
                except Exception as exc:
                    del seconds[j]
                    self._give_up(jobs[j], exc)
        for p in prepared.values():
            try:
                p.cleanup()
            except Exception:
                pass
        for j, total in seconds.items():
            jobs[j].raw.setdefault("seconds", []).append(total)

    def _give_up(self, job: Job, exc: BaseException) -> None:
        job.fail(exc)
        try:
            self.contenders[job.contender].recover()
        except Exception as again:  # the contender is beyond repair: stop using it
            for other in self.jobs:
                if other.contender == job.contender and other.active:
                    other.fail(again)

    def close(self) -> None:
        for contender in self.contenders.values():
            try:
                contender.close()
            except Exception:
                pass
        self.admin.close()

    # -- results ----------------------------------------------------------------------------

    def results(self, started: float, finished: float) -> dict[str, Any]:
        """Everything as one JSON-able dict: meta, and per scenario every raw figure."""
        versions: dict[str, str] = {
            "python": sys.version.split()[0],
            "psycopg": psycopg.__version__,
            "postgresql": self.admin.server_version(),
        }
        for contender in self.contenders.values():
            try:
                versions.update(contender.versions())
            except Exception as exc:
                versions[contender.name] = f"? ({classify(exc)[1]})"
        meta = {
            "n": self.sizes.n,
            "tx": self.sizes.tx,
            "rounds": self.config.rounds,
            "contenders": list(self.config.contenders),
            "scenarios": list(self.config.scenarios),
            "database": self.config.db_description,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(finished - started, 1),
            "machine": machine_info(),
            "versions": versions,
            "gc_enabled_while_timed": self.config.gc,
            "timing": "time.perf_counter around Prepared.timed() only; gc.collect() before "
            f"each; garbage collector {'enabled' if self.config.gc else 'disabled'} while "
            "timed (gc_seconds: time it took inside the timed section); medians over rounds; "
            "scenarios marked interleaved: the contenders' parts in turns, summed per round",
        }
        scenarios = []
        for key in self.config.scenarios:
            scenario = BY_KEY[key]
            size = scenario.size(self.sizes)
            per_contender: dict[str, Any] = {}
            for job in self.jobs:
                if job.scenario.key != key:
                    continue
                entry = per_contender.setdefault(
                    job.contender, {"status": "ok", "message": None, "variants": {}}
                )
                if job.status != "ok" and not entry["variants"]:
                    entry["status"], entry["message"] = job.status, job.message
                if job.status == "ok" or job.raw:
                    entry["variants"][job.variant] = _variant_figures(job, size)
                    if job.status != "ok":
                        entry["variants"][job.variant]["status"] = job.status
                        entry["variants"][job.variant]["message"] = job.message
            scenarios.append(
                {
                    "key": key,
                    "title": scenario.title,
                    "timed": scenario.timed,
                    "n": size,
                    "rows": scenario.rows(size),
                    "per_op": scenario.per_op,
                    "scaling": scenario.scaling,
                    "memory": scenario.memory,
                    "targets": [
                        {"peer": t.peer, "max_ratio": t.max_ratio, "text": t.text}
                        for t in scenario.targets
                    ],
                    "reference": scenario.reference,
                    "results": per_contender,
                }
            )
        return {"meta": meta, "scenarios": scenarios}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _variant_figures(job: Job, size: int) -> dict[str, Any]:
    scenario = job.scenario
    medians = {metric: _median(values) for metric, values in job.raw.items()}
    figures: dict[str, Any] = {"raw": job.raw, "median": medians}
    seconds = medians.get("seconds")
    if seconds:
        figures["rows_per_s"] = scenario.rows(size) / seconds
        figures["per_op_us"] = seconds / size * 1e6
    if scenario.scaling:
        figures["n_small"] = max(1, size // 10)
        figures["raw_small"] = job.raw_small
        figures["median_small"] = _median(job.raw_small)
    return figures


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_implementation() + " " + platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["memory_kb"] = int(line.split()[1])
                    break
    except OSError:
        pass
    return info
