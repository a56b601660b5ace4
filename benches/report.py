"""Turn the results dict into a terminal table, a JSON file and a PNG chart.

Everything here works from the JSON-able dict built by :meth:`benches.harness.Runner.results`,
so a saved JSON file can be re-rendered (``python -m benches --report PATH``).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benches.scenarios import CONTENDERS, LABELS, MEMORY_METRICS, SECONDS, Metric, X

ERROR_CELL = 38
NO_COUNTERPART = "no counterpart"


def _metrics(s: dict[str, Any]) -> tuple[Metric, ...]:
    return MEMORY_METRICS if s["memory"] else (SECONDS,)


def _primary(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if not entry:
        return None
    for figures in entry["variants"].values():
        return figures  # type: ignore[no-any-return]
    return None


def _value(s: dict[str, Any], contender: str, metric: str) -> float | None:
    figures = _primary(s["results"].get(contender))
    if figures is None:
        return None
    value = figures["median"].get(metric)
    return float(value) if value else None


def _raw(s: dict[str, Any], contender: str, metric: str) -> list[float]:
    figures = _primary(s["results"].get(contender))
    return list(figures["raw"].get(metric, [])) if figures else []


def paired_ratio(mine: list[float], theirs: list[float]) -> float | None:
    """Median over rounds of mine[r] / theirs[r].

    Contenders run interleaved within a round, so a round's pair saw the same machine load;
    the median of per-round ratios resists drifting load better than a ratio of medians.
    Falls back to the ratio of medians when the rounds do not pair up (a failed round).
    """
    if not mine or not theirs or not all(mine) or not all(theirs):
        return None
    if len(mine) == len(theirs):
        return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))
    return statistics.median(mine) / statistics.median(theirs)


def evaluate(s: dict[str, Any]) -> dict[str, Any]:
    """Ratios (retort's cost / peer's cost) and target verdicts for each metric."""
    out: dict[str, Any] = {}
    for metric in _metrics(s):
        retort = _raw(s, "retort", metric.key)
        ratios: dict[str, float | None] = {}
        for peer in ("sqlalchemy", "psycopg"):
            ratios[peer] = paired_ratio(retort, _raw(s, peer, metric.key))
        small = _primary(s["results"].get("retort"))
        if retort and small and small.get("raw_small"):
            ratios["scaling"] = paired_ratio(retort, small["raw_small"])
        targets = []
        for t in s["targets"] if metric.judged else ():
            ratio = ratios.get(t["peer"])
            met = None if ratio is None else ratio <= t["max_ratio"]
            targets.append({"text": t["text"], "ratio": ratio, "met": met})
        out[metric.key] = {"ratio": ratios, "targets": targets}
    return out


def annotate(results: dict[str, Any]) -> dict[str, Any]:
    for s in results["scenarios"]:
        s["evaluation"] = evaluate(s)
    return results


# -- formatting ------------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms * 1e3:.0f} µs"


def fmt_value(s: dict[str, Any], metric: str, value: float) -> str:
    if metric != "seconds":
        return f"{value:,.0f} B"
    per_op = value / s["n"] * 1e6
    if s["per_op"] == "tx":
        return f"{per_op:,.0f} µs/tx"
    if s["per_op"]:
        return f"{fmt_ms(value)} ({per_op:.2f} µs/{s['per_op']})"
    return fmt_ms(value)


def fmt_ratio(ratio: float | None, memory: bool) -> str:
    if ratio is None:
        return "—"
    if ratio <= 1:
        return f"{1 / ratio:.3g}{X} {'less' if memory else 'faster'}"
    return f"{ratio:.3g}{X} {'more' if memory else 'slower'}"


def _cell(s: dict[str, Any], contender: str, metric: str) -> str:
    entry = s["results"].get(contender)
    if entry is None:
        return "·"  # not run
    value = _value(s, contender, metric)
    if value is not None:
        return fmt_value(s, metric, value)
    figures = _primary(entry) or {}
    status = figures.get("status", entry["status"])
    message = figures.get("message", entry["message"]) or ""
    if status == "n/a":
        return "n/a"
    if status == "error":
        text = f"error: {message}"
        return text if len(text) <= ERROR_CELL else text[: ERROR_CELL - 1] + "…"
    return "—"


def _met(targets: list[dict[str, Any]]) -> str:
    verdicts = [t["met"] for t in targets]
    if not verdicts:
        return ""
    if any(v is None for v in verdicts):
        return "—"
    if all(verdicts):
        return "yes"
    return f"NO ({sum(map(bool, verdicts))}/{len(verdicts)})"


HEADER = (
    "scenario",
    "retort",
    "SQLAlchemy",
    "psycopg",
    "retort vs SQLAlchemy",
    "retort vs psycopg",
    "target",
    "met?",
)


def table_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for s in results["scenarios"]:
        evaluation = s.get("evaluation") or evaluate(s)
        for metric in _metrics(s):
            ev = evaluation[metric.key]
            rows.append(
                (
                    s["title"] + metric.label,
                    *(_cell(s, c, metric.key) for c in CONTENDERS),
                    fmt_ratio(ev["ratio"]["sqlalchemy"], s["memory"]),
                    fmt_ratio(ev["ratio"]["psycopg"], s["memory"]),
                    "; ".join(t["text"] for t in ev["targets"])
                    or ("" if metric.judged else "(no target: shown beside the one above)"),
                    _met(ev["targets"]),
                )
            )
    return rows


def render_table(results: dict[str, Any]) -> str:
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]

    def line(r: tuple[str, ...]) -> str:
        cells = [
            c.ljust(w) if i == 0 or i >= 6 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":" if 0 < i < 6 else "-" * (w + 2)) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(rows[0]), sep, *(line(r) for r in rows[1:])])


def render_notes(results: dict[str, Any]) -> str:
    meta = results["meta"]
    v = meta["versions"]
    lines = [
        f"N = {meta['n']:,}, small transactions = {meta['tx']:,}, rounds = {meta['rounds']} "
        f"(medians), {meta['database']}, PostgreSQL {v.get('postgresql', '?')}, "
        f"{meta['machine'].get('cpu', meta['machine']['machine'])} {X} "
        f"{meta['machine']['cpu_count']}, run took {meta['duration_s']} s",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "ratios: retort's cost against the peer's, median of per-round ratios; "
        "'n/a': no counterpart or feature not implemented yet; garbage collector "
        + ("enabled" if meta.get("gc_enabled_while_timed", True) else "DISABLED")
        + " while timed",
    ]
    alternates, scaling, problems, collector = [], [], [], []
    no_counterpart: dict[str, list[str]] = {}
    for s in results["scenarios"]:
        for contender, entry in s["results"].items():
            variants = list(entry["variants"].items())
            for label, figures in variants[1:]:
                seconds = figures["median"].get("seconds")
                if seconds:
                    alternates.append(
                        f"  {s['title']}: {LABELS[contender]} {label} "
                        f"{fmt_value(s, 'seconds', seconds)} (primary: {variants[0][0]})"
                    )
            for _, figures in variants[:1]:
                seconds = figures["median"].get("seconds")
                in_gc = figures["median"].get("gc_seconds")
                if seconds and in_gc and in_gc >= 0.1 * seconds and seconds >= 1e-3:
                    collector.append(
                        f"  {s['title']}: {LABELS[contender]} {fmt_ms(in_gc)} of "
                        f"{fmt_ms(seconds)} ({in_gc / seconds:.0%})"
                    )
            if s["scaling"] and variants:
                figures = variants[0][1]
                big, small = figures["median"].get("seconds"), figures.get("median_small")
                if big and small:
                    scaling.append(
                        f"  {s['title']}: {LABELS[contender]} {fmt_ms(big)} at N, "
                        f"{fmt_ms(small)} at N/10 → {big / small:.1f}{X}"
                    )
            for label, figures in variants or [("", {})]:
                status = figures.get("status", entry["status"] if not variants else "ok")
                message = figures.get("message", entry["message"] if not variants else None)
                if status == "n/a" and message == NO_COUNTERPART:
                    no_counterpart.setdefault(contender, []).append(s["title"])
                elif status != "ok" and message:
                    where = f" [{label}]" if label else ""
                    problems.append(
                        f"  {s['title']} · {LABELS[contender]}{where}: {status}: {message}"
                    )
    if alternates:
        lines += ["second figures:", *alternates]
    if collector:
        lines += ["time in the garbage collector inside the timed section (median, ≥ 10%):"]
        lines += collector
    if scaling:
        lines += ["cost against N (t(N) / t(N/10); ~1 means O(changed), ~10 means O(N)):"]
        lines += scaling
    for contender, titles in no_counterpart.items():
        lines.append(f"{LABELS[contender]} has no counterpart for: {', '.join(titles)}")
    if problems:
        lines += ["n/a and errors:", *problems]
    lines.append("what is timed:")
    lines += [f"  {s['title']}: {s['timed']}" for s in results["scenarios"]]
    return "\n".join(lines)


# -- files -------------------------------------------------------------------------------------


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


COLORS = {
    ("retort", 0): "#d62728",
    ("sqlalchemy", 0): "#1f77b4",
    ("psycopg", 0): "#2ca02c",
    ("psycopg", 1): "#98df8a",
}


def _compact(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def write_png(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [s for s in results["scenarios"] if not s["memory"]]
    memory = [s for s in results["scenarios"] if s["memory"]]
    series = [
        (c, i)
        for c in CONTENDERS
        for i in range(2)
        if any(len(s["results"].get(c, {}).get("variants", {})) > i for s in timed)
        or (i == 0 and any(c in s["results"] for s in results["scenarios"]))
    ]
    height = 1.2 + 0.55 * len(timed) * max(1, len(series)) / 3 + (2.2 if memory else 0)
    fig, axes = plt.subplots(
        2 if memory else 1,
        1,
        figsize=(11, max(4.0, height)),
        gridspec_kw={"height_ratios": [max(1, len(timed)), 2]} if memory else None,
        squeeze=False,
    )
    meta = results["meta"]
    fig.suptitle(
        f"retort flush benchmark — N = {meta['n']:,}, medians of {meta['rounds']} rounds, "
        f"PostgreSQL {meta['versions'].get('postgresql', '?')}",
        fontsize=11,
    )
    bar = 0.8 / max(1, len(series))

    def draw(ax: Any, scenarios: list[dict[str, Any]], value_of: Any, xlabel: str) -> None:
        for k, (contender, index) in enumerate(series):
            ys, xs = [], []
            for j, s in enumerate(scenarios):
                variants = list(s["results"].get(contender, {}).get("variants", {}).items())
                if len(variants) <= index:
                    continue
                x = value_of(s, variants[index][1])
                if x:
                    ys.append(j + k * bar)
                    xs.append(x)
            if not xs and index:
                continue
            label = LABELS[contender] + (" (2nd figure: executemany)" if index else "")
            ax.barh(ys, xs, height=bar, color=COLORS.get((contender, index)), label=label)
            for y, x in zip(ys, xs, strict=True):
                ax.text(x, y, " " + _compact(x), va="center", fontsize=7)
        ax.set_yticks([j + bar * (len(series) - 1) / 2 for j in range(len(scenarios))])
        ax.set_yticklabels([s["title"] for s in scenarios], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")

    def throughput(s: dict[str, Any], figures: dict[str, Any]) -> float | None:
        rate = figures.get("rows_per_s")
        return rate if rate and math.isfinite(rate) else None

    draw(axes[0][0], timed, throughput, "throughput: rows (or transactions, gets) per second, log")
    axes[0][0].set_xscale("log")
    if memory:
        rows = [{**memory[0], "title": "per object" + m.label, "_m": m.key} for m in MEMORY_METRICS]
        draw(
            axes[1][0],
            rows,
            lambda s, f: f["median"].get(s["_m"]),
            "bytes held per persistent object (lower is better)",
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
