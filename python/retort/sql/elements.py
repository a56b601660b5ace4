"""The expression language: columns, operators, parameters, functions and text fragments.

Elements are immutable trees. They know nothing about SQL text: `retort.sql.compiler` walks
them (dispatching on ``__visit_name__``) to produce SQL for psycopg. Anything with a
``__clause_element__()`` method (the mapped attributes of `retort.mapping`) is accepted
wherever a column is, and `ColumnOperators` gives such classes the Python operators.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from retort import exc
from retort.sql import types as sqltypes

if TYPE_CHECKING:
    from retort.sql.compiler import Compiled

__all__ = [
    "BinaryExpression",
    "BindParameter",
    "BooleanClauseList",
    "Case",
    "Cast",
    "ClauseElement",
    "ClauseList",
    "ColumnElement",
    "ColumnOperators",
    "FromClause",
    "Function",
    "Grouping",
    "Label",
    "Null",
    "TextClause",
    "UnaryExpression",
    "and_",
    "asc",
    "between",
    "bindparam",
    "case",
    "cast",
    "desc",
    "distinct",
    "false",
    "func",
    "literal",
    "literal_column",
    "not_",
    "null",
    "nulls_first",
    "nulls_last",
    "or_",
    "text",
    "true",
]

# Operator precedence, lowest first (PostgreSQL's table). Atoms bind tightest.
P_ORDER = 0  # DESC, NULLS FIRST, AS: only ever at the top of a column or ORDER BY item
P_OR = 1
P_AND = 2
P_NOT = 3
P_IS = 4
P_COMPARE = 5
P_MATCH = 6  # IN, LIKE, ILIKE, BETWEEN
P_OTHER = 7  # ||, ->, ->>, user operators
P_ADD = 8
P_MUL = 9
P_UNARY = 10
P_ATOM = 100

_OPERATORS: dict[str, int] = {
    "OR": P_OR,
    "AND": P_AND,
    "IS": P_IS,
    "IS NOT": P_IS,
    "IS DISTINCT FROM": P_IS,
    "IS NOT DISTINCT FROM": P_IS,
    "=": P_COMPARE,
    "<>": P_COMPARE,
    "<": P_COMPARE,
    "<=": P_COMPARE,
    ">": P_COMPARE,
    ">=": P_COMPARE,
    "IN": P_MATCH,
    "NOT IN": P_MATCH,
    "LIKE": P_MATCH,
    "NOT LIKE": P_MATCH,
    "ILIKE": P_MATCH,
    "NOT ILIKE": P_MATCH,
    "= ANY": P_COMPARE,
    "<> ALL": P_COMPARE,
    "||": P_OTHER,
    "@>": P_OTHER,
    "->": P_OTHER,
    "->>": P_OTHER,
    "+": P_ADD,
    "-": P_ADD,
    "*": P_MUL,
    "/": P_MUL,
    "%": P_MUL,
}

# The operator that negates each comparison, so not_(a == b) reads "a <> b".
_NEGATIONS: dict[str, str] = {
    "=": "<>",
    "<>": "=",
    "<": ">=",
    ">=": "<",
    ">": "<=",
    "<=": ">",
    "IN": "NOT IN",
    "NOT IN": "IN",
    "LIKE": "NOT LIKE",
    "NOT LIKE": "LIKE",
    "ILIKE": "NOT ILIKE",
    "NOT ILIKE": "ILIKE",
    "IS": "IS NOT",
    "IS NOT": "IS",
    "IS DISTINCT FROM": "IS NOT DISTINCT FROM",
    "IS NOT DISTINCT FROM": "IS DISTINCT FROM",
    "= ANY": "<> ALL",
    "<> ALL": "= ANY",
}

_ASSOCIATIVE = frozenset({"AND", "OR", "+", "*", "||"})


class ClauseElement:
    """Base of every SQL construct."""

    __visit_name__: ClassVar[str] = "clause"
    _precedence: ClassVar[int] = P_ATOM
    _is_select: ClassVar[bool] = False

    def get_children(self) -> Iterable[ClauseElement]:
        return ()

    def _from_objects(self) -> list[FromClause]:
        """The tables (FROM items) this element refers to, in order of appearance."""
        out: list[FromClause] = []
        for child in self.get_children():
            out.extend(child._from_objects())
        return out

    def compile(self, params: Any = None) -> Compiled:
        """Compile to SQL text and parameters for psycopg (see `retort.sql.compiler`)."""
        from retort.sql.compiler import compile as _compile

        return _compile(self, params)

    def __str__(self) -> str:
        return self.compile().sql

    def __clause_element__(self) -> ClauseElement:
        return self

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of a SQL expression ({type(self).__name__}) is not defined; "
            "combine conditions with and_(), or_(), not_() instead of and/or/not"
        )


class FromClause(ClauseElement):
    """Something that can appear in a FROM clause: a table, a join, an alias."""

    __visit_name__ = "fromclause"

    def _from_objects(self) -> list[FromClause]:
        return [self]

    def __bool__(self) -> bool:
        return True  # tables, joins and aliases are not conditions

    def _tables(self) -> list[FromClause]:
        """The innermost FROM items this one covers (a join covers both of its sides)."""
        return [self]

    @property
    def _columns_list(self) -> list[ColumnElement]:
        raise NotImplementedError


def _scalar_subquery(select: Any) -> ColumnElement:
    """A select (duck-typed, so this module need not import selectable) as a value."""
    result: ColumnElement = select.scalar_subquery()
    return result


def _clause(value: Any) -> Any:
    """Unwrap objects that stand for an element, such as mapped attributes."""
    ce = getattr(value, "__clause_element__", None)
    if ce is not None and not isinstance(value, type):
        return ce()
    return value


class ColumnOperators:
    """Python operators that build SQL expressions.

    Mixed into `ColumnElement`, and usable by any class that defines ``__clause_element__()``
    returning a `ColumnElement` (mapped attributes inherit it). ``__eq__`` builds an
    expression, so hashing is by identity.
    """

    __slots__ = ()

    def __clause_element__(self) -> Any:
        raise NotImplementedError

    def _col(self) -> ColumnElement:
        element = self.__clause_element__()
        if not isinstance(element, ColumnElement):
            raise exc.ArgumentError(f"{self!r} does not stand for a column expression")
        return element

    __hash__ = object.__hash__
    # __getitem__ (JSON paths) must not make columns look iterable.
    __iter__ = None

    def __getitem__(self, index: Any) -> ColumnElement:
        col = self._col()
        if isinstance(col.type, sqltypes.JSON):
            return JSONElement(col, index, astext=False)
        raise TypeError(
            f"{col!r} is not subscriptable; only JSON columns support [] (JSON path access)"
        )

    def __eq__(self, other: Any) -> ColumnElement:  # type: ignore[override]
        return self._col()._compare("=", other)

    def __ne__(self, other: Any) -> ColumnElement:  # type: ignore[override]
        return self._col()._compare("<>", other)

    def __lt__(self, other: Any) -> ColumnElement:
        return self._col()._compare("<", other)

    def __le__(self, other: Any) -> ColumnElement:
        return self._col()._compare("<=", other)

    def __gt__(self, other: Any) -> ColumnElement:
        return self._col()._compare(">", other)

    def __ge__(self, other: Any) -> ColumnElement:
        return self._col()._compare(">=", other)

    def is_(self, other: Any) -> ColumnElement:
        return self._col()._is("IS", other)

    def is_not(self, other: Any) -> ColumnElement:
        return self._col()._is("IS NOT", other)

    isnot = is_not

    def is_distinct_from(self, other: Any) -> ColumnElement:
        return self._col()._compare("IS DISTINCT FROM", other)

    def is_not_distinct_from(self, other: Any) -> ColumnElement:
        return self._col()._compare("IS NOT DISTINCT FROM", other)

    def in_(self, other: Any) -> ColumnElement:
        return self._col()._in("IN", other)

    def not_in(self, other: Any) -> ColumnElement:
        return self._col()._in("NOT IN", other)

    notin_ = not_in

    def like(self, other: Any, escape: str | None = None) -> ColumnElement:
        return self._col()._like("LIKE", other, escape)

    def not_like(self, other: Any, escape: str | None = None) -> ColumnElement:
        return self._col()._like("NOT LIKE", other, escape)

    notlike = not_like

    def ilike(self, other: Any, escape: str | None = None) -> ColumnElement:
        return self._col()._like("ILIKE", other, escape)

    def not_ilike(self, other: Any, escape: str | None = None) -> ColumnElement:
        return self._col()._like("NOT ILIKE", other, escape)

    notilike = not_ilike

    def startswith(self, other: Any, autoescape: bool = False) -> ColumnElement:
        return self._col()._pattern(other, "", "%", autoescape)

    def endswith(self, other: Any, autoescape: bool = False) -> ColumnElement:
        return self._col()._pattern(other, "%", "", autoescape)

    def contains(self, other: Any, autoescape: bool = False) -> ColumnElement:
        """LIKE '%value%' for strings; ``@>`` (containment) for JSON and ARRAY columns."""
        col = self._col()
        if isinstance(col.type, sqltypes.JSON | sqltypes.ARRAY):
            right = BindParameter(None, other, col.type, name_hint=col._bind_hint)
            return BinaryExpression(col, right, "@>", type_=sqltypes.Boolean())
        return col._pattern(other, "%", "%", autoescape)

    def between(self, lower: Any, upper: Any, symmetric: bool = False) -> ColumnElement:
        col = self._col()
        return Between(col, col._bind(lower), col._bind(upper), symmetric=symmetric)

    def asc(self) -> UnaryExpression:
        return UnaryExpression(self._col(), modifier="ASC")

    def desc(self) -> UnaryExpression:
        return UnaryExpression(self._col(), modifier="DESC")

    def nulls_first(self) -> UnaryExpression:
        return UnaryExpression(self._col(), modifier="NULLS FIRST")

    def nulls_last(self) -> UnaryExpression:
        return UnaryExpression(self._col(), modifier="NULLS LAST")

    nullsfirst = nulls_first
    nullslast = nulls_last

    def distinct(self) -> UnaryExpression:
        col = self._col()
        return UnaryExpression(col, operator="DISTINCT", type_=col.type)

    def label(self, name: str) -> Label:
        return Label(name, self._col())

    def cast(self, type_: Any) -> Cast:
        return Cast(self._col(), type_)

    def op(self, opstring: str, precedence: int = P_OTHER) -> Any:
        """A custom binary operator: ``col.op("@>")(other)``."""
        col = self._col()

        def build(other: Any) -> BinaryExpression:
            return BinaryExpression(col, col._bind(other), opstring, precedence=precedence)

        return build

    def concat(self, other: Any) -> ColumnElement:
        col = self._col()
        return BinaryExpression(col, col._bind(other), "||", type_=sqltypes.Text())

    def __add__(self, other: Any) -> ColumnElement:
        return self._col()._arith("+", other)

    def __radd__(self, other: Any) -> ColumnElement:
        return self._col()._arith("+", other, reverse=True)

    def __sub__(self, other: Any) -> ColumnElement:
        return self._col()._arith("-", other)

    def __rsub__(self, other: Any) -> ColumnElement:
        return self._col()._arith("-", other, reverse=True)

    def __mul__(self, other: Any) -> ColumnElement:
        return self._col()._arith("*", other)

    def __rmul__(self, other: Any) -> ColumnElement:
        return self._col()._arith("*", other, reverse=True)

    def __truediv__(self, other: Any) -> ColumnElement:
        return self._col()._arith("/", other)

    def __rtruediv__(self, other: Any) -> ColumnElement:
        return self._col()._arith("/", other, reverse=True)

    def __mod__(self, other: Any) -> ColumnElement:
        return self._col()._arith("%", other)

    def __rmod__(self, other: Any) -> ColumnElement:
        return self._col()._arith("%", other, reverse=True)

    def __neg__(self) -> ColumnElement:
        col = self._col()
        return UnaryExpression(col, operator="-", type_=col.type, precedence=P_UNARY)

    def __invert__(self) -> ClauseElement:
        return not_(self._col())

    def __and__(self, other: Any) -> ClauseElement:
        return and_(self._col(), other)

    def __or__(self, other: Any) -> ClauseElement:
        return or_(self._col(), other)


class ColumnElement(ColumnOperators, ClauseElement):
    """An expression with a value and a type: a column, a parameter, a function call, ..."""

    __visit_name__ = "column_element"
    type: sqltypes.TypeEngine = sqltypes.NullType()
    #: Name for the result column when this is selected without a label.
    _result_name: str | None = None

    def __clause_element__(self) -> ColumnElement:
        return self

    # Operator builders; `ColumnOperators` forwards here.

    def _bind(self, value: Any) -> ColumnElement:
        """Coerce the right-hand side of an operator, typing literal values like this side."""
        value = _clause(value)
        if isinstance(value, ColumnElement):
            return value
        if isinstance(value, ClauseElement):
            if value._is_select:
                return _scalar_subquery(value)
            if isinstance(value, TextClause):
                return Grouping(value)
            raise exc.ArgumentError(f"{value!r} cannot be used as a value in an expression")
        return BindParameter(None, value, type_=self.type, name_hint=self._bind_hint)

    @property
    def _bind_hint(self) -> str | None:
        """Base name for anonymous parameters compared with this (``age`` → ``age_1``)."""
        return self._result_name

    def _compare(self, op: str, other: Any) -> ColumnElement:
        other = _clause(other)
        if other is None or isinstance(other, Null):
            if op in ("=", "IS NOT DISTINCT FROM"):
                return BinaryExpression(self, Null(), "IS", type_=sqltypes.Boolean())
            if op in ("<>", "IS DISTINCT FROM"):
                return BinaryExpression(self, Null(), "IS NOT", type_=sqltypes.Boolean())
            raise exc.ArgumentError(
                f"cannot compare with None using {op!r}; only ==, != and is_() accept None"
            )
        return BinaryExpression(self, self._bind(other), op, type_=sqltypes.Boolean())

    def _is(self, op: str, other: Any) -> ColumnElement:
        other = _clause(other)
        if other is None:
            other = Null()
        elif other is True:
            other = True_()
        elif other is False:
            other = False_()
        if not isinstance(other, (Null, True_, False_)):
            raise exc.ArgumentError(
                "is_() / is_not() compare with None, True, False, null(), true() or false(); "
                "use == or != for other values"
            )
        return BinaryExpression(self, other, op, type_=sqltypes.Boolean())

    def _in(self, op: str, other: Any) -> ColumnElement:
        other = _clause(other)
        if isinstance(other, BindParameter):
            # One parameter holding a list: x = ANY(%(p)s::type[]), so the SQL text does not
            # depend on the list's length; an empty list gives false (true for NOT IN).
            bind = other
            if isinstance(bind.type, sqltypes.NullType):
                bind = copy.copy(bind)
                bind.type = sqltypes.ARRAY(self.type) if _castable(self.type) else bind.type
            return BinaryExpression(
                self,
                Grouping(bind),
                "= ANY" if op == "IN" else "<> ALL",
                type_=sqltypes.Boolean(),
            )
        if isinstance(other, ClauseElement):
            if other._is_select:
                return BinaryExpression(
                    self,
                    _scalar_subquery(other),
                    op,
                    type_=sqltypes.Boolean(),
                )
            raise exc.ArgumentError(
                f"in_() takes a list of values or a select(), got {type(other).__name__}"
            )
        if isinstance(other, (str, bytes)) or not isinstance(other, Iterable):
            raise exc.ArgumentError(f"in_() takes a list of values or a select(), got {other!r}")
        items = [self._bind(v) for v in other]
        if not items:
            # x IN () is false and x NOT IN () is true, even when x is NULL.
            return False_() if op == "IN" else True_()
        return BinaryExpression(self, Grouping(ClauseList(items)), op, type_=sqltypes.Boolean())

    def _like(self, op: str, other: Any, escape: str | None) -> ColumnElement:
        right = self._bind_as(other, sqltypes.String())
        return BinaryExpression(self, right, op, type_=sqltypes.Boolean(), escape=escape)

    def _bind_as(self, value: Any, type_: sqltypes.TypeEngine) -> ColumnElement:
        value = _clause(value)
        if isinstance(value, ClauseElement):
            return self._bind(value)
        return BindParameter(None, value, type_=type_, name_hint=self._bind_hint)

    def _pattern(self, other: Any, before: str, after: str, autoescape: bool) -> ColumnElement:
        if autoescape:
            if not isinstance(other, str):
                raise exc.ArgumentError("autoescape=True needs a plain string value")
            other = other.replace("/", "//").replace("%", "/%").replace("_", "/_")
        right: ColumnElement = self._bind_as(other, sqltypes.String())
        if before:
            right = BinaryExpression(literal_column("'%'"), right, "||")
        if after:
            right = BinaryExpression(right, literal_column("'%'"), "||")
        return BinaryExpression(
            self, right, "LIKE", type_=sqltypes.Boolean(), escape="/" if autoescape else None
        )

    def _arith(self, op: str, other: Any, reverse: bool = False) -> ColumnElement:
        right = self._bind(other)
        if op == "+" and isinstance(self.type, sqltypes.String):
            op = "||"
        if reverse:
            return BinaryExpression(right, self, op, type_=self.type)
        return BinaryExpression(self, right, op, type_=self.type)


class BindParameter(ColumnElement):
    """A value sent as a query parameter (``%(name)s``), bind-processed by its type.

    ``key`` is None for anonymous parameters, which the compiler names ``<hint>_<n>``.
    """

    __visit_name__ = "bindparam"

    def __init__(
        self,
        key: str | None,
        value: Any = None,
        type_: Any = None,
        *,
        required: bool = False,
        name_hint: str | None = None,
        callable_: Any = None,
    ) -> None:
        self.key = key
        self.value = value
        #: A zero-argument function computing the value when the statement runs (defaults).
        self.callable = callable_
        if type_ is None:
            inferred = sqltypes.infer_bind_type(value)
            self.type = inferred if inferred is not None else sqltypes.NullType()
        else:
            self.type = sqltypes.to_instance(type_)
        self.required = required
        self.name_hint = name_hint or "param"

    def __repr__(self) -> str:
        return f"BindParameter({self.key!r}, {self.value!r}, type_={self.type!r})"


_NO_VALUE: Any = object()


def bindparam(
    key: str, value: Any = _NO_VALUE, type_: Any = None, *, required: bool | None = None
) -> BindParameter:
    """A named parameter; without a value, one must be given when the statement runs."""
    if required is None:
        required = value is _NO_VALUE
    return BindParameter(key, None if value is _NO_VALUE else value, type_, required=required)


def literal(value: Any, type_: Any = None) -> BindParameter:
    """A Python value as a bound parameter, typed from the value when no type is given."""
    if type_ is None and value is not None and not isinstance(value, dict):
        try:
            type_ = sqltypes.type_for_python(type(value))
        except exc.ArgumentError:
            type_ = None
    return BindParameter(None, value, type_)


def _castable(type_: sqltypes.TypeEngine) -> bool:
    return not isinstance(type_, sqltypes.NullType | sqltypes.ARRAY)


class JSONElement(ColumnElement):
    """``doc -> key`` (a JSON value) or ``doc ->> key`` (its text) on a JSON column."""

    __visit_name__ = "json_element"
    _precedence = P_OTHER

    def __init__(self, doc: ColumnElement, index: Any, *, astext: bool) -> None:
        if not isinstance(index, str | int) or isinstance(index, bool):
            raise exc.ArgumentError(f"JSON index must be a str key or an int, got {index!r}")
        self.doc = doc
        self.index = BindParameter(
            None,
            index,
            sqltypes.Text() if isinstance(index, str) else sqltypes.Integer(),
            name_hint=doc._bind_hint,
        )
        self._astext = astext
        self.operator = "->>" if astext else "->"
        self.type = sqltypes.Text() if astext else sqltypes.JSON()
        self._raw_index = index

    @property
    def astext(self) -> JSONElement:
        """The value as text (``->>``), as SQLAlchemy's ``col["key"].astext``."""
        return self.as_string()

    @property
    def _bind_hint(self) -> str | None:
        return self.doc._bind_hint

    def get_children(self) -> Iterable[ClauseElement]:
        return (self.doc, self.index)

    def as_string(self) -> JSONElement:
        """The value as text (``->>``)."""
        return JSONElement(self.doc, self._raw_index, astext=True)

    def as_integer(self) -> Cast:
        return Cast(self.as_string(), sqltypes.Integer())

    def as_float(self) -> Cast:
        return Cast(self.as_string(), sqltypes.Float())

    def as_boolean(self) -> Cast:
        return Cast(self.as_string(), sqltypes.Boolean())

    def as_numeric(self, precision: int, scale: int) -> Cast:
        return Cast(self.as_string(), sqltypes.Numeric(precision, scale))


