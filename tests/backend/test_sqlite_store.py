"""SQLite as the backend's store: a connection dropped in the middle of a statement
(what a cancelled task leaves behind) must not keep the database's one write lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from backend.store.db import make_engine


async def test_a_connection_dropped_mid_statement_frees_the_write_lock(tmp_path: Path) -> None:
    """The connection is invalidated (as SQLAlchemy does when a task is cancelled while
    SQLite runs its statement) with that statement unfinished and still referenced: a
    writer elsewhere gets the lock at once. Before the fix it waited until the garbage
    collector freed the statement: in the backend's loops, the whole 30 s busy timeout."""
    path = tmp_path / "store.sqlite3"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1), (2), (3)"))
        dropped = await engine.connect()
        await dropped.begin()  # BEGIN IMMEDIATE: this connection holds the write lock
        unfinished = await dropped.stream(text("SELECT n FROM t"))  # one row read, two left
        assert (await unfinished.fetchmany(1)) == [(1,)]
        await dropped.invalidate()

        writer = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # "database is locked" if the lock was kept
            writer.execute("INSERT INTO t VALUES (4)")
            writer.execute("COMMIT")
        finally:
            writer.close()
        del unfinished
    finally:
        await engine.dispose()
