"""Eager loading of relationships: ``selectinload`` and ``joinedload``.

``selectinload(User.addresses)`` loads the collections of every ``User`` a query returned with
one more SELECT (``WHERE addresses.user_id = ANY(...)``), whatever the number of users.
``joinedload(User.addresses)`` adds a LEFT OUTER JOIN to the query itself, so everything comes
back in one SELECT; results are made unique per parent. Relationships declared with
``lazy="selectin"`` or ``lazy="joined"`` load the same way without an option.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from retort import exc

if TYPE_CHECKING:
    from retort.mapping import RelationshipProperty
    from retort.session import Session

__all__ = ["joinedload", "lazyload", "raiseload", "selectinload"]


class LoaderOption:
    """A loading strategy for a relationship path, given to ``Select.options()``."""

    def __init__(self, strategy: str, attr: Any, parent: LoaderOption | None = None) -> None:
        prop = getattr(attr, "prop", None)
        if prop is None or not hasattr(prop, "direction"):
            raise exc.ArgumentError(
                f"{strategy}() takes a relationship attribute such as User.addresses, got {attr!r}"
            )
        self.strategy = strategy
        self.prop: RelationshipProperty = prop
        self.children: list[LoaderOption] = []
        self.parent = parent
        if parent is not None:
            parent.children.append(self)

    def _root(self) -> LoaderOption:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def selectinload(self, attr: Any) -> LoaderOption:
        return LoaderOption("selectin", attr, self)

    def joinedload(self, attr: Any) -> LoaderOption:
        return LoaderOption("joined", attr, self)

    def __repr__(self) -> str:
        return f"{self.strategy}load({self.prop})"


def selectinload(attr: Any) -> LoaderOption:
    """Load this relationship for all objects of a result with one more SELECT."""
    return LoaderOption("selectin", attr)


def joinedload(attr: Any) -> LoaderOption:
    """Load this relationship in the same SELECT, through a LEFT OUTER JOIN."""
    return LoaderOption("joined", attr)


def lazyload(attr: Any) -> LoaderOption:
    """Load this relationship on first access (the default)."""
    return LoaderOption("select", attr)


def raiseload(attr: Any) -> LoaderOption:
    """Raise instead of loading this relationship on access."""
    return LoaderOption("raise", attr)


def root_options(options: Iterable[Any]) -> list[LoaderOption]:
    """The top-level loader options among a statement's options."""
    out = []
    for opt in options:
        if isinstance(opt, LoaderOption):
            out.append(opt._root())
    return list({id(o): o for o in out}.values())


def _items(value: Any, prop: RelationshipProperty) -> list[Any]:
    if prop.uselist:
        return list(value)
    return [] if value is None else [value]


def apply(session: Session, objects: Sequence[Any], mapper: Any, options: list[Any]) -> None:
    """Run eager loads for `objects` (instances of `mapper`) after a query loaded them."""
    if not objects:
        return
    explicit = {o.prop.key: o for o in options if o.prop.parent is mapper}
    for prop in mapper.relationships.values():
        opt = explicit.get(prop.key)
        strategy = opt.strategy if opt is not None else prop.lazy
        if strategy in ("selectin", "joined"):
            # joined loads that could not be folded into the statement run as selectin
            loaded = _selectin(session, objects, prop, already_joined=strategy == "joined")
            children = opt.children if opt is not None else []
            if loaded and (children or prop.target.relationships):
                apply(session, loaded, prop.target, children)
        elif strategy == "raise" and opt is not None:
            for obj in objects:
                obj.__dict__.pop(prop.key, None)


