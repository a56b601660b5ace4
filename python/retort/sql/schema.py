"""Schema objects: `MetaData`, `Table`, `Column`, constraints and indexes, and create/drop.

`MetaData.create_all` orders tables by their foreign keys; a foreign key with
``use_alter=True`` (or one that closes a cycle of references) is added with ALTER TABLE once
every table exists, and dropped first by `MetaData.drop_all`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from retort import exc
from retort.sql import types as sqltypes
from retort.sql.elements import (
    ClauseElement,
    ColumnElement,
    FromClause,
)

__all__ = [
    "CheckConstraint",
    "Column",
    "ColumnCollection",
    "ForeignKey",
    "ForeignKeyConstraint",
    "Identity",
    "Index",
    "MetaData",
    "PrimaryKeyConstraint",
    "Table",
    "UniqueConstraint",
]

_REFERENTIAL_ACTIONS = frozenset({"CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION"})


def _check_action(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    action = " ".join(str(value).upper().split())
    if action not in _REFERENTIAL_ACTIONS:
        raise exc.ArgumentError(
            f"{what}={value!r} is not a referential action; use one of "
            f"{', '.join(sorted(_REFERENTIAL_ACTIONS))}"
        )
    return action


class Identity:
    """``GENERATED { BY DEFAULT | ALWAYS } AS IDENTITY`` for an integer column."""

    def __init__(
        self, always: bool = False, start: int | None = None, increment: int | None = None
    ) -> None:
        self.always = always
        self.start = start
        self.increment = increment

    def __repr__(self) -> str:
        return f"Identity(always={self.always}, start={self.start}, increment={self.increment})"


class Column(ColumnElement):
    """A table column. It is also an expression: ``users.c.name == "ann"``.

    ``name`` is the name in the database, ``key`` the name in Python (``table.c.<key>``,
    the attribute of a mapped class); ``key`` defaults to ``name``. A column without a type
    that has a `ForeignKey` takes the type of the column it references.
    """

    __visit_name__ = "column"

    def __init__(
        self,
        *args: Any,
        primary_key: bool = False,
        nullable: bool | None = None,
        unique: bool | None = None,
        index: bool | None = None,
        default: Any = None,
        server_default: Any = None,
        onupdate: Any = None,
        autoincrement: bool | str = "auto",
        key: str | None = None,
        name: str | None = None,
        type_: Any = None,
        comment: str | None = None,
        info: dict[str, Any] | None = None,
        doc: str | None = None,
        server_onupdate: Any = None,
    ) -> None:
        rest = list(args)
        if rest and isinstance(rest[0], str):
            if name is not None:
                raise exc.ArgumentError("Column name given both positionally and as name=")
            name = rest.pop(0)
        elif rest and rest[0] is None:
            rest.pop(0)
        if rest and (
            isinstance(rest[0], sqltypes.TypeEngine)
            or (isinstance(rest[0], type) and issubclass(rest[0], sqltypes.TypeEngine))
        ):
            if type_ is not None:
                raise exc.ArgumentError("Column type given both positionally and as type_=")
            type_ = rest.pop(0)
        elif rest and rest[0] is None:
            rest.pop(0)
        self.name: str | None = name
        self._key = key
        self._type: sqltypes.TypeEngine | None = (
            sqltypes.to_instance(type_) if type_ is not None else None
        )
        self.table: Table | None = None
        self.primary_key = bool(primary_key)
        self._nullable = nullable
        self.unique = unique
        self.index = index
        self.comment = comment
        self.info: dict[str, Any] = dict(info or {})
        if autoincrement not in ("auto", True, False):
            raise exc.ArgumentError(
                f"autoincrement must be 'auto', True or False, got {autoincrement!r}"
            )
        self.autoincrement = autoincrement
        self.identity: Identity | None = None
        self.foreign_keys: list[ForeignKey] = []
        for arg in rest:
            if isinstance(arg, ForeignKey):
                if arg.parent is not None:
                    raise exc.ArgumentError(
                        f"{arg!r} already belongs to column {arg.parent!r}; make a new one"
                    )
                arg.parent = self
                self.foreign_keys.append(arg)
            elif isinstance(arg, Identity):
                self.identity = arg
            elif isinstance(arg, type):
                raise exc.ArgumentError(
                    f"Column got the Python class {arg.__name__}; expected a column type such as "
                    f"Integer or String(50) (type_for_python({arg.__name__}) finds one)"
                )
            else:
                raise exc.ArgumentError(
                    f"unexpected Column argument {arg!r}; give the name, the type, then "
                    "ForeignKey(...) objects, and everything else as keywords"
                )
        self.default = default
        self._default_fn = _check_default(default, "default")
        self.onupdate = onupdate
        self._onupdate_fn = _check_default(onupdate, "onupdate")
        if server_default is not None and not isinstance(server_default, str | ClauseElement):
            raise exc.ArgumentError(
                f"server_default must be a string (quoted as a literal) or text('...') / a SQL "
                f"expression, got {server_default!r}; e.g. server_default='0' or text('now()')"
            )
        self.server_default = server_default
        #: Marks a column the database changes on UPDATE (a trigger); retort stores it only.
        self.server_onupdate = server_onupdate
        self.doc = doc

    # Names and type

    @property
    def key(self) -> str:
        key = self._key if self._key is not None else self.name
        if key is None:
            raise exc.ArgumentError("this Column has no name yet")
        return key

    @key.setter
    def key(self, value: str) -> None:
        self._key = value

    @property
    def _result_name(self) -> str | None:  # type: ignore[override]
        return self._key if self._key is not None else self.name

    @property
    def type(self) -> sqltypes.TypeEngine:
        if self._type is not None:
            return self._type
        for fk in self.foreign_keys:
            target = fk._resolve(required=False)
            if target is not None and target is not self:
                target_type = target.type
                if not isinstance(target_type, sqltypes.NullType):
                    self._type = target_type
                    return target_type
        return sqltypes.NullType()

    @type.setter
    def type(self, value: Any) -> None:
        self._type = sqltypes.to_instance(value) if value is not None else None

    @property
    def nullable(self) -> bool:
        if self._nullable is not None:
            return self._nullable
        return not self.primary_key

    @nullable.setter
    def nullable(self, value: bool | None) -> None:
        self._nullable = value

    # Defaults

    def default_value(self) -> Any:
        """The Python-side default to insert when no value is given (None if there is none)."""
        fn = self._default_fn
        if fn is not None:
            return fn()
        return self.default

    def onupdate_value(self) -> Any:
        """The Python-side value to set on UPDATE when no value is given (None if none)."""
        fn = self._onupdate_fn
        if fn is not None:
            return fn()
        return self.onupdate

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @property
    def is_identity(self) -> bool:
        """True when the database generates this column's values (an identity column)."""
        if self.identity is not None:
            return True
        table = self.table
        return table is not None and table.autoincrement_column is self

    # Structure

    def get_children(self) -> Iterable[ClauseElement]:
        return ()

    def _from_objects(self) -> list[FromClause]:
        return [self.table] if self.table is not None else []

    def __bool__(self) -> bool:
        # A column is a schema object first: `if fk.parent:` means "is there one". Conditions
        # built from it (col == x, and_(...)) still refuse a truth value.
        return True

    def references(self, column: Column) -> bool:
        """True if this column has a foreign key to `column`."""
        return any(fk.column is column for fk in self.foreign_keys)

    def copy(self) -> Column:
        """An unattached copy (for mixins and inheritance)."""
        new = Column.__new__(Column)
        new.__dict__.update(self.__dict__)
        new.table = None
        new.info = dict(self.info)
        new.foreign_keys = []
        for fk in self.foreign_keys:
            fk_copy = fk.copy()
            fk_copy.parent = new
            new.foreign_keys.append(fk_copy)
        return new

    _copy = copy

    def __repr__(self) -> str:
        where = f"{self.table.fullname}." if self.table is not None else ""
        return f"Column({where}{self.name}, {self.type!r})"


