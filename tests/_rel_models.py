"""Models for the relationship tests, declared from either library's API.

`Api` gives one library's names (retort's, or SQLAlchemy 2.x's as the behavioural oracle) plus
the test plumbing: an engine on the test's schema, the log of statements sent, and `fetch()`
to read the tables through a separate connection. The model factories take an `Api` and
declare fresh classes on a fresh `DeclarativeBase` each time, then create their tables.
Column arguments of relationship() (foreign_keys, remote_side) are given as strings here;
test_relationships.py has the class-body column form separately.

This module deliberately does not use `from __future__ import annotations`: the models'
`orm.Mapped[...]` annotations must be evaluated where they are written, since `orm` is a
local name that neither library could resolve later from a string.
"""

import importlib
from typing import Any, Optional

import psycopg

__all__ = [
    "Api",
    "association_model",
    "mutual",
    "natural_keys",
    "parent_child",
    "post_tag",
    "sqlalchemy_api",
    "tree",
    "two_way_required",
    "unique_accounts",
    "user_profile",
]

# where each name lives in each library; resolved on first use so that a name retort does not
# have yet fails the test that uses it (AttributeError) instead of every test's set-up
_NAMES: dict[str, dict[str, str]] = {
    "retort": {
        "DeclarativeBase": "retort",
        "Mapped": "retort",
        "mapped_column": "retort",
        "relationship": "retort",
        "ForeignKey": "retort",
        "Table": "retort",
        "Column": "retort",
        "Integer": "retort",
        "String": "retort",
        "Session": "retort",
        "select": "retort",
        "selectinload": "retort",
        "joinedload": "retort",
        "inspect": "retort",
        "object_session": "retort",
        "InvalidRequestError": "retort.exc",
        "DetachedInstanceError": "retort.exc",
        "ObjectDeletedError": "retort.exc",
        "CircularDependencyError": "retort.exc",
        "IntegrityError": "retort.exc",
        "PendingRollbackError": "retort.exc",
        "FlushError": "retort.exc",
    },
    "sqlalchemy": {
        "DeclarativeBase": "sqlalchemy.orm",
        "Mapped": "sqlalchemy.orm",
        "mapped_column": "sqlalchemy.orm",
        "relationship": "sqlalchemy.orm",
        "ForeignKey": "sqlalchemy",
        "Table": "sqlalchemy",
        "Column": "sqlalchemy",
        "Integer": "sqlalchemy",
        "String": "sqlalchemy",
        "Session": "sqlalchemy.orm",
        "select": "sqlalchemy",
        "selectinload": "sqlalchemy.orm",
        "joinedload": "sqlalchemy.orm",
        "inspect": "sqlalchemy",
        "object_session": "sqlalchemy.orm",
        "InvalidRequestError": "sqlalchemy.exc",
        "DetachedInstanceError": "sqlalchemy.orm.exc",
        "ObjectDeletedError": "sqlalchemy.orm.exc",
        "CircularDependencyError": "sqlalchemy.exc",
        "IntegrityError": "sqlalchemy.exc",
        "PendingRollbackError": "sqlalchemy.exc",
        "FlushError": "sqlalchemy.orm.exc",
    },
}


