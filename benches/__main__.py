"""Command line: ``python -m benches [--n N] [--contenders ...] [--scenarios ...]``."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

from benches import db, report
from benches.harness import Config, Runner
from benches.scenarios import BY_KEY, CONTENDERS, SCENARIOS

RESULTS = Path(__file__).resolve().parent / "results"


def _csv(choices: tuple[str, ...] | list[str]):  # type: ignore[no-untyped-def]
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        unknown = [t for t in items if t not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(choices)}"
            )
        return list(dict.fromkeys(items))

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    keys = [s.key for s in SCENARIOS]
    p = argparse.ArgumentParser(
        prog="python -m benches",
        description="Flush-throughput benchmark: retort vs SQLAlchemy 2.x ORM vs hand-written "
        "psycopg 3 (scenarios and targets: BENCHMARKS.md).",
        epilog="scenarios: "
        + ", ".join(f"{s.key} ({s.title})" for s in SCENARIOS)
        + ". With --dsn, tables item, parent and child are dropped and recreated.",
    )
    p.add_argument("--n", type=int, default=20000, help="N objects (default 20000)")
    p.add_argument(
        "--tx",
        type=int,
        default=1000,
        help="transactions in the small-transaction scenarios (default 1000, at most N)",
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds; medians reported (default 5)")
    p.add_argument("--scenarios", type=_csv(keys), default=keys, help="comma list (default all)")
    p.add_argument(
        "--contenders",
        type=_csv(CONTENDERS),
        default=list(CONTENDERS),
        help="comma list of retort,sqlalchemy,psycopg (default all)",
    )
    p.add_argument("--dsn", help="a PostgreSQL URI; default: an embedded pgserver")
    p.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="results JSON")
    p.add_argument("--png", type=Path, default=RESULTS / "latest.png", help="chart PNG")
    p.add_argument(
        "--gc",
        choices=("on", "off"),
        default="on",
        help="garbage collector inside timed sections (default on, as users run; 'off' is "
        "timeit's convention). The time GC takes is recorded either way.",
    )
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip warm-up")
    p.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="do not run: re-render the table (and --png) from a saved results JSON",
    )
    args = p.parse_args(argv)
    if args.n < 1 or args.rounds < 1 or args.tx < 1:
        p.error("--n, --tx and --rounds must be positive")
    args.scenarios = [k for k in keys if k in args.scenarios]  # canonical order
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        results = report.annotate(json.loads(args.report.read_text()))
        report.write_png(results, args.png)
        print(report.render_table(results))
        print()
        print(report.render_notes(results))
        return 0
    # Make `kill` stop the embedded server and delete its data dir like Ctrl-C does.
    signal.signal(signal.SIGTERM, _terminate)
    server = db.external_server(args.dsn) if args.dsn else db.embedded_server()
    with server as database, contextlib.ExitStack() as stack:
        config = Config(
            n=args.n,
            tx=args.tx,
            rounds=args.rounds,
            scenarios=args.scenarios,
            contenders=args.contenders,
            warmup=args.warmup,
            gc=args.gc == "on",
            db_description=database.description,
        )
        runner = Runner(config, database.dsn)
        stack.callback(runner.close)
        started = time.time()
        runner.setup()
        runner.run()
        results = report.annotate(runner.results(started, time.time()))
    report.write_json(results, args.json)
    try:
        report.write_png(results, args.png)
    except Exception as exc:  # the figures are in the JSON; a chart failure must not lose them
        print(f"could not write {args.png}: {exc}", file=sys.stderr)
    print(report.render_table(results))
    print()
    print(report.render_notes(results))
    print(f"\nwrote {args.json} and {args.png}")
    return 0


assert set(BY_KEY) == {s.key for s in SCENARIOS}

if __name__ == "__main__":
    sys.exit(main())
