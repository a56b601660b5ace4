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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from retort import _core, exc
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


class MappedColumn:
    """What `mapped_column()` returns: a column declaration waiting for its class."""

    __slots__ = ("args", "explicit_nullable", "kwargs", "name", "type_")

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


class Mapper:
    """How a class maps to its table: columns in load order, primary key, the core's view."""

    def __init__(self, class_: type, table: Table, attr_columns: list[tuple[str, Column]]) -> None:
        self.class_ = class_
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
            frozenset(),
        )
        self.attrs: dict[str, InstrumentedAttribute[Any]] = {}
        self.sql_cache: dict[Any, Any] = {}
        table._retort_mapper = self  # type: ignore[attr-defined]
        _unconfigured.append(self)

    def _configure(self) -> None:
        for fk in self.local_table.foreign_keys:
            if fk.use_alter:
                # Like SQLAlchemy: a use_alter reference does not order the tables (it is how
                # mutual references are declared); rows that need it are ordered by the flush.
                continue
            target = fk.column
            parent = getattr(target.table, "_retort_mapper", None) if target is not None else None
            if parent is not None and parent is not self:
                self._core.add_dependency(
                    parent._core,
                    f"{self.local_table.name}.{fk.parent.name if fk.parent else '?'} "
                    f"references {target.table.name}.{target.name}",  # type: ignore[union-attr]
                )

    @property
    def entity(self) -> type:
        return self.class_

    @property
    def mapped_table(self) -> Table:
        return self.local_table

    def __repr__(self) -> str:
        return f"<Mapper {self.class_.__name__} -> {self.local_table.name}>"


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
    return Column(
        mc.name or name,
        type_,
        *mc.args,
        key=name,
        nullable=nullable,
        **kwargs,
    )


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
    mapper = Mapper(cls, table, attr_columns)
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
        try:
            core = type(self)._retort_core_mapper  # type: ignore[attr-defined]
        except AttributeError:
            raise exc.UnmappedClassError(
                f"{type(self).__name__} is not mapped: give it a __tablename__ and Mapped[...] "
                "columns"
            ) from None
        core.init_instance(self, kwargs)

    def __repr__(self) -> str:
        mapper = type(self).__dict__.get("__mapper__")
        if mapper is None:
            return object.__repr__(self)
        state = self.__dict__
        keys = ", ".join(f"{c.key}={state[c.key]!r}" for c in mapper.primary_key if c.key in state)
        return f"<{type(self).__name__} {keys or 'transient'} at {id(self):#x}>"


def class_mapper(cls: type) -> Mapper:
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