class Null(ColumnElement):
    __visit_name__ = "null"


class True_(ColumnElement):
    __visit_name__ = "true"
    type = sqltypes.Boolean()


class False_(ColumnElement):
    __visit_name__ = "false"
    type = sqltypes.Boolean()


def null() -> Null:
    return Null()


def true() -> True_:
    return True_()


def false() -> False_:
    return False_()


class LiteralColumn(ColumnElement):
    """SQL text used as a column expression, written into the statement as is."""

    __visit_name__ = "literal_column"

    def __init__(self, text: str, type_: Any = None) -> None:
        self.text = text
        self.type = sqltypes.to_instance(type_)
        self._result_name = text


def literal_column(text: str, type_: Any = None) -> LiteralColumn:
    return LiteralColumn(text, type_)


class ClauseList(ClauseElement):
    """Elements separated by commas (function arguments, IN lists)."""

    __visit_name__ = "clauselist"

    def __init__(self, clauses: Sequence[ClauseElement], separator: str = ", ") -> None:
        self.clauses = tuple(clauses)
        self.separator = separator

    def get_children(self) -> Iterable[ClauseElement]:
        return self.clauses


class Grouping(ColumnElement):
    """Parentheses around an element."""

    __visit_name__ = "grouping"

    def __init__(self, element: ClauseElement) -> None:
        self.element = element
        self.type = getattr(element, "type", sqltypes.NullType())

    def get_children(self) -> Iterable[ClauseElement]:
        return (self.element,)


