"""Beacon's collection pipeline running for a test: embedded in this process on SQLite, as
`beacon worker` and `beacon ticker` processes on PostgreSQL (Redis or RabbitMQ), with this
process's StartRun and SetSchedule sending to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from service.broker import broker_of
from service.config import Settings
from service.db.database import Database
from tests.support.brokers import broker_url
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.pipeline import pipeline_settings, sending_to
from tests.support.processes import Beacon, beacon_env
from workers.runtime import start_embedded


@contextlib.asynccontextmanager
async def embedded_pipeline(settings: Settings, db: Database) -> AsyncIterator[None]:
    running = start_embedded(settings, ticker=True, worker_threads=8)
    try:
        with sending_to(db, running.broker):
            yield
    finally:
        await asyncio.to_thread(running.stop)


@contextlib.asynccontextmanager
async def process_pipeline(settings: Settings, logs: Path, db: Database) -> AsyncIterator[None]:
    """`beacon worker` and `beacon ticker` processes with `settings` in their environment."""
    # StartRun/SetSchedule in this process send to the same broker.
    broker = broker_of(settings)
    env = beacon_env(settings)
    processes: list[Beacon] = []
    try:
        for command in ("worker", "ticker"):
            processes.append(await Beacon.start(command, env, logs / f"beacon-{command}.log"))
        with sending_to(db, broker):
            yield
    finally:
        try:
            for process in processes:
                await process.stop()
        finally:
            broker.close()


@contextlib.asynccontextmanager
async def pipeline(
    backend: str,
    broker: str,
    settings: Settings,
    server: FakeProviderServer,
    tmp: Path,
    db: Database,
) -> AsyncIterator[None]:
    if backend == "sqlite":
        async with embedded_pipeline(pipeline_settings(settings, server, ""), db):
            yield
        return
    async with (
        broker_url(broker) as url,
        process_pipeline(pipeline_settings(settings, server, url), tmp, db),
    ):
        yield
