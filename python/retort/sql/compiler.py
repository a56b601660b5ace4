"""Turns statements into SQL text for psycopg plus bind-processed parameters.

`compile(stmt, params)` returns a `Compiled`: SQL with ``%(name)s`` placeholders, the
parameters already passed through their types' bind processors, and for a SELECT the result
columns (with types for result processing) and how they group into ORM entities.

Every literal ``%`` in the SQL is written as ``%%``, so `Compiled.params` is always passed to
psycopg (an empty dict when there are none) and never None.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from retort import exc
from retort.sql import elements as el
from retort.sql import selectable as sel
from retort.sql import types as sqltypes
from retort.sql.schema import Column, Table

__all__ = [
    "Compiled",
    "EntityShape",
    "ResultColumn",
    "compile",
    "quote_identifier",
    "render_literal",
]


@dataclass
class ResultColumn:
    name: str  #: key for Row attribute / mapping access
    type: sqltypes.TypeEngine | None  #: its result_processor() is applied to fetched values


@dataclass
class EntityShape:
    mapper: Any | None  #: a mapper for ``select(User)``, None for a plain column
    start: int  #: index of its first column in the row
    count: int  #: number of columns it spans


@dataclass
class Compiled:
    sql: str
    params: Sequence[Any] | Mapping[str, Any]
    columns: list[ResultColumn] = field(default_factory=list)
    entities: list[EntityShape] = field(default_factory=list)

    def __str__(self) -> str:
        return self.sql


# PostgreSQL's reserved key words (categories R and T of pg_get_keywords()): these must be
# quoted to be used as table or column names.
RESERVED_WORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization binary both case cast
    check collate collation column concurrently constraint create cross current_catalog
    current_date current_role current_schema current_time current_timestamp current_user
    default deferrable desc distinct do else end except false fetch for foreign freeze from
    full grant group having ilike in initially inner intersect into is isnull join lateral
    leading left like limit localtime localtimestamp natural not notnull null offset on only
    or order outer overlaps placing primary references returning right select session_user
    similar some symmetric system_user table tablesample then to trailing true union unique
    user using variadic verbose when where window with
    """.split()
)

_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*\Z")


@functools.lru_cache(maxsize=4096)
def quote_identifier(name: str) -> str:
    """``name`` as a PostgreSQL identifier, double-quoted when it has to be.

    Quoting is needed for reserved words (``"user"``, ``"order"``), upper-case letters
    (PostgreSQL folds unquoted names to lower case) and anything but ``[a-z0-9_$]``.
    """
    if not isinstance(name, str) or not name:
        raise exc.ArgumentError(f"an identifier must be a non-empty string, got {name!r}")
    if _PLAIN_IDENTIFIER.match(name) and name not in RESERVED_WORDS:
        return name
    if "\x00" in name:
        raise exc.ArgumentError(
            f"identifier {name!r} contains a NUL character, which PostgreSQL names cannot hold; "
            "remove it"
        )
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: Table) -> str:
    """The table's (schema-qualified) name, quoted as needed."""
    return _qualified(table.schema, table.name)


@functools.lru_cache(maxsize=4096)
def _qualified(schema: str | None, name: str) -> str:
    if schema:
        return f"{quote_identifier(schema)}.{quote_identifier(name)}"
    return quote_identifier(name)


@functools.lru_cache(maxsize=8192)
def _column_sql(schema: str | None, table: str, column: str) -> str:
    """``table.column`` as written in a statement, %-escaped for psycopg."""
    return _escape(f"{_qualified(schema, table)}.{quote_identifier(column)}")


