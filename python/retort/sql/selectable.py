"""SELECT, joins, aliases and subqueries, and the INSERT / UPDATE / DELETE statements.

Statements are generative: every method returns a new statement and leaves the original
unchanged, so a base query can be shared and refined. Mapped classes are recognised by their
``__mapper__`` attribute (see docs/internals.md); this module never imports the ORM.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from retort import exc
from retort.sql import types as sqltypes
from retort.sql.elements import (
    ClauseElement,
    ColumnElement,
    FromClause,
    Label,
    TextClause,
    UnaryExpression,
    _clause,
    and_,
    coerce_where,
)

__all__ = [
    "Alias",
    "Delete",
    "Exists",
    "Insert",
    "Join",
    "ScalarSelect",
    "Select",
    "TextualSelect",
    "Update",
    "delete",
    "exists",
    "insert",
    "select",
    "update",
]


def _is_mapped_class(obj: Any) -> bool:
    return isinstance(obj, type) and getattr(obj, "__mapper__", None) is not None


def _as_from(obj: Any, what: str) -> FromClause:
    """A FROM item for a mapped class, Table, alias or join."""
    if _is_mapped_class(obj):
        return obj.__mapper__.local_table
    if isinstance(obj, FromClause):
        return obj
    ce = getattr(obj, "__clause_element__", None)
    if ce is not None and not isinstance(obj, type):
        element = ce()
        if isinstance(element, FromClause):
            return element
    raise exc.ArgumentError(f"{what} takes a mapped class, a Table or an alias, got {obj!r}")


class _Entity:
    """One item of a select's columns clause, expanded to SQL columns."""

    __slots__ = ("columns", "mapper")

    def __init__(self, mapper: Any, columns: list[ColumnElement]) -> None:
        self.mapper = mapper
        self.columns = columns


def _entities_for(raw: Any) -> list[_Entity]:
    if _is_mapped_class(raw):
        mapper = raw.__mapper__
        return [_Entity(mapper, list(mapper.columns))]
    if isinstance(raw, FromClause):
        return [_Entity(None, [c]) for c in raw._columns_list]
    element = _clause(raw)
    if isinstance(element, ColumnElement):
        return [_Entity(None, [element])]
    if isinstance(element, TextClause):
        from retort.sql.elements import Grouping

        return [_Entity(None, [Grouping(element)])]
    if isinstance(element, ClauseElement) and element._is_select:
        return [_Entity(None, [element.scalar_subquery()])]  # type: ignore[attr-defined]
    if isinstance(raw, str):
        raise exc.ArgumentError(
            f"select() got the string {raw!r}; use literal_column({raw!r}) or text() for SQL"
        )
    raise exc.ArgumentError(
        f"select() takes mapped classes, columns, tables or SQL expressions, got {raw!r}"
    )


class ForUpdate:
    """The locking clause of a SELECT (FOR UPDATE / FOR SHARE ...)."""

    def __init__(
        self,
        *,
        nowait: bool = False,
        read: bool = False,
        skip_locked: bool = False,
        key_share: bool = False,
        of: Any = None,
    ) -> None:
        if nowait and skip_locked:
            raise exc.ArgumentError("with_for_update(): nowait and skip_locked exclude each other")
        self.nowait = nowait
        self.read = read
        self.skip_locked = skip_locked
        self.key_share = key_share
        items = of if isinstance(of, list | tuple) else ([] if of is None else [of])
        self.of: list[FromClause] = []
        for item in items:
            element = _clause(item)
            if isinstance(element, ColumnElement):
                self.of.extend(
                    t for t in element._from_objects() if all(t is not o for o in self.of)
                )
            else:
                table = _as_from(item, "with_for_update(of=...)")
                if all(table is not o for o in self.of):
                    self.of.append(table)