class BinaryExpression(ColumnElement):
    __visit_name__ = "binary"

    def __init__(
        self,
        left: ClauseElement,
        right: ClauseElement,
        operator: str,
        *,
        type_: Any = None,
        escape: str | None = None,
        precedence: int | None = None,
    ) -> None:
        self.left = left
        self.right = right
        self.operator = operator
        self.type = sqltypes.to_instance(type_) if type_ is not None else sqltypes.NullType()
        self.escape = escape
        self._op_precedence = (
            precedence if precedence is not None else _OPERATORS.get(operator, P_OTHER)
        )

    @property
    def _precedence(self) -> int:  # type: ignore[override]
        return self._op_precedence

    @property
    def _bind_hint(self) -> str | None:
        left = self.left
        return left._bind_hint if isinstance(left, ColumnElement) else None

    def get_children(self) -> Iterable[ClauseElement]:
        return (self.left, self.right)

    def __bool__(self) -> bool:
        # `col == col` in a boolean context (list.index, `in`) means identity, as in Python.
        if self.operator == "=":
            return _identity_of(self.left) is _identity_of(self.right)
        if self.operator == "<>":
            return _identity_of(self.left) is not _identity_of(self.right)
        return super().__bool__()

    def _negate(self) -> ClauseElement | None:
        neg = _NEGATIONS.get(self.operator)
        if neg is None:
            return None
        return BinaryExpression(self.left, self.right, neg, type_=self.type, escape=self.escape)


