"""Worker fleets for tests that run `beacon worker` processes on one budget or cap: their
settings (a Redis namespace of their own), the processes with their metrics addresses, and a
run sent to them and awaited."""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dramatiq
import httpx

from service.broker import broker_of
from service.config import Settings
from service.db.database import Database
from service.db.models import Run
from service.outbox import dispatch_pending_runs
from tests.support import REDIS_URL
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.pipeline import derive_settings, insert_run, load_run, provider_settings
from tests.support.processes import Beacon, beacon_env, delete_namespace, eventually, free_port

FINISHED = re.compile(r'^beacon_probes_finished_total\{provider="openai",status="\w+"\} (\S+)$')


def fleet_settings(
    backend: str, settings: Settings, db: Database, server: FakeProviderServer, **over: Any
) -> Settings:
    """Workers on `db` and the fake providers; on PostgreSQL a Redis namespace of their own
    (broker and budgets), on SQLite the in-process broker and budgets."""
    namespace = f"beacon-budget-{uuid.uuid4().hex[:10]}"
    return derive_settings(
        settings,
        database_url=db.url,
        broker_url=f"{REDIS_URL}?namespace={namespace}" if backend == "postgres" else "",
        rate_limit_key_prefix=namespace,
        worker_concurrency=8,
        provider_concurrency=8,
        probe_backoff_seconds=0.05,
        probe_backoff_max_seconds=0.2,
        provider_timeout_seconds=10.0,
        **{**provider_settings(server), **over},
    )


@contextlib.asynccontextmanager
async def worker_processes(
    settings: Settings, count: int, logs: Path
) -> AsyncIterator[tuple[list[str], dramatiq.Broker]]:
    """`count` `beacon worker` processes; yields each one's metrics address, and a broker
    this process sends to them with."""
    sender = broker_of(settings)
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    started: list[Beacon] = []
    try:
        for number, address in enumerate(addresses):
            env = {
                **beacon_env(settings),
                "BEACON_WORKER_METRICS_ADDR": address,
                # Dramatiq's own knob: each worker holds at most two messages it has not
                # started, so the first worker up cannot take every message of a small run.
                "dramatiq_queue_prefetch": "2",
            }
            started.append(await Beacon.start("worker", env, logs / f"worker-{number}.log"))
        for address in addresses:
            # Every worker is up before any run starts, so that each can take a share.
            await eventually(
                functools.partial(_healthy, address), what=f"worker on {address}", within=60
            )
        yield addresses, sender
    finally:
        try:
            for worker in started:
                await worker.stop()
        finally:
            sender.close()
            await delete_namespace(settings.rate_limit_key_prefix)


async def _healthy(address: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://{address}/healthz", timeout=2.0)).status_code == 200
    except httpx.HTTPError:
        return False


async def probes_finished(address: str) -> float:
    """The openai probes a worker process finished, from its /metrics."""
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://{address}/metrics", timeout=5.0)).text
    return sum(float(m.group(1)) for line in body.splitlines() if (m := FINISHED.match(line)))


async def run_to_end(
    db: Database, broker: dramatiq.Broker, workspace_id: str, within: float
) -> Run:
    run_id = await insert_run(db, workspace_id)
    await dispatch_pending_runs(db, broker, run_ids=[run_id])
    return await ended(db, run_id, within)


async def ended(db: Database, run_id: str, within: float) -> Run:
    async def check() -> Run | None:
        run = await load_run(db, run_id)
        return run if run.end_time is not None else None

    return await eventually(check, what=f"run {run_id} to end", within=within)