class Executable(ClauseElement):
    """A statement that can be executed; carries execution options."""

    _execution_options: Mapping[str, Any] = {}

    def _generate(self) -> Any:
        new = copy.copy(self)
        new.__dict__.pop("_compiled_cache", None)
        return new

    def execution_options(self, **kw: Any) -> Any:
        """Options for the engine and session, e.g. ``populate_existing=True``."""
        new = self._generate()
        new._execution_options = {**self._execution_options, **kw}
        return new

    def get_execution_options(self) -> dict[str, Any]:
        return dict(self._execution_options)


class Select(Executable):
    """``SELECT ...``; build it with `select()`."""

    __visit_name__ = "select"
    _is_select = True
    _compiled_cache: Any  # (sql, compiler) of the first compile(); see compiler.compile

    def __init__(self, *entities: Any) -> None:
        if len(entities) == 1 and isinstance(entities[0], list | tuple):
            entities = tuple(entities[0])  # select([a, b]) of SQLAlchemy 1.x
        self._raw_columns: tuple[Any, ...] = tuple(entities)
        for raw in entities:
            _entities_for(raw)  # fail early on something that cannot be selected
        self._where: tuple[ClauseElement, ...] = ()
        self._having: tuple[ClauseElement, ...] = ()
        self._order_by: tuple[Any, ...] = ()
        self._group_by: tuple[ColumnElement, ...] = ()
        self._limit: int | None = None
        self._offset: int | None = None
        self._distinct = False
        self._distinct_on: tuple[ColumnElement, ...] = ()
        self._from_obj: tuple[FromClause, ...] = ()
        self._joins: tuple[tuple[FromClause, ClauseElement | None, bool, bool, Any], ...] = ()
        self._for_update: ForUpdate | None = None
        self._with_options: tuple[Any, ...] = ()

    # Columns

    def _entities(self) -> list[_Entity]:
        out: list[_Entity] = []
        for raw in self._raw_columns:
            out.extend(_entities_for(raw))
        return out

    @property
    def selected_columns(self) -> list[ColumnElement]:
        return [c for e in self._entities() for c in e.columns]

    @property
    def column_descriptions(self) -> list[dict[str, Any]]:
        out = []
        for raw in self._raw_columns:
            if _is_mapped_class(raw):
                out.append({"name": raw.__name__, "type": raw, "entity": raw, "expr": raw})
            else:
                for e in _entities_for(raw):
                    col = e.columns[0]
                    out.append(
                        {"name": col._result_name, "type": col.type, "entity": None, "expr": raw}
                    )
        return out

    def add_columns(self, *entities: Any) -> Select:
        for raw in entities:
            _entities_for(raw)
        new = self._generate()
        new._raw_columns = (*self._raw_columns, *entities)
        return new

    def with_only_columns(self, *entities: Any) -> Select:
        for raw in entities:
            _entities_for(raw)
        new = self._generate()
        new._raw_columns = tuple(entities)
        return new

    # Criteria

    def where(self, *criteria: Any) -> Select:
        """Add conditions, joined with AND to those already there."""
        new = self._generate()
        new._where = (*self._where, *(coerce_where(c) for c in criteria))
        return new

    filter = where

    def _filter_by_namespace(self) -> Any:
        # As SQLAlchemy: the last join target, else the first FROM, else the first entity.
        candidates: list[Any] = [j[4] for j in self._joins[::-1]]
        candidates.extend(self._from_obj)
        candidates.extend(self._raw_columns)
        for cand in candidates:
            if _is_mapped_class(cand):
                return cand.__mapper__.columns_by_key
            if isinstance(cand, FromClause):
                return {c.key: c for c in cand._columns_list}  # type: ignore[attr-defined]
            element = _clause(cand)
            if isinstance(element, ColumnElement):
                froms = element._from_objects()
                if froms:
                    return {c.key: c for c in froms[0]._columns_list}  # type: ignore[attr-defined]
        raise exc.InvalidRequestError(
            "filter_by() needs an entity to resolve names against; select a mapped class or "
            "table first"
        )

    def filter_by(self, **kwargs: Any) -> Select:
        """``where(Entity.name == value, ...)`` against the select's primary entity."""
        if not kwargs:
            return self
        namespace = self._filter_by_namespace()
        criteria = []
        for key, value in kwargs.items():
            col = namespace.get(key)
            if col is None:
                raise exc.InvalidRequestError(
                    f"filter_by({key}=...): the entity has no attribute {key!r}; "
                    f"it has {sorted(namespace)}"
                )
            criteria.append(col == value)
        return self.where(*criteria)

    def having(self, *criteria: Any) -> Select:
        new = self._generate()
        new._having = (*self._having, *(coerce_where(c) for c in criteria))
        return new

    def order_by(self, *clauses: Any) -> Select:
        """Add ORDER BY items; ``order_by(None)`` removes them all."""
        new = self._generate()
        if len(clauses) == 1 and clauses[0] is None:
            new._order_by = ()
            return new
        items: list[Any] = []
        for c in clauses:
            element = _clause(c)
            if not isinstance(element, ColumnElement | TextClause | str):
                raise exc.ArgumentError(f"order_by() takes columns or expressions, got {c!r}")
            items.append(element)
        new._order_by = (*self._order_by, *items)
        return new

    def group_by(self, *clauses: Any) -> Select:
        new = self._generate()
        if len(clauses) == 1 and clauses[0] is None:
            new._group_by = ()
            return new
        new._group_by = (*self._group_by, *(_column(c, "group_by()") for c in clauses))
        return new

    def limit(self, limit: int | None) -> Select:
        new = self._generate()
        new._limit = _count(limit, "limit")
        return new

    def offset(self, offset: int | None) -> Select:
        new = self._generate()
        new._offset = _count(offset, "offset")
        return new

    def slice(self, start: int, stop: int) -> Select:
        start = max(start, 0)
        return self.offset(start or None).limit(max(stop - start, 0))

    def distinct(self, *on: Any) -> Select:
        """``SELECT DISTINCT``, or ``SELECT DISTINCT ON (cols)`` when columns are given."""
        new = self._generate()
        new._distinct = True
        new._distinct_on = (*self._distinct_on, *(_column(c, "distinct()") for c in on))
        return new

    # FROM

    def select_from(self, *froms: Any) -> Select:
        new = self._generate()
        new._from_obj = (*self._from_obj, *(_as_from(f, "select_from()") for f in froms))
        return new

    def join(
        self, target: Any, onclause: Any = None, *, isouter: bool = False, full: bool = False
    ) -> Select:
        """JOIN a mapped class or table; without an ON clause, it follows the foreign key.

        A relationship attribute (anything with ``__join_info__() -> (target, onclause)``) may
        be given as the target, ``join(User.addresses)``, or as the ON clause.
        """
        info = getattr(target, "__join_info__", None)
        if info is not None and not isinstance(target, type):
            target, implied = info()
            onclause = implied if onclause is None else onclause
        info = getattr(onclause, "__join_info__", None)
        if info is not None:
            onclause = info()[1]
        table = _as_from(target, "join()")
        on = coerce_where(onclause) if onclause is not None else None
        new = self._generate()
        new._joins = (*self._joins, (table, on, isouter, full, target))
        return new

    def outerjoin(self, target: Any, onclause: Any = None, *, full: bool = False) -> Select:
        return self.join(target, onclause, isouter=True, full=full)

    def join_from(
        self, left: Any, target: Any, onclause: Any = None, *, isouter: bool = False
    ) -> Select:
        return self.select_from(left).join(target, onclause, isouter=isouter)

    def _froms(self, enclosing: Sequence[FromClause] = ()) -> list[FromClause]:
        """The FROM list: explicit items and joins, then tables the expressions refer to."""
        froms: list[FromClause] = list(self._from_obj)
        if self._joins and not froms:
            for col in (c for e in self._entities() for c in e.columns):
                first = col._from_objects()[:1]
                if first:
                    froms.extend(first)
                    break
            if not froms:
                raise exc.InvalidRequestError(
                    "join() needs a left side: select a mapped class or use select_from()"
                )
        for target, on, isouter, full, _raw in self._joins:
            froms = _apply_join(froms, target, on, isouter, full)
        covered = {id(t) for f in froms for t in f._tables()}
        explicit = len(froms)
        implicit: list[FromClause] = []

        def add(items: Iterable[FromClause]) -> None:
            for f in items:
                if id(f) not in covered:
                    covered.add(id(f))
                    implicit.append(f)

        for e in self._entities():
            for col in e.columns:
                add(col._from_objects())
        for crit in (*self._where, *self._having):
            add(crit._from_objects())
        if enclosing:
            # Correlate: a subquery leaves out the tables of the query around it, unless that
            # would leave it with no FROM at all.
            enclosing_ids = {id(t) for f in enclosing for t in f._tables()}
            kept = [f for f in implicit if id(f) not in enclosing_ids]
            if kept or explicit:
                implicit = kept
        return froms + implicit

    # Locking, options

    def with_for_update(
        self,
        *,
        nowait: bool = False,
        read: bool = False,
        of: Any = None,
        skip_locked: bool = False,
        key_share: bool = False,
    ) -> Select:
        new = self._generate()
        new._for_update = ForUpdate(
            nowait=nowait, read=read, of=of, skip_locked=skip_locked, key_share=key_share
        )
        return new

    def options(self, *options: Any) -> Select:
        """Loader options (``selectinload(User.addresses)``); the ORM interprets them."""
        new = self._generate()
        new._with_options = (*self._with_options, *options)
        return new

    # Nesting

    def scalar_subquery(self) -> ScalarSelect:
        """This select as a single value: ``col == select(func.max(c)).scalar_subquery()``."""
        return ScalarSelect(self)

    def exists(self) -> Exists:
        return Exists(self)

    def subquery(self, name: str | None = None) -> Alias:
        """This select as a FROM item: ``(SELECT ...) AS name``, columns in ``.c``."""
        return Alias(self, name)

    def get_children(self) -> Iterable[ClauseElement]:
        return ()

    def _from_objects(self) -> list[FromClause]:
        return []

    def __repr__(self) -> str:
        return f"<Select {self}>"


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise exc.ArgumentError(f"{what}() takes a non-negative int or None, got {value!r}")
    return value


