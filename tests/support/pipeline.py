"""Fixtures and helpers shared by the ticker, worker, pipeline and end-to-end tests (no tests).

Ticker and worker tests run against their own migrated database (per backend), so that ticks
at arbitrary times never touch another test's schedules, and against the in-process broker so
that they can wait for the queues to drain. The end-to-end tests use the shared server instead.
Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import delete, select

from beacon.v1 import run_service_pb2 as run_pb
from service.clock import new_id, utcnow
from service.config import PROVIDERS, Settings
from service.db.database import Database
from service.db.models import Organization, Probe, Prompt, Run, Schedule, Workspace
from service.messages import PROBE_QUEUE, RUN_QUEUE
from service.outbox import RunDispatcher
from tests.support.app import temporary_database
from tests.support.fakes.provider_server import FAKE_API_KEY, FakeProviderServer
from workers.runtime import Embedded, start_embedded


@pytest.fixture(scope="session")
async def collection_db(
    backend: str, session_id: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    """A database of the collection tests only (dropped at the end of the session).

    Each test module that uses it gets its own (the name carries a random part)."""
    tmp = tmp_path_factory.mktemp(f"collection-{backend}")
    name = f"beacon_collection_{session_id}_{uuid.uuid4().hex[:6]}"
    async with temporary_database(backend, tmp, name) as url:
        db = Database(url)
        yield db
        await db.dispose()


@pytest.fixture(scope="session")
async def fake_server() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(latency=0.0) as server:
        yield server


@pytest.fixture
def fake_provider(fake_server: FakeProviderServer) -> Iterator[FakeProviderServer]:
    """The fake providers, with faults, scripts, latency and counters reset around the test."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()


def provider_settings(server: FakeProviderServer) -> dict[str, Any]:
    """Settings giving every provider a key and the fake server's base URL, and no request
    budget (the fake has no bill; budgets are tested with their own, test_provider_budgets)."""
    values: dict[str, Any] = {}
    for name in PROVIDERS:
        values[f"{name}_api_key"] = FAKE_API_KEY
        values[f"{name}_base_url"] = server.base_url(name)
        values[f"{name}_rpm"] = 0
    return values


def derive_settings(base: Settings, **over: Any) -> Settings:
    return Settings(**{**base.model_dump(), **over})


@pytest.fixture
def worker_settings(
    settings: Settings, collection_db: Database, fake_provider: FakeProviderServer
) -> Settings:
    """Settings of an in-process worker on the private database and the fake providers."""
    return derive_settings(
        settings,
        database_url=collection_db.url,
        redis_url="",
        broker_url="",
        worker_concurrency=16,
        provider_concurrency=16,
        probe_max_attempts=3,
        probe_backoff_seconds=0.01,
        probe_backoff_max_seconds=0.05,
        provider_timeout_seconds=5.0,
        **provider_settings(fake_provider),
    )


@pytest.fixture
def stub_broker() -> StubBroker:
    """A fresh in-process broker with Beacon's queues, that no worker consumes."""
    broker = StubBroker()
    for queue in (RUN_QUEUE, PROBE_QUEUE):
        broker.declare_queue(queue)
    return broker


@contextlib.contextmanager
def sending_to(db: Database, broker: Any) -> Iterator[None]:
    """Runs that commands on `db` write (StartRun, SetSchedule) are sent to `broker` meanwhile
    (the App of the process would be built with it)."""
    previous = db.run_sender
    db.run_sender = RunDispatcher(db, broker).dispatch_runs
    try:
        yield
    finally:
        db.run_sender = previous


StartWorker = Callable[..., Embedded]


@pytest.fixture
def start_worker(worker_settings: Settings) -> Iterator[StartWorker]:
    """Starts an in-process worker (no ticker) with `worker_settings` changed by keywords."""
    started: list[Embedded] = []

    def start(**over: Any) -> Embedded:
        changed = derive_settings(worker_settings, **over) if over else worker_settings
        running = start_embedded(changed, ticker=False, worker_threads=8)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