def _check_default(value: Any, what: str) -> Callable[[], Any] | None:
    if value is None or isinstance(value, ClauseElement) or not callable(value):
        return None
    try:
        sig = inspect.signature(value)
    except (TypeError, ValueError):
        return value  # a builtin without a signature; assume it takes no arguments
    required = [
        p
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if required:
        raise exc.ArgumentError(
            f"{what}={value!r} takes arguments; retort calls {what} functions with none "
            "(e.g. default=datetime.now or default=lambda: 0)"
        )
    return value


def _check_name(name: str, what: str) -> None:
    """Refuse names PostgreSQL cannot hold, when they are declared rather than at CREATE."""
    if "\x00" in name:
        raise exc.ArgumentError(
            f"the name {name!r} of {what} contains a NUL character, which PostgreSQL names "
            "cannot hold; remove it"
        )


class ForeignKey:
    """A reference from the column it is given to, to ``"table.column"`` or a Column."""

    def __init__(
        self,
        column: str | Column,
        *,
        ondelete: str | None = None,
        onupdate: str | None = None,
        use_alter: bool = False,
        name: str | None = None,
        deferrable: bool | None = None,
        initially: str | None = None,
    ) -> None:
        clause = getattr(column, "__clause_element__", None)
        if clause is not None and not isinstance(column, str | Column):
            column = clause()  # a mapped attribute such as ForeignKey(User.id)
        if isinstance(column, str):
            parts = column.split(".")
            if len(parts) not in (2, 3) or not all(parts):
                raise exc.ArgumentError(
                    f"ForeignKey({column!r}) must name 'table.column' or 'schema.table.column'"
                )
        elif not isinstance(column, Column):
            raise exc.ArgumentError(f"ForeignKey takes 'table.column' or a Column, got {column!r}")
        self._colspec = column
        self.ondelete = _check_action(ondelete, "ondelete")
        self.onupdate = _check_action(onupdate, "onupdate")
        self.use_alter = use_alter
        self.name = name
        self.deferrable = deferrable
        if initially is not None and initially.upper() not in ("DEFERRED", "IMMEDIATE"):
            raise exc.ArgumentError("initially must be 'DEFERRED' or 'IMMEDIATE'")
        self.initially = initially.upper() if initially is not None else None
        self.parent: Column | None = None
        self.constraint: ForeignKeyConstraint | None = None
        self._column: Column | None = column if isinstance(column, Column) else None

    @property
    def target_fullname(self) -> str:
        if isinstance(self._colspec, str):
            return self._colspec
        col = self._colspec
        table = col.table
        return f"{table.fullname}.{col.name}" if table is not None else str(col.name)

    def _target_table_key(self) -> str:
        if isinstance(self._colspec, Column):
            table = self._colspec.table
            return table.fullname if table is not None else ""
        return self._colspec.rsplit(".", 1)[0]

    def _resolve(self, required: bool = True) -> Column | None:
        if self._column is not None:
            return self._column
        assert isinstance(self._colspec, str)
        parent_table = self.parent.table if self.parent is not None else None
        if parent_table is None or parent_table.metadata is None:
            if required:
                raise exc.ArgumentError(
                    f"ForeignKey({self._colspec!r}) cannot be resolved before its column "
                    "belongs to a Table"
                )
            return None
        table_key, col_name = self._colspec.rsplit(".", 1)
        metadata = parent_table.metadata
        table = metadata.tables.get(table_key)
        if table is None and "." not in table_key and parent_table.schema is not None:
            table = metadata.tables.get(f"{parent_table.schema}.{table_key}")
        if table is None:
            if required:
                parent_name = self.parent.name if self.parent is not None else "?"
                raise exc.ArgumentError(
                    f"foreign key on {parent_table.fullname}.{parent_name}"
                    f" references table {table_key!r}, which is not defined in this MetaData "
                    f"(known tables: {sorted(metadata.tables) or 'none'}); fix the table name, "
                    "or declare (import) the model or Table it names on the same declarative "
                    "base before the first flush or create_all()"
                )
            return None
        for col in table.columns:
            if col.name == col_name:
                self._column = col
                return col
        if required:
            raise exc.ArgumentError(
                f"foreign key {self._colspec!r}: table {table.fullname!r} has no column "
                f"{col_name!r} (columns: {[c.name for c in table.columns]}); name one of its "
                "columns (the database column name, usually its primary key)"
            )
        return None

    @property
    def column(self) -> Column:
        """The referenced Column (resolved on first use)."""
        col = self._resolve(required=True)
        assert col is not None
        return col

    def references(self, table: Table) -> bool:
        return self._target_table_key() in (table.fullname, table.name)

    def copy(self) -> ForeignKey:
        return ForeignKey(
            self._colspec,
            ondelete=self.ondelete,
            onupdate=self.onupdate,
            use_alter=self.use_alter,
            name=self.name,
            deferrable=self.deferrable,
            initially=self.initially,
        )

    def __repr__(self) -> str:
        return f"ForeignKey({self.target_fullname!r})"


class Constraint:
    """Base of table-level constraints."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.table: Table | None = None

    def _attach(self, table: Table) -> None:
        self.table = table


def _column_names(cols: Sequence[str | Column | Any]) -> list[str | Column]:
    out: list[str | Column] = []
    for c in cols:
        ce = getattr(c, "__clause_element__", None)
        if ce is not None and not isinstance(c, Column):
            c = ce()
        if not isinstance(c, str | Column):
            raise exc.ArgumentError(f"expected a column or column name, got {c!r}")
        out.append(c)
    return out


class _ColumnListConstraint(Constraint):
    def __init__(self, *columns: str | Column, name: str | None = None) -> None:
        super().__init__(name)
        self._colspecs = _column_names(columns)
        self.columns: list[Column] = []

    def _attach(self, table: Table) -> None:
        super()._attach(table)
        self.columns = [table._column_for(spec, type(self).__name__) for spec in self._colspecs]


class PrimaryKeyConstraint(_ColumnListConstraint):
    """The primary key of a table, given by column names (for composite keys)."""

    def _attach(self, table: Table) -> None:
        super()._attach(table)
        for col in self.columns:
            col.primary_key = True


class UniqueConstraint(_ColumnListConstraint):
    """``UNIQUE (a, b)``."""


class CheckConstraint(Constraint):
    """``CHECK (sqltext)``."""

    def __init__(self, sqltext: str | ClauseElement, name: str | None = None) -> None:
        super().__init__(name)
        self.sqltext = sqltext


class ForeignKeyConstraint(Constraint):
    """A (possibly composite) foreign key: local columns referencing ``table.column`` specs."""

    def __init__(
        self,
        columns: Sequence[str | Column],
        refcolumns: Sequence[str | Column],
        *,
        name: str | None = None,
        ondelete: str | None = None,
        onupdate: str | None = None,
        use_alter: bool = False,
        deferrable: bool | None = None,
        initially: str | None = None,
    ) -> None:
        super().__init__(name)
        if len(columns) != len(refcolumns) or not columns:
            raise exc.ArgumentError(
                "ForeignKeyConstraint needs as many referenced columns as local columns"
            )
        self._colspecs = _column_names(columns)
        self.elements: list[ForeignKey] = [
            ForeignKey(
                ref,
                ondelete=ondelete,
                onupdate=onupdate,
                use_alter=use_alter,
                name=name,
                deferrable=deferrable,
                initially=initially,
            )
            for ref in refcolumns
        ]
        for fk in self.elements:
            fk.constraint = self
        self.ondelete = _check_action(ondelete, "ondelete")
        self.onupdate = _check_action(onupdate, "onupdate")
        self.use_alter = use_alter
        self.deferrable = deferrable
        self.initially = self.elements[0].initially

    @classmethod
    def _from_column_fk(cls, fk: ForeignKey) -> ForeignKeyConstraint:
        self = cls.__new__(cls)
        Constraint.__init__(self, fk.name)
        assert fk.parent is not None
        self._colspecs = [fk.parent]
        self.elements = [fk]
        fk.constraint = self
        self.ondelete = fk.ondelete
        self.onupdate = fk.onupdate
        self.use_alter = fk.use_alter
        self.deferrable = fk.deferrable
        self.initially = fk.initially
        return self

    def _attach(self, table: Table) -> None:
        super()._attach(table)
        for spec, fk in zip(self._colspecs, self.elements, strict=True):
            col = table._column_for(spec, "ForeignKeyConstraint")
            if fk.parent is None:
                fk.parent = col
                col.foreign_keys.append(fk)

    @property
    def columns(self) -> list[Column]:
        return [fk.parent for fk in self.elements if fk.parent is not None]

    @property
    def referred_table(self) -> Table:
        table = self.elements[0].column.table
        assert table is not None
        return table

    def _referred_table_key(self) -> str:
        return self.elements[0]._target_table_key()

    def _effective_name(self) -> str:
        """The constraint's name, or PostgreSQL's default naming (<table>_<cols>_fkey)."""
        if self.name:
            return self.name
        assert self.table is not None
        cols = "_".join(c.name or "" for c in self.columns)
        return f"{self.table.name}_{cols}_fkey"[:63]


class Index:
    """``CREATE [UNIQUE] INDEX name ON table (cols)``; attaches to the table of its columns."""

    def __init__(self, name: str, *expressions: str | Column, unique: bool = False) -> None:
        if not name:
            raise exc.ArgumentError("Index needs a name")
        self.name = name
        self._colspecs = _column_names(expressions)
        if not self._colspecs:
            raise exc.ArgumentError(f"Index {name!r} needs at least one column")
        self.unique = unique
        self.table: Table | None = None
        self.columns: list[Column] = []
        cols = [c for c in self._colspecs if isinstance(c, Column)]
        if cols and cols[0].table is not None:
            cols[0].table._add_index(self)

    def _attach(self, table: Table) -> None:
        self.table = table
        self.columns = [table._column_for(spec, f"Index {self.name!r}") for spec in self._colspecs]

    def create(self, bind: Any, checkfirst: bool = False) -> None:
        from retort.sql import ddl

        assert self.table is not None
        _run(bind, lambda conn: ddl.create_index(conn, self, checkfirst))

    def drop(self, bind: Any, checkfirst: bool = False) -> None:
        from retort.sql import ddl

        _run(bind, lambda conn: ddl.drop_index(conn, self, checkfirst))

    def __repr__(self) -> str:
        return f"Index({self.name!r}, {', '.join(repr(c) for c in self._colspecs)})"


class ColumnCollection:
    """Columns by key: ``table.c.name``, ``table.c["name"]``, iteration in definition order."""

    __slots__ = ("_cols",)
    _cols: dict[str, Column]

    def __init__(self) -> None:
        object.__setattr__(self, "_cols", {})

    def _add(self, col: Column) -> None:
        if col.key in self._cols:
            raise exc.ArgumentError(f"duplicate column key {col.key!r}")
        self._cols[col.key] = col

    def __getattr__(self, key: str) -> Column:
        try:
            return self._cols[key]
        except KeyError:
            raise AttributeError(f"no column {key!r}; columns are {list(self._cols)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("ColumnCollection is read-only; use Table.append_column()")

    def __getitem__(self, key: str | int) -> Column:
        if isinstance(key, int):
            return list(self._cols.values())[key]
        return self._cols[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._cols.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            return key in self._cols
        return any(c is key for c in self._cols.values())

    def __iter__(self) -> Iterator[Column]:
        return iter(list(self._cols.values()))

    def __len__(self) -> int:
        return len(self._cols)

    def keys(self) -> list[str]:
        return list(self._cols)

    def values(self) -> list[Column]:
        return list(self._cols.values())

    def items(self) -> list[tuple[str, Column]]:
        return list(self._cols.items())

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._cols]

    def __repr__(self) -> str:
        return f"ColumnCollection({', '.join(self._cols)})"


class Table(FromClause):
    """A database table: ``Table("users", metadata, Column("id", Integer, primary_key=True))``."""

    __visit_name__ = "table"

    def __init__(
        self,
        name: str,
        metadata: MetaData,
        *args: Any,
        schema: str | None = None,
        comment: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise exc.ArgumentError(f"Table name must be a non-empty string, got {name!r}")
        _check_name(name, "Table")
        if not isinstance(metadata, MetaData):
            raise exc.ArgumentError(
                f"Table({name!r}, ...) needs a MetaData as its second argument, got {metadata!r}"
            )
        self.name = name
        self.schema = schema
        self.metadata = metadata
        self.comment = comment
        self.info: dict[str, Any] = dict(info or {})
        self._columns = ColumnCollection()
        self.constraints: list[Constraint] = []
        self.indexes: list[Index] = []
        pending: list[Any] = []
        for arg in args:
            if isinstance(arg, Column):
                self.append_column(arg)
            elif isinstance(arg, Constraint | Index):
                pending.append(arg)
            else:
                raise exc.ArgumentError(
                    f"unexpected argument to Table({name!r}): {arg!r}; give Column, "
                    "UniqueConstraint, ForeignKeyConstraint, PrimaryKeyConstraint, "
                    "CheckConstraint or Index objects"
                )
        for arg in pending:
            if isinstance(arg, Index):
                self._add_index(arg)
            else:
                self.append_constraint(arg)
        metadata._add_table(self)

    # Columns

    def append_column(self, column: Column) -> None:
        if not isinstance(column, Column):
            raise exc.ArgumentError(f"expected a Column, got {column!r}")
        if column.name is None:
            raise exc.ArgumentError(f"a Column of table {self.name!r} has no name")
        _check_name(column.name, f"a column of table {self.name!r}")
        if column.table is not None and column.table is not self:
            raise exc.ArgumentError(
                f"column {column.name!r} already belongs to table {column.table.name!r}; "
                "use column.copy() for another table"
            )
        if any(c.name == column.name for c in self._columns):
            raise exc.ArgumentError(
                f"table {self.name!r} already has a column {column.name!r}; give each column "
                "its own name (mapped_column('other_name') maps an attribute to a differently "
                "named column)"
            )
        self._columns._add(column)
        column.table = self
        for fk in column.foreign_keys:
            if fk.constraint is None:
                fkc = ForeignKeyConstraint._from_column_fk(fk)
                fkc.table = self
                self.constraints.append(fkc)

    def append_constraint(self, constraint: Constraint) -> None:
        constraint._attach(self)
        self.constraints.append(constraint)

    def _add_index(self, index: Index) -> None:
        if any(i is index for i in self.indexes):
            return
        index._attach(self)
        self.indexes.append(index)

    def _column_for(self, spec: str | Column, what: str) -> Column:
        if isinstance(spec, Column):
            if spec.table is not self:
                raise exc.ArgumentError(
                    f"{what}: column {spec!r} does not belong to table {self.name!r}"
                )
            return spec
        for col in self._columns:
            if col.name == spec:
                return col
        col = self._columns.get(spec)
        if col is None:
            raise exc.ArgumentError(
                f"{what}: table {self.name!r} has no column {spec!r} "
                f"(columns: {[c.name for c in self._columns]})"
            )
        return col

    @property
    def c(self) -> ColumnCollection:
        return self._columns

    @property
    def columns(self) -> ColumnCollection:
        return self._columns

    @property
    def _columns_list(self) -> list[ColumnElement]:
        return list(self._columns)

    @property
    def fullname(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    key = fullname

    @property
    def primary_key(self) -> list[Column]:
        return [c for c in self._columns if c.primary_key]

    @property
    def foreign_keys(self) -> list[ForeignKey]:
        return [fk for c in self._columns for fk in c.foreign_keys]

    @property
    def foreign_key_constraints(self) -> list[ForeignKeyConstraint]:
        return [c for c in self.constraints if isinstance(c, ForeignKeyConstraint)]

    @property
    def autoincrement_column(self) -> Column | None:
        """The integer primary key the database generates (an identity column), if any."""
        pk = self.primary_key
        explicit = [c for c in self._columns if c.identity is not None]
        if explicit:
            return explicit[0]
        if len(pk) != 1:
            return None
        col = pk[0]
        if col.autoincrement is False or not col.type._is_integer:
            return None
        if col.default is not None or col.server_default is not None:
            return None
        if col.foreign_keys and col.autoincrement != True:  # noqa: E712 - "auto" vs True
            return None
        return col

    def _dependencies(self) -> list[ForeignKeyConstraint]:
        return self.foreign_key_constraints

    # DDL

    def create(self, bind: Any, checkfirst: bool = False) -> None:
        """CREATE TABLE (and its indexes)."""
        from retort.sql import ddl

        _run(bind, lambda conn: ddl.create_tables(conn, [self], checkfirst, alter_fks=set()))

    def drop(self, bind: Any, checkfirst: bool = False) -> None:
        """DROP TABLE."""
        from retort.sql import ddl

        _run(bind, lambda conn: ddl.drop_tables(conn, [self], checkfirst, alter_fks=set()))

    def exists(self, bind: Any) -> bool:
        from retort.sql import ddl

        result: list[bool] = []
        _run(bind, lambda conn: result.append(ddl.table_exists(conn, self)))
        return result[0]

    # Expressions

    def alias(self, name: str | None = None) -> Any:
        """This table under another name (``FROM users AS u``), for self-joins."""
        from retort.sql.selectable import Alias

        return Alias(self, name)

    def select(self) -> Any:
        from retort.sql.selectable import select

        return select(self)

    def insert(self) -> Any:
        from retort.sql.selectable import insert

        return insert(self)

    def update(self) -> Any:
        from retort.sql.selectable import update

        return update(self)

    def delete(self) -> Any:
        from retort.sql.selectable import delete

        return delete(self)

    def __repr__(self) -> str:
        return f"Table({self.fullname!r}, columns={self._columns.keys()})"


class MetaData:
    """A collection of tables that reference each other; creates and drops them in order."""

    def __init__(self, schema: str | None = None) -> None:
        self.schema = schema
        self.tables: dict[str, Table] = {}

    def _add_table(self, table: Table) -> None:
        if table.schema is None and self.schema is not None:
            table.schema = self.schema
        key = table.fullname
        if key in self.tables:
            raise exc.ArgumentError(
                f"table {key!r} is already defined in this MetaData; each table is defined once"
            )
        self.tables[key] = table

    def remove(self, table: Table) -> None:
        self.tables.pop(table.fullname, None)

    def clear(self) -> None:
        self.tables.clear()

    def _sort(
        self, tables: Sequence[Table] | None = None
    ) -> tuple[list[Table], set[ForeignKeyConstraint]]:
        """Tables in dependency order, and the foreign keys to add with ALTER TABLE."""
        return sort_tables(list(self.tables.values()) if tables is None else list(tables))

    @property
    def sorted_tables(self) -> list[Table]:
        """Tables with every table after the tables it references (ties: definition order)."""
        return self._sort()[0]

    def create_all(
        self, bind: Any, tables: Sequence[Table] | None = None, checkfirst: bool = True
    ) -> None:
        """CREATE every table (skipping existing ones when checkfirst), indexes, then ALTERs."""
        from retort.sql import ddl

        ordered, alter_fks = self._sort(tables)
        _run(bind, lambda conn: ddl.create_tables(conn, ordered, checkfirst, alter_fks))

    def drop_all(
        self, bind: Any, tables: Sequence[Table] | None = None, checkfirst: bool = True
    ) -> None:
        """DROP every table in reverse dependency order, dropping ALTER-added keys first."""
        from retort.sql import ddl

        ordered, alter_fks = self._sort(tables)
        _run(bind, lambda conn: ddl.drop_tables(conn, ordered[::-1], checkfirst, alter_fks))

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Table):
            return self.tables.get(key.fullname) is key
        return key in self.tables

    def __repr__(self) -> str:
        return f"MetaData(tables={list(self.tables)})"


def sort_tables(tables: list[Table]) -> tuple[list[Table], set[ForeignKeyConstraint]]:
    """Order tables so each comes after the tables it references.

    Among tables that are ready, the one defined first goes first, so the order is
    deterministic. Self-references never constrain the order. Foreign keys with
    ``use_alter=True`` are ignored for ordering and returned to be added by ALTER TABLE; when
    tables still form a cycle, the earliest-defined blocked table goes next and the foreign keys
    it has into not-yet-placed tables are returned for ALTER TABLE as well.
    """
    by_key = {t.fullname: t for t in tables}
    alter: set[ForeignKeyConstraint] = set()
    deps: dict[int, list[tuple[ForeignKeyConstraint, Table]]] = {}
    for t in tables:
        edges: list[tuple[ForeignKeyConstraint, Table]] = []
        for fkc in t.foreign_key_constraints:
            if fkc.use_alter:
                alter.add(fkc)
                continue
            key = fkc._referred_table_key()
            target = by_key.get(key)
            if target is None and "." not in key and t.schema is not None:
                target = by_key.get(f"{t.schema}.{key}")
            if target is None or target is t:
                continue
            edges.append((fkc, target))
        deps[id(t)] = edges
    placed: set[int] = set()
    ordered: list[Table] = []
    remaining = list(tables)
    while remaining:
        for i, t in enumerate(remaining):  # noqa: B007 - i and t are used after the loop
            if all(id(target) in placed for _fkc, target in deps[id(t)]):
                break
        else:
            i, t = 0, remaining[0]
            for fkc, target in deps[id(t)]:
                if id(target) not in placed:
                    alter.add(fkc)
        ordered.append(t)
        placed.add(id(t))
        del remaining[i]
    return ordered, alter


def _run(bind: Any, fn: Callable[[Any], None]) -> None:
    """Run DDL on a Connection as is, or on an Engine inside ``engine.begin()``."""
    if hasattr(bind, "exec_driver_sql"):
        fn(bind)
        return
    begin = getattr(bind, "begin", None)
    if begin is None:
        raise exc.ArgumentError(f"expected an Engine or a Connection to run DDL on, got {bind!r}")
    with begin() as conn:
        fn(conn)