def _column(value: Any, what: str) -> ColumnElement:
    element = _clause(value)
    if not isinstance(element, ColumnElement):
        raise exc.ArgumentError(f"{what} takes columns or expressions, got {value!r}")
    return element


def _fk_onclause(left: FromClause, right: FromClause) -> ClauseElement | None:
    """The join condition between two tables from their foreign keys, if there is one."""
    from retort.sql.schema import Table

    def base(f: FromClause) -> Any:
        return f.element if isinstance(f, Alias) and isinstance(f.element, Table) else f

    found: list[tuple[FromClause, Any, FromClause]] = []
    for lt in left._tables():
        lbase, rbase = base(lt), base(right)
        if not isinstance(lbase, Table) or not isinstance(rbase, Table):
            continue
        for fkc in rbase.foreign_key_constraints:
            if fkc.elements[0].references(lbase):
                found.append((right, fkc, lt))
        if lbase is not rbase:
            for fkc in lbase.foreign_key_constraints:
                if fkc.elements[0].references(rbase):
                    found.append((lt, fkc, right))
    if not found:
        return None
    if len(found) > 1:
        raise exc.ArgumentError(
            f"cannot choose the join condition to {_describe(right)}: there are "
            f"{len(found)} foreign key paths; pass the ON clause, e.g. "
            "join(Address, Address.user_id == User.id)"
        )
    child, fkc, parent = found[0]
    pairs = []
    for fk in fkc.elements:
        assert fk.parent is not None
        pairs.append(_proxy(child, fk.parent) == _proxy(parent, fk.column))
    return and_(*pairs)


