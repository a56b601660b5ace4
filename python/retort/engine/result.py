"""Statement results: `Result`, `Row`, `ScalarResult`, `MappingResult`.

A `Result` is fully buffered: it fetches every row from the psycopg cursor when it is built,
applies the column types' result processors column by column, and (for the ORM) hands the
page of processed tuples to a `row_transform` that turns entity column spans into instances.
Rows are stored as plain tuples; a `Row` is only made when one is handed out, so
`scalars()` never builds rows at all.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from retort import exc

__all__ = ["MappingResult", "Result", "Row", "RowMapping", "ScalarResult"]

_T = TypeVar("_T")


class _TypeLike(Protocol):
    def result_processor(self) -> Callable[[Any], Any] | None: ...


class _ColumnLike(Protocol):
    """What a result needs of `retort.sql.compiler.ResultColumn`."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> _TypeLike | None: ...


class _CursorLike(Protocol):
    """The part of a psycopg cursor a result reads."""

    @property
    def description(self) -> Sequence[Any] | None: ...

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int) -> list[Any]: ...

    def close(self) -> None: ...


RowTransform = Callable[[list[tuple[Any, ...]]], Sequence[Sequence[Any]]]


# --------------------------------------------------------------------------------------------
# Row


class _Ambiguous:
    """keymap marker for a name that more than one column of the result has."""

    __slots__ = ()


_AMBIGUOUS: Any = _Ambiguous()


def _ambiguous(key: str) -> exc.InvalidRequestError:
    return exc.InvalidRequestError(
        f"ambiguous column name {key!r}: the result has more than one column of that name; "
        "give them distinct names with .label() or access them by position"
    )


class Row(tuple[Any, ...]):
    """One result row: a tuple whose values can also be read by column name.

    `row.name`, `row[0]`, `row._mapping["name"]`, `row._asdict()`, `row._fields`.
    Names that start with an underscore are reachable through `_mapping`, or as attributes
    when they do not collide with Row's own API.
    """

    __slots__ = ()

    _fields: tuple[str, ...] = ()
    _keymap: dict[str, int] = {}

    @property
    def _mapping(self) -> RowMapping:
        """A read-only mapping of column name to value."""
        return RowMapping(self, self._fields, self._keymap)

    @property
    def _t(self) -> tuple[Any, ...]:
        """The values as a plain tuple."""
        return tuple(self)

    def _tuple(self) -> tuple[Any, ...]:
        return tuple(self)

    def _asdict(self) -> dict[str, Any]:
        """A new dict of column name to value."""
        return dict(zip(self._fields, self, strict=True))

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not plain properties of the row class: those that
        # start with "_", ambiguous names, and names that are not columns at all
        idx = self._keymap.get(name)
        if idx is None:
            raise AttributeError(
                f"row has no column {name!r}; its columns are {', '.join(self._fields) or 'none'}"
            )
        if idx is _AMBIGUOUS:
            raise _ambiguous(name)
        return self[idx]

    def __reduce__(self) -> Any:
        return (_rebuild_row, (self._fields, tuple(self)))


_ROW_CLASSES: dict[tuple[str, ...], type[Row]] = {}
_ROW_CLASS_CACHE_SIZE = 1000


def _row_class(fields: tuple[str, ...]) -> type[Row]:
    """The Row subclass for one set of column names (cached: result shapes repeat)."""
    cls = _ROW_CLASSES.get(fields)
    if cls is not None:
        return cls
    keymap: dict[str, int] = {}
    for i, name in enumerate(fields):
        keymap[name] = _AMBIGUOUS if name in keymap else i
    ns: dict[str, Any] = {"__slots__": (), "_fields": fields, "_keymap": keymap}
    for name, idx in keymap.items():
        # C-level getters for the common names; the rest goes through __getattr__
        if idx is not _AMBIGUOUS and not name.startswith("_"):
            ns[name] = property(operator.itemgetter(idx))
    cls = type("Row", (Row,), ns)
    if len(_ROW_CLASSES) >= _ROW_CLASS_CACHE_SIZE:
        _ROW_CLASSES.clear()
    _ROW_CLASSES[fields] = cls
    return cls


def _rebuild_row(fields: tuple[str, ...], values: tuple[Any, ...]) -> Row:
    return _row_class(fields)(values)


