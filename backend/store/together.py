"""New rows of several tables written in one round trip on PostgreSQL.

The ORM writes each table's new rows with a statement of its own, and rows that name
another new row (a foreign key) need their own flush before them, since the models have
no ``relationship()`` to order them by. On PostgreSQL one statement can insert them
all (``WITH a AS (INSERT …), b AS (INSERT …) INSERT …``): every part runs, and the
foreign keys are checked when the whole statement ends, so the order does not matter.
SQLite has no such statement: there the groups are flushed one after the other.
"""

from __future__ import annotations

from sqlalchemy import insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from backend.store.db import on_postgresql
from backend.store.models import Base


def _values(row: Base) -> dict[str, object]:
    """The row's column values, its columns' Python-side defaults filled in (on the
    object too, as a flush would), the ones still unset (server-generated keys) left
    out."""
    values: dict[str, object] = {}
    for attr in inspect(row).mapper.column_attrs:
        column = attr.columns[0]
        value = getattr(row, attr.key)
        if value is None and column.default is not None and column.default.is_scalar:
            value = column.default.arg
            setattr(row, attr.key, value)
        if value is not None:
            values[column.name] = value
    return values


def _one_statement(rows: list[Base]) -> Insert:
    inserts = [insert(type(row).__table__).values(_values(row)) for row in rows]  # type: ignore[arg-type]
    *first, last = inserts
    return last.add_cte(*(stmt.cte(f"new_{n}") for n, stmt in enumerate(first)))


async def insert_together(session: AsyncSession, *groups: list[Base]) -> None:
    """Insert these new rows: each group may name rows of the groups before it. On
    PostgreSQL one statement, the rows left detached from ``session`` (its commit has
    nothing left to write; their attributes stay readable); elsewhere each group is
    added and flushed in turn."""
    rows = [row for group in groups for row in group]
    for row in rows:  # added already (e.g. by ``UnitOfWork.add_intent``): written here
        if row in session:
            session.expunge(row)
    if not on_postgresql(session):
        for group in groups:
            session.add_all(group)
            await session.flush()
        return
    await session.execute(_one_statement(rows))