def _identity_of(element: ClauseElement) -> Any:
    return element


class Between(ColumnElement):
    __visit_name__ = "between"
    _precedence = P_MATCH
    type = sqltypes.Boolean()

    def __init__(
        self,
        expr: ColumnElement,
        lower: ColumnElement,
        upper: ColumnElement,
        *,
        symmetric: bool = False,
        negated: bool = False,
    ) -> None:
        self.expr = expr
        self.lower = lower
        self.upper = upper
        self.symmetric = symmetric
        self.negated = negated

    def get_children(self) -> Iterable[ClauseElement]:
        return (self.expr, self.lower, self.upper)

    def _negate(self) -> ClauseElement | None:
        return Between(
            self.expr, self.lower, self.upper, symmetric=self.symmetric, negated=not self.negated
        )


def between(expr: Any, lower: Any, upper: Any, symmetric: bool = False) -> ColumnElement:
    col = _as_column(expr)
    return col.between(lower, upper, symmetric=symmetric)


class UnaryExpression(ColumnElement):
    """A prefix operator (NOT, -, DISTINCT, EXISTS) or a suffix modifier (DESC, NULLS LAST)."""

    __visit_name__ = "unary"

    def __init__(
        self,
        element: ClauseElement,
        *,
        operator: str | None = None,
        modifier: str | None = None,
        type_: Any = None,
        precedence: int | None = None,
    ) -> None:
        self.element = element
        self.operator = operator
        self.modifier = modifier
        self.type = sqltypes.to_instance(type_) if type_ is not None else sqltypes.NullType()
        if precedence is not None:
            self._unary_precedence = precedence
        elif modifier is not None:
            self._unary_precedence = P_ORDER
        elif operator == "NOT":
            self._unary_precedence = P_NOT
        else:
            self._unary_precedence = P_UNARY

    @property
    def _precedence(self) -> int:  # type: ignore[override]
        return self._unary_precedence

    def get_children(self) -> Iterable[ClauseElement]:
        return (self.element,)

    def _negate(self) -> ClauseElement | None:
        if self.operator == "NOT":
            return self.element
        return None


