"""The three-relationship schema of test_differential.py and test_relational_state_machine.py.

Declared from either library's API (an `Api` of tests/_rel_models.py), so that the same models
exist once on retort and once on SQLAlchemy 2.x:

- Parent 1-* Child through the nullable children.parent_id, `cascade="all, delete-orphan"`;
  parents also have a nullable unique `code` (unique values changing hands);
- Parent *-* Tag through the secondary Table parent_tags;
- Node: self-referential (nullable nodes.parent_id, default cascade).

Every key is natural (client-given, `autoincrement=False`), so that both libraries produce the
same rows and objects can be matched by key.

No `from __future__ import annotations`: the models' `orm.Mapped[...]` annotations must be
evaluated where they are written (`orm` is a local name).
"""

from dataclasses import dataclass
from typing import Any, Optional

import psycopg

from tests._rel_models import Api

__all__ = [
    "COLUMNS",
    "INITIAL_ROWS",
    "TABLES",
    "TABLE_OF",
    "Models",
    "declare",
    "fetch_rows",
    "reset_rows",
]


@dataclass
class Models:
    Parent: Any
    Child: Any
    Tag: Any
    Node: Any

    def by_name(self, name: str) -> Any:
        return getattr(self, name)


# mapped column attributes of each class, key first
COLUMNS: dict[str, tuple[str, ...]] = {
    "Parent": ("id", "name", "code"),
    "Child": ("id", "name", "parent_id"),
    "Tag": ("id", "label"),
    "Node": ("id", "name", "parent_id"),
}

# class name: its table
TABLE_OF: dict[str, str] = {
    "Parent": "parents",
    "Child": "children",
    "Tag": "tags",
    "Node": "nodes",
}

# table: (columns, ORDER BY)
TABLES: dict[str, tuple[str, str]] = {
    "parents": ("id, name, code", "id"),
    "children": ("id, name, parent_id", "id"),
    "tags": ("id, label", "id"),
    "parent_tags": ("parent_id, tag_id", "parent_id, tag_id"),
    "nodes": ("id, name, parent_id", "id"),
}

# rows present when each program / state machine run starts, in FK order
INITIAL_ROWS: dict[str, list[tuple[Any, ...]]] = {
    "parents": [(1, "p1", "x"), (2, "p2", None), (3, "p3", "y")],
    "children": [(1, "c1", 1), (2, "c2", 1), (3, "c3", 2), (4, "c4", None)],
    "tags": [(1, "t1"), (2, "t2")],
    "parent_tags": [(1, 1), (1, 2), (2, 2)],
    "nodes": [(1, "n1", None), (2, "n2", 1), (3, "n3", 2), (4, "n4", 1)],
}


def declare(orm: Api) -> Models:
    """Declare the four models on a fresh DeclarativeBase of `orm` and create their tables."""

    class Base(orm.DeclarativeBase):
        pass

    parent_tags = orm.Table(
        "parent_tags",
        Base.metadata,
        orm.Column("parent_id", orm.ForeignKey("parents.id"), primary_key=True),
        orm.Column("tag_id", orm.ForeignKey("tags.id"), primary_key=True),
    )

    class Parent(Base):
        __tablename__ = "parents"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=False)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(20))
        code: orm.Mapped[str | None] = orm.mapped_column(orm.String(20), unique=True)
        children: orm.Mapped[list["Child"]] = orm.relationship(
            back_populates="parent", cascade="all, delete-orphan", order_by="Child.id"
        )
        tags: orm.Mapped[list["Tag"]] = orm.relationship(
            secondary=parent_tags, back_populates="parents", order_by="Tag.id"
        )

    class Child(Base):
        __tablename__ = "children"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=False)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(20))
        parent_id: orm.Mapped[int | None] = orm.mapped_column(orm.ForeignKey("parents.id"))
        parent: orm.Mapped[Parent | None] = orm.relationship(back_populates="children")

    class Tag(Base):
        __tablename__ = "tags"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=False)
        label: orm.Mapped[str] = orm.mapped_column(orm.String(20))
        parents: orm.Mapped[list[Parent]] = orm.relationship(
            secondary=parent_tags, back_populates="tags", order_by=Parent.id
        )

    class Node(Base):
        __tablename__ = "nodes"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=False)
        name: orm.Mapped[str] = orm.mapped_column(orm.String(20))
        parent_id: orm.Mapped[int | None] = orm.mapped_column(orm.ForeignKey("nodes.id"))
        parent: orm.Mapped[Optional["Node"]] = orm.relationship(
            back_populates="children", remote_side="Node.id"
        )
        children: orm.Mapped[list["Node"]] = orm.relationship(
            back_populates="parent", order_by="Node.id"
        )

    Base.metadata.create_all(orm.engine)
    return Models(Parent, Child, Tag, Node)


def reset_rows(conn: psycopg.Connection[Any], schema: str) -> None:
    """Empty the tables of `schema` and insert INITIAL_ROWS (through an autocommit `conn`)."""
    with conn.transaction():
        conn.execute(f"TRUNCATE {', '.join(f'{schema}.{t}' for t in TABLES)}")
        for table, rows in INITIAL_ROWS.items():
            cols = TABLES[table][0]
            marks = ", ".join(["%s"] * len(rows[0]))
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {schema}.{table} ({cols}) VALUES ({marks})", rows)


def fetch_rows(conn: psycopg.Connection[Any], schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's committed rows, ordered by key."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table, (cols, order) in TABLES.items():
        out[table] = conn.execute(
            f"SELECT {cols} FROM {schema}.{table} ORDER BY {order}"
        ).fetchall()
    return out