def _proxy(from_: FromClause, col: Any) -> Any:
    if isinstance(from_, Alias):
        return from_.c[col.key]
    return col


def _describe(f: FromClause) -> str:
    return getattr(f, "name", None) or type(f).__name__


def _apply_join(
    froms: list[FromClause], target: FromClause, on: ClauseElement | None, isouter: bool, full: bool
) -> list[FromClause]:
    index = None
    if on is not None:
        referenced = {id(t) for t in on._from_objects() if t is not target}
        for i, f in enumerate(froms):
            if any(id(t) in referenced for t in f._tables()):
                index = i
                break
        if index is None:
            index = 0
    else:
        for i, f in enumerate(froms):
            on = _fk_onclause(f, target)
            if on is not None:
                index = i
                break
        if on is None or index is None:
            raise exc.ArgumentError(
                f"no foreign key links {_describe(target)} to "
                f"{', '.join(_describe(f) for f in froms)}; pass the ON clause, e.g. "
                "join(Address, Address.user_id == User.id)"
            )
    new = list(froms)
    new[index] = Join(froms[index], target, on, isouter=isouter, full=full)
    return new


class Join(FromClause):
    """``left [LEFT OUTER | FULL OUTER] JOIN right ON onclause``."""

    __visit_name__ = "join"

    def __init__(
        self,
        left: FromClause,
        right: FromClause,
        onclause: ClauseElement,
        *,
        isouter: bool = False,
        full: bool = False,
    ) -> None:
        self.left = left
        self.right = right
        self.onclause = onclause
        self.isouter = isouter
        self.full = full

    def _tables(self) -> list[FromClause]:
        return [*self.left._tables(), *self.right._tables()]

    @property
    def _columns_list(self) -> list[ColumnElement]:
        return [*self.left._columns_list, *self.right._columns_list]


