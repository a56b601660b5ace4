"""Run a flush plan from the core against a connection.

The core plans (which rows, in which order, grouped into batches with their parameters ready);
this module only turns each batch into SQL text, cached per batch shape, and executes it:

- INSERT: ``COPY`` for large batches that need nothing back from the server (in binary format
  when the core can encode every value exactly, else in text format), multi-row ``VALUES``
  lists in chunks otherwise. A database-generated key is pre-allocated from the
  column's sequence in one round trip when a batch has several rows, so every row's key is known
  before the INSERT and nothing depends on the order rows come back in. A single row uses
  ``INSERT ... RETURNING``.
- UPDATE: one statement per (table, column set): ``UPDATE ... FROM unnest(arrays)`` joined on
  the primary key, or a plain ``UPDATE ... WHERE pk = %s`` for one row.
- DELETE: ``DELETE ... WHERE pk = ANY(%s)`` (a ``VALUES`` join for composite keys).

Row counts of UPDATE and DELETE are checked: a mismatch raises `StaleDataError`.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from psycopg.adapt import PyFormat
from psycopg.types.json import Jsonb

from retort import _core, exc
from retort.attributes import (
    _has_identity,
    deleted_by_flush,
    holds_related_change,
    object_session_of,
)
from retort.sql import compiler

if TYPE_CHECKING:
    from retort._core import Batch, FlushPlan
    from retort.engine import Connection
    from retort.mapping import Mapper

# PostgreSQL allows 65535 bind parameters per statement; stay well below, and keep chunks to a
# few fixed sizes so statement texts repeat (and get prepared) across flushes.
MAX_PARAMS = 32000
MAX_ROWS = 1000
# From this many rows an INSERT batch that fetches nothing back goes through COPY.
COPY_MIN_ROWS = 64


# Names in statements run with parameters have any "%" doubled (psycopg reads "%" as the start
# of a placeholder there); COPY, run without parameters, and names passed as parameter values
# use the compiler's quoting as it is.


def quote_identifier(name: Any) -> str:
    return compiler.quote_identifier(name).replace("%", "%%")


def quote_table(table: Any) -> str:
    return compiler.quote_table(table).replace("%", "%%")


def _table(mapper: Mapper) -> str:
    return quote_table(mapper.local_table)


def _cast(mapper: Mapper, index: int) -> str:
    return mapper.columns[index].type.ddl()


def _chunk_rows(width: int) -> int:
    return max(1, min(MAX_ROWS, MAX_PARAMS // max(width, 1)))


def execute(
    plan: FlushPlan,
    conn_for: Callable[[Mapper], Connection],
    keys: KeyPrefetch | None = None,
) -> list[Any]:
    """Execute every batch in order, each on the connection of its mapper's bind; return per
    batch the rows it fetched back (or None). `keys`: keys drawn already (`prefetch_keys`)."""
    results: list[Any] = []
    for batch in plan.batches:
        mapper: Mapper = batch.mapper.owner
        conn = conn_for(mapper)
        op = batch.op
        if op == "insert":
            results.append(_insert(batch, mapper, conn, keys))
        elif op == "update":
            _update(batch, mapper, conn)
            results.append(None)
        else:
            _delete(batch, mapper, conn)
            results.append(None)
    return results


# -- INSERT ------------------------------------------------------------------------------------


# The sequence is resolved once ("OFFSET 0" keeps the subquery from being pulled up, which
# would look it up once per row, ten times slower). The values come back as a range when they
# are consecutive (the usual case) and as an array otherwise (other sessions drew from the
# sequence meanwhile).
_KEYS_SQL = (
    "SELECT min(v), CASE WHEN max(v) - min(v) + 1 = count(*) THEN NULL ELSE array_agg(v) END "
    "FROM (SELECT nextval(s.seq) AS v FROM (SELECT pg_get_serial_sequence(%s, %s)::regclass "
    "AS seq OFFSET 0) s, generate_series(1, %s)) t"
)


def allocate_keys(mapper: Mapper, count: int, conn: Connection) -> list[Any]:
    """Take `count` values from the sequence of the mapper's generated key, in one round
    trip."""
    cur = conn._cursor_execute(_KEYS_SQL, _keys_params(mapper, count))
    return _keys_of(cur.fetchall(), count)


def _keys_params(mapper: Mapper, count: int) -> tuple[str, str | None, int]:
    index = mapper.autoincrement_index
    assert index is not None
    # the table, quoted, is a parameter value
    return (compiler.quote_table(mapper.local_table), mapper.columns[index].name, count)


def _keys_of(rows: list[tuple[Any, ...]], count: int) -> list[Any]:
    first, scattered = rows[0]
    if scattered is not None:
        return list(scattered)
    return list(range(first, first + count))


class KeyPrefetch:
    """Keys drawn from a table's sequence while the core plans the flush: `prefetch_keys`
    sends `allocate_keys`'s SELECT before planning and `collect` reads it after, so that the
    server draws the keys while the client plans (a round trip less on the way of a bulk
    insert). Insert batches then take their keys from here; what is left unused is a gap in
    the sequence, as a rolled-back insert leaves."""

    def __init__(self, mapper: Mapper, count: int, finish: Callable[[], Any]) -> None:
        self._mapper = mapper
        self._count = count
        self._finish: Callable[[], Any] | None = finish
        self._keys: list[Any] = []

    def collect(self) -> None:
        """Read the keys (raises the statement's error)."""
        finish, self._finish = self._finish, None
        if finish is not None:
            self._keys = _keys_of(finish().fetchall(), self._count)

    def drain(self) -> None:
        """Read the answer and forget it, on the way out of a failed plan (the connection
        must be free for the rollback)."""
        try:
            self.collect()
        except Exception:
            pass
        self._keys = []

    def take(self, mapper: Mapper, n: int) -> list[Any] | None:
        if mapper is not self._mapper or len(self._keys) < n:
            return None
        keys, self._keys = self._keys[:n], self._keys[n:]
        return keys


def prefetch_keys(
    session: Any,
    conn_for: Callable[[Mapper], Connection],
    counts: list[tuple[Any, int]] | None = None,
) -> KeyPrefetch | None:
    """Send the SELECT drawing the keys of the coming flush's inserts, for a flush where only
    one table's rows still need generated keys (more than one: a single row takes its key
    from INSERT ... RETURNING); the keys relationships copy were drawn before (`counts`: the
    pending objects without a key, per mapper, where `Session._prepare_related` counted them).
    Only the planner runs between sending it and reading its answer."""
    if counts is None:
        counts = session._core.pending_key_counts()
    if len(counts) != 1 or counts[0][1] < 2:
        return None
    core, count = counts[0]
    mapper: Mapper = core.owner
    if mapper.early_keys:
        return None
    finish = conn_for(mapper)._start(_KEYS_SQL, _keys_params(mapper, count))
    return KeyPrefetch(mapper, count, finish)


def _preallocate_keys(
    batch: Batch, mapper: Mapper, conn: Connection, keys: KeyPrefetch | None = None
) -> None:
    drawn = None if keys is None else keys.take(mapper, batch.n)
    batch.set_keys(drawn if drawn is not None else allocate_keys(mapper, batch.n, conn))


def method(batch: Batch) -> str:
    """How a batch will be executed, as `execute` decides it (for `Session.flush_plan`)."""
    n = batch.n
    if batch.op == "insert":
        gen_key = batch.gen_key
        with_keys = batch.has_keys or (gen_key is not None and n > 1)  # pre-allocated
        returning = bool(batch.fetch) or (gen_key is not None and not with_keys)
        if not returning and n >= COPY_MIN_ROWS and (batch.cols or with_keys):
            return "COPY"
        name = "multi-row INSERT" if n > 1 else "INSERT"
        return f"{name} ... RETURNING" if returning else name
    if batch.op == "update":
        return "UPDATE ... FROM unnest" if n > 1 else "UPDATE"
    if n == 1:
        return "DELETE"
    return "DELETE = ANY" if len(batch.key_cols) == 1 else "DELETE USING VALUES"


def _insert(
    batch: Batch, mapper: Mapper, conn: Connection, keys: KeyPrefetch | None = None
) -> list[Any] | None:
    gen_key = batch.gen_key
    n = batch.n
    if gen_key is not None and n > 1:
        _preallocate_keys(batch, mapper, conn, keys)
    with_keys = batch.has_keys
    cols = list(batch.cols)
    insert_cols = ([gen_key] if with_keys and gen_key is not None else []) + cols
    fetch = list(batch.fetch)
    returning: list[int] = []
    if fetch or (gen_key is not None and not with_keys):
        returning = [*batch.pk, *fetch]
    if not returning and n >= COPY_MIN_ROWS and insert_cols:
        _copy(batch, mapper, insert_cols, conn)
        return None
    width = len(insert_cols)
    per_chunk = _chunk_rows(width)
    out: list[Any] | None = [] if returning else None
    for nrows, params in batch.chunks(per_chunk):
        key = ("insert", tuple(insert_cols), tuple(returning), nrows, with_keys)
        sql = mapper.sql_cache.get(key)
        if sql is None:
            sql = mapper.sql_cache[key] = _insert_sql(
                mapper, insert_cols, returning, nrows, with_keys
            )
        cur = conn._run(sql, params)
        if out is not None:
            out.extend(cur.fetchall())
    return out


def _copy(batch: Batch, mapper: Mapper, cols: list[int], conn: Connection) -> None:
    kinds = _binary_kinds(mapper, cols, conn)
    if kinds is not None:
        dump = _json_dump(conn) if _KIND_JSONB in kinds else None
        data = batch.copy_binary(kinds, dump)  # encoded by the core in one call
        if data is not None:
            sql = _copy_sql(mapper, cols, " (FORMAT BINARY)")
            dbapi = conn.driver_connection  # (unreachable once a lost connection invalidated it)
            try:
                with conn._copy(sql, batch.rows) as copy:
                    copy.write(data)
            except exc.DBAPIError:
                # the table may have changed type since its columns were looked up (then
                # PostgreSQL refuses the data): look them up again next time
                _column_types.pop(dbapi, None)
                raise
            return
    sql = _copy_sql(mapper, cols, "")
    text = batch.copy_text()  # encoded by the core in one call
    with conn._copy(sql, batch.rows) as copy:
        if text is not None:
            copy.write(text)
            return
        write = copy.write_row  # a value the core leaves to psycopg's adapters
        for row in batch.rows():
            write(row)


def _copy_sql(mapper: Mapper, cols: list[int], options: str) -> str:
    key = ("copy", tuple(cols), options)
    sql = mapper.sql_cache.get(key)
    if sql is None:
        names = ", ".join(compiler.quote_identifier(mapper.columns[i].name) for i in cols)
        table = compiler.quote_table(mapper.local_table)
        sql = mapper.sql_cache[key] = f"COPY {table} ({names}) FROM STDIN{options}"
    return sql


# Binary COPY. Each column is sent in the binary format of its type, which must be exactly the
# table's type: the kind the core encodes (rust/py/copybin.rs, KIND_*) follows from the
# mapper's column type, and is used only when the table's column in the catalog has one of the
# type OIDs of that kind. (A model may map Integer onto a BIGINT column, which text COPY
# accepts and binary COPY would not.) Anything else goes through text COPY.
_KIND_JSONB = 17
_KIND_OIDS: dict[int, frozenset[int]] = {
    1: frozenset({21}),  # int2
    2: frozenset({23}),  # int4
    3: frozenset({20}),  # int8
    4: frozenset({700}),  # float4
    5: frozenset({701}),  # float8
    6: frozenset({1700}),  # numeric
    7: frozenset({16}),  # bool
    8: frozenset({25, 1043, 1042}),  # text, varchar, bpchar
    9: frozenset({17}),  # bytea
    10: frozenset({2950}),  # uuid
    11: frozenset({1082}),  # date
    12: frozenset({1083}),  # time
    13: frozenset({1266}),  # timetz
    14: frozenset({1114}),  # timestamp
    15: frozenset({1184}),  # timestamptz
    16: frozenset({1186}),  # interval
    _KIND_JSONB: frozenset({3802}),  # jsonb
}


def _type_kind(type_: Any) -> int:
    """The core's binary encoding for a column type (0: none, the text path is used)."""
    from retort.sql import types as t

    cls = type(type_)
    simple = {
        t.SmallInteger: 1,
        t.Integer: 2,
        t.BigInteger: 3,
        t.Numeric: 6,
        t.Boolean: 7,
        t.String: 8,
        t.Text: 8,
        t.Enum: 8,
        t.LargeBinary: 9,
        t.Uuid: 10,
        t.Date: 11,
        t.Interval: 16,
        t.JSON: _KIND_JSONB,
    }
    if cls in simple:
        return simple[cls]
    if cls is t.Float:
        return 4 if type_.precision is not None and type_.precision <= 24 else 5
    if cls is t.Time:
        return 13 if type_.timezone else 12
    if cls is t.DateTime:
        return 15 if type_.timezone else 14
    return 0  # ARRAY, subclasses and custom types: their binary form is not known here


_COLUMN_TYPES_SQL = (
    "SELECT attname, atttypid::int4 FROM pg_attribute "
    "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
)

# Per psycopg connection: table → {column name: type OID} (empty when the table is not found).
_column_types: weakref.WeakKeyDictionary[Any, dict[str, dict[str, int]]] = (
    weakref.WeakKeyDictionary()
)


def _binary_kinds(mapper: Mapper, cols: list[int], conn: Connection) -> list[int] | None:
    """The kinds of the COPY columns, or None when binary COPY cannot be used for them."""
    key = ("copy_kinds", tuple(cols))
    kinds = mapper.sql_cache.get(key)
    if kinds is None:
        kinds = mapper.sql_cache[key] = [_type_kind(mapper.columns[i].type) for i in cols]
    if 0 in kinds:
        return None
    table = compiler.quote_table(mapper.local_table)
    per_table = _column_types.setdefault(conn.driver_connection, {})
    types = per_table.get(table)
    if types is None:
        # once per connection and table (a parameter value: quoted, not %-escaped)
        cur = conn._cursor_execute(_COLUMN_TYPES_SQL, (table,))
        types = dict(cur.fetchall())
        if types:  # a table not (yet) there is looked up again next time
            per_table[table] = types
    for i, kind in zip(cols, kinds, strict=True):
        if types.get(str(mapper.columns[i].name), 0) not in _KIND_OIDS[kind]:
            return None
    return list(kinds)


def _json_dump(conn: Connection) -> Callable[[Any], Any]:
    """psycopg's text dumper for Jsonb on this connection: the document text it would send."""
    dbapi = conn.driver_connection
    dumper = dbapi.adapters.get_dumper(Jsonb, PyFormat.TEXT)
    return dumper(Jsonb, dbapi).dump


def _insert_sql(
    mapper: Mapper, cols: list[int], returning: list[int], nrows: int, overriding: bool
) -> str:
    names = ", ".join(quote_identifier(mapper.columns[i].name) for i in cols)
    if cols:
        one = "(" + ", ".join(["%s"] * len(cols)) + ")"
        values = "VALUES " + ", ".join([one] * nrows)
        head = f"INSERT INTO {_table(mapper)} ({names})"
    else:
        values = "DEFAULT VALUES"
        head = f"INSERT INTO {_table(mapper)}"
    if overriding:
        head += " OVERRIDING SYSTEM VALUE"
    sql = f"{head} {values}"
    if returning:
        sql += " RETURNING " + ", ".join(
            quote_identifier(mapper.columns[i].name) for i in returning
        )
    return sql


# -- UPDATE ------------------------------------------------------------------------------------


def _update(batch: Batch, mapper: Mapper, conn: Connection) -> None:
    cols = list(batch.cols)
    pk = list(batch.key_cols)
    if batch.n > 1:
        unnest_key = ("update_unnest", tuple(cols), tuple(pk))
        sql = mapper.sql_cache.get(unnest_key)
        if sql is None:
            sql = mapper.sql_cache[unnest_key] = _update_unnest_sql(mapper, cols, pk)
        arrays = batch.array_literals()  # encoded by the core; psycopg's lists otherwise
        cur = conn._run(sql, arrays if arrays is not None else batch.columns())
        start, npk = len(cols), len(batch.pk)
        _check_count(
            cur,
            batch.n,
            "UPDATE",
            mapper,
            lambda: [tuple(r[start : start + npk]) for r in batch.rows()],
        )
        return
    for nrows, params in batch.chunks(1):
        key = ("update", tuple(cols), tuple(pk), nrows)
        sql = mapper.sql_cache.get(key)
        if sql is None:
            sql = mapper.sql_cache[key] = _update_sql(mapper, cols, pk, nrows)
        cur = conn._run(sql, params)
        keys = functools.partial(_flat_keys, params, len(cols), len(batch.pk), len(params))
        _check_count(cur, nrows, "UPDATE", mapper, keys)


def _update_unnest_sql(mapper: Mapper, cols: list[int], pk: list[int]) -> str:
    table = _table(mapper)
    arrays = ", ".join(f"%s::{mapper.columns[i].type.sql_cast()}[]" for i in [*cols, *pk])
    aliases = [f"v{j}" for j in range(len(cols))] + [f"k{j}" for j in range(len(pk))]
    sets = ", ".join(
        f"{quote_identifier(mapper.columns[i].name)} = v.v{j}" for j, i in enumerate(cols)
    )
    where = " AND ".join(
        f"{table}.{quote_identifier(mapper.columns[i].name)} = v.k{j}" for j, i in enumerate(pk)
    )
    return (
        f"UPDATE {table} SET {sets} FROM unnest({arrays}) AS v({', '.join(aliases)}) WHERE {where}"
        + _returning_pk(mapper, table)
    )


def _returning_pk(mapper: Mapper, table: str) -> str:
    """RETURNING of the primary key: left unread unless the row count is wrong, when it tells
    which rows were not matched."""
    return " RETURNING " + ", ".join(
        f"{table}.{quote_identifier(c.name)}" for c in mapper.primary_key
    )


def _update_sql(mapper: Mapper, cols: list[int], pk: list[int], nrows: int) -> str:
    table = _table(mapper)
    if nrows == 1:
        sets = ", ".join(f"{quote_identifier(mapper.columns[i].name)} = %s" for i in cols)
        where = " AND ".join(f"{quote_identifier(mapper.columns[i].name)} = %s" for i in pk)
        return f"UPDATE {table} SET {sets} WHERE {where}"
    aliases = [f"v{j}" for j in range(len(cols))] + [f"k{j}" for j in range(len(pk))]
    typed = ", ".join(f"%s::{_cast(mapper, i)}" for i in [*cols, *pk])
    rows = ", ".join([f"({typed})"] * nrows)
    sets = ", ".join(
        f"{quote_identifier(mapper.columns[i].name)} = v.v{j}" for j, i in enumerate(cols)
    )
    where = " AND ".join(
        f"{table}.{quote_identifier(mapper.columns[i].name)} = v.k{j}" for j, i in enumerate(pk)
    )
    return (
        f"UPDATE {table} SET {sets} FROM (VALUES {rows}) AS v({', '.join(aliases)}) WHERE {where}"
    )


# -- DELETE ------------------------------------------------------------------------------------


def _delete(batch: Batch, mapper: Mapper, conn: Connection) -> None:
    pk = list(batch.key_cols)
    table = _table(mapper)
    if len(pk) == 1:
        col = quote_identifier(mapper.columns[pk[0]].name)
        if batch.n == 1:
            sql = f"DELETE FROM {table} WHERE {col} = %s"
            cur = conn._run(sql, batch.chunks(1)[0][1])
        else:
            sql = (
                f"DELETE FROM {table} WHERE {col} = ANY(%s::{_cast(mapper, pk[0])}[])"
                + _returning_pk(mapper, table)
            )
            arrays = batch.array_literals()  # [the keys' array literal], encoded by the core
            cur = conn._run(sql, arrays if arrays is not None else [batch.key_list()])
        _check_count(cur, batch.n, "DELETE", mapper, lambda: [(k,) for k in batch.key_list()])
        return
    per_chunk = _chunk_rows(len(pk))
    for nrows, params in batch.chunks(per_chunk):
        typed = ", ".join(f"%s::{_cast(mapper, i)}" for i in pk)
        rows = ", ".join([f"({typed})"] * nrows)
        aliases = ", ".join(f"k{j}" for j in range(len(pk)))
        where = " AND ".join(
            f"{table}.{quote_identifier(mapper.columns[i].name)} = v.k{j}" for j, i in enumerate(pk)
        )
        sql = (
            f"DELETE FROM {table} USING (VALUES {rows}) AS v({aliases}) WHERE {where}"
            + _returning_pk(mapper, table)
        )
        cur = conn._run(sql, params)
        keys = functools.partial(_flat_keys, params, 0, len(batch.pk), len(pk))
        _check_count(cur, nrows, "DELETE", mapper, keys)


def _flat_keys(flat: Any, start: int, npk: int, width: int) -> list[tuple[Any, ...]]:
    """The primary keys in a flat parameter list of rows `width` wide, each key `npk` values
    from `start` within its row."""
    return [tuple(flat[i + start : i + start + npk]) for i in range(0, len(flat), width)]


def _check_count(
    cur: Any, expected: int, what: str, mapper: Mapper, keys: Callable[[], list[tuple[Any, ...]]]
) -> None:
    """Raise StaleDataError when the statement matched another number of rows than it was
    given, naming the rows it did not match (the statement returned the keys it matched)."""
    matched = cur.rowcount
    if matched == expected:
        return
    returned = {tuple(r) for r in cur.fetchall()} if cur.description is not None else set()
    missing = [k for k in keys() if k not in returned]
    names = [c.name for c in mapper.primary_key]
    shown = "; ".join(
        ", ".join(f"{n}={v!r}" for n, v in zip(names, k, strict=False)) for k in missing[:10]
    )
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    which = f" Rows not matched: {shown}{more}." if missing else ""
    raise exc.StaleDataError(
        f"{what} statement on table {mapper.local_table.name!r} expected to match "
        f"{expected} row(s); {matched} were matched.{which} The rows were changed or deleted "
        "by another transaction since they were loaded; roll back, reload and retry"
    )


# -- relationships -----------------------------------------------------------------------------

_MISSING: Any = object()


def column_arrays(rows: list[tuple[Any, ...]], width: int) -> list[Any]:
    """Rows as one array parameter per column, for ``unnest(%s::type[], ...)``: array literals
    the core encodes, or lists for psycopg when a value is of a type the core leaves to it."""
    literals = _core.array_literals(rows, width)
    if literals is not None:
        return literals
    return [list(col) for col in zip(*rows, strict=True)]


class RelatedChanges:
    """What relationships add to a flush: association rows of many-to-many relationships, and
    the collections whose change history the flush consumes."""

    def __init__(self) -> None:
        self.link_inserts: dict[Any, list[tuple[Any, ...]]] = {}
        self.link_deletes: dict[Any, list[tuple[Any, ...]]] = {}
        self.link_mapper: dict[Any, Any] = {}  # whose bind an association table's rows use
        self.link_cols: dict[Any, list[Any]] = {}  # an association table's columns, in order
        self.collections: list[Any] = []
        # (member, one-to-many) for each member given the owner's key while outside the
        # session: nothing of it is written (see _warn_outside_members)
        self.outside: list[tuple[Any, Any]] = []
        # children left by their parent (taken out of its collection, or listed by a parent
        # being deleted without a delete cascade), to lose their foreign key unless another
        # parent gained them (see _clear_keys_left)
        self.left: list[tuple[Any, Any]] = []
        # per one-to-many: ids of the members it gained outside loaded collections: queued
        # for its unloaded collections, or the value of a scalar one-to-many
        self.gains: dict[Any, set[int]] = {}
        # per relationship: its key, the attribute names its rows take from the owner and
        # from the item, and their order in the row
        self._shapes: dict[Any, tuple[Any, list[str], list[str], list[int]]] = {}

    def _shape(self, prop: Any) -> tuple[Any, list[str], list[str], list[int]]:
        shape = self._shapes.get(prop)
        if shape is None:
            pairs = [*prop.secondary_pairs, *prop.target_secondary_pairs]
            # In column-name order, so that both sides of back_populates give the same row.
            order = sorted(range(len(pairs)), key=lambda i: pairs[i][1].name)
            key = (prop.secondary, tuple(pairs[i][1].name for i in order))
            self.link_mapper.setdefault(key, prop.parent)
            self.link_cols.setdefault(key, [pairs[i][1] for i in order])
            shape = self._shapes[prop] = (
                key,
                [pcol.key for pcol, _ in prop.secondary_pairs],
                [tcol.key for tcol, _ in prop.target_secondary_pairs],
                order,
            )
        return shape

    def _link(self, prop: Any, owner: Any, item: Any) -> tuple[Any, tuple[Any, ...]]:
        key, owner_attrs, item_attrs, order = self._shape(prop)
        values = [getattr(owner, a) for a in owner_attrs]
        values += [getattr(item, a) for a in item_attrs]
        return key, tuple([values[i] for i in order])

    def link_insert(self, prop: Any, owner: Any, item: Any) -> None:
        key, row = self._link(prop, owner, item)
        self.link_inserts.setdefault(key, []).append(row)

    def link_delete(self, prop: Any, owner: Any, item: Any) -> None:
        key, row = self._link(prop, owner, item)
        self.link_deletes.setdefault(key, []).append(row)

    def _rows_sql(self, key: Any, rows: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
        """The association rows as a query for SQL, with its parameters: VALUES for a single
        row; else a SELECT from one array per column (unnest), so that the statement and its
        parameters stay small for any number of rows."""
        if len(rows) == 1:
            return "VALUES (" + ", ".join(["%s"] * len(rows[0])) + ")", list(rows[0])
        cols = self.link_cols[key]
        arrays = ", ".join(f"%s::{c.type.sql_cast()}[]" for c in cols)
        return f"SELECT * FROM unnest({arrays})", column_arrays(rows, len(cols))

    def delete_links(self, conn_for: Callable[[Any], Connection]) -> None:
        """Association rows to remove go first: before the rows they reference."""
        for key, rows in self.link_deletes.items():
            table, names = key
            cols = ", ".join(quote_identifier(n) for n in names)
            query, params = self._rows_sql(key, list(dict.fromkeys(rows)))
            sql = f"DELETE FROM {quote_table(table)} WHERE ({cols}) IN ({query})"
            conn_for(self.link_mapper[key])._cursor_execute(sql, params)

    def insert_links(self, conn_for: Callable[[Any], Connection]) -> None:
        """Association rows to add go last: after the rows they reference."""
        for key, rows in self.link_inserts.items():
            table, names = key
            cols = ", ".join(quote_identifier(n) for n in names)
            query, params = self._rows_sql(key, list(dict.fromkeys(rows)))
            sql = f"INSERT INTO {quote_table(table)} ({cols}) {query}"
            conn_for(self.link_mapper[key])._cursor_execute(sql, params)

    def done(self, session: Any, objs: list[Any]) -> None:
        """After the flush: collections forget their added and removed members; objects their
        many-to-one history, and the changes queued for their unloaded collections (written
        by this flush: the collection loads them from the database now)."""
        session._core.sync_done(objs, self.collections)


def _set_if_different(obj: Any, key: str, value: Any) -> None:
    current = obj.__dict__.get(key, _MISSING)
    if current is _MISSING or (current is not value and current != value):
        setattr(obj, key, value)


def sync_related(session: Any, objs: list[Any]) -> RelatedChanges:
    """Copy keys along the relationships of `objs` into foreign keys and association rows;
    delete orphans; null or delete the children of parents being deleted.

    The core copies keys into the members collections gained and along changed many-to-ones,
    in one call each; what it hands back (objects marked deleted, the removals of collections,
    scalar one-to-manys, many-to-manys, changes queued for unloaded collections) is settled
    here."""
    changes = RelatedChanges()
    if session._orphan_children or session._orphans_if_changed:
        _delete_unparented(session)
    core = session._core
    for obj, prop, value, gained in core.sync_collections(
        objs, changes.collections, changes.outside
    ):
        if prop is None and value is not None:
            _sync_queued(session, obj, value, changes)
        elif prop is None:
            for p in type(obj).__mapper__.relationships.values():
                if not p.viewonly:
                    _parent_deleted(session, obj, p, changes)
        elif prop.direction == "ONETOMANY":
            _sync_one_to_many(session, obj, prop, value, changes, gained)
        else:
            for item in value._added.values():
                if _linkable(session, item, prop):
                    changes.link_insert(prop, obj, item)
            for item in value._removed.values():
                if not _outside(session, item, prop):
                    changes.link_delete(prop, obj, item)
            changes.collections.append(value)
    if changes.outside:
        _warn_outside_members(changes.outside)
    if changes.left:
        _clear_keys_left(session, changes)
    # last: an orphan deleted above keeps its foreign key as it was, as in SQLAlchemy
    for target, prop in core.sync_many_to_one(objs):
        # towards an object outside the session: nothing is written, and the new value is
        # reported (SQLAlchemy's warning)
        _outside(session, target, prop)
    return changes


def _linkable(session: Any, item: Any, prop: Any) -> bool:
    """Whether a many-to-many member gained gets its association row: not one whose DELETE a
    flush ran (no row to link to: nothing is written, without a warning, as in SQLAlchemy),
    nor one outside the session (warned), nor one this flush deletes (its DELETE deletes the
    association rows of every member it lists; a row linking to it would fail on the foreign
    key, as SQLAlchemy's flush inserts it and fails)."""
    return not (
        deleted_by_flush(item)
        or _outside(session, item, prop)
        or session._core.is_marked_deleted(item)
    )


def _null_key(child: Any, prop: Any) -> None:
    """Set the foreign key of one-to-many `prop` in `child` to NULL. A child whose DELETE a
    flush ran (still listed by the loaded collection) has no row to write: its value clears in
    memory only, without the change a deleted object refuses, as SQLAlchemy's flush clears
    it (which a rollback of that DELETE undoes, as SQLAlchemy's expires the child)."""
    if deleted_by_flush(child):
        # (kept as a change: a rollback undoing the DELETE reloads the child)
        cls = type(child)
        for _, dst in prop.pairs:
            getattr(cls, dst.key).clear_unwritten(child)
        return
    for _, dst in prop.pairs:
        setattr(child, dst.key, None)


def _sync_queued(
    session: Any, obj: Any, queued: dict[str, list[tuple[bool, Any]]], changes: RelatedChanges
) -> None:
    """Changes made through the other side of back_populates to unloaded collections of `obj`.

    Children appended (through their many-to-one) to a one-to-many: one outside the session
    gets `obj`'s key all the same, as SQLAlchemy copies it (it writes nothing); one in the
    session gets it from its own many-to-one, unless that change was flushed already while
    `obj` was outside the session (expunged, then attached again with its queue: that flush
    wrote nothing for it), where it gets it here, as SQLAlchemy copies the key of a
    one-to-many's queued members.

    Members linked or unlinked through a many-to-many: their association rows are written
    from this side too, as SQLAlchemy writes those of its pending collection mutations. Where
    the other side's collection is flushed with this one (the usual case) both give the same
    row, written once; where it was flushed while `obj` was outside the session (which wrote
    nothing for `obj`), this side writes the row."""
    rels = type(obj).__mapper__.relationships
    state = obj.__dict__.get("_retort_state")
    for key, queue in queued.items():
        prop = rels.get(key)
        if prop is None or prop.viewonly or prop.direction == "MANYTOONE":
            continue
        net: dict[int, tuple[int, Any]] = {}
        for added, item in queue:
            count, _ = net.get(id(item), (0, item))
            net[id(item)] = (count + (1 if added else -1), item)
        if prop.direction == "MANYTOMANY":
            if state is not None and state.stale:
                continue  # queued before an expiry, which forgets it (as SQLAlchemy's)
            for count, item in net.values():
                if count > 0:
                    if _linkable(session, item, prop):
                        changes.link_insert(prop, obj, item)
                elif count < 0 and not _outside(session, item, prop):
                    changes.link_delete(prop, obj, item)
            continue
        parent_values = None
        gains = changes.gains.setdefault(prop, set())
        for count, item in net.values():
            if count <= 0:
                continue
            gains.add(id(item))
            if _in_session(session, item) and not _many_to_one_settled(item, prop):
                continue
            if parent_values is None:
                parent_values = [getattr(obj, src.key) for src, _ in prop.pairs]
            for (_, dst), pv in zip(prop.pairs, parent_values, strict=True):
                _set_if_different(item, dst.key, pv)
            if not _in_session(session, item):
                changes.outside.append((item, prop))
                _core.settle_outside(item, prop, obj)


def _many_to_one_settled(item: Any, prop: Any) -> bool:
    """Whether `item`, queued for `obj`'s unloaded one-to-many `prop`, has no change of its
    many-to-one left to flush: its change was flushed while `obj` was outside the session,
    which wrote nothing for it. (Whatever its many-to-one holds now, loaded again since or
    not: SQLAlchemy's one-to-many copies the key of its queued members all the same.)"""
    if prop.back is None or deleted_by_flush(item):
        return False
    d = item.__dict__
    state = d.get("_retort_state")
    if state is not None and state.stale:
        return True  # (its loaded values and their history are gone with the expiry)
    return prop.back.key not in d.get("_retort_history", ())


def _same_row(a: Any, b: Any) -> bool:
    """Whether two instances of one class stand for the same persistent row."""
    if type(a) is not type(b):
        return False
    sa, sb = a.__dict__.get("_retort_state"), b.__dict__.get("_retort_state")
    if sa is None or sb is None or not (sa.has_identity and sb.has_identity):
        return False
    core = type(a).__mapper__._core
    return bool(core.primary_key_of(a) == core.primary_key_of(b))


def _in_session(session: Any, item: Any) -> bool:
    state = item.__dict__.get("_retort_state")
    return state is not None and state.session is session


def _warn_outside_members(outside: list[tuple[Any, Any]]) -> None:
    """Say, once per class and one-to-many, that members outside the session got their
    owner's key in memory only, as SQLAlchemy warns that their flush "will not proceed"."""
    seen = set()
    for item, prop in outside:
        if (type(item), prop) in seen:
            continue
        seen.add((type(item), prop))
        exc.warn(
            f"a {type(item).__name__} object that is not in the session was given its key "
            f"through {prop}: the flush writes nothing of it (the key is set in memory only); "
            "add it to the session"
        )


def _outside(session: Any, item: Any, prop: Any) -> bool:
    """Whether the object a many-to-one or many-to-many relation points at is outside the
    session (never added, or expunged): then the flush writes no key or row for the relation
    (nor deletes its row), and says so, as SQLAlchemy does. (A one-to-many still copies the
    key into a child outside the session, which writes nothing.)"""
    state = item.__dict__.get("_retort_state")
    if state is not None and state.session is session:
        return False
    exc.warn(
        f"{item!r} is not in the session, so the flush writes nothing for {prop} towards it; "
        "add it to the session (or give the relationship the save-update cascade)"
    )
    return True


def _delete_unparented(session: Any) -> None:
    """Children taken from a delete-orphan collection that was not loaded: those that found
    no other parent are orphans, deleted as SQLAlchemy does."""
    candidates = list(session._orphan_children.values())
    session._orphan_children.clear()
    maybe = session._orphans_if_changed
    if maybe:
        # taken out of a parent without a row while naming no parent (see
        # RelationshipProperty._names_other_than_new): orphans once a change of their own
        # puts them in a flush, as SQLAlchemy's flush deletes an object its parent tracking
        # calls parentless
        related, modified = session._related_changed, session._core.is_modified
        for key, (child, prop) in list(maybe.items()):
            if child.__dict__.get(prop.back.key) is not None:
                del maybe[key]  # another parent took it
            # (attached again by add(), it is among those whose relationships the flush looks
            # at, but that is no change of its own)
            elif (key in related and holds_related_change(child)) or modified(child):
                del maybe[key]
                candidates.append((child, prop))
    for child, prop in candidates:
        if child.__dict__.get(prop.back.key) is not None:
            continue  # another parent took it
        # (a child expired since it was taken out is no candidate any more: its expiry
        # forgot the removal, as SQLAlchemy's resets its parent tracking; see Session.expire)
        state = child.__dict__.get("_retort_state")
        if state is not None and state.lifecycle == "persistent" and state.session is session:
            if child not in session.deleted:
                session._core.delete(child)
                session._cascade_delete(child)


def _sync_one_to_many(
    session: Any, obj: Any, prop: Any, value: Any, changes: RelatedChanges, gained: bool
) -> None:
    """What the core leaves of a one-to-many: the members a collection lost (those it gained
    have the key already), or the objects a scalar one-to-many replaced (`gained`: the core
    gave its value the key)."""
    parent_values = [getattr(obj, src.key) for src, _ in prop.pairs]
    if prop.uselist:
        items = list(value)
        removed = list(value._removed.values())
    else:
        items = [] if value is None else [value]
        removed = session._orphans.pop(id(obj), []) + _replaced(session, obj, prop, value)
        if gained:
            # it keeps that key where a parent it had is deleted (see _clear_keys_left)
            changes.gains.setdefault(prop, set()).add(id(value))
    _settle_removed(session, obj, prop, items, removed, parent_values, changes)


def _settle_removed(
    session: Any,
    obj: Any,
    prop: Any,
    items: list[Any],
    removed: list[Any],
    parent_values: list[Any],
    changes: RelatedChanges,
    parent_deleted: bool = False,
) -> None:
    """Children taken out of `obj`'s one-to-many `prop` (and not put back): deleted as orphans
    under delete-orphan, else given a NULL foreign key (unless this flush deletes them),
    unless another parent took them (its many-to-one says so, or a collection gained them:
    see _clear_keys_left). (With `parent_deleted`, `obj` is being deleted.)"""
    gained: set[int] | None = None  # (_gained_by, once, where an orphan needs it)
    for child in removed:
        if any(x is child for x in items):
            continue
        if prop.back is not None:
            # the other side says whether it found a new parent (another instance of this
            # parent's row, from before an expunge, is this parent all the same, unless the
            # child was given it since: then, as in SQLAlchemy, whose parent tracking records
            # the append after the removal, it has a parent, and keeps its key)
            # A new parent without a row, outside the session, taken from a parent without a
            # row, is none: the flush writes nothing towards it, and the child would keep the
            # key it holds (SQLAlchemy's parent tracking, which compares the parents' identity
            # keys, takes the two for one, and its flush clears the key). Under delete-orphan
            # it is a parent all the same: the child it holds is no orphan to delete (as in
            # SQLAlchemy where it took the child after the other let it go)
            # A back reference loaded (not set since the flush) that names another parent while
            # the child's foreign key holds this parent's key was read before a flush gave it
            # that key: it is stale, and the child still this parent's (as SQLAlchemy's parent
            # tracking, which records sets and appends only, has it)
            d = child.__dict__
            back = d.get(prop.back.key)
            loaded = prop.back.key not in d.get("_retort_history", ())
            stale = loaded and all(
                dst.key in d and d[dst.key] == pv
                for (_, dst), pv in zip(prop.pairs, parent_values, strict=True)
            )
            if stale and back is not None and back is not obj:
                # (an append to another collection of `prop` sets the back reference without
                # history: a move, not a read; so does a parent outside the session that holds
                # the child)
                if gained is None:
                    gained = _gained_by(session, changes, prop)
                held = back.__dict__.get(prop.key)
                stale = id(child) not in gained and not (
                    held is child or (prop.uselist and held is not None and child in held)
                )
            still_ours = (
                back is None
                or back is obj
                or (_same_row(back, obj) and loaded)
                or (
                    object_session_of(back) is not session
                    and not _has_identity(back)
                    and not _has_identity(obj)
                    and "delete-orphan" not in prop.cascade
                )
                or stale
            )
        else:
            still_ours = all(
                child.__dict__.get(dst.key) == pv
                for (_, dst), pv in zip(prop.pairs, parent_values, strict=True)
            )
        if not still_ours:
            continue  # moved to another parent meanwhile
        if "delete-orphan" in prop.cascade:
            state = child.__dict__.get("_retort_state")
            if state is not None and state.lifecycle == "persistent":
                if gained is None:
                    gained = _gained_by(session, changes, prop)
                if id(child) in gained:
                    # another collection of `prop` gained it: it has a parent, whose key it
                    # gets, though an expiry since made its many-to-one read this one again
                    # (SQLAlchemy's parent tracking, on the child, records that append)
                    continue
                session._core.delete(child)
                session._cascade_delete(child)
                continue
            pending = state is not None and state.lifecycle == "pending"
            if not pending and not (
                parent_deleted
                and (state is None or state.lifecycle == "transient" or deleted_by_flush(child))
            ):
                continue
            # no orphan to delete (never in a session, made transient by a rollback, or
            # deleted by an earlier flush): as SQLAlchemy's flush of the parent's DELETE, clear
            # its foreign key, which names the deleted parent (in memory only for one without
            # a row). A pending one (added again after it lost the parent outside the session;
            # one that lost it inside left the session then) is inserted without that key.
        elif session._core.is_marked_deleted(child):
            # one this flush deletes keeps its foreign key, as in SQLAlchemy, whose one-to-many
            # clears no key of an object it deletes
            continue
        changes.left.append((child, prop))


def _clear_keys_left(session: Any, changes: RelatedChanges) -> None:
    """The children left by their parent (taken out of its collection, or listed by a parent
    being deleted without a delete cascade) lose their foreign key, but for those this flush
    deletes (as in SQLAlchemy) and those another parent gained in this flush: its collection
    has given them its key, even where an expiry has discarded the change of the child's own
    many-to-one. SQLAlchemy's one-to-many likewise leaves the children its collections add,
    but counts those of loaded collections only, and clears the key of a child queued for an
    unloaded one, which lists it once loaded
    (test_improvement_a_child_queued_for_another_parents_unloaded_children_keeps_its_key)."""
    gained: dict[Any, set[int]] = {}
    marked_deleted = session._core.is_marked_deleted
    for child, prop in changes.left:
        ids = gained.get(prop)
        if ids is None:
            ids = gained[prop] = _gained_by(session, changes, prop)
        if id(child) not in ids and not marked_deleted(child):
            _null_key(child, prop)


def _gained_by(session: Any, changes: RelatedChanges, prop: Any) -> set[int]:
    """Ids of the members that the collections of one-to-many `prop` in this flush gained:
    those appended (queued for an unloaded collection included), every member of an owner
    without a row, and the value of a scalar one-to-many (whose key the flush copies); not
    those of an owner this flush deletes."""
    ids = set(changes.gains.get(prop, ()))
    for coll in changes.collections:
        if getattr(coll, "_prop", None) is not prop:
            continue
        owner = coll._owner_ref()
        if owner is None or session._core.is_marked_deleted(owner):
            continue
        ids.update(coll._added)
        state = owner.__dict__.get("_retort_state")
        if state is not None and not state.has_identity:
            ids.update(map(id, coll))
    return ids


def _replaced(session: Any, obj: Any, prop: Any, value: Any) -> list[Any]:
    """The child `obj`'s scalar one-to-many `prop` held before its first change since the last
    flush, where another value replaced it: _settle_removed clears its key unless it found
    another parent, as SQLAlchemy's one-to-many history does. (The assignment took the user
    away already, but a flush may have copied the key into it since, while it was outside the
    session.) Where `prop` was set while not loaded (by a back reference clearing it, or with
    no back reference to load it for), the child the row has is loaded now, as SQLAlchemy's
    flush loads the history it could not know."""
    from retort.mapping import _NOT_SET

    history = obj.__dict__.get("_retort_history")
    before = None if history is None else history.get(prop.key)
    if before is _NOT_SET and _has_identity(obj):  # (a new object's row has no child)
        before = session._load_relationship(obj, prop)
    if before is None or before is _NOT_SET or before is value:
        return []
    return [before]


def _parent_deleted(session: Any, obj: Any, prop: Any, changes: RelatedChanges) -> None:
    if prop.direction == "MANYTOONE":
        return
    if prop.passive_deletes and prop.key not in obj.__dict__:
        return  # ON DELETE in the database does it, without loading anything
    value = getattr(obj, prop.key)
    if prop.direction == "MANYTOMANY":
        for item in [*value, *value._removed.values()]:
            # towards an object outside the session: nothing is written, as for a link added,
            # and the database refuses the DELETE if the row is still there, as SQLAlchemy's
            # (which says so for the members the collection had at the last flush only)
            if id(item) in value._added:
                if _in_session(session, item):
                    changes.link_delete(prop, obj, item)
            elif not _outside(session, item, prop):
                changes.link_delete(prop, obj, item)
        return
    items = list(value) if prop.uselist else ([] if value is None else [value])
    if not prop.uselist:
        items += _replaced(session, obj, prop, value)
    deletes = "delete" in prop.cascade
    # under delete-orphan, those taken out of the collection before are orphans (or lose their
    # key) all the same
    orphans = deletes and "delete-orphan" in prop.cascade
    if deletes and not orphans:
        return  # the children are deleted with it (cascaded by Session.delete)
    if not deletes:
        # (settled once every collection has given its members their key)
        changes.left.extend((child, prop) for child in items)
    # without delete-orphan, those taken out of the collection since the last flush lose the
    # key too, unless another parent took them or this flush deletes them: one outside the
    # session included, as where the parent stays (_sync_one_to_many), and as SQLAlchemy's
    # flush of the parent's DELETE clears them
    if prop.uselist:
        removed = list(value._removed.values())
        if orphans or removed:
            changes.collections.append(value)
    else:
        removed = session._orphans.pop(id(obj), []) if orphans else []
    if removed:
        parent_values = [getattr(obj, src.key) for src, _ in prop.pairs]
        _settle_removed(session, obj, prop, items, removed, parent_values, changes, True)