class RowMapping(Mapping[str, Any]):
    """A read-only view of a row as column name → value (`row._mapping`, `result.mappings()`)."""

    __slots__ = ("_fields", "_keymap", "_values")

    def __init__(self, values: Sequence[Any], fields: tuple[str, ...], keymap: dict[str, int]):
        self._values = values
        self._fields = fields
        self._keymap = keymap

    def __getitem__(self, key: str) -> Any:
        idx = self._keymap.get(key) if isinstance(key, str) else None
        if idx is None:
            raise KeyError(key)
        if idx is _AMBIGUOUS:
            raise _ambiguous(key)
        return self._values[idx]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keymap)

    def __len__(self) -> int:
        return len(self._keymap)

    def __contains__(self, key: object) -> bool:
        return key in self._keymap

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {self[k]!r}" for k in self) + "}"


# --------------------------------------------------------------------------------------------
# Results


class _Filter:
    """Shared fetching logic of Result and its scalar/mapping views.

    The buffered rows and the read position live in the owning `Result`; a view reads the same
    buffer, so mixing `result.fetchone()` and `result.scalars().all()` consumes rows once.
    `_make` turns a stored tuple into the item handed out (None: hand the tuple out as is).
    """

    __slots__ = ("_make", "_result", "_seen", "_unique_key")

    _result: Result
    _make: Callable[[Any], Any] | None
    _seen: set[Any] | None
    _unique_key: Callable[[Any], Hashable] | None

    def _buffer(self) -> list[Any]:
        rows = self._result._rows
        if rows is None:
            raise self._result._closed_error()
        return rows

    def _take(self, limit: int | None) -> list[Any]:
        """Up to `limit` items (all when None), advancing the read position."""
        rows = self._buffer()
        res = self._result
        pos = res._pos
        make = self._make
        if self._seen is None:
            end = len(rows) if limit is None else min(len(rows), pos + limit)
            chunk = rows[pos:end]
            if end == len(rows):
                res._rows, res._pos = [], 0  # exhausted: let the rows go
            else:
                res._pos = end
            return chunk if make is None else list(map(make, chunk))
        out: list[Any] = []
        seen = self._seen
        key = self._unique_key
        n = len(rows)
        while pos < n and (limit is None or len(out) < limit):
            item = rows[pos] if make is None else make(rows[pos])
            pos += 1
            k = item if key is None else key(item)
            if k not in seen:
                seen.add(k)
                out.append(item)
        res._pos = pos
        return out

    def _set_unique(self, strategy: Callable[[Any], Hashable] | None) -> None:
        self._seen = set()
        self._unique_key = strategy

    # -- fetching ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        res = self._result
        make = self._make
        while True:
            rows = res._rows
            if rows is None:
                raise res._closed_error()
            pos = res._pos
            if pos >= len(rows):
                return
            res._pos = pos + 1
            item = rows[pos] if make is None else make(rows[pos])
            seen = self._seen
            if seen is not None:
                k = item if self._unique_key is None else self._unique_key(item)
                if k in seen:
                    continue
                seen.add(k)
            yield item

    def all(self) -> list[Any]:
        """Every remaining item."""
        return self._take(None)

    def fetchall(self) -> list[Any]:
        return self._take(None)

    def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to `size` items (default 1); an empty list when exhausted."""
        return self._take(1 if size is None else size)

    def partitions(self, size: int | None = None) -> Iterator[list[Any]]:
        """Lists of up to `size` items (default 100) until the result is exhausted."""
        n = 100 if size is None else size
        while True:
            part = self._take(n)
            if not part:
                return
            yield part

    def first(self) -> Any:
        """The first item or None; the result is closed afterwards."""
        items = self._take(1)
        self._result.close()
        return items[0] if items else None

    def one_or_none(self) -> Any:
        """The only item, None if there is none; MultipleResultsFound if there are more."""
        items = self._take(2)
        self._result.close()
        if len(items) > 1:
            raise _multiple(self._noun)
        return items[0] if items else None

    def one(self) -> Any:
        """The only item; NoResultFound or MultipleResultsFound otherwise."""
        items = self._take(2)
        self._result.close()
        if not items:
            raise exc.NoResultFound(
                f"expected exactly one {self._noun} but the query returned none; "
                "use one_or_none() or first() when no result is acceptable"
            )
        if len(items) > 1:
            raise _multiple(self._noun)
        return items[0]

    _noun = "row"


def _multiple(noun: str) -> exc.MultipleResultsFound:
    return exc.MultipleResultsFound(
        f"expected at most one {noun} but the query returned more than one; narrow the WHERE "
        "clause, add LIMIT, or use first() to take the first one"
    )


class Result(_Filter):
    """The outcome of `Connection.execute()` or `exec_driver_sql()`.

    Iterate it for `Row`s, or call `all() first() one() one_or_none() scalar() scalar_one()
    scalar_one_or_none() scalars() mappings() fetchone() fetchmany() fetchall() unique()`.
    Statements that return no rows (INSERT without RETURNING, DDL, ...) give a result whose
    fetch methods raise `ResourceClosedError`; `rowcount` is the number of rows affected.
    """

    __slots__ = ("__weakref__", "_keys", "_pos", "_returns_rows", "_row_cls", "_rowcount", "_rows")

    _rows: list[Any] | None
    _keys: tuple[str, ...]
    _row_cls: type[Row]

    def __init__(
        self,
        cursor: _CursorLike | None,
        columns: Sequence[_ColumnLike] | None = None,
        *,
        row_transform: RowTransform | None = None,
        keys: Sequence[str] | None = None,
        page: int | None = None,
    ) -> None:
        """Fetch every row of `cursor` (then close it).

        `columns` are the compiled result columns (names and types); when their count matches
        the cursor's, their names are the keys and their types' result processors are applied.
        `row_transform` receives a page (list) of processed row tuples and returns the rows to
        hand out; `keys` names the columns of the transformed rows. With `page`, the rows are
        fetched and transformed `page` at a time (when the transform does not need them all
        at once): each page's row tuples are freed before the next is fetched, which spares
        the garbage collector most of them on a large load.
        """
        self._result = self
        self._make = None
        self._seen = None
        self._unique_key = None
        self._pos = 0
        description = cursor.description if cursor is not None else None
        self._rowcount = cursor.rowcount if cursor is not None else -1
        if description is None:
            self._returns_rows = False
            self._rows = None
            self._keys = ()
            if cursor is not None:
                cursor.close()
            self._row_cls = Row
            return

        self._returns_rows = True
        processed = columns is not None and len(columns) == len(description)
        if processed:
            names = tuple(c.name for c in columns)  # type: ignore[union-attr]
        else:
            names = tuple(d.name for d in description)
        assert cursor is not None
        pages: Iterable[list[Any]] = (
            iter(functools.partial(cursor.fetchmany, page), [])
            if page is not None and row_transform is not None
            else (cursor.fetchall(),)
        )
        rows: list[Any] | None = None
        for batch in pages:
            if batch and processed:
                batch = _process(batch, columns)  # type: ignore[arg-type]
            if batch and row_transform is not None:
                batch = list(row_transform(batch))
            if rows is None:
                rows = batch  # one page (or all the rows): kept as fetched
            else:
                rows.extend(batch)
        cursor.close()
        self._rows = rows if rows is not None else []
        self._keys = tuple(keys) if keys is not None else names
        self._row_cls = _row_class(self._keys)
        self._make = self._row_cls

    @classmethod
    def from_rows(cls, keys: Sequence[str], rows: Sequence[Sequence[Any]]) -> Result:
        """A result over rows already in memory (for results assembled in Python)."""
        res = cls(None)
        res._returns_rows = True
        res._rows = [tuple(r) for r in rows]
        res._keys = tuple(keys)
        res._row_cls = res._make = _row_class(res._keys)
        res._rowcount = len(res._rows)
        return res

    # -- state ---------------------------------------------------------------------------

    @property
    def returns_rows(self) -> bool:
        return self._returns_rows

    @property
    def closed(self) -> bool:
        return self._rows is None

    @property
    def rowcount(self) -> int:
        """Rows affected by INSERT/UPDATE/DELETE, rows returned by SELECT; -1 if unknown."""
        return self._rowcount

    def keys(self) -> list[str]:
        """The column names of the rows."""
        return list(self._keys)

    def close(self) -> None:
        """Discard the remaining rows; fetching afterwards raises ResourceClosedError."""
        self._rows = None

    def _closed_error(self) -> exc.ResourceClosedError:
        if not self._returns_rows:
            return exc.ResourceClosedError(
                "this result does not return rows (the statement was not a SELECT and had no "
                "RETURNING clause); read .rowcount instead"
            )
        return exc.ResourceClosedError(
            "this result is closed: first(), one(), one_or_none() and scalar() close it, as "
            "does close(); keep the value they returned or run the statement again"
        )

    def __enter__(self) -> Result:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- rows ----------------------------------------------------------------------------

    def unique(self, strategy: Callable[[Any], Hashable] | None = None) -> Result:
        """Skip rows equal to one already handed out (or with an equal `strategy(row)`)."""
        self._set_unique(strategy)
        return self

    def fetchone(self) -> Row | None:
        """The next row, or None when exhausted."""
        items = self._take(1)
        return items[0] if items else None

    def tuples(self) -> Result:
        """This result (rows are already tuples); for typing parity with SQLAlchemy."""
        return self

    # -- scalars -------------------------------------------------------------------------

    def scalars(self, index: int = 0) -> ScalarResult:
        """A view handing out one column (the first by default) instead of rows."""
        return ScalarResult(self, index)

    def mappings(self) -> MappingResult:
        """A view handing out each row as a read-only mapping of column name to value."""
        return MappingResult(self)

    def scalar(self) -> Any:
        """The first column of the first row, or None without rows; closes the result."""
        rows = self._buffer()
        value = rows[self._pos][0] if self._pos < len(rows) else None
        self.close()
        return value

    def scalar_one(self) -> Any:
        """The first column of the only row; NoResultFound or MultipleResultsFound otherwise."""
        return self.scalars().one()

    def scalar_one_or_none(self) -> Any:
        """The first column of the only row, None without rows; MultipleResultsFound if more."""
        return self.scalars().one_or_none()


class ScalarResult(_Filter):
    """One column of a `Result`: `all() first() one() one_or_none() fetchmany() unique()`."""

    __slots__ = ()
    _noun = "value"

    def __init__(self, result: Result, index: int = 0) -> None:
        self._result = result
        self._make = operator.itemgetter(index)
        # result.unique().scalars(): unique values, whatever the rows' strategy was
        self._seen = None if result._seen is None else set()
        self._unique_key = None

    def unique(self, strategy: Callable[[Any], Hashable] | None = None) -> ScalarResult:
        """Skip values equal to one already handed out (or with an equal `strategy(value)`)."""
        self._set_unique(strategy)
        return self

    def fetchone(self) -> Any:
        items = self._take(1)
        return items[0] if items else None


class MappingResult(_Filter):
    """A `Result` whose rows are handed out as `RowMapping`s."""

    __slots__ = ()

    def __init__(self, result: Result) -> None:
        self._result = result
        fields, keymap = result._keys, result._row_cls._keymap
        self._make = lambda values: RowMapping(values, fields, keymap)
        self._seen = None if result._seen is None else set()
        self._unique_key = None if result._seen is None else _mapping_identity

    def keys(self) -> list[str]:
        return self._result.keys()

    def unique(self, strategy: Callable[[Any], Hashable] | None = None) -> MappingResult:
        """Skip rows equal to one already handed out (or with an equal `strategy(mapping)`)."""
        self._set_unique(strategy if strategy is not None else _mapping_identity)
        return self

    def fetchone(self) -> RowMapping | None:
        items = self._take(1)
        return items[0] if items else None


def _mapping_identity(m: RowMapping) -> Hashable:
    return tuple(m._values)


# --------------------------------------------------------------------------------------------
# result processing


def _process(rows: list[Any], columns: Sequence[_ColumnLike]) -> list[Any]:
    """Apply each column type's result processor; NULLs are never passed to a processor.

    Works column by column so that columns without a processor cost nothing per row."""
    procs: list[tuple[int, Callable[[Any], Any]]] = []
    for i, col in enumerate(columns):
        type_ = col.type
        if type_ is not None:
            proc = type_.result_processor()
            if proc is not None:
                procs.append((i, proc))
    if not procs:
        return rows
    cols: list[Sequence[Any]] = list(
        zip(*rows, strict=False)
    )  # rows of a result have equal lengths
    for i, proc in procs:
        cols[i] = [None if v is None else proc(v) for v in cols[i]]
    return list(zip(*cols, strict=False))