class AliasColumn(ColumnElement):
    """A column of an alias or subquery: renders as ``alias.name``."""

    __visit_name__ = "alias_column"

    def __init__(self, alias: Alias, name: str, key: str, type_: sqltypes.TypeEngine) -> None:
        self.alias = alias
        self.name = name
        self.key = key
        self.type = type_
        self._result_name = key

    def _from_objects(self) -> list[FromClause]:
        return [self.alias]


class _AliasColumns:
    def __init__(self, cols: list[AliasColumn]) -> None:
        self._by_key = {c.key: c for c in cols}
        self._list = cols

    def __getattr__(self, key: str) -> AliasColumn:
        try:
            return self._by_key[key]
        except KeyError:
            raise AttributeError(f"no column {key!r}; columns are {list(self._by_key)}") from None

    def __getitem__(self, key: str | int) -> AliasColumn:
        if isinstance(key, int):
            return self._list[key]
        return self._by_key[key]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Any:
        return iter(self._list)

    def __len__(self) -> int:
        return len(self._list)

    def keys(self) -> list[str]:
        return list(self._by_key)


class Alias(FromClause):
    """A table or a select under a name: ``users AS u``, ``(SELECT ...) AS anon_1``."""

    __visit_name__ = "alias"

    def __init__(self, element: FromClause | Select, name: str | None = None) -> None:
        self.element = element
        self.name = name  # None: the compiler names it anon_<n>
        cols: list[AliasColumn] = []
        if isinstance(element, Select):
            seen: set[str] = set()
            for i, col in enumerate(element.selected_columns):
                cname = _subquery_column_name(col, i)
                if cname in seen:
                    raise exc.ArgumentError(
                        f"subquery has two columns named {cname!r}; label one of them"
                    )
                seen.add(cname)
                cols.append(AliasColumn(self, cname, cname, col.type))
        else:
            for col in element._columns_list:
                cname = col.name  # type: ignore[attr-defined]
                cols.append(AliasColumn(self, cname, col.key, col.type))  # type: ignore[attr-defined]
        self.c = self.columns = _AliasColumns(cols)

    @property
    def _columns_list(self) -> list[ColumnElement]:
        return list(self.c)

    def __repr__(self) -> str:
        return f"Alias({self.element!r}, {self.name!r})"