def _selectin(
    session: Session, objects: Sequence[Any], prop: RelationshipProperty, *, already_joined: bool
) -> list[Any]:
    """Populate `prop` on every object that does not have it loaded; return the related
    objects."""
    from retort.attributes import InstrumentedList
    from retort.sql.elements import BindParameter, and_, or_
    from retort.sql.selectable import select

    todo = [o for o in objects if prop.key not in o.__dict__]
    if already_joined:
        done = [o for o in objects if prop.key in o.__dict__]
        related = [x for o in done for x in _items(o.__dict__[prop.key], prop)]
        if not todo:
            return related
    else:
        related = []
    if not todo:
        return related
    target = prop.target
    if prop.direction == "MANYTOONE":
        keys: dict[tuple[Any, ...], None] = {}
        for obj in todo:
            vals = tuple(obj.__dict__.get(dst.key) for _, dst in prop.pairs)
            if all(v is not None for v in vals):
                keys[vals] = None
        found: dict[tuple[Any, ...], Any] = {}
        if keys:
            src_cols = [src for src, _ in prop.pairs]
            if len(src_cols) == 1:
                # one array parameter (= ANY): any number of keys
                crit = src_cols[0].in_(BindParameter(None, [k[0] for k in keys], None))
            else:
                crit = or_(
                    *(and_(*(c == v for c, v in zip(src_cols, k, strict=True))) for k in keys)
                )
            for t in session.scalars(select(target.class_).where(crit)).all():
                found[tuple(getattr(t, c.key) for c in src_cols)] = t
        for obj in todo:
            vals = tuple(obj.__dict__.get(dst.key) for _, dst in prop.pairs)
            value = found.get(vals)
            obj.__dict__[prop.key] = value
            if value is not None:
                related.append(value)
        return related
    # one-to-many and many-to-many: group the related rows by the parent's key
    parent_cols = (
        [src for src, _ in prop.pairs]
        if prop.direction == "ONETOMANY"
        else [p for p, _ in prop.secondary_pairs]
    )
    keyed: dict[tuple[Any, ...], list[Any]] = {}
    for obj in todo:
        keyed[tuple(getattr(obj, c.key) for c in parent_cols)] = []
    if prop.direction == "ONETOMANY":
        link_cols = [dst for _, dst in prop.pairs]
        stmt = select(target.class_)
    else:
        link_cols = [s for _, s in prop.secondary_pairs]
        on = and_(*(t == s for t, s in prop.target_secondary_pairs))
        stmt = select(target.class_, *link_cols).join(prop.secondary, on)
    if len(link_cols) == 1:
        stmt = stmt.where(link_cols[0].in_(BindParameter(None, [k[0] for k in keyed], None)))
    else:
        stmt = stmt.where(
            or_(*(and_(*(c == v for c, v in zip(link_cols, k, strict=True))) for k in keyed))
        )
    if prop.order_by is not None:
        order = prop.order_by
        if isinstance(order, str):
            order = prop._resolve_string(order)
        stmt = stmt.order_by(*(order if isinstance(order, list | tuple) else [order]))
    if prop.direction == "ONETOMANY":
        for child in session.scalars(stmt).all():
            k = tuple(child.__dict__.get(c.key) for c in link_cols)
            if k in keyed:
                keyed[k].append(child)
    else:
        for row in session.execute(stmt).all():
            keyed.setdefault(tuple(row[1:]), []).append(row[0])
    for obj in todo:
        children = keyed.get(tuple(getattr(obj, c.key) for c in parent_cols), [])
        related.extend(children)
        if prop.uselist:
            obj.__dict__[prop.key] = InstrumentedList(obj, prop, children)
        else:
            obj.__dict__[prop.key] = children[0] if children else None
    return related


# -- joined loading ------------------------------------------------------------------------------


class JoinedPlan:
    """How a statement was widened for joined eager loads of its first entity."""

    def __init__(self, props: list[RelationshipProperty], first_shape: int) -> None:
        self.props = props
        self.first_shape = first_shape


def joined_props(stmt: Any, mapper: Any, options: list[LoaderOption]) -> list[Any]:
    """Relationships of `mapper` to load through a JOIN in `stmt` itself."""
    if getattr(stmt, "_limit", None) is not None or getattr(stmt, "_offset", None) is not None:
        return []  # a JOIN would change what LIMIT counts: load these with selectin instead
    explicit = {o.prop.key: o.strategy for o in options if o.prop.parent is mapper}
    out = []
    for prop in mapper.relationships.values():
        strategy = explicit.get(prop.key, prop.lazy)
        if strategy != "joined" or prop.direction == "MANYTOMANY":
            continue
        if prop.target.local_table is mapper.local_table:
            continue  # self-referential: would need an alias; selectin does it
        out.append(prop)
    return out


def widen(stmt: Any, props: list[Any]) -> Any:
    """Add a LEFT OUTER JOIN and the target's columns for each joined relationship."""
    from retort.sql.elements import and_

    for prop in props:
        if prop.direction == "MANYTOONE":
            on = and_(*(dst == src for src, dst in prop.pairs))
        else:
            on = and_(*(dst == src for src, dst in prop.pairs))
        stmt = stmt.outerjoin(prop.target.local_table, on).add_columns(prop.target.class_)
    return stmt


def assemble(
    rows: list[Any], parents: list[Any], props: list[Any], targets: list[list[Any | None]]
) -> list[int]:
    """Fill joined relationships from the widened rows; return the indexes of the rows that
    carry each parent the first time (the rows to keep)."""
    from retort.attributes import InstrumentedList

    first: dict[int, int] = {}
    collected: dict[tuple[int, int], dict[int, Any]] = {}
    for i, parent in enumerate(parents):
        first.setdefault(id(parent), i)
        for j in range(len(props)):
            bucket = collected.setdefault((id(parent), j), {})
            t = targets[j][i]
            if t is not None:
                bucket.setdefault(id(t), t)
    seen: set[int] = set()
    for parent in parents:
        if id(parent) in seen:
            continue
        seen.add(id(parent))
        for j, prop in enumerate(props):
            if prop.key in parent.__dict__:
                continue  # already loaded (and maybe changed): keep it
            items = list(collected[(id(parent), j)].values())
            if prop.uselist:
                parent.__dict__[prop.key] = InstrumentedList(parent, prop, items)
            else:
                parent.__dict__[prop.key] = items[0] if items else None
    return sorted(first.values())