async def drained(worker: Embedded) -> None:
    """Waits (30 s at most) for the worker's queues to empty, without blocking this loop: the
    fake providers run on it."""
    await asyncio.to_thread(worker.drain, 30.0)


async def insert_run(
    db: Database,
    workspace_id: str,
    *,
    prompt_ids: Sequence[str] = (),
    providers: Sequence[str] = (),
    trigger: str = "manual",
) -> str:
    """A queued run, as StartRun writes it (not yet sent)."""
    run_id = new_id("run")
    async with db.transaction() as session:
        session.add(
            Run(
                id=run_id,
                workspace_id=workspace_id,
                trigger=trigger,
                status="queued",
                prompt_ids=list(prompt_ids),
                providers=list(providers),
                create_time=utcnow(),
            )
        )
    return run_id


async def load_run(db: Database, run_id: str) -> Run:
    async with db.transaction(write=False) as session:
        run = await session.get(Run, run_id)
        assert run is not None
        session.expunge_all()
        return run


async def load_probes(db: Database, run_id: str) -> list[Probe]:
    async with db.transaction(write=False) as session:
        query = (
            select(Probe).where(Probe.run_id == run_id).order_by(Probe.prompt_text, Probe.provider)
        )
        probes = list((await session.scalars(query)).all())
        session.expunge_all()
        return probes


@pytest.fixture
async def no_schedules(collection_db: Database) -> None:
    """Ticks in this test see only the schedules it creates."""
    async with collection_db.transaction() as session:
        await session.execute(delete(Schedule))


async def make_workspace(
    db: Database,
    *,
    prompts: Sequence[str] = ("best crm for startups",),
    providers: Sequence[str] = ("openai", "anthropic"),
    name: str = "Acme",
    domain: str = "acme.com",
    aliases: Sequence[str] = (),
    competitors: Sequence[tuple[str, str]] = (),
    deleted: bool = False,
) -> str:
    """A workspace (in its own organization) with prompts and enabled providers; its id."""
    now = utcnow()
    org_id, ws_id = new_id("org"), new_id("ws")
    suffix = uuid.uuid4().hex[:10]
    async with db.transaction() as session:
        session.add(Organization(id=org_id, name=f"Org {suffix}", slug=f"org-{suffix}"))
        await session.flush()
        session.add(
            Workspace(
                id=ws_id,
                organization_id=org_id,
                name=name,
                slug=f"ws-{suffix}",
                domain=domain,
                brand_aliases=list(aliases),
                competitors=[{"name": n, "domain": d} for n, d in competitors],
                enabled_providers=list(providers),
                delete_time=now if deleted else None,
            )
        )
        await session.flush()
        for index, text in enumerate(prompts):
            session.add(
                Prompt(
                    id=new_id("prm"),
                    workspace_id=ws_id,
                    text=text,
                    text_hash=f"{suffix}-{index}",
                    create_time=now,
                )
            )
    return ws_id


async def add_schedule(
    db: Database, workspace_id: str, cron: str, next_run_time: datetime, time_zone: str = "UTC"
) -> None:
    now = utcnow()
    async with db.transaction() as session:
        session.add(
            Schedule(
                workspace_id=workspace_id,
                cron=cron,
                time_zone=time_zone,
                next_run_time=next_run_time,
                create_time=now,
                update_time=now,
            )
        )


def pipeline_settings(settings: Settings, server: FakeProviderServer, broker_url: str) -> Settings:
    return derive_settings(
        settings,
        broker_url=broker_url,
        ticker_interval_seconds=0.3,
        worker_concurrency=16,
        provider_concurrency=16,
        **provider_settings(server),
    )


async def wait_for_end(collection: SimpleNamespace, run_id: str, metadata: Any) -> run_pb.Run:
    """The run once it has ended, followed with WatchRun (no polling by the client)."""
    last: run_pb.Run | None = None
    async with asyncio.timeout(60):
        async for update in collection.runs.WatchRun(
            run_pb.WatchRunRequest(run_id=run_id), metadata=metadata
        ):
            last = update
    assert last is not None and last.HasField("end_time"), last
    return last