class LabelReference(ColumnElement):
    """A label of the columns clause named by a string in ORDER BY: ``desc("cnt")``."""

    __visit_name__ = "label_reference"

    def __init__(self, name: str) -> None:
        self.name = name


def _order_column(value: Any) -> ColumnElement:
    return LabelReference(value) if isinstance(value, str) else _as_column(value)


def asc(column: Any) -> UnaryExpression:
    return UnaryExpression(_order_column(column), modifier="ASC")


def desc(column: Any) -> UnaryExpression:
    return UnaryExpression(_order_column(column), modifier="DESC")


def nulls_first(column: Any) -> UnaryExpression:
    return UnaryExpression(_order_column(column), modifier="NULLS FIRST")


def nulls_last(column: Any) -> UnaryExpression:
    return UnaryExpression(_order_column(column), modifier="NULLS LAST")


def distinct(expr: Any) -> UnaryExpression:
    col = _as_column(expr)
    return UnaryExpression(col, operator="DISTINCT", type_=col.type)


class BooleanClauseList(ColumnElement):
    """Conditions joined by AND or OR."""

    __visit_name__ = "boolean_list"
    type = sqltypes.Boolean()

    def __init__(self, operator: str, clauses: Sequence[ClauseElement]) -> None:
        self.operator = operator
        self.clauses = tuple(clauses)

    @property
    def _precedence(self) -> int:  # type: ignore[override]
        return P_AND if self.operator == "AND" else P_OR

    def get_children(self) -> Iterable[ClauseElement]:
        return self.clauses


