"""Engine, sessions and migrations. SQLite (aiosqlite) by default, PostgreSQL (asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from protocol.private_files import create_private

MIGRATIONS = Path(__file__).parent / "migrations"

Sessions = async_sessionmaker[AsyncSession]


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        _create_private_db_file(url)
        # One connection, so the transactions (all BEGIN IMMEDIATE: SQLite has one
        # writer) queue in order on the pool rather than in SQLite's busy handler, which
        # is not fair: with several loops polling, one of them could wait for seconds.
        # Nothing holds two sessions at once, so one connection cannot deadlock.
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    # No pool_pre_ping: with asyncpg it costs three round trips (BEGIN, ";", ROLLBACK) on
    # every checkout, a third of the purchase path's database work (measured, see
    # docs/performance.md). A connection found dead (server restart) fails that one
    # transaction and invalidates the whole pool; loops retry, API clients replay.
    return create_async_engine(url, pool_size=10, max_overflow=20)


def _create_private_db_file(url: str) -> None:
    """Customer data: a database file created 0600 (SQLite would make it 0644 under the
    usual umask; its -wal and -shm files copy the file's mode). An existing file, a
    memory database or a missing folder are left to SQLite."""
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        if path.parent.is_dir():
            create_private(path)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE: take the write lock up front, so two read-then-write
    transactions queue on busy_timeout instead of failing with SQLITE_BUSY."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the schema to head on this engine (safe to run on every start)."""

    def upgrade(sync_conn: Connection) -> None:
        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(upgrade)
