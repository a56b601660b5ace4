"""Declarative mapping: classes with ``Mapped[...]`` annotations become tables and mappers.

A direct subclass of `DeclarativeBase` starts a registry with its own `MetaData`; its subclasses
with a ``__tablename__`` (or ``__table__``) are mapped. Mapping builds the `Table`, installs a
column descriptor (implemented in the Rust core) per mapped attribute and registers the mapper's
columns, keys, defaults and value processors with the core.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from retort import _core, exc
from retort.attributes import (
    InstrumentedList,
    RelationshipAttribute,
    _cascade_add,
    _note_change,
    orphaned,
    refuse_deleted_item,
    refuse_if_deleted,
)
from retort.sql import types as sqltypes
from retort.sql.elements import ClauseElement, ColumnOperators
from retort.sql.schema import Column, ForeignKey, Identity, MetaData, Table

_T = TypeVar("_T")

__all__ = [
    "DeclarativeBase",
    "InstrumentedAttribute",
    "Mapped",
    "Mapper",
    "Registry",
    "configure_mappers",
    "mapped_column",
    "relationship",
]


class Mapped(Generic[_T]):
    """The annotation of a mapped attribute: ``name: Mapped[str]``.

    On the class the attribute is an SQL expression; on an instance it is the value.
    """

    if TYPE_CHECKING:

        @overload
        def __get__(self, instance: None, owner: Any) -> InstrumentedAttribute[_T]: ...

        @overload
        def __get__(self, instance: object, owner: Any) -> _T: ...

        def __get__(self, instance: object | None, owner: Any) -> Any: ...

        def __set__(self, instance: Any, value: _T) -> None: ...

        def __delete__(self, instance: Any) -> None: ...


class InstrumentedAttribute(_core.ColumnAttribute, ColumnOperators, Generic[_T]):
    """A mapped column attribute on its class: a descriptor and a column expression."""

    # Instances get a __dict__ (the Rust base has no slots for these).
    column: Column
    class_: type

    def __init__(self, key: str, index: int, column: Column, class_: type) -> None:
        self.column = column
        self.class_ = class_

    def __clause_element__(self) -> Column:
        return self.column

    @property
    def property(self) -> Column:
        return self.column

    def __repr__(self) -> str:
        return f"<InstrumentedAttribute {self.class_.__name__}.{self.key}>"

    __hash__ = object.__hash__


_NOT_SET: Any = object()


class _Unsettled:
    """A many-to-one's value before its change, in the history of an object a flush gave the
    key of another object (through a one-to-many) while it was outside the session: its key no
    longer names that value, so whatever is set since counts as a change, as for _NOT_SET; but
    the save-update cascade still follows it, as SQLAlchemy's history of an object its flush
    did not write holds it (see sync.rs, settle_outside)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class MappedColumn:
    """What `mapped_column()` returns: a column declaration waiting for its class."""

    __slots__ = ("args", "column", "explicit_nullable", "kwargs", "name", "type_")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        rest = list(args)
        self.name: str | None = None
        self.type_: Any = None
        if rest and isinstance(rest[0], str):
            self.name = rest.pop(0)
        if rest and (
            isinstance(rest[0], sqltypes.TypeEngine)
            or (isinstance(rest[0], type) and issubclass(rest[0], sqltypes.TypeEngine))
        ):
            self.type_ = rest.pop(0)
        for a in rest:
            if not isinstance(a, ForeignKey | Identity):
                raise exc.ArgumentError(
                    f"mapped_column() got an unexpected positional argument {a!r}; give an "
                    "optional name, an optional type, then ForeignKey(...) objects"
                )
        if kwargs.get("name") is not None:
            self.name = kwargs.pop("name")
        else:
            kwargs.pop("name", None)
        if kwargs.get("type_") is not None:
            self.type_ = kwargs.pop("type_")
        self.args = tuple(rest)
        self.column: Column | None = None
        nullable = kwargs.pop("nullable", _NOT_SET)
        self.explicit_nullable = nullable
        self.kwargs = kwargs


def mapped_column(
    *args: Any,
    primary_key: bool = False,
    nullable: bool | None = _NOT_SET,
    unique: bool | None = None,
    index: bool | None = None,
    default: Any = None,
    server_default: Any = None,
    onupdate: Any = None,
    name: str | None = None,
    type_: Any = None,
    autoincrement: bool | str = "auto",
    comment: str | None = None,
    info: dict[str, Any] | None = None,
) -> Any:
    """Declare a mapped column: ``id: Mapped[int] = mapped_column(primary_key=True)``.

    Positional arguments: an optional column name, an optional type, then ``ForeignKey``
    objects. The type defaults to the one that matches the annotation; nullability follows
    ``Optional[...]`` / ``| None`` unless ``nullable=`` says otherwise.
    """
    return MappedColumn(
        args,
        {
            "primary_key": primary_key,
            "nullable": nullable,
            "unique": unique,
            "index": index,
            "default": default,
            "server_default": server_default,
            "onupdate": onupdate,
            "name": name,
            "type_": type_,
            "autoincrement": autoincrement,
            "comment": comment,
            "info": info,
        },
    )


class Registry:
    """The mappers of one declarative base."""

    def __init__(self, metadata: MetaData) -> None:
        self.metadata = metadata
        self.mappers: list[Mapper] = []

    def __iter__(self) -> Iterator[Mapper]:
        return iter(self.mappers)


_unconfigured: list[Mapper] = []


def configure_mappers() -> None:
    """Resolve what mapping left for later: foreign-key dependencies between mappers."""
    while _unconfigured:
        # Taken off the queue first: a mapper that fails to configure must not make every
        # later flush in the process fail with it.
        mapper = _unconfigured.pop(0)
        mapper._configure()


def _sync_spec(prop: Any) -> tuple[str, int, Any, list[str], list[str], Any]:
    """How the flush's key sync in the core treats a relationship (`MapperCore.set_cascade`):
    0 many-to-one, 1 one-to-many collection, 3 scalar one-to-many (with the attribute names of
    the referred-to and the foreign-key columns), 2 anything else, left to
    `flush.sync_related`. Last, for a many-to-one referring to its target's primary key (in
    order), the target's MapperCore: its foreign key is then an identity to look up."""
    if prop.direction == "MANYTOONE":
        kind = 0
    elif prop.direction == "ONETOMANY":
        kind = 1 if prop.uselist else 3
    else:
        return (prop.key, 2, prop, [], [], None)
    src = [s.key for s, _ in prop.pairs]
    target = None
    if kind == 0 and [c.key for c in prop.target.primary_key] == src:
        target = prop.target._core
    return (prop.key, kind, prop, src, [d.key for _, d in prop.pairs], target)


def _share_instance_keys(class_: type, keys: list[str]) -> None:
    """Have every instance of `class_` share one table of attribute names.

    CPython keeps the attribute names of a class's instances in a table shared by all of them,
    each instance holding only its values, and adds names to it as instances get them. The
    table stops growing once the interpreter's specialized code relies on it; an instance that
    needs a name missing from it then gets a whole dict of its own, twice the size. If the
    first instances were built by their constructor (no key yet, no state), every object
    loaded afterwards would pay that. Entering all the names once, now, with a throwaway
    instance, keeps loaded and constructed objects small whatever comes first."""
    if getattr(class_, "__del__", None) is not None:
        return  # a throwaway instance would run the class's own finalizer
    try:
        probe: Any = object.__new__(class_)
        d = probe.__dict__
    except (TypeError, AttributeError):
        return  # no plain instance dict (a builtin base or __slots__): nothing to share
    for key in keys:
        d[key] = None
    d.clear()


