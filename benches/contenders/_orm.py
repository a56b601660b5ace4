"""One workload for both ORM contenders, so retort and SQLAlchemy run identical code.

The API namespace (``DeclarativeBase``, ``Session``, ``select``, ...) is injected: SQLAlchemy's
from ``sqlalchemy``/``sqlalchemy.orm``, retort's from ``retort``'s public package only.
Annotations here are evaluated at class creation (no ``from __future__ import annotations``)
because the mapped classes are built inside functions from the injected names.
"""

import types
from collections.abc import Sequence
from typing import Any

from benches.contenders.base import Contender, Prepared, sliced
from benches.scenarios import CHILDREN_PER_PARENT, FEW, item_row


def build_item_model(api: types.SimpleNamespace) -> Any:
    class Base(api.DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "item"
        id: api.Mapped[int] = api.mapped_column(primary_key=True)
        name: api.Mapped[str] = api.mapped_column(api.String(64))
        qty: api.Mapped[int]
        price: api.Mapped[float]
        note: api.Mapped[str | None]

    return Item


def build_graph_models(api: types.SimpleNamespace) -> tuple[Any, Any]:
    class Base(api.DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = "parent"
        id: api.Mapped[int] = api.mapped_column(primary_key=True)
        name: api.Mapped[str] = api.mapped_column(api.String(64))
        children: api.Mapped[list["Child"]] = api.relationship(
            back_populates="parent", cascade="all, delete-orphan"
        )

    class Child(Base):
        __tablename__ = "child"
        id: api.Mapped[int] = api.mapped_column(primary_key=True)
        parent_id: api.Mapped[int] = api.mapped_column(api.ForeignKey("parent.id"))
        name: api.Mapped[str] = api.mapped_column(api.String(64))
        parent: api.Mapped[Parent] = api.relationship(back_populates="children")

    return Parent, Child


class OrmContender(Contender):
    """The scenarios written once against the SQLAlchemy 2.x API, default session settings."""

    api: types.SimpleNamespace
    url: str

    def __init__(self) -> None:
        self.engine = self.api.create_engine(self.url)
        self.Item = build_item_model(self.api)
        self._graph: tuple[Any, Any] | None = None

    def graph_models(self) -> tuple[Any, Any]:
        # Built on first use: relationships may be missing from an early retort, which must
        # only cost the "insert graph" scenario.
        if self._graph is None:
            self._graph = build_graph_models(self.api)
        return self._graph

    def session(self) -> Any:
        return self.api.Session(self.engine)

    def _loaded(self, session: Any) -> list[Any]:
        return list(session.scalars(self.api.select(self.Item)).all())

    def _end(self, session: Any) -> Any:
        def cleanup() -> None:
            session.rollback()
            session.close()

        return cleanup

    def recover(self) -> None:
        self.engine.dispose()

    def close(self) -> None:
        self.engine.dispose()

    # -- scenarios: everything before `def timed` is setup -------------------------------

    def scenario_insert(self, n: int, variant: str) -> Prepared:
        Item, session = self.Item, self.session()
        values = [item_row(i) for i in range(n)]

        def timed() -> None:
            session.add_all([Item(name=a, qty=b, price=c, note=d) for a, b, c, d in values])
            session.commit()

        return Prepared(timed, session.close)

    def scenario_insert_flush(self, n: int, variant: str) -> Prepared:
        Item, session = self.Item, self.session()
        session.add_all(
            [Item(name=a, qty=b, price=c, note=d) for a, b, c, d in map(item_row, range(n))]
        )
        return Prepared(session.flush, self._end(session), session.commit)

    def scenario_insert_graph(self, n: int, variant: str) -> Prepared:
        Parent, Child = self.graph_models()
        session = self.session()
        names = [
            (f"parent {p}", [f"child {p}.{c}" for c in range(CHILDREN_PER_PARENT)])
            for p in range(n // CHILDREN_PER_PARENT)
        ]

        def timed() -> None:
            session.add_all(
                [
                    Parent(name=name, children=[Child(name=c) for c in children])
                    for name, children in names
                ]
            )
            session.commit()

        return Prepared(timed, session.close)

    def scenario_load(self, n: int, variant: str) -> Prepared:
        session = self.session()
        return Prepared(lambda: self._loaded(session), session.close)

    scenario_memory = scenario_load

    def scenario_update_all(self, n: int, variant: str) -> Prepared:
        session = self.session()
        items = self._loaded(session)

        def timed() -> None:
            for item in items:
                item.qty += 1
            session.flush()

        return Prepared(timed, self._end(session), session.commit)

    def scenario_few_dirty(self, n: int, variant: str) -> Prepared:
        session = self.session()
        items = self._loaded(session)
        few = items[:FEW]

        def timed() -> None:
            for item in few:
                item.qty += 1
            session.flush()

        return Prepared(timed, self._end(session), session.commit)

    def scenario_noop_flush(self, n: int, variant: str) -> Prepared:
        session = self.session()
        items = self._loaded(session)
        return Prepared(lambda: (session.flush(), items), self._end(session), session.commit)

    def scenario_commit_large(self, n: int, variant: str) -> Prepared:
        session = self.session()
        items = self._loaded(session)
        return Prepared(lambda: (session.commit(), items), session.close)

    def scenario_get_identity(self, n: int, variant: str) -> Prepared:
        Item, session = self.Item, self.session()
        items = self._loaded(session)  # held: SQLAlchemy's identity map is weak
        pks = [item.id for item in items]

        def timed() -> list[Any]:
            get = session.get
            for pk in pks:
                get(Item, pk)
            return items

        return Prepared(timed, self._end(session))

    def scenario_delete_all(self, n: int, variant: str) -> Prepared:
        session = self.session()
        items = self._loaded(session)

        def timed() -> None:
            delete = session.delete
            for item in items:
                delete(item)
            session.flush()

        return Prepared(timed, self._end(session), session.commit)

    def scenario_tx_add_commit(self, n: int, variant: str) -> Prepared:
        Item, Session, engine = self.Item, self.api.Session, self.engine

        def timed(values: Sequence[tuple[Any, ...]]) -> None:
            for a, b, c, d in values:
                with Session(engine) as session:
                    session.add(Item(name=a, qty=b, price=c, note=d))
                    session.commit()

        return sliced([item_row(i) for i in range(n)], timed)

    def scenario_tx_get_set_commit(self, n: int, variant: str) -> Prepared:
        Item, Session, engine = self.Item, self.api.Session, self.engine

        def timed(pks: Sequence[int]) -> None:
            for pk in pks:
                with Session(engine) as session:
                    item = session.get(Item, pk)
                    item.qty += 1
                    session.commit()

        return sliced(range(1, n + 1), timed)
