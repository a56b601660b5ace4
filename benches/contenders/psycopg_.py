"""Hand-written psycopg 3: the practical floor for the same database effect.

Inserts pre-allocate keys from the identity sequence and COPY rows with their ids (the same
result as an ORM flush: rows stored and keys known); updates are one set-based UPDATE over
unnest() arrays; deletes one ``DELETE ... = ANY``. Second figures: executemany INSERT ...
RETURNING and executemany UPDATE. The connection is not in autocommit, like an ORM session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from benches.contenders.base import Contender, Prepared, sliced
from benches.scenarios import CHILDREN_PER_PARENT, item_row

ITEM_COLUMNS = "id, name, qty, price, note"
INSERT_ITEM = "INSERT INTO item (name, qty, price, note) VALUES (%s, %s, %s, %s) RETURNING id"
ALLOCATE = "SELECT nextval(%s::regclass) FROM generate_series(1, %s)"


class PsycopgContender(Contender):
    name = "psycopg"
    variants = {
        "insert_flush": ("COPY", "executemany RETURNING"),
        "update_all": ("unnest", "executemany"),
    }

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn)
        self.sequences = {
            table: self._one(f"SELECT pg_get_serial_sequence('{table}', 'id')")
            for table in ("item", "parent", "child")
        }
        self.conn.commit()

    def _one(self, query: Any, params: Any = None) -> Any:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]

    def _allocate(self, table: str, n: int) -> list[int]:
        """n fresh keys from the table's identity sequence, in one round trip."""
        rows = self.conn.execute(ALLOCATE, (self.sequences[table], n)).fetchall()
        return [r[0] for r in rows]

    def _copy(self, statement: str, rows: Any) -> None:
        with self.conn.cursor() as cur, cur.copy(statement) as copy:
            write = copy.write_row
            for row in rows:
                write(row)

    def _copy_items(self, values: list[tuple[Any, ...]]) -> list[int]:
        ids = self._allocate("item", len(values))
        self._copy(
            f"COPY item ({ITEM_COLUMNS}) FROM STDIN",
            ((i, *v) for i, v in zip(ids, values, strict=True)),
        )
        return ids

    def _ids_qty(self) -> list[tuple[int, int]]:
        return self.conn.execute("SELECT id, qty FROM item").fetchall()

    def recover(self) -> None:
        try:
            self.conn.close()
        finally:
            self.conn = psycopg.connect(self.dsn)

    def close(self) -> None:
        self.conn.close()

    def versions(self) -> dict[str, str]:
        return {
            "psycopg": psycopg.__version__,
            "psycopg_impl": psycopg.pq.__impl__,
            "libpq": str(psycopg.pq.version()),
        }

    # -- scenarios: everything before `def timed` is setup -------------------------------

    def scenario_insert(self, n: int, variant: str) -> Prepared:
        values = [item_row(i) for i in range(n)]

        def timed() -> list[int]:
            ids = self._copy_items(values)
            self.conn.commit()
            return ids

        return Prepared(timed, self.conn.rollback)

    def scenario_insert_flush(self, n: int, variant: str) -> Prepared:
        values = [item_row(i) for i in range(n)]
        if variant == "COPY":
            return Prepared(lambda: self._copy_items(values), self.conn.rollback, self.conn.commit)

        def executemany() -> list[int]:
            ids = []
            with self.conn.cursor() as cur:
                cur.executemany(INSERT_ITEM, values, returning=True)
                while True:
                    ids.append(cur.fetchone()[0])  # type: ignore[index]
                    if not cur.nextset():
                        break
            return ids

        return Prepared(executemany, self.conn.rollback, self.conn.commit)

    def scenario_insert_graph(self, n: int, variant: str) -> Prepared:
        names = [
            (f"parent {p}", [f"child {p}.{c}" for c in range(CHILDREN_PER_PARENT)])
            for p in range(n // CHILDREN_PER_PARENT)
        ]

        def timed() -> None:
            parent_ids = self._allocate("parent", len(names))
            child_ids = iter(self._allocate("child", len(names) * CHILDREN_PER_PARENT))
            self._copy(
                "COPY parent (id, name) FROM STDIN",
                zip(parent_ids, (name for name, _ in names), strict=True),
            )
            self._copy(
                "COPY child (id, parent_id, name) FROM STDIN",
                (
                    (next(child_ids), pid, child)
                    for pid, (_, children) in zip(parent_ids, names, strict=True)
                    for child in children
                ),
            )
            self.conn.commit()

        return Prepared(timed, self.conn.rollback)

    def scenario_load(self, n: int, variant: str) -> Prepared:
        def timed() -> list[Any]:
            return self.conn.execute(f"SELECT {ITEM_COLUMNS} FROM item").fetchall()

        return Prepared(timed, self.conn.rollback)

    scenario_memory = scenario_load

    def scenario_update_all(self, n: int, variant: str) -> Prepared:
        rows = self._ids_qty()
        if variant == "unnest":

            def timed() -> None:
                ids = [r[0] for r in rows]
                qtys = [r[1] + 1 for r in rows]
                self.conn.execute(
                    "UPDATE item SET qty = v.qty"
                    " FROM unnest(%s::integer[], %s::integer[]) AS v(id, qty)"
                    " WHERE item.id = v.id",
                    (ids, qtys),
                )

        else:

            def timed() -> None:
                with self.conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE item SET qty = %s WHERE id = %s", [(q + 1, i) for i, q in rows]
                    )

        return Prepared(timed, self.conn.rollback, self.conn.commit)

    def scenario_delete_all(self, n: int, variant: str) -> Prepared:
        ids = [r[0] for r in self._ids_qty()]

        def timed() -> None:
            self.conn.execute("DELETE FROM item WHERE id = ANY(%s)", (ids,))

        return Prepared(timed, self.conn.rollback, self.conn.commit)

    def scenario_tx_add_commit(self, n: int, variant: str) -> Prepared:
        conn = self.conn

        def timed(values: Sequence[tuple[Any, ...]]) -> None:
            for row in values:
                conn.execute(INSERT_ITEM, row).fetchone()
                conn.commit()

        return sliced([item_row(i) for i in range(n)], timed, conn.rollback)

    def scenario_tx_get_set_commit(self, n: int, variant: str) -> Prepared:
        conn = self.conn

        def timed(pks: Sequence[int]) -> None:
            for pk in pks:
                row = conn.execute(f"SELECT {ITEM_COLUMNS} FROM item WHERE id = %s", (pk,))
                _, _, qty, _, _ = row.fetchone()  # type: ignore[misc]
                conn.execute("UPDATE item SET qty = %s WHERE id = %s", (qty + 1, pk))
                conn.commit()

        return sliced(range(1, n + 1), timed, conn.rollback)