class Api:
    """One library's API names (as attributes) plus an engine, a statement log and `fetch`."""

    def __init__(
        self,
        name: str,
        engine: Any,
        log: list[tuple[str, Any]],
        admin_conn: psycopg.Connection[Any],
    ) -> None:
        self.name = name
        self.engine = engine
        self.log = log  # (sql, params) of every statement the engine ran, in order
        self._admin = admin_conn

    def __getattr__(self, attr: str) -> Any:
        names = _NAMES[self.__dict__["name"]]
        if attr not in names:
            raise AttributeError(attr)
        return getattr(importlib.import_module(names[attr]), attr)

    def __repr__(self) -> str:
        return self.name

    def session(self, **kwargs: Any) -> Any:
        return self.Session(self.engine, **kwargs)

    def fetch(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Rows of `sql` run on a separate autocommit connection that sees the test schema."""
        return self._admin.execute(sql, params).fetchall()

    def statements(self) -> list[str]:
        return [sql for sql, _ in self.log]

    def selects(self) -> int:
        """The number of SELECTs in the log, leaving out key pre-allocation (nextval)."""
        return sum(
            1 for sql in self.statements() if _verb(sql) == "SELECT" and "nextval" not in sql
        )

    def clear_log(self) -> None:
        self.log.clear()


def _verb(sql: str) -> str:
    return sql.lstrip().split(None, 1)[0].upper()


def sqlalchemy_api(dsn: str, schema: str, admin_conn: psycopg.Connection[Any]) -> Api:
    """An `Api` on SQLAlchemy with an engine whose connections see only `schema`."""
    import sqlalchemy

    from retort.engine import make_url

    connect_args: dict[str, Any] = dict(make_url(dsn).connect_kwargs())
    # application_name lets the schema fixture end these sessions before dropping the schema
    connect_args.update(options=f"-csearch_path={schema}", application_name=schema)
    # no server-side prepared statements: once, after about a thousand programs on one
    # connection, psycopg's cache of them named a statement the server did not hold, and
    # SQLAlchemy's flush failed with "prepared statement ... does not exist" where retort's
    # succeeded (not reproduced by replaying the program, as the cache's state comes from the
    # connection's whole history). The oracle is SQLAlchemy's ORM, not the driver's cache
    connect_args["prepare_threshold"] = None
    engine = sqlalchemy.create_engine("postgresql+psycopg://", connect_args=connect_args)
    log: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: Any) -> None:
        log.append((statement, params))

    sqlalchemy.event.listen(engine, "before_cursor_execute", record)
    return Api("sqlalchemy", engine, log, admin_conn)


# --------------------------------------------------------------------------------------------
# model factories


def parent_child(
    orm: Api,
    *,
    cascade: str = "save-update, merge",
    lazy: str = "select",
    passive_deletes: bool = False,
    ondelete: str | None = None,
    order_by: str = "Child.id",
) -> tuple[Any, Any]:
    """Parent 1-* Child through children.parent_id (nullable), server-generated keys."""

    class Base(orm.DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = "parents"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        children: orm.Mapped[list["Child"]] = orm.relationship(
            back_populates="parent",
            cascade=cascade,
            lazy=lazy,
            passive_deletes=passive_deletes,
            order_by=order_by,
        )

    class Child(Base):
        __tablename__ = "children"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        parent_id: orm.Mapped[int | None] = orm.mapped_column(
            orm.ForeignKey("parents.id", ondelete=ondelete)
        )
        parent: orm.Mapped[Parent | None] = orm.relationship(back_populates="children")

    Base.metadata.create_all(orm.engine)
    return Parent, Child


def user_profile(
    orm: Api, *, cascade: str = "save-update, merge", back: bool = True
) -> tuple[Any, Any]:
    """User 1-1 Profile (uselist=False) through a unique, nullable profiles.user_id; with
    `back` False, Profile has no many-to-one (no back_populates)."""

    class Base(orm.DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        profile: orm.Mapped[Optional["Profile"]] = orm.relationship(
            uselist=False, cascade=cascade, **({"back_populates": "user"} if back else {})
        )

    class Profile(Base):
        __tablename__ = "profiles"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        bio: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        user_id: orm.Mapped[int | None] = orm.mapped_column(orm.ForeignKey("users.id"), unique=True)
        if back:
            user: orm.Mapped[User | None] = orm.relationship(back_populates="profile")

    Base.metadata.create_all(orm.engine)
    return User, Profile


def post_tag(orm: Api, *, lazy: str = "select") -> tuple[Any, Any]:
    """Post *-* Tag through the association table post_tags (secondary)."""

    class Base(orm.DeclarativeBase):
        pass

    post_tags = orm.Table(
        "post_tags",
        Base.metadata,
        orm.Column("post_id", orm.ForeignKey("posts.id"), primary_key=True),
        orm.Column("tag_id", orm.ForeignKey("tags.id"), primary_key=True),
    )

    class Post(Base):
        __tablename__ = "posts"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        title: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        tags: orm.Mapped[list["Tag"]] = orm.relationship(
            secondary=post_tags, back_populates="posts", lazy=lazy, order_by="Tag.id"
        )

    class Tag(Base):
        __tablename__ = "tags"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        label: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        posts: orm.Mapped[list[Post]] = orm.relationship(
            secondary=post_tags, back_populates="tags", order_by=Post.id
        )

    Base.metadata.create_all(orm.engine)
    return Post, Tag


def association_model(orm: Api) -> tuple[Any, Any, Any]:
    """Order *-* Item through the association model OrderLine (composite key, extra column)."""

    class Base(orm.DeclarativeBase):
        pass

    class Order(Base):
        __tablename__ = "orders"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        ref: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        lines: orm.Mapped[list["OrderLine"]] = orm.relationship(
            back_populates="order", cascade="all, delete-orphan"
        )

    class Item(Base):
        __tablename__ = "items"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        lines: orm.Mapped[list["OrderLine"]] = orm.relationship(back_populates="item")

    class OrderLine(Base):
        __tablename__ = "order_lines"
        order_id: orm.Mapped[int] = orm.mapped_column(orm.ForeignKey("orders.id"), primary_key=True)
        item_id: orm.Mapped[int] = orm.mapped_column(orm.ForeignKey("items.id"), primary_key=True)
        qty: orm.Mapped[int]
        order: orm.Mapped[Order] = orm.relationship(back_populates="lines")
        item: orm.Mapped[Item] = orm.relationship(back_populates="lines")

    Base.metadata.create_all(orm.engine)
    return Order, Item, OrderLine


def tree(orm: Api, *, cascade: str = "all, delete-orphan", unique_names: bool = False) -> Any:
    """Self-referential Node with parent (remote_side) and children (names unique, if
    `unique_names`)."""

    class Base(orm.DeclarativeBase):
        pass

    class Node(Base):
        __tablename__ = "nodes"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(50), unique=unique_names)
        parent_id: orm.Mapped[int | None] = orm.mapped_column(orm.ForeignKey("nodes.id"))
        parent: orm.Mapped[Optional["Node"]] = orm.relationship(
            back_populates="children", remote_side="Node.id"
        )
        children: orm.Mapped[list["Node"]] = orm.relationship(
            back_populates="parent", cascade=cascade, order_by="Node.id"
        )

    Base.metadata.create_all(orm.engine)
    return Node


def mutual(orm: Api, *, post_update: bool = True) -> tuple[Any, Any]:
    """Widget 1-* Entry through the NOT NULL entries.widget_id, and Widget.favorite_entry *-1
    Entry through the nullable widgets.favorite_entry_id (added with use_alter): a cycle that
    only favorite_entry_id can break (with post_update when asked)."""

    class Base(orm.DeclarativeBase):
        pass

    class Entry(Base):
        __tablename__ = "entries"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        widget_id: orm.Mapped[int] = orm.mapped_column(orm.ForeignKey("widgets.id"))
        widget: orm.Mapped["Widget"] = orm.relationship(
            back_populates="entries", foreign_keys="Entry.widget_id"
        )

    class Widget(Base):
        __tablename__ = "widgets"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        favorite_entry_id: orm.Mapped[int | None] = orm.mapped_column(
            orm.ForeignKey("entries.id", use_alter=True, name="fk_widget_favorite_entry")
        )
        entries: orm.Mapped[list[Entry]] = orm.relationship(
            back_populates="widget",
            foreign_keys="Entry.widget_id",
            cascade="all, delete-orphan",
        )
        favorite_entry: orm.Mapped[Entry | None] = orm.relationship(
            foreign_keys="Widget.favorite_entry_id", post_update=post_update
        )

    Base.metadata.create_all(orm.engine)
    return Widget, Entry


def two_way_required(orm: Api) -> tuple[Any, Any]:
    """Alpha.beta and Beta.alpha, both through NOT NULL foreign keys: an unbreakable cycle
    when two rows point at each other. Natural keys, so that the rows can be named."""

    class Base(orm.DeclarativeBase):
        pass

    class Alpha(Base):
        __tablename__ = "alphas"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=False)
        beta_ref: orm.Mapped[int] = orm.mapped_column(
            orm.ForeignKey("betas.id", use_alter=True, name="fk_alpha_beta")
        )
        beta: orm.Mapped["Beta"] = orm.relationship(foreign_keys="Alpha.beta_ref")

    class Beta(Base):
        __tablename__ = "betas"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=False)
        alpha_ref: orm.Mapped[int] = orm.mapped_column(orm.ForeignKey("alphas.id"))
        alpha: orm.Mapped[Alpha] = orm.relationship(foreign_keys="Beta.alpha_ref")

    Base.metadata.create_all(orm.engine)
    return Alpha, Beta


def natural_keys(orm: Api) -> Any:
    """Code: a natural string key and two plain columns (for row switches)."""

    class Base(orm.DeclarativeBase):
        pass

    class Code(Base):
        __tablename__ = "codes"
        code: orm.Mapped[str] = orm.mapped_column(orm.String(20), primary_key=True)
        label: orm.Mapped[str] = orm.mapped_column(orm.String(50))
        qty: orm.Mapped[int]

    Base.metadata.create_all(orm.engine)
    return Code


def unique_accounts(orm: Api) -> Any:
    """Account: natural integer key and a nullable unique email."""

    class Base(orm.DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = "accounts"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=False)
        email: orm.Mapped[str | None] = orm.mapped_column(orm.String(50), unique=True)

    Base.metadata.create_all(orm.engine)
    return Account