class Mapper:
    """How a class maps to its table: columns in load order, primary key, the core's view."""

    def __init__(
        self,
        class_: type,
        table: Table,
        attr_columns: list[tuple[str, Column]],
        relationships: dict[str, RelationshipProperty] | None = None,
    ) -> None:
        self.class_ = class_
        self.relationships: dict[str, RelationshipProperty] = dict(relationships or {})
        # True when a relationship copies this mapper's keys (into foreign keys or association
        # rows): pending objects then get their database-generated keys before the flush plan
        # is made. The other side of a one-to-many takes its keys when its rows are inserted.
        self.early_keys = False
        # True when some relationship loads eagerly by default (lazy="selectin"/"joined").
        self.eager = False
        self.local_table = table
        self.columns: list[Column] = [c for _, c in attr_columns]
        self.keys: list[str] = [k for k, _ in attr_columns]
        self.columns_by_key: dict[str, Column] = dict(attr_columns)
        pk_cols = list(table.primary_key)
        if not pk_cols:
            raise exc.ArgumentError(
                f"{class_.__name__}: table {table.name!r} has no primary key; mark at least one "
                "column with mapped_column(primary_key=True)"
            )
        self.primary_key: list[Column] = pk_cols
        index_of = {id(c): i for i, c in enumerate(self.columns)}
        try:
            pk_index = [index_of[id(c)] for c in pk_cols]
        except KeyError:
            raise exc.ArgumentError(
                f"{class_.__name__}: every primary key column of {table.name!r} must be mapped"
            ) from None
        # attribute names of the columns outside the primary key
        self.non_key_attrs: list[str] = [
            k for i, k in enumerate(self.keys) if i not in set(pk_index)
        ]
        autoinc_col = table.autoincrement_column
        autoinc = index_of.get(id(autoinc_col)) if autoinc_col is not None else None
        self.autoincrement_index = autoinc
        defaults: list[Any] = []
        onupdates: list[Any] = []
        for c in self.columns:
            for value, what in ((c.default, "default"), (c.onupdate, "onupdate")):
                if isinstance(value, ClauseElement):
                    raise exc.ArgumentError(
                        f"{class_.__name__}.{c.key}: a SQL expression as {what}= is not "
                        f"supported; use server_default= for SQL, or a Python value/callable"
                    )
            defaults.append(c._default_fn or c.default)
            onupdates.append(c._onupdate_fn or c.onupdate)
        self._core = _core.MapperCore(
            class_,
            self,
            list(self.keys),
            pk_index,
            autoinc,
            defaults,
            onupdates,
            [c.server_default is not None for c in self.columns],
            [c.type.bind_processor() for c in self.columns],
            [c.type.result_processor() for c in self.columns],
            [i for i, c in enumerate(self.columns) if c.type.mutable],
            frozenset(self.relationships),
            table.name,
            [str(c.name) for c in self.columns],
            self._unique_groups(index_of),
            [bool(c.nullable) for c in self.columns],
            self._version_index(class_, index_of),
            [_bind_check(c.type) for c in self.columns],
        )
        self.attrs: dict[str, InstrumentedAttribute[Any]] = {}
        self.sql_cache: dict[Any, Any] = {}
        table._retort_mapper = self  # type: ignore[attr-defined]
        # Session.get's fast path finds the core from the class in one attribute lookup
        class_._retort_core = self._core  # type: ignore[attr-defined]
        _share_instance_keys(class_, [*self.keys, "_retort_state", *self.relationships])
        # the identity map learns of an instance's end from the class's finalizer rather than
        # from a weak reference per instance (rust/py/liveness.rs)
        _core.adopt_class(class_)
        _unconfigured.append(self)

    def _version_index(self, class_: type, index_of: dict[int, int]) -> int | None:
        """The column of ``__mapper_args__["version_id_col"]``, if the class names one."""
        args = getattr(class_, "__mapper_args__", None) or {}
        unknown = set(args) - {"version_id_col"}
        if unknown:
            raise exc.ArgumentError(
                f"{class_.__name__}.__mapper_args__: unsupported key(s) {sorted(unknown)}; "
                "retort supports version_id_col"
            )
        spec = args.get("version_id_col")
        if spec is None:
            return None
        if isinstance(spec, MappedColumn):
            spec = spec.column
        clause = getattr(spec, "__clause_element__", None)
        if clause is not None and not isinstance(spec, Column):
            spec = clause()
        if isinstance(spec, str):
            spec = self.columns_by_key.get(spec)
        if not isinstance(spec, Column) or id(spec) not in index_of:
            raise exc.ArgumentError(
                f"{class_.__name__}: version_id_col must name a mapped integer column, "
                f"e.g. __mapper_args__ = {{'version_id_col': 'version'}}"
            )
        if not spec.type._is_integer:
            raise exc.ArgumentError(
                f"{class_.__name__}: version_id_col {spec.name!r} must be an integer column; "
                f"declare it as {spec.key}: Mapped[int]"
            )
        return index_of[id(spec)]

    def _unique_groups(self, index_of: dict[int, int]) -> list[list[int]]:
        """Column indexes of each unique constraint other than the primary key."""
        from retort.sql.schema import UniqueConstraint

        groups: list[list[int]] = [[index_of[id(c)]] for c in self.columns if c.unique]
        for con in self.local_table.constraints:
            if isinstance(con, UniqueConstraint) and all(id(c) in index_of for c in con.columns):
                group = sorted(index_of[id(c)] for c in con.columns)
                if group not in groups:
                    groups.append(group)
        return groups

    def check_related(self, item: Any, prop: RelationshipProperty) -> None:
        if not isinstance(item, self.class_):
            raise exc.ArgumentError(
                f"{prop} holds {self.class_.__name__} objects, not {type(item).__name__} "
                f"({item!r}); give it {self.class_.__name__} instances"
            )

    def _configure(self) -> None:
        # Every relationship is tried, and the foreign-key dependencies registered, even when
        # one relationship is broken; its error is raised at the end (and again whenever the
        # broken relationship is used).
        error: exc.ArgumentError | None = None
        for prop in self.relationships.values():
            try:
                prop._configure()
            except exc.ArgumentError as e:
                error = error or e
                continue
            if prop.lazy in ("selectin", "joined"):
                self.eager = True
            if not prop.viewonly:
                # the side whose key the relationship copies (a many-to-many: both)
                if prop.direction != "MANYTOONE":
                    self.early_keys = True
                if prop.direction != "ONETOMANY":
                    prop.target.early_keys = True
        index_of = {id(c): i for i, c in enumerate(self.columns)}
        constraints: dict[int, list[Any]] = {}
        for fk in self.local_table.foreign_keys:
            constraints.setdefault(id(fk.constraint), []).append(fk)
        for fks in constraints.values():
            target_table = fks[0].column.table if fks[0].column is not None else None
            parent = getattr(target_table, "_retort_mapper", None)
            if parent is None or any(fk.parent is None for fk in fks):
                continue
            cols = [index_of[id(fk.parent)] for fk in fks if id(fk.parent) in index_of]
            if len(cols) != len(fks):
                continue
            names = ", ".join(str(fk.parent.name) for fk in fks)
            targets = ", ".join(fk.column.name for fk in fks)
            parent_index = {id(c): i for i, c in enumerate(parent.columns)}
            refs = [parent_index[id(fk.column)] for fk in fks if id(fk.column) in parent_index]
            self._core.add_dependency(
                parent._core,
                f"{self.local_table.name}.{names} references {parent.local_table.name}.{targets}",
                cols,
                refs if len(refs) == len(fks) else [],
                all(fk.parent.nullable for fk in fks),
                self._post_update_along(parent, {id(fk.parent) for fk in fks}),
            )
        if error is not None:
            raise error
        self._core.set_cascade(
            [
                (p.key, bool(p.uselist))
                for p in self.relationships.values()
                if "save-update" in p.cascade
            ],
            bool(self.relationships),
            [_sync_spec(p) for p in self.relationships.values() if not p.viewonly],
        )

    def _post_update_along(self, parent: Mapper, fk_cols: set[int]) -> bool:
        """Whether a relationship along these foreign-key columns asked for post_update."""
        for prop in [*self.relationships.values(), *parent.relationships.values()]:
            if prop.post_update and any(id(dst) in fk_cols for _, dst in prop.pairs):
                return True
        return False

    @property
    def entity(self) -> type:
        return self.class_

    @property
    def mapped_table(self) -> Table:
        return self.local_table

    def __repr__(self) -> str:
        return f"<Mapper {self.class_.__name__} -> {self.local_table.name}>"