def render_literal(value: Any, type_: sqltypes.TypeEngine | None = None) -> str:
    """A Python value as a SQL literal (for DDL defaults and literal_binds)."""
    if type_ is not None:
        proc = type_.bind_processor()
        if proc is not None:
            value = proc(value)
    if value is None:
        return "NULL"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return f"'{value}'::float8"
        return repr(value)
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else f"'{value}'::numeric"
    if isinstance(value, str):
        return _quote_string(value)
    if isinstance(value, _dt.datetime):
        cast = "timestamptz" if value.tzinfo is not None else "timestamp"
        return f"{_quote_string(value.isoformat())}::{cast}"
    if isinstance(value, _dt.date):
        return f"{_quote_string(value.isoformat())}::date"
    if isinstance(value, _dt.time):
        cast = "timetz" if value.tzinfo is not None else "time"
        return f"{_quote_string(value.isoformat())}::{cast}"
    if isinstance(value, _dt.timedelta):
        days, secs, micros = value.days, value.seconds, value.microseconds
        return f"'{days} days {secs} seconds {micros} microseconds'::interval"
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"'\\x{bytes(value).hex()}'::bytea"
    if isinstance(value, Jsonb):
        import json

        return f"{_quote_string(json.dumps(value.obj))}::jsonb"
    raise exc.CompileError(f"cannot render {value!r} as a SQL literal")


