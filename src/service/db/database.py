"""Engine creation and the unit of work: the one place transactions begin and end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

# Anything a read can run on: an ORM session or a Core connection (`Database.read`).
Reader = AsyncSession | AsyncConnection
# Hands committed outbox runs to the broker (the App's dispatcher, `service.outbox`).
RunSender = Callable[[Sequence[str]], Awaitable[object]]
# Where a session collects the runs to send once its transaction has committed.
_RUNS_TO_SEND = "beacon_runs_to_send"


def send_runs_after_commit(session: AsyncSession, run_ids: Iterable[str]) -> None:
    """Asks the unit of work to hand these outbox runs to the broker once the session's
    transaction has committed (nothing is sent when it rolls back).

    A run that is not sent (no sender, a broker error, a crash) stays in the outbox
    (`enqueue_time` NULL) and the ticker's sweep sends it.
    """
    pending: dict[str, None] = session.info.setdefault(_RUNS_TO_SEND, {})
    pending.update(dict.fromkeys(run_ids))


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for PostgreSQL (asyncpg) or SQLite (aiosqlite).

    SQLite runs in WAL mode with a busy timeout, and write transactions start with
    `BEGIN IMMEDIATE` so that concurrent writers queue instead of failing on lock upgrade.
    Errors never show the values bound to their statement (`hide_parameters`): those are
    emails and names, and errors get logged.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"timeout": 30}
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip per checkout. A dead connection fails its call
    # (UNAVAILABLE), is invalidated, and the next checkout gets a fresh one.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, **kwargs
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("beacon_write") else "BEGIN")


class Database:
    """Owns the engine; hands out units of work.

    `run_sender` (set by `service.app.App` to its dispatcher) receives the runs a committed
    transaction asked to send (`send_runs_after_commit`); without one they wait in the
    outbox for the ticker.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # The same pool, its connections in autocommit while `read` holds them.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.run_sender: RunSender | None = None

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success and rolled back on error.

        `write=False` marks read-only work: it runs without BEGIN/ROLLBACK round trips
        (autocommit; each statement sees its own snapshot) and never takes SQLite's write
        lock. After a write commits, the runs it asked to send (`send_runs_after_commit`) go
        to `run_sender`, once the session's connection is back in the pool.
        """
        options: dict[str, Any] = (
            {"beacon_write": True} if write else {"isolation_level": "AUTOCOMMIT"}
        )
        to_send: list[str] = []
        async with self._sessions() as session:
            await session.connection(execution_options=options)
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            if write:
                await session.commit()
                to_send = list(session.info.pop(_RUNS_TO_SEND, ()))
            else:
                # Keep what was read usable after the block: rollback would expire it.
                session.expunge_all()
                await session.rollback()
        if to_send and self.run_sender is not None:
            await self.run_sender(to_send)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in autocommit for hot read paths (no ORM session, no BEGIN).

        Several times cheaper per call than `transaction(write=False)`; use it for
        single-statement reads served on every RPC (access checks, GetWorkspace).
        """
        async with self._autocommit.connect() as conn:
            yield conn

    async def ping(self) -> bool:
        """True when the database answers."""
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
