"""Flush-throughput benchmark for retort against SQLAlchemy 2.x and hand-written psycopg 3.

Run ``python -m benches --help``. Scenarios, reference figures and targets are described in
BENCHMARKS.md; :mod:`benches.scenarios` encodes them as data. Benchmarks are not tests: nothing
here passes or fails on timings, the run reports medians and ratios measured in one process.
"""
