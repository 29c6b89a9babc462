"""Provider budgets across a fleet: `beacon worker` processes against a fake provider that, like
a real API key, answers 429 with Retry-After above N requests per second.

On PostgreSQL + Redis the workers are real processes sharing the budgets through Redis; the
fairness test also runs on SQLite, with the in-process worker and store that `beacon dev` uses.
The shared cooldown is shown one probe at a time, by two workers' contexts in this process
(each with its budgets, its Redis connections and its cached view, as two processes have).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select

from service.config import Settings
from service.db.database import Database
from service.db.models import Probe
from service.outbox import dispatch_pending_runs
from tests.support import pipeline as fixtures
from tests.support.fakes.provider_server import FakeProviderServer, Fault, RateLimit
from tests.support.pipeline import (
    insert_run,
    load_probes,
    make_workspace,
)
from tests.support.processes import delete_namespace, eventually
from tests.support.worker_fleet import (
    ended,
    fleet_settings,
    probes_finished,
    run_to_end,
    worker_processes,
)
from workers.context import WorkerContext
from workers.probes import Deferred, run_probe
from workers.runs import expand_run
from workers.runtime import start_embedded

fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
collection_db = fixtures.collection_db
stub_broker = fixtures.stub_broker


@pytest.mark.postgres_only  # two processes share the budget through Redis
async def test_two_workers_stay_under_the_providers_limit_and_every_probe_ends(
    backend: str,
    settings: Settings,
    collection_db: Database,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    limit = 10
    fake_provider.set_rate_limit("openai", RateLimit(limit, retry_after=1.0))
    fake_provider.set_latency(0.05)
    prompts = [f"which crm for a team of {n}" for n in range(60)]
    ws = await make_workspace(collection_db, prompts=prompts, providers=("openai",))
    # 7 a second between them: under the provider's 10 with room for the jitter between a
    # booked slot and the request's arrival. Each worker alone could make 160 calls a second
    # (8 in flight, 50 ms each).
    fleet = fleet_settings(backend, settings, collection_db, fake_provider, openai_rpm=7 * 60)
    async with worker_processes(fleet, 2, tmp_path) as (addresses, sender):
        run = await run_to_end(collection_db, sender, ws, within=90)
        shares = [await probes_finished(address) for address in addresses]

    traffic = fake_provider.traffic("openai")
    assert run.status == "succeeded"
    probes = await load_probes(collection_db, run.id)
    assert len(probes) == len(prompts) and all(p.status == "succeeded" for p in probes)
    assert traffic.throttled == []
    assert traffic.peak_per_second <= limit
    assert len(traffic.arrivals) == len(prompts)
    assert sum(shares) == len(prompts) and all(share > 0 for share in shares), shares


@pytest.mark.postgres_only  # the cooldown reaches the other process through Redis
async def test_a_429_pauses_the_whole_fleet_for_its_retry_after(
    backend: str,
    settings: Settings,
    collection_db: Database,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    retry_after = 2.0
    fake_provider.set_rate_limit("openai", RateLimit(5, retry_after=retry_after))
    fake_provider.set_latency(0.02)
    prompts = [f"which crm for a team of {n}" for n in range(20)]
    ws = await make_workspace(collection_db, prompts=prompts, providers=("openai",))
    # No budget configured: only the provider's 429s pace the fleet.
    fleet = fleet_settings(backend, settings, collection_db, fake_provider, probe_max_attempts=30)
    async with worker_processes(fleet, 2, tmp_path) as (_, sender):
        run = await run_to_end(collection_db, sender, ws, within=120)

    traffic = fake_provider.traffic("openai")
    assert run.status == "succeeded"
    assert traffic.throttled, "the fleet never met the provider's limit"
    # Requests already on the wire when a 429 was answered may still arrive just after it;
    # after that nobody calls until its Retry-After has passed.
    for refused in traffic.throttled:
        during = [t for t in traffic.arrivals if refused + 0.3 < t < refused + retry_after - 0.1]
        assert during == [], f"{len(during)} requests during the cooldown of a 429"


async def test_after_a_429_a_probe_sent_later_by_another_worker_waits_for_its_retry_after(
    backend: str,
    settings: Settings,
    collection_db: Database,
    fake_provider: FakeProviderServer,
    stub_broker: StubBroker,
) -> None:
    """The shared part of the cooldown, one probe at a time: worker A's probe gets a 429 with
    Retry-After N; a probe of the same provider that worker B runs afterwards makes no request
    before N has passed (a long N: it goes back to the queue for N without asking; a short
    one: it asks once N has passed). On SQLite one process is the whole fleet: B is A."""
    fleet = fleet_settings(backend, settings, collection_db, fake_provider)
    prompts = ("first question", "second question")
    ws = await make_workspace(collection_db, prompts=prompts, providers=("openai", "anthropic"))
    a = WorkerContext.create(fleet, stub_broker, db=collection_db)
    b = WorkerContext.create(fleet, stub_broker, db=collection_db) if backend == "postgres" else a
    try:
        run_id = await insert_run(collection_db, ws)
        await expand_run(a, run_id)
        probe = {
            (p.prompt_text, p.provider): p.id for p in await load_probes(collection_db, run_id)
        }

        # A long Retry-After: B's probe goes back to the queue for that long, unasked.
        fake_provider.inject("openai", Fault("rate_limit", retry_after=30.0))
        assert await run_probe(a, probe[prompts[0], "openai"]) is None  # retried later
        assert fake_provider.requests("openai") == 1
        deferred = await run_probe(b, probe[prompts[1], "openai"])
        assert isinstance(deferred, Deferred) and deferred.seconds >= 29.0, deferred
        assert fake_provider.requests("openai") == 1

        # A short one (another provider: the first cooldown does not hold it): B waits on
        # its event loop and asks once the Retry-After has passed.
        retry_after = 1.0
        fake_provider.inject("anthropic", Fault("rate_limit", retry_after=retry_after))
        assert await run_probe(a, probe[prompts[0], "anthropic"]) is None
        assert await run_probe(b, probe[prompts[1], "anthropic"]) is None  # answered
        refused, asked = fake_provider.traffic("anthropic").arrivals
        assert asked - refused >= retry_after, "asked before the Retry-After had passed"
        assert fake_provider.requests("anthropic", prompts[1]) == 1
    finally:
        await a.close(dispose_db=False)
        if b is not a:
            await b.close(dispose_db=False)
        await delete_namespace(fleet.rate_limit_key_prefix)


async def test_a_workspace_with_many_prompts_does_not_starve_the_others(
    backend: str,
    settings: Settings,
    collection_db: Database,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    fake_provider.set_latency(0.02)
    big_prompts = [f"big workspace question {n}" for n in range(200)]
    small_prompts = [f"small workspace question {n}" for n in range(3)]
    big = await make_workspace(collection_db, prompts=big_prompts, providers=("openai",))
    small = await make_workspace(collection_db, prompts=small_prompts, providers=("openai",))
    # 20 a second: the big run alone takes 10 seconds.
    fleet = fleet_settings(backend, settings, collection_db, fake_provider, openai_rpm=20 * 60)

    def big_asked() -> int:
        return sum(fake_provider.requests("openai", prompt) for prompt in big_prompts)

    async with fleet_of_one(backend, fleet, tmp_path) as sender:
        big_run = await insert_run(collection_db, big)
        await dispatch_pending_runs(collection_db, sender, run_ids=[big_run])

        async def backlog() -> bool:
            return big_asked() >= 20

        await eventually(backlog, what="the big run to get going", within=30)
        started = time.monotonic()
        small_run = await run_to_end(collection_db, sender, small, within=60)
        small_seconds = time.monotonic() - started
        big_done_meanwhile = big_asked()
        big_end = await ended(collection_db, big_run, within=90)

    assert small_run.status == "succeeded"
    assert big_end.status == "succeeded"
    assert await finished_probes(collection_db, big_run) == len(big_prompts)
    # In turn after the big run, the small one would wait for its ~180 remaining probes (9 s).
    assert big_done_meanwhile < 120, (big_done_meanwhile, small_seconds)


@contextlib.asynccontextmanager
async def fleet_of_one(
    backend: str, settings: Settings, logs: Path
) -> AsyncIterator[dramatiq.Broker]:
    """One `beacon worker` process on PostgreSQL + Redis; the in-process worker on SQLite."""
    if backend == "postgres":
        async with worker_processes(settings, 1, logs) as (_, sender):
            yield sender
        return
    running = start_embedded(settings, ticker=False, worker_threads=8)
    try:
        yield running.broker
    finally:
        await asyncio.to_thread(running.stop)


async def finished_probes(db: Database, run_id: str) -> int:
    async with db.transaction(write=False) as session:
        query = select(func.count()).where(Probe.run_id == run_id, Probe.status == "succeeded")
        return int(await session.scalar(query) or 0)