def coerce_where(value: Any) -> ClauseElement:
    """Coerce a WHERE / HAVING / ON criterion."""
    value = _clause(value)
    if value is True:
        return True_()
    if value is False:
        return False_()
    if isinstance(value, ColumnElement | TextClause):
        return value
    if isinstance(value, str):
        raise exc.ArgumentError(
            f"a plain string {value!r} cannot be used as a condition; wrap SQL in text(...)"
        )
    raise exc.ArgumentError(f"expected a SQL condition such as User.name == 'x', got {value!r}")


def _boolean_list(operator: str, clauses: Sequence[Any]) -> ColumnElement:
    flat: list[ClauseElement] = []
    for c in clauses:
        element = coerce_where(c)
        if isinstance(element, BooleanClauseList) and element.operator == operator:
            flat.extend(element.clauses)
        else:
            flat.append(element)
    if len(flat) == 1 and isinstance(flat[0], ColumnElement):
        return flat[0]
    return BooleanClauseList(operator, flat)


def and_(*clauses: Any) -> ColumnElement:
    """Conditions that must all hold. ``and_()`` with no arguments adds nothing to a WHERE."""
    return _boolean_list("AND", clauses)


def or_(*clauses: Any) -> ColumnElement:
    """Conditions of which at least one must hold."""
    return _boolean_list("OR", clauses)


