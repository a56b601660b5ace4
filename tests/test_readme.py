"""The README's example runs as written (against the test database) and does what it says."""

from __future__ import annotations

import pathlib
import re
from typing import Any

from retort.engine import Engine

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(engine: Engine, sql_log: list[tuple[str, Any]]) -> None:
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block, "README has a python example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 20
    code = code.replace('create_engine("postgresql://me@localhost/app")', "_engine")
    namespace: dict[str, Any] = {"_engine": engine, "__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)
    verbs = [sql.split()[0] for sql, _ in sql_log]
    # create_all, then: key pre-allocation + one INSERT, commit, the query, the UPDATE
    assert verbs[-4:] == ["SELECT", "INSERT", "SELECT", "UPDATE"], verbs
    assert "SET nickname = %s" in sql_log[-1][0]
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, nickname FROM users ORDER BY name").all()
    assert [tuple(r) for r in rows] == [("ann", "a"), ("bob", None)]
