"""Result, Row, ScalarResult and MappingResult (no database needed)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from retort import exc
from retort.engine import Result, Row
from retort.engine.result import RowMapping


@dataclass
class _Desc:
    name: str


class FakeCursor:
    """Just enough of a psycopg cursor for Result."""

    def __init__(self, names: list[str] | None, rows: list[tuple[Any, ...]], rowcount: int = -1):
        self.description = None if names is None else [_Desc(n) for n in names]
        self._rows = rows
        self.rowcount = len(rows) if rowcount == -1 and names is not None else rowcount
        self.closed = False

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def close(self) -> None:
        self.closed = True


class Upper:
    def result_processor(self) -> Callable[[Any], Any] | None:
        return str.upper


class Exact:
    def result_processor(self) -> Callable[[Any], Any] | None:
        return None


@dataclass
class Col:
    name: str
    type: Any


def users(n: int = 3) -> Result:
    return Result.from_rows(["id", "name"], [(i, f"u{i}") for i in range(1, n + 1)])


def test_rows_are_named_tuples() -> None:
    row: Any = users().first()
    assert type(row).__mro__[1:3] == (Row, tuple)
    assert tuple(row) == (1, "u1") and row[1] == "u1" and row == (1, "u1")
    assert (row.id, row.name) == (1, "u1")
    assert row._fields == ("id", "name")
    assert row._asdict() == {"id": 1, "name": "u1"}
    assert row._mapping["name"] == "u1" and dict(row._mapping) == {"id": 1, "name": "u1"}
    assert row._t == (1, "u1") and type(row._t) is tuple
    assert repr(row) == "(1, 'u1')"
    assert hash(row) == hash((1, "u1"))
    with pytest.raises(AttributeError, match="no column 'nope'; its columns are id, name"):
        row.nope  # noqa: B018
    with pytest.raises(KeyError):
        row._mapping["nope"]


def test_row_column_names_win_over_tuple_methods_and_underscore_names_work() -> None:
    row = Result.from_rows(["count", "index", "_private"], [(3, 4, 5)]).one()
    assert (row.count, row.index, row._private) == (3, 4, 5)


def test_ambiguous_names_raise() -> None:
    row = Result.from_rows(["id", "id", "x"], [(1, 2, 3)]).one()
    assert row == (1, 2, 3) and row.x == 3
    with pytest.raises(exc.InvalidRequestError, match="ambiguous column name 'id'"):
        row.id  # noqa: B018
    with pytest.raises(exc.InvalidRequestError, match="ambiguous"):
        row._mapping["id"]


def test_rows_pickle() -> None:
    row = users().first()
    copy = pickle.loads(pickle.dumps(row))
    assert copy == row and copy.name == "u1" and copy._fields == row._fields


def test_one_and_friends() -> None:
    assert users(1).one() == (1, "u1")
    assert users(1).one_or_none() == (1, "u1")
    assert users(0).one_or_none() is None
    assert users(0).first() is None
    with pytest.raises(exc.NoResultFound, match=r"exactly one row.*returned none"):
        users(0).one()
    with pytest.raises(exc.MultipleResultsFound, match="more than one"):
        users(2).one()
    with pytest.raises(exc.MultipleResultsFound):
        users(2).one_or_none()


def test_scalars() -> None:
    assert users().scalar() == 1
    assert users(0).scalar() is None
    assert users(1).scalar_one() == 1
    assert users(0).scalar_one_or_none() is None
    with pytest.raises(exc.NoResultFound, match="exactly one value"):
        users(0).scalar_one()
    with pytest.raises(exc.MultipleResultsFound, match="at most one value"):
        users(2).scalar_one()
    with pytest.raises(exc.MultipleResultsFound):
        users(2).scalar_one_or_none()
    assert users().scalars().all() == [1, 2, 3]
    assert users().scalars(1).all() == ["u1", "u2", "u3"]
    assert list(users().scalars()) == [1, 2, 3]
    assert users().scalars().first() == 1
    assert users(1).scalars().one() == 1
    assert users(0).scalars().one_or_none() is None
    s = users().scalars()
    assert s.fetchone() == 1 and s.fetchmany(5) == [2, 3] and s.fetchone() is None


def test_mappings() -> None:
    m = users().mappings()
    assert m.keys() == ["id", "name"]
    first = m.fetchone()
    assert isinstance(first, RowMapping) and first == {"id": 1, "name": "u1"}
    assert [dict(x) for x in m.all()] == [{"id": 2, "name": "u2"}, {"id": 3, "name": "u3"}]
    assert users(1).mappings().one()["name"] == "u1"
    with pytest.raises(exc.NoResultFound):
        users(0).mappings().one()
    with pytest.raises(exc.MultipleResultsFound):
        users(2).mappings().one()


def test_fetching_consumes_rows_once_across_views() -> None:
    r = users(5)
    assert r.fetchone() == (1, "u1")
    assert r.fetchmany(2) == [(2, "u2"), (3, "u3")]
    assert r.scalars().fetchone() == 4
    assert [tuple(x) for x in r] == [(5, "u5")]
    assert r.fetchone() is None and r.all() == [] and r.fetchmany(3) == []


def test_iteration_can_stop_and_resume() -> None:
    r = users(4)
    for row in r:
        if row.id == 2:
            break
    assert r.all() == [(3, "u3"), (4, "u4")]


def test_partitions() -> None:
    assert [len(p) for p in users(5).partitions(2)] == [2, 2, 1]


def test_closing() -> None:
    r = users()
    r.first()
    assert r.closed
    with pytest.raises(exc.ResourceClosedError, match="closed"):
        r.all()
    r = users()
    r.close()
    with pytest.raises(exc.ResourceClosedError):
        list(r)
    with users() as r:
        pass
    assert r.closed


def test_unique() -> None:
    rows = [(1, "a"), (1, "a"), (2, "b"), (1, "c")]
    assert Result.from_rows(["id", "n"], rows).unique().all() == [(1, "a"), (2, "b"), (1, "c")]
    r = Result.from_rows(["id", "n"], rows).unique(lambda row: row.id)
    assert r.all() == [(1, "a"), (2, "b")]
    assert Result.from_rows(["id", "n"], rows).scalars().unique().all() == [1, 2]
    assert Result.from_rows(["id", "n"], rows).unique().scalars().all() == [1, 2]
    with pytest.raises(exc.MultipleResultsFound):
        Result.from_rows(["id", "n"], rows).scalars().unique().one()
    assert Result.from_rows(["id"], [(1,), (1,)]).scalars().unique().one() == 1
    m = Result.from_rows(["id", "n"], rows).mappings().unique().all()
    assert [tuple(x.values()) for x in m] == [(1, "a"), (2, "b"), (1, "c")]
    assert [x.id for x in Result.from_rows(["id", "n"], rows).unique()] == [1, 2, 1]


def test_cursor_result_closes_cursor_and_uses_description_names() -> None:
    cur = FakeCursor(["a", "b"], [(1, 2)])
    r = Result(cur)
    assert cur.closed and r.keys() == ["a", "b"] and r.rowcount == 1 and r.returns_rows
    assert r.one().b == 2


def test_result_without_rows() -> None:
    r = Result(FakeCursor(None, [], rowcount=7))
    assert r.rowcount == 7 and not r.returns_rows and r.keys() == []
    with pytest.raises(exc.ResourceClosedError, match=r"does not return rows.*rowcount"):
        r.all()
    with pytest.raises(exc.ResourceClosedError):
        r.scalar()


def test_result_processors_apply_per_column_and_skip_nulls() -> None:
    cols = [Col("a", Upper()), Col("b", Exact()), Col("c", None)]
    cur = FakeCursor(["x", "y", "z"], [("p", "q", "r"), (None, "s", "t")])
    r = Result(cur, cols)
    assert r.keys() == ["a", "b", "c"]  # names come from the compiled columns
    assert r.all() == [("P", "q", "r"), (None, "s", "t")]


def test_processors_are_skipped_when_columns_do_not_match() -> None:
    r = Result(FakeCursor(["x", "y"], [("p", "q")]), [Col("a", Upper())])
    assert r.keys() == ["x", "y"] and r.one() == ("p", "q")


def test_no_processing_keeps_fetched_rows() -> None:
    rows = [("p",), ("q",)]
    r = Result(FakeCursor(["x"], rows), [Col("a", Exact())])
    assert r._rows is rows  # nothing copied when no column needs processing


def test_row_transform_gets_one_page_of_processed_rows() -> None:
    pages: list[list[tuple[Any, ...]]] = []

    def transform(page: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        pages.append(page)
        return [(f"obj{a}", b) for a, b in page]

    cur = FakeCursor(["x", "y"], [("a", 1), ("b", 2)])
    r = Result(cur, [Col("x", Upper()), Col("y", None)], row_transform=transform, keys=["U", "y"])
    assert pages == [[("A", 1), ("B", 2)]]
    rows = r.all()
    assert rows == [("objA", 1), ("objB", 2)] and rows[0].U == "objA"
    r = Result(FakeCursor(["x", "y"], [("a", 1)]), row_transform=transform, keys=["U", "y"])
    assert r.scalars().all() == ["obja"]
    # an empty result never calls the transform
    Result(FakeCursor(["x"], []), row_transform=transform)
    assert len(pages) == 2