def not_(clause: Any) -> ClauseElement:
    """The negation of a condition; comparisons are inverted (== becomes <>)."""
    element = coerce_where(clause)
    negate = getattr(element, "_negate", None)
    if negate is not None:
        negated = negate()
        if negated is not None:
            return negated
    if isinstance(element, True_):
        return False_()
    if isinstance(element, False_):
        return True_()
    return UnaryExpression(element, operator="NOT", type_=sqltypes.Boolean())


class Label(ColumnElement):
    """``expr AS name``; the name is the key of the result column."""

    __visit_name__ = "label"
    _precedence = P_ORDER

    def __init__(self, name: str, element: ColumnElement) -> None:
        self.name = name
        self.element = element
        self.type = element.type
        self._result_name = name

    def get_children(self) -> Iterable[ClauseElement]:
        return (self.element,)


class Cast(ColumnElement):
    __visit_name__ = "cast"

    def __init__(self, expr: Any, type_: Any) -> None:
        self.type = sqltypes.to_instance(type_)
        expr = _clause(expr)
        self.element: ColumnElement = (
            expr if isinstance(expr, ColumnElement) else BindParameter(None, expr, self.type)
        )
        self._result_name = self.element._result_name

    def get_children(self) -> Iterable[ClauseElement]:
        return (self.element,)


def cast(expr: Any, type_: Any) -> Cast:
    """``CAST(expr AS type)``."""
    return Cast(expr, type_)


class Case(ColumnElement):
    __visit_name__ = "case"

    def __init__(self, *whens: Any, value: Any = None, else_: Any = None) -> None:
        if len(whens) == 1 and isinstance(whens[0], dict):
            whens = tuple(whens[0].items())
        if not whens:
            raise exc.ArgumentError("case() needs at least one (condition, result) pair")
        self.value = _as_column(value) if value is not None else None
        self.whens: list[tuple[ClauseElement, ColumnElement]] = []
        for when in whens:
            if not isinstance(when, tuple) or len(when) != 2:
                raise exc.ArgumentError(f"case() takes (condition, result) pairs, got {when!r}")
            cond, result = when
            cond_el = self.value._bind(cond) if self.value is not None else coerce_where(cond)
            self.whens.append((cond_el, _as_value(result)))
        self.else_ = _as_value(else_) if else_ is not None else None
        self.type = next(
            (r.type for _c, r in self.whens if not isinstance(r.type, sqltypes.NullType)),
            sqltypes.NullType(),
        )

    def get_children(self) -> Iterable[ClauseElement]:
        if self.value is not None:
            yield self.value
        for cond, result in self.whens:
            yield cond
            yield result
        if self.else_ is not None:
            yield self.else_


def case(*whens: Any, value: Any = None, else_: Any = None) -> Case:
    """``CASE WHEN cond THEN result ... ELSE else_ END`` (or ``CASE value WHEN ...``)."""
    return Case(*whens, value=value, else_=else_)


def _as_column(value: Any) -> ColumnElement:
    value = _clause(value)
    if isinstance(value, ColumnElement):
        return value
    raise exc.ArgumentError(f"expected a column expression, got {value!r}")


def _as_value(value: Any) -> ColumnElement:
    value = _clause(value)
    if isinstance(value, ColumnElement):
        return value
    if isinstance(value, ClauseElement) and value._is_select:
        return _scalar_subquery(value)
    return literal(value)


# Functions ------------------------------------------------------------------------------------

# Functions written without parentheses in SQL.
_NILADIC = frozenset(
    {
        "current_date",
        "current_time",
        "current_timestamp",
        "current_user",
        "localtime",
        "localtimestamp",
        "session_user",
        "user",
    }
)