def _subquery_column_name(col: ColumnElement, index: int) -> str:
    if isinstance(col, Label):
        return col.name
    name = getattr(col, "name", None) if not hasattr(col, "clauses") else None
    if isinstance(name, str) and getattr(col, "__visit_name__", "") in ("column", "alias_column"):
        return name
    return col._result_name or f"anon_{index + 1}"


class ScalarSelect(ColumnElement):
    """A select used as a value: ``(SELECT ...)``."""

    __visit_name__ = "scalar_select"

    def __init__(self, select: Select) -> None:
        self.element = select
        cols = select.selected_columns
        self.type = cols[0].type if len(cols) == 1 else sqltypes.NullType()

    def _from_objects(self) -> list[FromClause]:
        return []


class Exists(UnaryExpression):
    """``EXISTS (SELECT ...)``."""

    def __init__(self, select: Select | None = None) -> None:
        super().__init__(
            ScalarSelect(select if select is not None else Select(_literal_one())),
            operator="EXISTS",
            type_=sqltypes.Boolean(),
            precedence=100,
        )

    def where(self, *criteria: Any) -> Exists:
        assert isinstance(self.element, ScalarSelect)
        return Exists(self.element.element.where(*criteria))

    def _from_objects(self) -> list[FromClause]:
        return []


def _literal_one() -> ColumnElement:
    from retort.sql.elements import literal_column

    return literal_column("1")


def exists(stmt: Any = None, *criteria: Any) -> Exists:
    """``EXISTS (SELECT 1 ...)``; add conditions with ``.where()``."""
    if stmt is None:
        return Exists()
    if isinstance(stmt, Select):
        return Exists(stmt.where(*criteria) if criteria else stmt)
    return Exists(Select(stmt).where(*criteria))


class TextualSelect(Executable):
    """``text(...).columns(...)``: literal SQL whose result columns have known types."""

    __visit_name__ = "textual_select"
    _is_select = True

    def __init__(self, text: TextClause, cols: Sequence[Any], types: Mapping[str, Any]) -> None:
        from retort.sql.elements import literal_column

        self.element = text
        columns: list[ColumnElement] = []
        for c in cols:
            element = _clause(c)
            if isinstance(element, str):
                element = literal_column(element)
            if not isinstance(element, ColumnElement):
                raise exc.ArgumentError(f"columns() takes columns or names, got {c!r}")
            columns.append(element)
        for name, type_ in types.items():
            columns.append(literal_column(name, type_))
        self.column_args = columns

    @property
    def selected_columns(self) -> list[ColumnElement]:
        return list(self.column_args)

    def scalar_subquery(self) -> ScalarSelect:
        raise exc.ArgumentError("a textual select cannot be used as a subquery here")


def select(*entities: Any) -> Select:
    """``select(User)``, ``select(User.id, User.name)``, ``select(func.count())...``."""
    return Select(*entities)


# INSERT / UPDATE / DELETE ----------------------------------------------------------------------


def _dml_table(target: Any, what: str) -> Any:
    from retort.sql.schema import Table

    table = _as_from(target, what)
    if not isinstance(table, Table):
        raise exc.ArgumentError(f"{what} takes a Table or a mapped class, got {target!r}")
    return table