def _quote_string(value: str) -> str:
    if "\x00" in value:
        raise exc.CompileError("string literals cannot contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


def _escape(text: str) -> str:
    return text.replace("%", "%%")


class SQLCompiler:
    """Walks an element tree and writes SQL; collects bind parameters on the way."""

    def __init__(self, *, literal_binds: bool = False, escape_percent: bool = True) -> None:
        self.literal_binds = literal_binds
        self.escape_percent = escape_percent
        self.binds: dict[str, el.BindParameter] = {}
        self._bind_names: dict[int, str] = {}
        self._counters: dict[str, int] = {}
        self._alias_names: dict[int, str] = {}
        self._enclosing: list[list[el.FromClause]] = []
        self.columns: list[ResultColumn] = []
        self.entities: list[EntityShape] = []
        self._dml_keys: Iterable[str] = ()
        self._labels: list[Mapping[str, el.ColumnElement]] = []

    def esc(self, text: str) -> str:
        return text.replace("%", "%%") if self.escape_percent else text

    def process(self, element: el.ClauseElement, **kw: Any) -> str:
        visit = getattr(self, "visit_" + element.__visit_name__, None)
        if visit is None:
            raise exc.CompileError(f"don't know how to compile {type(element).__name__}")
        return visit(element, **kw)

    def _paren(self, child: el.ClauseElement, parent_prec: int, *, strict: bool) -> str:
        text = self.process(child)
        prec = child._precedence
        if prec < parent_prec or (strict and prec == parent_prec):
            return f"({text})"
        return text

    # Identifiers and FROM items

    def ident(self, name: str) -> str:
        return self.esc(quote_identifier(name))

    def alias_name(self, alias: sel.Alias) -> str:
        if alias.name is not None:
            return alias.name
        name = self._alias_names.get(id(alias))
        if name is None:
            name = f"anon_{len(self._alias_names) + 1}"
            self._alias_names[id(alias)] = name
        return name

    def from_name(self, f: el.FromClause) -> str:
        """How columns of this FROM item are qualified."""
        if isinstance(f, Table):
            return self.esc(quote_table(f))
        if isinstance(f, sel.Alias):
            return self.ident(self.alias_name(f))
        raise exc.CompileError(f"cannot qualify columns of {f!r}")

    def visit_table(self, table: Table, **kw: Any) -> str:
        return self.esc(quote_table(table))

    def visit_alias(self, alias: sel.Alias, **kw: Any) -> str:
        name = self.ident(self.alias_name(alias))
        if isinstance(alias.element, sel.Select):
            return f"({self.visit_select(alias.element, nested=True, subquery=True)}) AS {name}"
        return f"{self.process(alias.element)} AS {name}"

    def visit_join(self, join: sel.Join, **kw: Any) -> str:
        kind = "FULL OUTER JOIN" if join.full else "LEFT OUTER JOIN" if join.isouter else "JOIN"
        return (
            f"{self.process(join.left)} {kind} {self.process(join.right)} "
            f"ON {self.process(join.onclause)}"
        )

    # Columns and values

    def visit_column(self, col: Column, **kw: Any) -> str:
        if col.name is None:
            raise exc.CompileError("a Column without a name cannot be compiled")
        table = col.table
        if table is None:
            return self.ident(col.name)
        if self.escape_percent:
            return _column_sql(table.schema, table.name, col.name)
        return f"{quote_table(table)}.{quote_identifier(col.name)}"

    def visit_alias_column(self, col: sel.AliasColumn, **kw: Any) -> str:
        return f"{self.from_name(col.alias)}.{self.ident(col.name)}"

    def visit_literal_column(self, col: el.LiteralColumn, **kw: Any) -> str:
        return self.esc(col.text)

    def visit_null(self, element: el.Null, **kw: Any) -> str:
        return "NULL"

    def visit_true(self, element: el.True_, **kw: Any) -> str:
        return "true"

    def visit_false(self, element: el.False_, **kw: Any) -> str:
        return "false"

    def bind_name(self, bind: el.BindParameter) -> str:
        name = self._bind_names.get(id(bind))
        if name is not None:
            return name
        if bind.key is not None:
            name = bind.key
            existing = self.binds.get(name)
            if existing is not None and existing is not bind:
                if existing.key is None:
                    raise exc.CompileError(f"bind parameter name {name!r} is used twice")
                if existing.value is None and bind.value is not None:
                    self.binds[name] = bind
            else:
                self.binds[name] = bind
        else:
            base = _NAME_CHARS.sub("_", bind.name_hint) or "param"
            n = self._counters.get(base, 0)
            while True:
                n += 1
                name = f"{base}_{n}"
                if name not in self.binds:
                    break
            self._counters[base] = n
            self.binds[name] = bind
        self._bind_names[id(bind)] = name
        return name

    def visit_bindparam(self, bind: el.BindParameter, **kw: Any) -> str:
        if self.literal_binds:
            value = bind.callable() if bind.callable is not None else bind.value
            return self.esc(render_literal(value, bind.type))
        if isinstance(bind.type, sqltypes.ARRAY):
            # psycopg types a list from its items (int2[] for small ints): say which array.
            return f"%({self.bind_name(bind)})s::{self.esc(bind.type.sql_cast())}"
        return f"%({self.bind_name(bind)})s"

    # Expressions

    def visit_binary(self, binary: el.BinaryExpression, **kw: Any) -> str:
        prec = binary._precedence
        op = binary.operator
        comparison = el.P_IS <= prec <= el.P_MATCH
        left = self._paren(binary.left, prec, strict=comparison)
        right = self._paren(binary.right, prec, strict=op not in el._ASSOCIATIVE)
        text = f"{left} {self.esc(op)} {right}"
        if binary.escape is not None:
            text += f" ESCAPE {self.esc(_quote_string(binary.escape))}"
        return text

    def visit_between(self, b: el.Between, **kw: Any) -> str:
        word = "NOT BETWEEN" if b.negated else "BETWEEN"
        if b.symmetric:
            word += " SYMMETRIC"
        return (
            f"{self._paren(b.expr, el.P_MATCH, strict=True)} {word} "
            f"{self._paren(b.lower, el.P_MATCH, strict=True)} AND "
            f"{self._paren(b.upper, el.P_MATCH, strict=True)}"
        )

    def visit_boolean_list(self, blist: el.BooleanClauseList, **kw: Any) -> str:
        parts = []
        for clause in blist.clauses:
            if isinstance(clause, el.BooleanClauseList):
                if not clause.clauses:
                    continue
                if clause.operator == blist.operator:
                    parts.append(self.process(clause))
                    continue
                text = self.process(clause)
                # AND inside OR gets parentheses too: correct either way, clearer with them.
                parts.append(f"({text})" if len(clause.clauses) > 1 else text)
            else:
                parts.append(self._paren(clause, blist._precedence, strict=False))
        return f" {blist.operator} ".join(parts)

    def visit_unary(self, unary: el.UnaryExpression, **kw: Any) -> str:
        if unary.operator is not None:
            if unary.operator == "-":
                inner = self.process(unary.element)
                if unary.element._precedence <= el.P_UNARY:
                    inner = f"({inner})"
                return f"-{inner}"
            if unary.operator == "EXISTS":
                return f"EXISTS {self.process(unary.element)}"
            return f"{unary.operator} {self._paren(unary.element, unary._precedence, strict=False)}"
        inner = self.process(unary.element)
        if unary.element._precedence < el.P_NOT and not (
            isinstance(unary.element, el.UnaryExpression) and unary.element.modifier
        ):
            inner = f"({inner})"
        return f"{inner} {unary.modifier}"

    def visit_json_element(self, j: el.JSONElement, **kw: Any) -> str:
        doc = self._paren(j.doc, j._precedence, strict=False)
        return f"{doc} {j.operator} {self.process(j.index)}"

    def visit_grouping(self, g: el.Grouping, **kw: Any) -> str:
        return f"({self.process(g.element)})"

    def visit_clauselist(self, clist: el.ClauseList, **kw: Any) -> str:
        return clist.separator.join(self.process(c) for c in clist.clauses)

    def visit_label(self, label: el.Label, *, within_columns: bool = False, **kw: Any) -> str:
        if within_columns:
            return f"{self.process(label.element)} AS {self.ident(label.name)}"
        return self.process(label.element)

    def visit_cast(self, cast: el.Cast, **kw: Any) -> str:
        return f"CAST({self.process(cast.element)} AS {self.esc(cast.type.ddl())})"

    def visit_case(self, case: el.Case, **kw: Any) -> str:
        parts = ["CASE"]
        if case.value is not None:
            parts.append(self.process(case.value))
        for cond, result in case.whens:
            parts.append(f"WHEN {self.process(cond)} THEN {self.process(result)}")
        if case.else_ is not None:
            parts.append(f"ELSE {self.process(case.else_)}")
        parts.append("END")
        return " ".join(parts)

    def visit_function(self, fn: el.Function, **kw: Any) -> str:
        name = self.esc(".".join((*fn.packagenames, fn.name)))
        if not fn.clauses.clauses:
            if fn.name.lower() in el._NILADIC and not fn.packagenames:
                return fn.name.upper()
            if fn.name.lower() == "count" and not fn.packagenames:
                return "count(*)"
        return f"{name}({self.process(fn.clauses)})"

    def visit_textclause(self, clause: el.TextClause, **kw: Any) -> str:
        out: list[str] = []
        pos = 0
        for m in el._BIND_RE.finditer(clause.text):
            out.append(self.esc(clause.text[pos : m.start()].replace("\\:", ":")))
            bind = clause._bindparams[m.group(1)]
            out.append(self.visit_bindparam(bind))
            pos = m.end()
        out.append(self.esc(clause.text[pos:].replace("\\:", ":")))
        return "".join(out)

    def visit_scalar_select(self, s: sel.ScalarSelect, **kw: Any) -> str:
        return f"({self.visit_select(s.element, nested=True)})"

    # SELECT

    def visit_select(
        self, select: sel.Select, *, nested: bool = False, subquery: bool = False, **kw: Any
    ) -> str:
        enclosing = [f for level in self._enclosing for f in level]
        froms = select._froms(enclosing if nested else ())
        entities = select._entities()
        self._enclosing.append(froms)
        try:
            return self._select_text(select, froms, entities, nested, subquery)
        finally:
            self._enclosing.pop()

    def _select_text(
        self,
        select: sel.Select,
        froms: list[el.FromClause],
        entities: list[sel._Entity],
        nested: bool,
        subquery: bool,
    ) -> str:
        cols: list[str] = []
        labels: dict[str, el.ColumnElement] = {}
        index = 0
        for entity in entities:
            start = index
            for i, col in enumerate(entity.columns):
                text = self.process(col, within_columns=True)
                name = col._result_name or f"anon_{index + 1}"
                if subquery and not isinstance(col, Column | el.Label | sel.AliasColumn):
                    text = f"{text} AS {self.ident(sel._subquery_column_name(col, index))}"
                cols.append(text)
                if isinstance(col, el.Label):
                    labels[col.name] = col
                if not nested:
                    self.columns.append(ResultColumn(name, col.type))
                    if entity.mapper is None:
                        self.entities.append(EntityShape(None, index, 1))
                index += 1
                del i
            if not nested and entity.mapper is not None:
                self.entities.append(EntityShape(entity.mapper, start, index - start))
        if not cols:
            raise exc.CompileError("a select needs at least one column")
        parts = ["SELECT"]
        if select._distinct:
            if select._distinct_on:
                on = ", ".join(self.process(c) for c in select._distinct_on)
                parts.append(f"DISTINCT ON ({on})")
            else:
                parts.append("DISTINCT")
        parts.append(", ".join(cols))
        if froms:
            parts.append("FROM " + ", ".join(self.process(f) for f in froms))
        where = self._criteria(select._where)
        if where:
            parts.append("WHERE " + where)
        if select._group_by:
            parts.append("GROUP BY " + ", ".join(self.process(c) for c in select._group_by))
        having = self._criteria(select._having)
        if having:
            parts.append("HAVING " + having)
        if select._order_by:
            self._labels.append(labels)
            try:
                order = ", ".join(self._order_item(o, labels) for o in select._order_by)
            finally:
                self._labels.pop()
            parts.append("ORDER BY " + order)
        if select._limit is not None:
            parts.append(f"LIMIT {int(select._limit)}")
        if select._offset is not None:
            parts.append(f"OFFSET {int(select._offset)}")
        fu = select._for_update
        if fu is not None:
            if fu.read:
                lock = "FOR KEY SHARE" if fu.key_share else "FOR SHARE"
            else:
                lock = "FOR NO KEY UPDATE" if fu.key_share else "FOR UPDATE"
            if fu.of:
                lock += " OF " + ", ".join(self._lock_target(t) for t in fu.of)
            if fu.nowait:
                lock += " NOWAIT"
            if fu.skip_locked:
                lock += " SKIP LOCKED"
            parts.append(lock)
        return " ".join(parts)

    def _lock_target(self, f: el.FromClause) -> str:
        # PostgreSQL wants the unqualified name (or alias) of a FROM item here.
        if isinstance(f, Table):
            return self.ident(f.name)
        return self.from_name(f)

    def _criteria(self, criteria: Sequence[el.ClauseElement]) -> str:
        if not criteria:
            return ""
        if len(criteria) == 1:
            only = criteria[0]
            if isinstance(only, el.BooleanClauseList) and not only.clauses:
                return ""
            return self.process(only)
        return self.process(el.BooleanClauseList("AND", criteria))

    def _order_item(self, item: Any, labels: Mapping[str, el.ColumnElement]) -> str:
        if isinstance(item, str):
            item = el.LabelReference(item)
        if isinstance(item, el.Label) and labels.get(item.name) is item:
            return self.ident(item.name)
        return self.process(item)

    def visit_label_reference(self, ref: el.LabelReference, **kw: Any) -> str:
        if self._labels and ref.name in self._labels[-1]:
            return self.ident(ref.name)
        raise exc.CompileError(
            f"ORDER BY {ref.name!r}: there is no label {ref.name!r} in the select's columns; "
            "label a column with .label(name) or order by the column itself"
        )

    def visit_textual_select(
        self, ts: sel.TextualSelect, *, nested: bool = False, **kw: Any
    ) -> str:
        if not nested:
            for i, col in enumerate(ts.column_args):
                self.columns.append(ResultColumn(col._result_name or f"anon_{i + 1}", col.type))
                self.entities.append(EntityShape(None, i, 1))
        return self.process(ts.element)

    # INSERT / UPDATE / DELETE

    def _returning(self, stmt: sel._DML) -> str:
        if not stmt._returning:
            return ""
        cols: list[str] = []
        index = 0
        for entity in stmt._entities():
            start = index
            for col in entity.columns:
                cols.append(self.process(col, within_columns=True))
                self.columns.append(ResultColumn(col._result_name or f"anon_{index + 1}", col.type))
                if entity.mapper is None:
                    self.entities.append(EntityShape(None, index, 1))
                index += 1
            if entity.mapper is not None:
                self.entities.append(EntityShape(entity.mapper, start, index - start))
        return " RETURNING " + ", ".join(cols)

    def _value(self, col: Column, value: Any) -> str:
        element = el._clause(value)
        if isinstance(element, el.ClauseElement):
            if element._is_select:
                return self.process(element.scalar_subquery())  # type: ignore[attr-defined]
            if isinstance(element, el.BindParameter) and isinstance(
                element.type, sqltypes.NullType
            ):
                element.type = col.type
            return self.process(element)
        return self.visit_bindparam(el.BindParameter(col.key, value, col.type))

    def visit_insert(self, stmt: sel.Insert, **kw: Any) -> str:
        table = stmt.table
        rows = stmt._multi_values or (stmt._values,)
        cols: list[Column] = [c for c, _v in rows[0]]
        seen = {id(c) for c in cols}
        from_params: set[int] = set()
        for key in self._dml_keys:
            col = table.c.get(key)
            if col is not None and id(col) not in seen:
                cols.append(col)
                seen.add(id(col))
                from_params.add(id(col))
        cols.extend(c for c in table.columns if id(c) not in seen and c.default is not None)
        head = f"INSERT INTO {self.visit_table(table)}"
        if not cols:
            return head + " DEFAULT VALUES" + self._returning(stmt)
        names = ", ".join(self.ident(c.name or "") for c in cols)
        multi = len(rows) > 1
        value_rows = []
        for n, row in enumerate(rows):
            values = {id(c): v for c, v in row}
            parts = []
            for col in cols:
                if id(col) in values:
                    value = values[id(col)]
                    if multi and not isinstance(el._clause(value), el.ClauseElement):
                        value = el.BindParameter(f"{col.key}_m{n}", value, col.type)
                    parts.append(self._value(col, value))
                elif id(col) in from_params:
                    bind = el.BindParameter(col.key, None, col.type, required=True)
                    parts.append(self.visit_bindparam(bind))
                else:
                    parts.append(self._default(col))
            value_rows.append("(" + ", ".join(parts) + ")")
        return f"{head} ({names}) VALUES {', '.join(value_rows)}{self._returning(stmt)}"

    def _default(self, col: Column) -> str:
        default = col.default
        if isinstance(default, el.ClauseElement):
            return self.process(default)
        return self.visit_bindparam(
            el.BindParameter(
                None,
                None,
                col.type,
                name_hint=col.key,
                callable_=col.default_value,
            )
        )

    def visit_update(self, stmt: sel.Update, **kw: Any) -> str:
        table = stmt.table
        sets: list[tuple[Column, Any]] = list(stmt._values)
        set_ids = {id(c) for c, _v in sets}
        where_text = self._criteria(stmt._where)  # first, so its bind names are known
        for key in self._dml_keys:
            col = table.c.get(key)
            if col is not None and id(col) not in set_ids and key not in self.binds:
                sets.append((col, el.BindParameter(col.key, None, col.type, required=True)))
                set_ids.add(id(col))
        for col in table.columns:
            if id(col) not in set_ids and col.onupdate is not None:
                value = col.onupdate
                sets.append(
                    (
                        col,
                        value
                        if isinstance(value, el.ClauseElement)
                        else el.BindParameter(
                            None, None, col.type, name_hint=col.key, callable_=col.onupdate_value
                        ),
                    )
                )
        if not sets:
            raise exc.CompileError(
                f"update({table.name}) has no values; call .values(column=value, ...)"
            )
        set_text = ", ".join(f"{self.ident(c.name or '')}={self._value(c, v)}" for c, v in sets)
        text = f"UPDATE {self.visit_table(table)} SET {set_text}"
        extra = self._extra_froms(stmt)
        if extra:
            text += " FROM " + ", ".join(self.process(f) for f in extra)
        if where_text:
            text += f" WHERE {where_text}"
        return text + self._returning(stmt)

    def _extra_froms(self, stmt: sel._DML) -> list[el.FromClause]:
        seen = {id(stmt.table)}
        out: list[el.FromClause] = []
        for crit in stmt._where:
            for f in crit._from_objects():
                if id(f) not in seen:
                    seen.add(id(f))
                    out.append(f)
        return out

    def visit_delete(self, stmt: sel.Delete, **kw: Any) -> str:
        text = f"DELETE FROM {self.visit_table(stmt.table)}"
        extra = self._extra_froms(stmt)
        if extra:
            text += " USING " + ", ".join(self.process(f) for f in extra)
        where = self._criteria(stmt._where)
        if where:
            text += f" WHERE {where}"
        return text + self._returning(stmt)

    # DDL elements

    def visit_ddl(self, element: Any, **kw: Any) -> str:
        return self.esc(element.sql())

    # Parameters

    def build_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, bind in self.binds.items():
            if params is not None and name in params:
                value = params[name]
            elif bind.callable is not None:
                value = bind.callable()
            elif bind.required:
                raise exc.ArgumentError(
                    f"a value is required for bind parameter {name!r}; pass it in the "
                    f"parameters, e.g. {{{name!r}: ...}}"
                )
            else:
                value = bind.value
            type_ = bind.type
            if isinstance(type_, sqltypes.NullType):
                inferred = sqltypes.infer_bind_type(value)
                if inferred is not None:
                    type_ = inferred
            proc = type_.bind_processor()
            out[name] = proc(value) if proc is not None else value
        return out


def compile(stmt: Any, params: Any = None) -> Compiled:
    """Compile a statement for psycopg.

    ``stmt`` is a `Select`, `TextClause`, ``text().columns()``, `Insert` / `Update` /
    `Delete`, a DDL element, or a SQL string. ``params`` is None, a mapping of values for named
    parameters, or a list of mappings (executemany; `Compiled.params` is then a list of dicts).
    A SQL string is taken as is when params are given (psycopg placeholders), and has its
    ``%`` escaped when they are not.
    """
    if isinstance(stmt, str):
        if params is None:
            return Compiled(_escape(stmt), {})
        return Compiled(stmt, params)
    element = el._clause(stmt)
    if not isinstance(element, el.ClauseElement):
        raise exc.ArgumentError(
            f"cannot execute {stmt!r}; expected select(), text(), insert()/update()/delete()"
        )
    if isinstance(params, list) and not params:
        params = None
    many = isinstance(params, list)
    rows: list[Mapping[str, Any]] = []
    if many:
        rows = list(params)
        if not all(isinstance(p, Mapping) for p in rows):
            raise exc.ArgumentError("statement parameters must be a dict or a list of dicts")
    elif params is not None and not isinstance(params, Mapping):
        raise exc.ArgumentError(
            f"statement parameters must be a dict or a list of dicts, got {type(params).__name__}"
        )
    if isinstance(element, sel.Select):
        # Statements are immutable, so a select's SQL can be kept on it and reused with
        # fresh parameter values; generating a new select drops the cached text.
        cached = element.__dict__.get("_compiled_cache")
        if cached is None:
            compiler = SQLCompiler()
            sql = compiler.process(element)
            cached = (sql, compiler)
            element._compiled_cache = cached
        sql, compiler = cached
        if many:
            return Compiled(
                sql, [compiler.build_params(p) for p in rows], compiler.columns, compiler.entities
            )
        return Compiled(sql, compiler.build_params(params), compiler.columns, compiler.entities)
    compiler = SQLCompiler()
    first: Mapping[str, Any] | None = rows[0] if many else params
    if isinstance(element, sel._DML) and first is not None:
        compiler._dml_keys = list(first)
    if isinstance(element, el.ColumnElement):
        sql = compiler.process(element, within_columns=False)
    else:
        sql = compiler.process(element)
    out_params: Any
    if many:
        out_params = [compiler.build_params(p) for p in rows]
    else:
        out_params = compiler.build_params(params)
    return Compiled(sql, out_params, compiler.columns, compiler.entities)
