"""Memory held per loaded object (RSS, then tracemalloc), measured in a fresh process.

In the harness's own process, freed memory from earlier scenarios (pymalloc arenas, malloc
free lists) is reused by the next load, so an RSS difference there means little. This probe
starts clean, warms the contender up on an empty table (connection, statement caches, result
machinery), says "ready", waits while the harness loads N rows, then reports the RSS growth
across one load of N objects. It sees every heap, including a native extension's, which
tracemalloc (Python's allocators only) does not.

Protocol on stdin/stdout, one line each: -> "ready", <- "go", -> JSON {"rss_bytes": ...,
"tracemalloc_bytes": ...}.
"""

from __future__ import annotations

import gc
import json
import sys

from benches import contenders
from benches.harness import measure_tracemalloc, rss, trim


def main(argv: list[str]) -> int:
    name, variant, n_text, dsn = argv
    n = int(n_text)
    contender = contenders.load(name, dsn)
    warm = contender.prepare("memory", n, variant)  # the table is empty at this point
    held = warm.timed()
    del held
    warm.cleanup()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    prepared = contender.prepare("memory", n, variant)
    gc.collect()
    trim()
    before = rss()
    result = prepared.timed()
    gc.collect()
    trim()
    after = rss()
    loaded = len(result) if hasattr(result, "__len__") else None
    if before is None or after is None:
        figures: dict[str, float | None] = {"rss_bytes": None}
    else:
        figures = {"rss_bytes": (after - before) / n, "loaded": loaded}
    del result
    prepared.cleanup()
    # then the Python heap alone, over another load (tracemalloc's own bookkeeping would
    # have counted in the RSS above)
    figures["tracemalloc_bytes"] = measure_tracemalloc(contender, "memory", n, variant)
    print(json.dumps(figures), flush=True)
    contender.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
