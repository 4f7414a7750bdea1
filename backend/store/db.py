"""Engine, sessions and migrations. SQLite (aiosqlite) by default, PostgreSQL (asyncpg).

``CAAS_DATABASE_URL`` may be written in any common spelling (``postgres://``,
``postgresql://``, ``postgresql+psycopg://``, ``sqlite:///``...): ``async_database_url``
maps it to the async driver this project uses, and every engine is made through it."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from protocol.private_files import create_private
from protocol.settings import ConfigError
from protocol.startup import Dependency, DependencyFailed

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASE_SETTING = "CAAS_DATABASE_URL"
DATABASE_URL_FORM = "postgresql://user:password@host:port/db or sqlite:///path"
# every spelling of a scheme we accept → the driver the project runs on
ASYNC_SCHEMES = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+pg8000": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}
# PostgreSQL SQLSTATEs: credentials refused (28P01 password, 28000 no pg_hba entry /
# role), and the server is starting or shutting down (57P03, 57P01: wait for it)
PG_REFUSED = ("28P01", "28000")
PG_NOT_YET = ("57P03", "57P01", "53300")

Sessions = async_sessionmaker[AsyncSession]
T = TypeVar("T", bound=Hashable)


def async_database_url(url: str) -> str:
    """``url`` with its scheme mapped to the async driver (ASYNC_SCHEMES); ConfigError
    naming CAAS_DATABASE_URL for any other scheme. The URL is never quoted back."""
    scheme, separator, rest = url.partition("://")
    driver = ASYNC_SCHEMES.get(scheme.lower()) if separator else None
    if driver is None:
        shown = f"{scheme}://" if separator else "no scheme"
        raise ConfigError(
            DATABASE_SETTING, f"{shown} is not supported (expected {DATABASE_URL_FORM})"
        )
    return f"{driver}://{rest}"


def make_engine(url: str) -> AsyncEngine:
    url = async_database_url(url)
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
        event.listen(engine.sync_engine, "close", _sqlite_release)
        event.listen(engine.sync_engine, "close_detached", _sqlite_release)
        return engine
    # No pool_pre_ping: with asyncpg it costs three round trips (BEGIN, ";", ROLLBACK) on
    # every checkout, a third of the purchase path's database work (measured, see
    # docs/performance.md). A connection found dead (server restart) fails that one
    # transaction and invalidates the whole pool; loops retry, API clients replay.
    # Each distinct statement text is prepared once per pooled connection (one more
    # round trip) and kept in that connection's cache: SQLAlchemy's default of 100
    # was too few for the loops, the API and the batch statements together (prepares
    # were 6 % of the backend's CPU, docs/performance.md); a URL that sets it wins.
    parsed = make_url(url)
    if "prepared_statement_cache_size" not in parsed.query:
        parsed = parsed.update_query_dict({"prepared_statement_cache_size": "1000"})
    return create_async_engine(parsed, pool_size=10, max_overflow=20)


def padded(values: Iterable[T]) -> list[T]:
    """``values`` without duplicates, padded to a power of two by repeating the last one:
    an ``IN`` list of every length is a statement text of its own (prepared once more
    on each connection); padded, a batch query has a handful of shapes. Same rows."""
    items = list(dict.fromkeys(values))
    if not items:
        return items
    size = 1 << (len(items) - 1).bit_length()
    return items + [items[-1]] * (size - len(items))


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


def _sqlite_release(dbapi_conn: Any, *_record: Any) -> None:
    """Roll back before a connection closes. A task cancelled while SQLite ran its
    statement leaves that statement unfinished; closing the connection then only makes
    it a zombie, which keeps its transaction, and with it the write lock, until the
    garbage collector frees the statement: every other writer waited the whole busy
    timeout (30 s) and failed. ROLLBACK aborts the statement and frees the lock now.
    A connection already gone, or a close outside the event loop, has nothing to do."""
    with suppress(Exception):
        dbapi_conn.rollback()


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


def on_postgresql(session: AsyncSession) -> bool:
    """Whether the session's database is PostgreSQL (else SQLite): for the statements
    only one of them has."""
    return session.sync_session.get_bind().dialect.name == "postgresql"


def make_statement_sessions(engine: AsyncEngine) -> Sessions:
    """Sessions for work that is one statement at a time and needs no transaction
    around them: a claim (one guarded ``UPDATE … RETURNING``, atomic by itself) and the
    reads that follow it, a notification's recorded outcome. On PostgreSQL they run in
    autocommit: no ``BEGIN`` and ``COMMIT`` round trips, each statement commits alone
    (as under READ COMMITTED, each sees what is committed when it starts). SQLite keeps
    its transactions (its one pooled connection serialises them anyway)."""
    if engine.dialect.name != "postgresql":
        return make_sessions(engine)
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


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


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def _database_refused(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and _sqlstate(exc) in PG_REFUSED


def _not_yet(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and _sqlstate(exc) in PG_NOT_YET


async def wait_for_database(engine: AsyncEngine, wait_s: float) -> None:
    """The database answers ``SELECT 1`` within ``wait_s`` (a server still starting is
    waited for); DependencyUnreachable, CredentialsRefused or ConfigError (a database
    that does not exist, a SQLite file that cannot be opened) otherwise, naming
    CAAS_DATABASE_URL."""
    url = engine.url
    where = f"{url.host}:{url.port or 5432}/{url.database}" if url.host else str(url.database)
    database = Dependency(
        "database", where, DATABASE_SETTING, (OSError,), _database_refused, _not_yet
    )

    async def select_one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    try:
        await database.wait(select_one, wait_s)
    except DependencyFailed as exc:  # the server's own words: no such database...
        driver = exc.__cause__
        if not isinstance(driver, DBAPIError) or driver.orig is None:
            raise
        problem = str(driver.orig).strip().splitlines()[0]
        what_to_do = f"create it or fix {DATABASE_SETTING}"
        raise ConfigError(DATABASE_SETTING, f"{problem} ({where}): {what_to_do}") from None