class _DML(Executable):
    def __init__(self, table: Any, what: str) -> None:
        self.table = _dml_table(table, what)
        self._values: tuple[tuple[Any, Any], ...] = ()
        self._multi_values: tuple[tuple[tuple[Any, Any], ...], ...] = ()
        self._returning: tuple[Any, ...] = ()
        self._where: tuple[ClauseElement, ...] = ()

    def _column(self, key: Any) -> Any:
        from retort.sql.schema import Column

        element = _clause(key)
        if isinstance(element, Column):
            if element.table is not self.table:
                raise exc.ArgumentError(f"column {element!r} is not a column of {self.table.name}")
            return element
        if isinstance(element, str):
            col = self.table.c.get(element)
            if col is None:
                for c in self.table.columns:
                    if c.name == element:
                        return c
                raise exc.ArgumentError(
                    f"table {self.table.name!r} has no column {element!r} "
                    f"(columns: {self.table.c.keys()})"
                )
            return col
        raise exc.ArgumentError(f"values() keys are column names or columns, got {key!r}")

    def _pairs(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, Any], ...]:
        pairs: dict[Any, Any] = {}
        for arg in args:
            if not isinstance(arg, Mapping):
                raise exc.ArgumentError("values() takes a dict, a list of dicts, or keywords")
            for k, v in arg.items():
                pairs[self._column(k)] = v
        for k, v in kwargs.items():
            pairs[self._column(k)] = v
        return tuple(pairs.items())

    def values(self, *args: Any, **kwargs: Any) -> Any:
        new = self._generate()
        if len(args) == 1 and isinstance(args[0], list | tuple) and not kwargs:
            if not isinstance(self, Insert):
                raise exc.ArgumentError("a list of rows in values() is for insert() only")
            rows = tuple(self._pairs((row,), {}) for row in args[0])
            if not rows:
                raise exc.ArgumentError("values([]) needs at least one row")
            keys = [tuple(id(c) for c, _v in r) for r in rows]
            if any(k != keys[0] for k in keys):
                raise exc.ArgumentError("every row given to values([...]) needs the same keys")
            new._multi_values = rows
            new._values = ()
            return new
        new._values = (*self._values, *self._pairs(args, kwargs))
        return new

    def returning(self, *cols: Any) -> Any:
        for raw in cols:
            _entities_for(raw)
        new = self._generate()
        new._returning = (*self._returning, *cols)
        return new

    def _entities(self) -> list[_Entity]:
        out: list[_Entity] = []
        for raw in self._returning:
            out.extend(_entities_for(raw))
        return out

    def where(self, *criteria: Any) -> Any:
        if isinstance(self, Insert):
            raise exc.ArgumentError("insert() has no WHERE clause")
        new = self._generate()
        new._where = (*self._where, *(coerce_where(c) for c in criteria))
        return new

    filter = where

    def filter_by(self, **kwargs: Any) -> Any:
        criteria = []
        for key, value in kwargs.items():
            criteria.append(self._column(key) == value)
        return self.where(*criteria)


class Insert(_DML):
    """``INSERT INTO table (cols) VALUES (...) [RETURNING ...]``."""

    __visit_name__ = "insert"

    def __init__(self, table: Any) -> None:
        super().__init__(table, "insert()")


class Update(_DML):
    """``UPDATE table SET ... WHERE ... [RETURNING ...]``."""

    __visit_name__ = "update"

    def __init__(self, table: Any) -> None:
        super().__init__(table, "update()")


class Delete(_DML):
    """``DELETE FROM table WHERE ... [RETURNING ...]``."""

    __visit_name__ = "delete"

    def __init__(self, table: Any) -> None:
        super().__init__(table, "delete()")

    def values(self, *args: Any, **kwargs: Any) -> Any:
        raise exc.ArgumentError("delete() has no values()")


def insert(table: Any) -> Insert:
    return Insert(table)


def update(table: Any) -> Update:
    return Update(table)


def delete(table: Any) -> Delete:
    return Delete(table)