def _bind_check(type_: Any) -> int:
    """The core's check of values bound to a column of this type (mapper.rs CHECK_*): values
    psycopg and PostgreSQL would accept but store as something else."""
    if isinstance(type_, sqltypes.String):
        return 1  # bytes
    if isinstance(type_, sqltypes.DateTime):
        return 3 if type_.timezone else 2  # a datetime without / with a tzinfo
    return 0


def _unwrap_annotation(ann: Any) -> tuple[bool, Any]:
    """(is Mapped[...], inner type) for an evaluated annotation."""
    origin = typing.get_origin(ann)
    if origin is Mapped:
        args = typing.get_args(ann)
        return True, args[0] if args else Any
    if ann is Mapped:
        return True, Any
    return False, ann


def _optional(py_type: Any) -> tuple[bool, Any]:
    """(allows None, the type without None)."""
    origin = typing.get_origin(py_type)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(py_type) if a is not type(None)]
        if len(args) != len(typing.get_args(py_type)):
            inner = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
            return True, inner
    return False, py_type


def _eval_annotation(cls: type, name: str, ann: Any) -> Any:
    if not isinstance(ann, str):
        return ann
    module = sys.modules.get(cls.__module__)
    namespace: dict[str, Any] = dict(vars(module)) if module is not None else {}
    namespace.setdefault("Mapped", Mapped)
    namespace.update({k: v for k, v in vars(typing).items() if not k.startswith("_")})
    namespace.update(vars(cls))
    try:
        return eval(ann, namespace)
    except NameError as e:
        raise exc.ArgumentError(
            f"{cls.__name__}.{name}: cannot resolve the annotation {ann!r} ({e}); import the "
            "names it uses at module level"
        ) from None


def _declared_columns(cls: type) -> list[tuple[str, Column]]:
    """Columns declared on `cls` and on unmapped mixins above it, in declaration order."""
    result: dict[str, Column] = {}
    sources = [
        c
        for c in reversed(cls.__mro__)
        if c is not object
        and c is not DeclarativeBase
        and DeclarativeBase not in c.__bases__
        and (c is cls or "__mapper__" not in c.__dict__)
    ]
    for source in sources:
        anns: dict[str, Any] = dict(inspect.get_annotations(source))
        names = list(anns)
        names += [
            n
            for n, v in source.__dict__.items()
            if n not in anns and isinstance(v, MappedColumn | Column)
        ]
        for name in names:
            value = source.__dict__.get(name, _NOT_SET)
            if name.startswith("__") or (
                value is not _NOT_SET and not isinstance(value, MappedColumn | Column)
            ):
                continue
            if isinstance(value, Column):
                col = value.copy() if source is not cls else value
                if col.name is None:
                    col.name = name
                col.key = name
                result[name] = col
                continue
            ann = anns.get(name)
            if ann is None:
                raise exc.ArgumentError(
                    f"{cls.__name__}.{name}: mapped_column() needs a Mapped[...] annotation"
                )
            evaluated = _eval_annotation(source, name, ann)
            if typing.get_origin(evaluated) is ClassVar or evaluated is ClassVar:
                continue
            is_mapped, inner = _unwrap_annotation(evaluated)
            if not is_mapped:
                if isinstance(value, MappedColumn):
                    raise exc.ArgumentError(
                        f"{cls.__name__}.{name}: annotate mapped_column() attributes with "
                        f"Mapped[...], e.g. {name}: Mapped[int] = mapped_column(...)"
                    )
                continue
            result[name] = _build_column(cls, name, inner, value)
    return list(result.items())


def _build_column(cls: type, name: str, inner: Any, value: Any) -> Column:
    mc = value if isinstance(value, MappedColumn) else MappedColumn((), {})
    allows_none, base_type = _optional(inner)
    type_ = mc.type_
    has_fk = any(isinstance(a, ForeignKey) for a in mc.args)
    if type_ is None and base_type is not Any:
        try:
            type_ = sqltypes.type_for_python(base_type)
        except exc.ArgumentError as e:
            if not has_fk:
                raise exc.ArgumentError(f"{cls.__name__}.{name}: {e}") from None
    elif type_ is None and not has_fk:
        raise exc.ArgumentError(
            f"{cls.__name__}.{name}: cannot tell the column type; annotate with Mapped[<type>] "
            "or pass a type to mapped_column()"
        )
    kwargs = dict(mc.kwargs)
    nullable = mc.explicit_nullable
    if nullable is _NOT_SET:
        nullable = allows_none and not kwargs.get("primary_key")
    column = Column(
        mc.name or name,
        type_,
        *mc.args,
        key=name,
        nullable=nullable,
        **kwargs,
    )
    mc.column = column
    return column


def _table_args(cls: type) -> tuple[list[Any], dict[str, Any]]:
    args = getattr(cls, "__table_args__", None)
    if args is None:
        return [], {}
    if isinstance(args, dict):
        return [], dict(args)
    if isinstance(args, tuple):
        if args and isinstance(args[-1], dict):
            return list(args[:-1]), dict(args[-1])
        return list(args), {}
    raise exc.ArgumentError(
        f"{cls.__name__}.__table_args__ must be a tuple of constraints (optionally ending in a "
        "dict of Table keywords) or a dict"
    )


def _map_class(cls: type[DeclarativeBase]) -> None:
    metadata = cls.metadata
    if "__table__" in cls.__dict__:
        table: Table = cls.__dict__["__table__"]
        attr_columns = [(c.key, c) for c in table.columns]
    else:
        tablename = cls.__dict__["__tablename__"]
        attr_columns = _declared_columns(cls)
        if not attr_columns:
            raise exc.ArgumentError(f"{cls.__name__} declares no mapped columns")
        positional, keywords = _table_args(cls)
        table = Table(tablename, metadata, *(c for _, c in attr_columns), *positional, **keywords)
    relationships: dict[str, RelationshipProperty] = {}
    anns = dict(inspect.get_annotations(cls))
    for name, value in list(cls.__dict__.items()):
        if isinstance(value, RelationshipProperty):
            value.key = name
            target, uselist = _relationship_target(cls, name, anns.get(name))
            if value.argument is None:
                value.argument = target
            value._annotation_uselist = uselist
            if value.explicit_uselist is None and uselist is not None:
                value.uselist = uselist  # until configured (a broken one may never be)
            relationships[name] = value
    mapper = Mapper(cls, table, attr_columns, relationships)
    for prop in relationships.values():
        prop.parent = mapper
        setattr(cls, prop.key, RelationshipAttribute(prop))
    for index, (key, column) in enumerate(attr_columns):
        attr: InstrumentedAttribute[Any] = InstrumentedAttribute(key, index, column, cls)
        setattr(cls, key, attr)
        mapper.attrs[key] = attr
    cls.__table__ = table
    cls.__mapper__ = mapper
    cls._retort_core_mapper = mapper._core  # type: ignore[attr-defined]
    cls.registry.mappers.append(mapper)


