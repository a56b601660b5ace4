"""End-to-end smoke test of the benchmark harness (``python -m benches``) at a tiny N.

Benchmarks are not tests: nothing here looks at timings. It checks that a run completes
against an embedded PostgreSQL, writes a JSON with a median for every scenario and contender
asked for, and a PNG. It does not need retort's ORM: the main run uses SQLAlchemy and psycopg
only, and the retort run passes whether retort reports figures, "n/a" or errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("matplotlib")
pytest.importorskip("pgserver")

ROOT = Path(__file__).resolve().parents[1]


def run_bench(tmp_path: Path, *args: str) -> dict:
    out_json, out_png = tmp_path / "results.json", tmp_path / "results.png"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "benches", *args, "--json", str(out_json), "--png", str(out_png)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| scenario" in proc.stdout
    assert out_png.exists() and out_png.stat().st_size > 0
    return json.loads(out_json.read_text())


def test_sqlalchemy_and_psycopg_every_scenario(tmp_path: Path) -> None:
    results = run_bench(
        tmp_path, "--n", "50", "--tx", "5", "--rounds", "1", "--contenders", "sqlalchemy,psycopg"
    )
    assert results["meta"]["n"] == 50
    assert results["meta"]["versions"]["sqlalchemy"]
    keys = [s["key"] for s in results["scenarios"]]
    assert len(keys) >= 12 and "insert_graph" in keys and "memory" in keys
    for scenario in results["scenarios"]:
        metrics = ["tracemalloc_bytes", "rss_bytes"] if scenario["memory"] else ["seconds"]
        sqlalchemy = scenario["results"]["sqlalchemy"]
        assert sqlalchemy["status"] == "ok", (scenario["key"], sqlalchemy)
        psycopg = scenario["results"]["psycopg"]
        entries = [sqlalchemy]
        if psycopg["status"] == "n/a":  # no hand-written counterpart (e.g. identity map)
            assert scenario["key"] in {"few_dirty", "noop_flush", "commit_large", "get_identity"}
        else:
            entries.append(psycopg)
        for entry in entries:
            for figures in entry["variants"].values():
                for metric in metrics:
                    assert figures["median"][metric] is not None, (scenario["key"], metric)
                    assert len(figures["raw"][metric]) == 1


def test_retort_never_breaks_the_run(tmp_path: Path) -> None:
    results = run_bench(
        tmp_path,
        *("--n", "30", "--tx", "3", "--rounds", "1", "--contenders", "retort,psycopg"),
        *("--scenarios", "insert,insert_graph,load"),
    )
    for scenario in results["scenarios"]:
        retort = scenario["results"]["retort"]
        assert retort["status"] in {"ok", "n/a", "error"}
        if retort["status"] == "ok":
            for figures in retort["variants"].values():
                assert figures["median"]["seconds"] is not None or figures.get("status")
        assert scenario["results"]["psycopg"]["variants"][""]["median"]["seconds"] > 0


def test_sliced_parts_do_the_whole_work_once_in_order() -> None:
    from benches.contenders.base import SLICES, sliced

    for n in (1, 7, SLICES, 23, 1000):
        done: list[int] = []
        prepared = sliced(range(n), done.extend)
        assert prepared.slices is not None and len(prepared.slices) == min(n, SLICES)
        for part in prepared.slices:
            part()
        assert done == list(range(n))
        done.clear()
        prepared.timed()
        assert done == list(range(n))


def test_the_memory_target_judges_tracemalloc_and_shows_rss_beside_it() -> None:
    from benches.report import evaluate, table_rows

    def figures(tracemalloc: float, rss: float) -> dict[str, Any]:
        raw = {"tracemalloc_bytes": [tracemalloc], "rss_bytes": [rss]}
        median = {k: v[0] for k, v in raw.items()}
        return {"status": "ok", "message": None, "variants": {"": {"raw": raw, "median": median}}}

    scenario: dict[str, Any] = {
        "key": "memory",
        "title": "memory per object",
        "n": 10,
        "per_op": None,
        "memory": True,
        "targets": [{"peer": "sqlalchemy", "max_ratio": 0.4, "text": "at most 0.4 of SQLAlchemy"}],
        "results": {"retort": figures(300, 600), "sqlalchemy": figures(1000, 1000)},
    }
    ev = evaluate(scenario)
    assert ev["tracemalloc_bytes"]["targets"] == [
        {"text": "at most 0.4 of SQLAlchemy", "ratio": 0.3, "met": True}
    ]
    assert ev["rss_bytes"]["ratio"]["sqlalchemy"] == 0.6
    assert ev["rss_bytes"]["targets"] == []  # shown, not judged
    results = {"scenarios": [dict(scenario, evaluation=ev)]}
    (tm_row, rss_row) = table_rows(results)
    assert tm_row[-1] == "yes"
    assert rss_row[-1] == "" and "no target" in rss_row[-2]
