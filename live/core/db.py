"""The SQL database: async engine, session factory, and schema migrations (Alembic)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "ops" / "migrations"


def make_engine(url: str) -> AsyncEngine:
    """An engine sized for a server: pooled, pre-pinged, SQLite in WAL mode."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _rec):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, pool_timeout=10)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade(conn: Connection, url: str) -> None:
    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (safe to run from several processes)."""
    url = engine.url.render_as_string(hide_password=False)
    db_file = engine.url.database if engine.dialect.name == "sqlite" else None
    if db_file and db_file != ":memory:":
        # SQLite runs DDL outside a transaction: two processes starting at once both created
        # the first tables ("table ... already exists"). One migrates, the others wait for it.
        import filelock

        lock = filelock.FileLock(f"{db_file}.migrate.lock", timeout=120, thread_local=False)  # taken in a thread
        await asyncio.to_thread(lock.acquire)
        try:
            await _migrate(engine, url)
        finally:
            lock.release()
        return
    await _migrate(engine, url)


async def _migrate(engine: AsyncEngine, url: str) -> None:
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Several workers start at once; one migrates, the others wait for it.
            await conn.execute(text("SELECT pg_advisory_xact_lock(7426001)"))
        await conn.run_sync(_upgrade, url)


async def ping(engine: AsyncEngine, timeout: float = 2.0) -> bool:
    """True when the database answers a trivial query within ``timeout``."""
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception as e:
        log.warning("database ping failed: %s", e)
        return False