class DeclarativeBase:
    """Base for declarative models. Subclass it once per set of tables::

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
    """

    metadata: ClassVar[MetaData]
    registry: ClassVar[Registry]
    __table__: ClassVar[Table]
    __mapper__: ClassVar[Mapper]
    __tablename__: ClassVar[str]
    _retort_state: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if DeclarativeBase in cls.__bases__:
            metadata = cls.__dict__.get("metadata")
            if metadata is None:
                metadata = MetaData()
                cls.metadata = metadata
            elif not isinstance(metadata, MetaData):
                raise exc.ArgumentError(f"{cls.__name__}.metadata must be a MetaData")
            cls.registry = Registry(metadata)
            return
        if cls.__dict__.get("__abstract__", False):
            return
        if "__tablename__" in cls.__dict__ or "__table__" in cls.__dict__:
            _map_class(cls)

    def __init__(self, **kwargs: Any) -> None:
        if _unconfigured:
            configure_mappers()
        try:
            core = type(self)._retort_core_mapper  # type: ignore[attr-defined]
        except AttributeError:
            raise exc.UnmappedClassError(
                f"{type(self).__name__} is not mapped: give it a __tablename__ and Mapped[...] "
                "columns"
            ) from None
        core.init_instance(self, kwargs)

    # (the __init__ above is the fallback of the one installed below, and what type checkers
    # read)

    def __repr__(self) -> str:
        mapper = type(self).__dict__.get("__mapper__")
        if mapper is None:
            return object.__repr__(self)
        state = self.__dict__
        keys = ", ".join(f"{c.key}={state[c.key]!r}" for c in mapper.primary_key if c.key in state)
        return f"<{type(self).__name__} {keys or 'transient'} at {id(self):#x}>"


# Mapped classes are built through a C method of this base (see rust/py/init.rs): the usual
# call, keyword arguments on a configured mapped class, runs no Python code.
DeclarativeBase.__init__ = _core.mapped_init_descriptor(  # type: ignore[method-assign]
    DeclarativeBase, _unconfigured, DeclarativeBase.__init__
)


def class_mapper(cls: type) -> Mapper:
    if not isinstance(cls, type) and isinstance(getattr(type(cls), "__mapper__", None), Mapper):
        raise exc.UnmappedClassError(
            f"expected a mapped class, got the instance {cls!r}; pass its class, e.g. "
            f"session.get({type(cls).__name__}, key)"
        )
    mapper = getattr(cls, "__mapper__", None)
    if not isinstance(mapper, Mapper):
        raise exc.UnmappedClassError(
            f"{getattr(cls, '__name__', cls)!r} is not a mapped class; declare it on a "
            "DeclarativeBase subclass with a __tablename__"
        )
    return mapper


def object_mapper(obj: Any) -> Mapper:
    mapper = getattr(type(obj), "__mapper__", None)
    if not isinstance(mapper, Mapper):
        raise exc.UnmappedInstanceError(
            f"{type(obj).__name__!r} instances are not mapped; only instances of classes "
            "declared on a DeclarativeBase subclass can be used here"
        )
    return mapper


_Callable = Callable[..., Any]


# -- relationships ------------------------------------------------------------------------------

_CASCADES = frozenset(
    {"save-update", "merge", "delete", "delete-orphan", "expunge", "refresh-expire"}
)
_ALL = frozenset({"save-update", "merge", "delete", "expunge", "refresh-expire"})


def _parse_cascade(text: Any) -> frozenset[str]:
    if text is None:
        return frozenset()
    if isinstance(text, str):
        words = text.split(",")
    elif isinstance(text, list | tuple | set | frozenset) and all(isinstance(w, str) for w in text):
        words = list(text)
    else:
        raise exc.ArgumentError(
            f"cascade must be a string such as 'all, delete-orphan' or 'save-update, merge', "
            f"got {text!r}"
        )
    out: set[str] = set()
    for raw in words:
        word = raw.strip()
        if not word or word == "none":
            continue
        if word == "all":
            out |= _ALL
        elif word in _CASCADES:
            out.add(word)
        else:
            raise exc.ArgumentError(
                f"unknown cascade {word!r}; use any of {', '.join(sorted(_CASCADES))}, 'all' "
                "or 'none', separated by commas"
            )
    return frozenset(out)