_FIXED_RETURN_TYPES: dict[str, Any] = {
    "count": sqltypes.BigInteger,
    "char_length": sqltypes.Integer,
    "length": sqltypes.Integer,
    "lower": sqltypes.String,
    "upper": sqltypes.String,
    "trim": sqltypes.String,
    "concat": sqltypes.String,
    "now": lambda: sqltypes.DateTime(timezone=True),
    "current_timestamp": lambda: sqltypes.DateTime(timezone=True),
    "localtimestamp": sqltypes.DateTime,
    "current_date": sqltypes.Date,
    "avg": sqltypes.Numeric,
    "random": sqltypes.Float,
    "gen_random_uuid": sqltypes.Uuid,
}
# Functions whose result has the type of their first argument.
_SAME_AS_ARGUMENT = frozenset({"sum", "min", "max", "coalesce", "abs", "greatest", "least"})


class Function(ColumnElement):
    """A SQL function call such as ``count(*)`` or ``lower(users.name)``."""

    __visit_name__ = "function"

    def __init__(self, name: str, *args: Any, packagenames: Sequence[str] = (), type_: Any = None):
        self.name = name
        self.packagenames = tuple(packagenames)
        self.clauses = ClauseList([_as_value(a) for a in args])
        lname = name.lower()
        if type_ is not None:
            self.type = sqltypes.to_instance(type_)
        elif lname in _FIXED_RETURN_TYPES:
            self.type = _FIXED_RETURN_TYPES[lname]()
        elif lname in _SAME_AS_ARGUMENT and self.clauses.clauses:
            self.type = getattr(self.clauses.clauses[0], "type", sqltypes.NullType())
        else:
            self.type = sqltypes.NullType()
        self._result_name = name

    def get_children(self) -> Iterable[ClauseElement]:
        return (self.clauses,)

    def __repr__(self) -> str:
        return f"Function({'.'.join((*self.packagenames, self.name))!r})"


class _FunctionGenerator:
    """``func.<name>(*args)`` for any SQL function; dotted names give schema-qualified ones."""

    def __init__(self, names: tuple[str, ...] = ()) -> None:
        self.__names = names

    def __getattr__(self, name: str) -> _FunctionGenerator:
        if name.startswith("__"):
            raise AttributeError(name)
        if name.endswith("_"):
            name = name[:-1]  # func.filter_ -> filter, as with Python keywords
        return _FunctionGenerator((*self.__names, name))

    def __call__(self, *args: Any, type_: Any = None) -> Function:
        if not self.__names:
            raise exc.ArgumentError("use func.<name>(...), e.g. func.count()")
        return Function(self.__names[-1], *args, packagenames=self.__names[:-1], type_=type_)


func = _FunctionGenerator()


# Text -----------------------------------------------------------------------------------------

# A :name parameter: not preceded by a colon, word character or backslash, so `x::int` casts,
# `12:30` and `\:` are left alone while `:name::int` is a parameter with a cast.
_BIND_RE = re.compile(r"(?<![:\w\\]):(\w+)")


class TextClause(ClauseElement):
    """Literal SQL with ``:name`` parameters; ``\\:`` writes a literal colon."""

    __visit_name__ = "textclause"
    _precedence = P_ATOM
    type: sqltypes.TypeEngine = sqltypes.NullType()

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise exc.ArgumentError(f"text() takes a string, got {text!r}")
        self.text = text
        self._bindparams: dict[str, BindParameter] = {
            name: BindParameter(name, required=True) for name in _BIND_RE.findall(text)
        }

    def bindparams(self, *binds: BindParameter, **values: Any) -> TextClause:
        """Give parameters values (``name=value``) or types (``bindparam("name", type_=...)``)."""
        new = TextClause.__new__(TextClause)
        new.text = self.text
        new._bindparams = dict(self._bindparams)
        for bp in binds:
            if not isinstance(bp, BindParameter) or bp.key is None:
                raise exc.ArgumentError("bindparams() takes bindparam(name, ...) objects")
            if bp.key not in new._bindparams:
                raise exc.ArgumentError(
                    f"this text has no parameter :{bp.key}; it has "
                    f"{[':' + k for k in new._bindparams] or 'none'}"
                )
            new._bindparams[bp.key] = bp
        for key, value in values.items():
            old = new._bindparams.get(key)
            if old is None:
                raise exc.ArgumentError(
                    f"this text has no parameter :{key}; it has "
                    f"{[':' + k for k in new._bindparams] or 'none'}"
                )
            new._bindparams[key] = BindParameter(
                key, value, old.type if not isinstance(old.type, sqltypes.NullType) else None
            )
        return new

    def columns(self, *cols: Any, **types: Any) -> Any:
        """Declare the result columns (and their types) of this text, as `TextualSelect`."""
        from retort.sql.selectable import TextualSelect

        return TextualSelect(self, cols, types)

    def self_group(self) -> Grouping:
        return Grouping(self)

    def __repr__(self) -> str:
        return f"text({self.text!r})"


def text(text: str) -> TextClause:
    """Literal SQL, with ``:name`` bound parameters."""
    return TextClause(text)