class _Unresolved:
    """A name in an annotation that is not defined yet (a class declared later)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __or__(self, other: Any) -> Any:
        return typing.Union[self, other]  # noqa: UP007

    def __ror__(self, other: Any) -> Any:
        return typing.Union[other, self]  # noqa: UP007

    def __call__(self) -> None:  # lets typing accept it inside Optional[...]
        return None

    def __repr__(self) -> str:
        return self.name


class _LenientNamespace(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        if key in vars(builtins_module):
            return vars(builtins_module)[key]
        return _Unresolved(key)


import builtins as builtins_module  # noqa: E402


def _relationship_target(cls: type, name: str, ann: Any) -> tuple[Any, bool | None]:
    """(target class or name, uselist from the annotation) of a relationship annotation."""
    if isinstance(ann, str):
        module = sys.modules.get(cls.__module__)
        namespace = _LenientNamespace(vars(module) if module is not None else {})
        namespace.setdefault("Mapped", Mapped)
        namespace.update({k: v for k, v in vars(typing).items() if not k.startswith("_")})
        namespace.update(vars(cls))
        try:
            ann = eval(ann, {"__builtins__": builtins_module}, namespace)
        except Exception as e:
            raise exc.ArgumentError(
                f"{cls.__name__}.{name}: cannot read the relationship annotation {ann!r} ({e})"
            ) from None
    is_mapped, inner = _unwrap_annotation(ann)
    if not is_mapped:
        return None, None
    _, inner = _optional(inner)
    origin = typing.get_origin(inner)
    if origin in (list, typing.List, Sequence, MutableSequence):  # noqa: UP006
        args = typing.get_args(inner)
        target = args[0] if args else None
        return _target_name(target), True
    return _target_name(inner), False


def _target_name(t: Any) -> Any:
    if isinstance(t, typing.ForwardRef):
        t = t.__forward_arg__
    if isinstance(t, str) and "|" in t:
        # Mapped["Node | None"]: the class name without None
        names = [n.strip() for n in t.split("|") if n.strip() not in ("None", "")]
        return names[0] if len(names) == 1 else t
    if isinstance(t, str):
        return t
    if isinstance(t, _Unresolved):
        return t.name
    return t


class _PendingTarget:
    """A relationship's target mapper until configuration resolves it: any use configures the
    relationship first, so that a broken declaration raises its ArgumentError (again) rather
    than an AttributeError."""

    __slots__ = ("_prop",)

    def __init__(self, prop: RelationshipProperty) -> None:
        self._prop = prop

    def __getattr__(self, name: str) -> Any:
        prop = self._prop
        prop._configure()
        return getattr(prop.target, name)


class RelationshipProperty:
    """A relationship between two mapped classes, as declared by `relationship()`."""

    def __init__(
        self,
        argument: Any,
        *,
        secondary: Any,
        back_populates: str | None,
        cascade: str,
        passive_deletes: bool | str,
        post_update: bool,
        foreign_keys: Any,
        remote_side: Any,
        order_by: Any,
        uselist: bool | None,
        lazy: str,
        viewonly: bool,
    ) -> None:
        if lazy not in ("select", "selectin", "joined", "raise", "noload", "raise_on_sql"):
            raise exc.ArgumentError(
                f"lazy={lazy!r} is not supported; use 'select', 'selectin', 'joined' or 'raise'"
            )
        self.argument = argument
        self.secondary = secondary
        self.back_populates = back_populates
        self.cascade = _parse_cascade(cascade)
        if "delete-orphan" in self.cascade and "delete" not in self.cascade:
            self.cascade = self.cascade | {"delete"}
        self.passive_deletes = passive_deletes
        self.post_update = post_update
        self.foreign_keys = foreign_keys
        self.remote_side = remote_side
        self.order_by = order_by
        self.explicit_uselist = uselist
        self.lazy = lazy
        self.viewonly = viewonly
        # set when mapped / configured
        self.key = ""
        self.parent: Mapper = None  # type: ignore[assignment]
        self.target: Mapper = _PendingTarget(self)  # type: ignore[assignment]
        self.uselist = bool(uselist)
        self.direction = ""
        # (source column, destination column) pairs, copied source -> destination at flush:
        # many-to-one: target key -> parent foreign key; one-to-many: parent key -> target FK.
        self.pairs: list[tuple[Column, Column]] = []
        # many-to-many: parent key -> secondary column, target key -> secondary column
        self.secondary_pairs: list[tuple[Column, Column]] = []
        self.target_secondary_pairs: list[tuple[Column, Column]] = []
        self.back: RelationshipProperty | None = None
        self._annotation_uselist: bool | None = None
        self._configured = False

    def __repr__(self) -> str:
        owner = self.parent.class_.__name__ if self.parent is not None else "?"
        return f"{owner}.{self.key}"

    # -- configuration -------------------------------------------------------------------

    def _columns_of(self, value: Any) -> list[Column]:
        if value is None:
            return []
        items = value if isinstance(value, list | tuple | set) else [value]
        cols: list[Column] = []
        for item in items:
            if isinstance(item, str):
                item = self._resolve_string(item)
            if isinstance(item, MappedColumn) and item.column is not None:
                item = item.column
            if hasattr(item, "__clause_element__"):
                item = item.__clause_element__()
            if not isinstance(item, Column):
                raise exc.ArgumentError(
                    f"{self}: expected columns, got {item!r}; name mapped columns, e.g. "
                    f"[{self.parent.class_.__name__}.some_id] or the string "
                    f"'{self.parent.class_.__name__}.some_id'"
                )
            cols.append(item)
        return cols

    def _resolve_string(self, text: str) -> Any:
        registry: Registry = self.parent.class_.registry  # type: ignore[attr-defined]
        namespace: dict[str, Any] = {m.class_.__name__: m.class_ for m in registry.mappers}
        namespace.update({t.name: t for t in registry.metadata.tables.values()})
        try:
            return eval(text, {"__builtins__": {}}, namespace)
        except Exception as e:
            raise exc.ArgumentError(
                f"{self}: cannot resolve {text!r} ({e}); write it as ClassName.attribute or a "
                "table name of this declarative base, and check the spelling"
            ) from None

    def _resolve_target(self) -> Mapper:
        arg = self.argument
        if callable(arg) and not isinstance(arg, type):
            arg = arg()
        if isinstance(arg, str):
            registry: Registry = self.parent.class_.registry  # type: ignore[attr-defined]
            matches = [m for m in registry.mappers if m.class_.__name__ == arg]
            if not matches:
                raise exc.ArgumentError(
                    f"{self}: no mapped class named {arg!r} in this declarative base; declare "
                    "it, or import the module that declares it, before the first flush or query"
                )
            return matches[-1]
        if isinstance(arg, type) and isinstance(arg.__dict__.get("__mapper__"), Mapper):
            return arg.__dict__["__mapper__"]
        if isinstance(arg, type):
            raise exc.ArgumentError(
                f"{self}: {arg.__name__} is not a mapped class; relationship() needs a class "
                "declared on a DeclarativeBase subclass with a __tablename__"
            )
        raise exc.ArgumentError(
            f"{self}: cannot tell the related class; annotate with Mapped[Target] / "
            "Mapped[list[Target]] or pass relationship(Target)"
        )

    def _configure(self) -> None:
        if self._configured:
            return
        try:
            self._configure_now()
        except BaseException:
            # not configured: the next use tries again (and raises the error again)
            self.target = _PendingTarget(self)  # type: ignore[assignment]
            raise

    def _configure_now(self) -> None:
        self.target = self._resolve_target()
        parent_t = self.parent.local_table
        target_t = self.target.local_table
        if self.secondary is not None:
            sec = self.secondary
            if isinstance(sec, str):
                sec = self._resolve_string(sec)
            if not isinstance(sec, Table):
                raise exc.ArgumentError(f"{self}: secondary= must be a Table")
            self.secondary = sec
            self.direction = "MANYTOMANY"
            self.secondary_pairs, self.target_secondary_pairs = [], []
            for fk in sec.foreign_keys:
                col = fk.column
                if col.table is parent_t and fk.parent is not None:
                    self.secondary_pairs.append((col, fk.parent))
                elif col.table is target_t and fk.parent is not None:
                    self.target_secondary_pairs.append((col, fk.parent))
            if not self.secondary_pairs or not self.target_secondary_pairs:
                raise exc.ArgumentError(
                    f"{self}: the secondary table {sec.name!r} needs foreign keys to both "
                    f"{parent_t.name!r} and {target_t.name!r}"
                )
        else:
            only = set(map(id, self._columns_of(self.foreign_keys)))
            local_fks = [
                fk
                for fk in parent_t.foreign_keys
                if fk.column.table is target_t and (not only or id(fk.parent) in only)
            ]
            remote_fks = [
                fk
                for fk in target_t.foreign_keys
                if fk.column.table is parent_t and (not only or id(fk.parent) in only)
            ]
            if parent_t is target_t:
                remote = set(map(id, self._columns_of(self.remote_side)))
                fks = local_fks
                # remote_side names the referenced key: this side holds the foreign key.
                many_to_one = bool(remote) and all(id(fk.column) in remote for fk in fks)
                if many_to_one:
                    self.direction = "MANYTOONE"
                    self.pairs = [(fk.column, fk.parent) for fk in fks]  # type: ignore[misc]
                else:
                    self.direction = "ONETOMANY"
                    self.pairs = [(fk.column, fk.parent) for fk in fks]  # type: ignore[misc]
            elif local_fks and not remote_fks:
                self.direction = "MANYTOONE"
                self.pairs = [(fk.column, fk.parent) for fk in local_fks]  # type: ignore[misc]
            elif remote_fks and not local_fks:
                self.direction = "ONETOMANY"
                self.pairs = [(fk.column, fk.parent) for fk in remote_fks]  # type: ignore[misc]
            elif only and not local_fks and not remote_fks:
                names = ", ".join(
                    f"{c.table.name if c.table is not None else '?'}.{c.name}"
                    for c in self._columns_of(self.foreign_keys)
                )
                raise exc.ArgumentError(
                    f"{self}: foreign_keys names {names}, which has no ForeignKey between "
                    f"{parent_t.name!r} and {target_t.name!r}; name a column that references "
                    f"{target_t.name!r} (or {parent_t.name!r} from the other side), or add "
                    "ForeignKey(...) to the column"
                )
            elif local_fks and remote_fks:
                raise exc.ArgumentError(
                    f"{self}: {parent_t.name!r} and {target_t.name!r} reference each other; "
                    "say which foreign key this relationship uses with foreign_keys=[...]"
                )
            else:
                raise exc.ArgumentError(
                    f"{self}: there is no foreign key between {parent_t.name!r} and "
                    f"{target_t.name!r}; add a ForeignKey, or use secondary= for a "
                    "many-to-many relationship"
                )
        if self.explicit_uselist is not None:
            self.uselist = self.explicit_uselist
        elif self._annotation_uselist is not None:
            self.uselist = self._annotation_uselist
        else:
            self.uselist = self.direction != "MANYTOONE"
        if "delete-orphan" in self.cascade and self.direction != "ONETOMANY":
            raise exc.ArgumentError(
                f"{self}: delete-orphan cascade needs a one-to-many (or one-to-one) "
                f"relationship, and this one is {self.direction.lower().replace('to', '-to-')}; "
                f"put cascade='all, delete-orphan' on the relationship from "
                f"{self.target.class_.__name__} to {self.parent.class_.__name__} instead"
            )
        if self.back_populates:
            self.back = self._back_populated()
        self._configured = True

    def _back_populated(self) -> RelationshipProperty:
        """The relationship back_populates names, checked to point back at this one."""
        target = self.target.class_.__name__
        owner = self.parent.class_.__name__
        name = self.back_populates
        other = self.target.relationships.get(name or "")
        if other is None:
            what = (
                "is a column, not a relationship"
                if name in self.target.columns_by_key
                else "is not a relationship"
            )
            raise exc.ArgumentError(
                f"{self}: back_populates={name!r} names {target}.{name}, which {what}; declare "
                f"the other side as {target}.{name} = relationship(back_populates="
                f"{self.key!r}), or fix the name"
            )
        other_target = other._resolve_target()
        if not issubclass(self.parent.class_, other_target.class_):
            raise exc.ArgumentError(
                f"{self}: back_populates={name!r} names {other}, which relates to "
                f"{other_target.class_.__name__}, not {owner}; name the relationship of "
                f"{target} that points back to {owner}"
            )
        if other.back_populates is not None and other.back_populates != self.key:
            raise exc.ArgumentError(
                f"{self}: back_populates={name!r} names {other}, but {other} has "
                f"back_populates={other.back_populates!r}; the two sides must name each other: "
                f"set {other}'s back_populates={self.key!r}"
            )
        return other

    # -- in-memory events ------------------------------------------------------------------

    def _set_scalar(self, obj: Any, value: Any, *, back: bool) -> None:
        if value is not None:
            self.target.check_related(value, self)
        d = obj.__dict__
        if back:
            refuse_if_deleted(obj, self)
            refuse_deleted_item(value, self)
        _fresh(d, obj)
        old = loaded = d.get(self.key, _NOT_SET)
        wants_old = (back and self.back is not None) or "delete-orphan" in self.cascade
        if old is _NOT_SET and wants_old and _has_identity(obj):
            # the old value is needed to take obj out of its collection: a many-to-one looks
            # in the identity map only (no SQL, as SQLAlchemy); a one-to-one loads it
            if self.direction == "MANYTOONE":
                old = self._old_in_identity_map(obj)
            elif self.lazy != "raise":
                session = _session_of(obj)
                if session is None:
                    old = self._load(obj)  # (raises DetachedInstanceError)
                else:
                    # without autoflush, as SQLAlchemy loads the value being replaced: a
                    # flush now would settle orphans before this change can adopt one
                    with session.no_autoflush:
                        old = self._load(obj)
        if old is value:
            # no change; it reads as set all the same, whatever the foreign key says (as
            # SQLAlchemy, which sets the attribute): the old value may come from the committed
            # key, not the one set by hand since
            d[self.key] = value
            if (
                back
                and value is not None
                and self.back is not None
                and not self.uselist
                and not self.back.uselist
                and (loaded is _NOT_SET or self.direction == "ONETOMANY")
                and self.back._holds_another(value, obj)
            ):
                # a one-to-one set to the value it holds, whose other side, loaded, no longer
                # refers to obj: the other side follows, as for a change, so that both sides
                # agree again.
                # - A profile's many-to-one set while not loaded to the user its key names,
                #   whose one-to-one was replaced since (by None, where another profile let
                #   the user go, retort loading this one then): SQLAlchemy had not loaded the
                #   profile, and its backref fires all the same; the user holds it again, and
                #   it is no orphan.
                # - A user's one-to-one set to the profile it still holds, which another user
                #   took since (a one-to-one's move leaves the old owner's value, in both
                #   libraries): the profile comes back to this user, where SQLAlchemy's
                #   backref sees no change and leaves the profile with the other user (and
                #   then writes NULL, or an orphan's DELETE, as that user lets it go).
                # (For a collection, a loaded key tells SQLAlchemy too that nothing changes)
                self.back._set_backref(value, obj, self, changed=False)
            return
        if back and "_retort_state" in d:
            # the other side of a back_populates event does not cascade (SQLAlchemy 2.x). The
            # cascade comes first, as SQLAlchemy's listeners: where it fails (it reaches an
            # object whose DELETE was flushed) the attribute keeps its value; and the new value
            # joins obj's session even where obj then leaves it (a pending orphan of its old
            # collection)
            _cascade_add(obj, self, value)
        if old is not _NOT_SET or _had_row(d):
            # the value before the first change, for history (cleared by the flush); _NOT_SET
            # when that was not known without SQL (the change counts all the same), as for an
            # object made transient by a rollback of its INSERT, whose row's value is gone
            history = d.setdefault("_retort_history", {})
            before = old
            if old is not _NOT_SET and self.key not in history and not _had_row(d):
                # an object that never had a row: every value it holds was set since its
                # creation, and the value before the first change is none (as SQLAlchemy's
                # NO_VALUE), not the one set last; so the cascade does not follow it either
                before = _NOT_SET
            if history.setdefault(self.key, before) is value:
                # back to the value it had before the first change: nothing to flush (as in
                # SQLAlchemy, whose history compares with that value), so a foreign key set
                # by hand meanwhile is not overwritten with the parent's key
                del history[self.key]
        # (a persistent child a one-to-one owner without a row held, expired since, as by a
        # rollback, replaced through the back reference (another child given the owner): its
        # row never named the owner, and nothing in memory does now, so it is no orphan, as
        # SQLAlchemy's flush, which the child is not part of, finds. Read before the backref
        # below loads its many-to-one. Replaced by a set of the one-to-one itself, SQLAlchemy's
        # backref clears the child's many-to-one, which puts it in the flush, an orphan)
        lost = True
        if (
            not back
            and old is not _NOT_SET
            and old is not None
            and self.direction == "ONETOMANY"
            and self.back is not None
            and not _has_identity(obj)
            and _has_identity(old)
        ):
            _fresh(old.__dict__, old)
            lost = self.back.key in old.__dict__
        d[self.key] = value
        if back and self.back is not None:
            if old is not _NOT_SET and old is not None:
                self.back._unset_backref(old, obj, self)
            if value is not None:
                self.back._set_backref(value, obj, self)
        if old is not _NOT_SET and old is not None and "delete-orphan" in self.cascade:
            # one-to-one owner losing its child: the child is an orphan. A pending one leaves
            # the session now (as from a collection); the flush deletes a persistent one
            # unless another parent took it meanwhile (every one the owner lost since the last
            # flush: p replaced by p2, then p2 by None, leaves two)
            obj_session = _session_of(obj)
            if obj_session is None:
                # an owner outside any session (never added, or detached), whose flush would
                # settle the loss: a child with a row whose back reference says it has no
                # parent now is an orphan all the same, as SQLAlchemy's parent tracking has it
                # (and as from a collection, InstrumentedList._fire_remove). (A pending one
                # stays, and is inserted, as SQLAlchemy's scalar does.)
                if (
                    self.back is not None
                    and _has_identity(old)
                    and old.__dict__.get(self.back.key, obj) is None
                ):
                    orphaned(old, self, obj)
                elif not back and _has_identity(old):
                    self._orphan_if_changed(old)
            elif _has_identity(old):
                if lost:
                    losses = obj_session._orphans.setdefault(id(obj), [])
                    if not any(o is old for o in losses):
                        losses.append(old)
                    # (should a rollback undo its INSERT, see Session._forget_orphan_children)
                    obj_session._orphans_taken.append((old, self))
                else:
                    self._orphan_if_changed(old)
            elif (
                self.back is None
                or (held := old.__dict__.get(self.back.key)) is None
                or (held is obj)
            ):
                orphaned(old, self, obj)
            # (else a pending child another owner took since, its many-to-one naming that
            # owner: no orphan, as SQLAlchemy's parent tracking goes by the last owner)
        if "_retort_state" not in d:
            return  # never added: no session to tell (add() cascades later)
        _note_change(obj, self)

    def _orphan_if_changed(self, child: Any) -> None:
        """`child`, persistent, was replaced in this one-to-one through the back reference
        (another child given the owner, which has no row or is outside the session) while its
        own many-to-one was not loaded: nothing of it changed, but SQLAlchemy's parent
        tracking calls it parentless now, and its flush deletes it once a change of its own
        puts it there (as `flush._delete_unparented` does for `Session._orphans_if_changed`)."""
        if self.back is None or self.back.key in child.__dict__:
            return
        session = _session_of(child)
        if session is not None:
            session._orphans_if_changed[id(child)] = (child, self)
            session._orphans_taken.append((child, self))

    def _holds_another(self, obj: Any, other: Any) -> bool:
        """Whether this scalar relationship of `obj` is loaded, holding a value other than
        `other` (None included)."""
        _fresh(obj.__dict__, obj)
        current = obj.__dict__.get(self.key, _NOT_SET)
        return current is not _NOT_SET and current is not other

    def _old_in_identity_map(self, obj: Any) -> Any:
        """The object a many-to-one refers to by its loaded foreign key, if the identity map
        holds it and it is not expired as a whole; None for a NULL key; _NOT_SET when that is
        unknown without SQL. The key is the committed one, before a change by hand since (as
        SQLAlchemy's lookup of the old value, LOAD_AGAINST_COMMITTED); None where the key was
        set by hand while not loaded (its committed value unknown, which SQLAlchemy takes for
        NULL). (The flush's lookup for
        deleted objects, which takes expired objects too, is the core's read_many_to_ones.)"""
        d = obj.__dict__
        state = d.get("_retort_state")
        if state is None or state.stale:
            return _NOT_SET
        keys = self.parent.keys
        by_target = {}
        for src, dst in self.pairs:
            value = d.get(dst.key, _NOT_SET)
            committed = state.committed_value(keys.index(dst.key))
            if committed is not None:
                known, value = committed
                if not known:
                    # set by hand while not loaded: the committed key is unknown, which
                    # SQLAlchemy takes for NULL (its get_committed_value), so no old parent
                    return None
            if value is _NOT_SET:
                return _NOT_SET
            if value is None:
                return None
            by_target[src.key] = value
        session = _session_of(obj)
        target = self.target
        if session is None or [c.key for c in target.primary_key] != list(by_target):
            return _NOT_SET
        ident = tuple(by_target.values())
        found = session._core.identity_lookup(target._core, ident)
        if found is None or _wholly_expired(found):
            # an expired object is no answer without SQL (as SQLAlchemy's no-fetch lookup)
            return _NOT_SET
        return found

    def _names_other_than_new(self, obj: Any, other: Any) -> bool:
        """Whether persistent `obj`'s many-to-one (this one), loaded or else by its loaded
        foreign key without SQL, names no parent or another one, where `other` has no row (so
        `obj`'s row never named it): taking `obj` out of `other`'s collection changes nothing
        of `obj`, as SQLAlchemy's backref finds."""
        if _has_identity(other):
            return False
        if self.key in obj.__dict__:
            # loaded (after `other` listed it, a load of the row found no parent or another)
            return obj.__dict__[self.key] is not other
        before = self._old_in_identity_map(obj)
        return before is not _NOT_SET and before is not other

    def _set_backref(
        self, obj: Any, other: Any, initiator: RelationshipProperty, *, changed: bool = True
    ) -> None:
        """`other` now refers to `obj` through `initiator`: mirror it on this side of `obj`.
        `changed` is False where `other`'s collection counts no change of membership (it
        held `obj` already): then an unloaded collection of `obj` records no change either."""
        _fresh(obj.__dict__, obj)
        if self.uselist:
            coll = _loaded_collection(obj, self.key)
            if coll is None and not _has_identity(obj):
                # a new object's collection is known to be empty: start it
                coll = obj.__dict__[self.key] = InstrumentedList(obj, self)
            if coll is not None:
                # from a collection (many-to-many) even a second entry is mirrored
                coll._append_quiet(other, twice=initiator.uselist)
            else:
                # not loaded: remembered, and applied when it loads (as SQLAlchemy's pending
                # collection mutations); for a many-to-many also written by the flush of
                # `obj` (flush._sync_queued), so only a change of membership is remembered
                if changed:
                    _pending(obj, self.key).append((True, other))
                _note_change(obj, self)
        else:
            current = obj.__dict__.get(self.key, _NOT_SET)
            moved = initiator.back is self and initiator.uselist
            if current is _NOT_SET and moved and self.direction == "MANYTOONE":
                # not loaded: the old parent, if the identity map holds it (no SQL)
                current = self._old_in_identity_map(obj)
            elif (
                current is _NOT_SET
                and self.direction == "ONETOMANY"
                and self.lazy not in ("raise", "raise_on_sql")
                and _has_identity(obj)
                and (session := _session_of(obj)) is not None
            ):
                # a one-to-one's owner taking another object: the one it had loses its key (or
                # is an orphan), so it is loaded now, without autoflush (SQLAlchemy's flush
                # loads it, its history being active for a one-to-many)
                with session.no_autoflush:
                    current = self._load(obj)
            if current is other:
                return
            if current is not _NOT_SET and current is not None and self.direction == "ONETOMANY":
                # (a pending expiry of the one it had applies first: its values from before
                # are stale)
                _fresh(current.__dict__, current)
                back_value = current.__dict__.get(initiator.key, _NOT_SET)
                if back_value is obj or (back_value is _NOT_SET and _has_identity(obj)):
                    # the one it had no longer refers to it. (Not loaded, it refers to obj
                    # where obj has a row; a row cannot name an object without one, as one a
                    # rollback made new again)
                    initiator._set_scalar(current, None, back=False)
            if current is not _NOT_SET and current is not None and moved:
                # a child moving to another parent leaves the old parent's collection
                old_coll = _loaded_collection(current, initiator.key)
                if old_coll is not None:
                    old_coll._remove_quiet(obj)
                elif _has_identity(current):
                    _pending(current, initiator.key).append((False, obj))
                    _note_change(current, initiator)
            self._set_scalar(obj, other, back=False)

    def _unset_backref(
        self, obj: Any, other: Any, initiator: RelationshipProperty, *, changed: bool = True
    ) -> None:
        """`other` no longer refers to `obj`: mirror it on this side of `obj`. `changed` is
        False where `other`'s collection counts no change of membership (it still holds `obj`:
        one of two entries went)."""
        _fresh(obj.__dict__, obj)
        if self.uselist:
            coll = _loaded_collection(obj, self.key)
            if coll is not None:
                if not coll._remove_quiet(other) and _has_identity(obj):
                    # not there (it may hold another instance of the row): as in SQLAlchemy,
                    # whose remove event fires before the list finds nothing, the owner counts
                    # as changed and `other` as taken out (an orphan unless another parent
                    # takes it)
                    _note_change(obj, self)
                    if "delete-orphan" in self.cascade and _has_identity(other):
                        orphaned(other, self, obj)
                return
            if _has_identity(obj):
                if changed:
                    _pending(obj, self.key).append((False, other))
                _note_change(obj, self)  # changed: a SAVEPOINT rollback expires it
            if "delete-orphan" in self.cascade:
                # the collection is not loaded: a pending orphan leaves the session now (as
                # from a loaded one); the flush decides whether a persistent one is an orphan
                orphaned(other, self, obj)
        else:
            current = obj.__dict__.get(self.key, _NOT_SET)
            # not loaded: it was `other` all the same (obj was in other's collection)
            if current is other or current is _NOT_SET:
                if current is _NOT_SET and self.direction == "MANYTOONE" and _has_identity(obj):
                    if self._names_other_than_new(obj, other):
                        return  # nothing to undo, as SQLAlchemy's backref finds
                    # the value before the change, as SQLAlchemy finds it (its foreign key
                    # in the identity map, no SQL): set back to it, it is no change
                    before = self._old_in_identity_map(obj)
                    if before is not _NOT_SET:
                        history = obj.__dict__.setdefault("_retort_history", {})
                        history.setdefault(self.key, before)
                self._set_scalar(obj, None, back=False)

    def _replace_collection(self, obj: Any, value: Any) -> None:
        if type(value) is not list and (
            isinstance(value, str | bytes) or not isinstance(value, Iterable)
        ):
            raise exc.ArgumentError(
                f"{self} is a collection; assign a list of {self.target.class_.__name__} objects"
            )
        new = list(value)
        d = obj.__dict__
        if "_retort_state" not in d and self.key not in d and self._fill_new_collection(obj, new):
            return  # (nothing in it has a state, so nothing was deleted by a flush)
        refuse_if_deleted(obj, self)
        for item in new:
            refuse_deleted_item(item, self)
        _fresh(d, obj)
        current = _loaded_collection(obj, self.key)
        if current is None:
            if _has_identity(obj) and self.lazy != "raise":
                current = self._load(obj)
            else:
                current = InstrumentedList(obj, self)
                obj.__dict__[self.key] = current
        if current is value:
            return
        # one remove event per entry too many, one append event per entry missing (an object
        # given twice is two entries, as SQLAlchemy's bulk replace makes it)
        want = Counter(id(x) for x in new)
        have = Counter(id(x) for x in current)
        for item in list(current):
            k = id(item)
            if have[k] > want[k]:
                have[k] -= 1
                del current[next(i for i, x in enumerate(current) if x is item)]
        for item in new:
            k = id(item)
            if have[k] < want[k]:
                have[k] += 1
                current.append(item)
        # keep the assigned order
        list.__setitem__(current, slice(None), new)

    def _fill_new_collection(self, obj: Any, new: list[Any]) -> bool:
        """The common case of ``Parent(children=[...])``: a collection assigned to an object
        outside any session with no value for it yet (the caller checks), of objects outside
        any session whose other side was never set.
        Then every append event reduces to setting that other side, done here in one pass.
        False (nothing done) when any item needs the general path."""
        back = self.back
        if back is not None and (back.uselist or not isinstance(obj, back.target.class_)):
            return False
        coll = InstrumentedList(obj, self, new)
        back_key = back.key if back is not None else None
        if not _core.fill_new_collection(coll._added, new, self.target.class_, back_key, obj):
            return False
        obj.__dict__[self.key] = coll
        return True

    # -- loading ----------------------------------------------------------------------------

    def _load(self, obj: Any) -> Any:
        if self.lazy == "raise" or self.lazy == "raise_on_sql":
            raise exc.InvalidRequestError(
                f"{self} is not loaded and is configured with lazy='raise'; load it with "
                f"select(...).options(selectinload({self.parent.class_.__name__}.{self.key}))"
            )
        session = _session_of(obj)
        if session is None:
            raise exc.DetachedInstanceError(
                f"{self} of {obj!r} is not loaded and the object is not bound to a Session; "
                "load it while the session is open or add the object to a session first"
            )
        if self.direction != "MANYTOONE":
            # an object expired as a whole is refreshed first, as SQLAlchemy does (which needs
            # its expired primary key), even where columns were set since: its row may be gone
            # (ObjectDeletedError). Not one expired by name, even in every column but the key
            d = obj.__dict__
            state = d.get("_retort_state")
            if state is not None and state.expired:
                cols = [c.key for c in self.parent.columns if not c.primary_key]
                missing = [k for k in cols if k not in d]
                if missing:
                    getattr(obj, missing[0])
                elif cols:
                    session._retort_load(obj, state)
        value = session._load_relationship(obj, self)
        if self.uselist:
            value = InstrumentedList(obj, self, value)
        obj.__dict__[self.key] = value
        pending = obj.__dict__.get("_retort_pending")
        if pending and self.key in pending and self.uselist:
            for add, item in pending.pop(self.key):
                if add:
                    value._append_quiet(item)
                else:
                    value._remove_quiet(item)
        return value

    def _join_info(self) -> Any:
        from retort.sql.elements import and_

        self._configure()
        if self.direction == "MANYTOMANY":
            raise exc.InvalidRequestError(f"join() along {self} is not supported yet")
        if self.direction == "MANYTOONE":
            crit = [parent_col == target_col for target_col, parent_col in self.pairs]
        else:
            crit = [target_col == parent_col for parent_col, target_col in self.pairs]
        return self.target.local_table, and_(*crit)


def _had_row(d: dict[str, Any]) -> bool:
    """Whether the object of `__dict__` `d` has a row, or had one until a rollback undid its
    INSERT (its values were committed then)."""
    state = d.get("_retort_state")
    return state is not None and (state.has_identity or state.expired_insert)


def _fresh(d: dict[str, Any], obj: Any) -> None:
    """Apply a pending expiry (commit, rollback, expire_all) before a relationship value is
    written into `obj`, so that the expiry does not wipe it later."""
    state = d.get("_retort_state")
    if state is not None and state.stale:
        state.apply_expiry(obj)
        d.pop("_retort_pending", None)


def _loaded_collection(obj: Any, key: str) -> Any:
    """`obj`'s collection `key` if loaded, else None. An empty collection read while the object
    was pending, untouched since, no longer counts once the object has its row: the database may
    hold members now."""
    d = obj.__dict__
    coll = d.get(key)
    if coll is not None and getattr(coll, "_virgin", False) and _has_identity(obj):
        del d[key]
        return None
    return coll


def _wholly_expired(obj: Any) -> bool:
    """Whether `obj` is expired as a whole (commit, rollback, expire_all or an expire() without
    names), rather than in some attributes, even all of them but the key."""
    state = obj.__dict__.get("_retort_state")
    return state is not None and bool(state.expired)


def _pending(obj: Any, key: str) -> list[tuple[bool, Any]]:
    """The changes made to `obj`'s unloaded collection `key` through the other side of
    back_populates: (True, item) appended, (False, item) removed."""
    pending: dict[str, list[tuple[bool, Any]]] = obj.__dict__.setdefault("_retort_pending", {})
    return pending.setdefault(key, [])


def _has_identity(obj: Any) -> bool:
    state = obj.__dict__.get("_retort_state")
    return bool(state is not None and state.has_identity)


def _session_of(obj: Any) -> Any:
    state = obj.__dict__.get("_retort_state")
    return None if state is None else state.session


def relationship(
    argument: Any = None,
    *,
    secondary: Any = None,
    back_populates: str | None = None,
    cascade: str = "save-update, merge",
    passive_deletes: bool | str = False,
    post_update: bool = False,
    foreign_keys: Any = None,
    remote_side: Any = None,
    order_by: Any = None,
    uselist: bool | None = None,
    lazy: str = "select",
    viewonly: bool = False,
) -> Any:
    """Declare a relationship: ``addresses: Mapped[list["Address"]] = relationship(...)``."""
    return RelationshipProperty(
        argument,
        secondary=secondary,
        back_populates=back_populates,
        cascade=cascade,
        passive_deletes=passive_deletes,
        post_update=post_update,
        foreign_keys=foreign_keys,
        remote_side=remote_side,
        order_by=order_by,
        uselist=uselist,
        lazy=lazy,
        viewonly=viewonly,
    )
