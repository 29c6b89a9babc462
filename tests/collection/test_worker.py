"""Workers: runs become probes, probes become analysed answers, exactly once, with retries."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from sqlalchemy import update

from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.broker import RedisOptions, redis_options
from service.clock import new_id, utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Probe, Run, Workspace
from service.messages import probe_message, run_message
from service.outbox import dispatch_pending_runs
from tests.support import builders
from tests.support import pipeline as fixtures
from tests.support.app import NewUser
from tests.support.fakes.provider_server import FakeProviderServer, Fault
from tests.support.pipeline import (
    StartWorker,
    derive_settings,
    drained,
    insert_run,
    load_probes,
    load_run,
    make_workspace,
)
from workers.actors import worker_broker
from workers.probes import retry_delay

collection_db = fixtures.collection_db
fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
worker_settings = fixtures.worker_settings
start_worker = fixtures.start_worker

PROMPT = "best crm for startups"


async def test_a_run_becomes_analysed_answers_and_succeeds(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    fake_provider.script(
        PROMPT,
        "HubSpot is popular, but Acme (see acme.com) is the startup favourite.",
        [
            ("https://www.acme.com/pricing?utm_source=x", "Acme pricing"),
            ("https://hubspot.com/", ""),
        ],
    )
    ws = await make_workspace(
        collection_db,
        prompts=(PROMPT, "crm with email sync"),
        providers=("openai", "anthropic"),
        competitors=(("HubSpot", "hubspot.com"), ("Pipedrive", "pipedrive.com")),
    )
    worker = start_worker()
    run_id = await insert_run(collection_db, ws)

    assert await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id]) == 1
    await drained(worker)

    run = await load_run(collection_db, run_id)
    assert run.status == "succeeded"
    assert run.end_time is not None
    assert (run.prompt_count, run.providers) == (2, ["openai", "anthropic"])
    probes = await load_probes(collection_db, run_id)
    assert sorted((p.prompt_text, p.provider, p.status) for p in probes) == sorted(
        (prompt, provider, "succeeded")
        for prompt in (PROMPT, "crm with email sync")
        for provider in ("openai", "anthropic")
    )
    scripted = [p for p in probes if p.prompt_text == PROMPT]
    for probe in scripted:
        assert probe.text.startswith("HubSpot is popular")
        assert (probe.brand_mentioned, probe.brand_rank) == (True, 2)
        assert probe.competitors == [{"name": "HubSpot", "rank": 1}]
        assert probe.citations == [
            {
                "url": "https://www.acme.com/pricing",
                "title": "Acme pricing",
                "domain": "acme.com",
                "brand": True,
            },
            {"url": "https://hubspot.com/", "title": "", "domain": "hubspot.com", "brand": False},
        ]
        assert (probe.brand_citations, probe.citation_count, probe.attempts) == (1, 2, 1)
        assert probe.model and probe.complete_time is not None
    assert fake_provider.requests() == 4


async def test_redelivered_messages_change_nothing(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT,), providers=("openai", "mistral"))
    worker = start_worker()
    run_id = await insert_run(collection_db, ws)
    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)
    run = await load_run(collection_db, run_id)
    probes = await load_probes(collection_db, run_id)
    assert run.status == "succeeded"

    # At-least-once delivery: the run message and every probe message arrive again, twice.
    for _ in range(2):
        worker.broker.enqueue(run_message(run_id))
        for probe in probes:
            worker.broker.enqueue(probe_message([probe.id]))
    await drained(worker)

    assert fake_provider.requests() == 2  # no provider call for a finished probe
    again = await load_probes(collection_db, run_id)
    assert [(p.id, p.complete_time, p.text) for p in again] == [
        (p.id, p.complete_time, p.text) for p in probes
    ]
    after = await load_run(collection_db, run_id)
    assert (after.status, after.end_time) == (run.status, run.end_time)  # ended exactly once


async def test_retries_stop_at_the_attempt_limit(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT,), providers=("openai",))
    fake_provider.inject("openai", *[Fault("server_error")] * 5)
    worker = start_worker(probe_max_attempts=3)
    run_id = await insert_run(collection_db, ws)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    (probe,) = await load_probes(collection_db, run_id)
    assert (probe.status, probe.attempts) == ("failed", 3)
    assert probe.error == "provider error (500)"
    assert fake_provider.requests("openai") == 3
    assert fake_provider.pending_faults("openai") == 2
    assert (await load_run(collection_db, run_id)).status == "failed"


async def test_a_transient_failure_is_retried_and_succeeds(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT,), providers=("google",))
    fake_provider.inject("google", Fault("overloaded"))
    worker = start_worker()
    run_id = await insert_run(collection_db, ws)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    (probe,) = await load_probes(collection_db, run_id)
    assert (probe.status, probe.attempts, probe.error) == ("succeeded", 2, "")
    assert (await load_run(collection_db, run_id)).status == "succeeded"


async def test_rate_limit_waits_for_retry_after(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT,), providers=("anthropic",))
    fake_provider.inject("anthropic", Fault("rate_limit", retry_after=1.0))
    # The backoff alone would retry within 50 ms: only Retry-After explains a longer wait.
    worker = start_worker(probe_backoff_seconds=0.01, probe_backoff_max_seconds=0.05)
    run_id = await insert_run(collection_db, ws)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    async with asyncio.timeout(20):
        await fake_provider.wait_for_requests(1, "anthropic")
        first = time.monotonic()
        await fake_provider.wait_for_requests(2, "anthropic")
        second = time.monotonic()
    await drained(worker)

    assert second - first >= 0.95
    (probe,) = await load_probes(collection_db, run_id)
    assert (probe.status, probe.attempts) == ("succeeded", 2)


async def test_permanent_errors_are_recorded_as_a_category_and_logged_in_full(
    collection_db: Database,
    fake_provider: FakeProviderServer,
    start_worker: StartWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT,), providers=("openai", "cohere"))
    fake_provider.inject("openai", Fault("quota_exhausted"))
    worker = start_worker()
    run_id = await insert_run(collection_db, ws)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    by_provider = {p.provider: p for p in await load_probes(collection_db, run_id)}
    failed = by_provider["openai"]
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error == "provider rate limit (429)"
    logged = [r.getMessage() for r in caplog.records if failed.id in r.getMessage()]
    assert any("quota" in line.lower() and "HTTP 429" in line for line in logged), logged
    assert fake_provider.requests("openai") == 1
    assert by_provider["cohere"].status == "succeeded"
    assert (await load_run(collection_db, run_id)).status == "partial"


async def test_canceling_a_run_skips_the_remaining_probes(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    prompts = [f"question {n}" for n in range(12)]
    ws = await make_workspace(collection_db, prompts=prompts, providers=("perplexity",))
    fake_provider.set_latency(0.2)
    # One call at a time, so that most probes are still waiting when the run is canceled.
    worker = start_worker(provider_concurrency=1)
    run_id = await insert_run(collection_db, ws)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    async with asyncio.timeout(20):
        await fake_provider.wait_for_requests(1, "perplexity")
    async with collection_db.transaction() as session:  # what CancelRun does
        await session.execute(update(Run).where(Run.id == run_id).values(cancel_requested=True))
    await drained(worker)

    probes = await load_probes(collection_db, run_id)
    statuses = [p.status for p in probes]
    assert "pending" not in statuses
    assert statuses.count("skipped") >= 6
    assert fake_provider.requests("perplexity") < len(prompts)
    run = await load_run(collection_db, run_id)
    assert (run.status, run.end_time is not None) == ("canceled", True)


async def test_a_run_without_prompts_fails_with_the_reason(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=())
    worker = start_worker()
    run_id = await insert_run(collection_db, ws)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    run = await load_run(collection_db, run_id)
    assert (run.status, run.failure_reason) == ("failed", "the workspace has no prompts to ask")
    assert fake_provider.requests() == 0


async def test_providers_without_credentials_are_left_out_of_scheduled_runs(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT,), providers=("openai", "google"))
    worker = start_worker(google_api_key="")
    run_id = await insert_run(collection_db, ws, trigger="schedule")

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    assert [p.provider for p in await load_probes(collection_db, run_id)] == ["openai"]
    run = await load_run(collection_db, run_id)
    assert (run.status, run.providers) == ("succeeded", ["openai"])
    assert fake_provider.requests("google") == 0


async def test_a_run_whose_providers_all_lack_credentials_fails(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT,), providers=("mistral",))
    worker = start_worker(mistral_api_key="")
    run_id = await insert_run(collection_db, ws)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    run = await load_run(collection_db, run_id)
    assert run.status == "failed"
    assert run.failure_reason == "no enabled provider has credentials configured"


async def test_provider_timeouts_are_retried_then_recorded(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT,), providers=("openai",))
    fake_provider.inject("openai", Fault("hang"), Fault("hang"))
    worker = start_worker(provider_timeout_seconds=0.3, probe_max_attempts=2)
    run_id = await insert_run(collection_db, ws)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    (probe,) = await load_probes(collection_db, run_id)
    assert (probe.status, probe.attempts) == ("failed", 2)
    assert probe.error == "timeout"
    assert fake_provider.requests("openai") == 2


async def test_probes_of_a_deleted_workspace_are_skipped(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    ws = await make_workspace(collection_db, prompts=(PROMPT, "crm for agencies"))
    worker = start_worker()
    run_id = await insert_run(collection_db, ws)
    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)
    # A second run is expanded, then the workspace is deleted before its probes are asked.
    second = await insert_run(collection_db, ws)
    async with collection_db.transaction() as session:
        await session.execute(
            update(Run).where(Run.id == second).values(status="running", start_time=utcnow())
        )
        session.add_all(
            Probe(
                id=new_id("rsp"),
                run_id=second,
                workspace_id=ws,
                prompt_id=new_id("prm"),
                prompt_text=f"question {n}",
                provider="openai",
                status="pending",
                create_time=utcnow(),
            )
            for n in range(3)
        )
        await session.execute(
            update(Workspace).where(Workspace.id == ws).values(delete_time=utcnow())
        )
    requests_before = fake_provider.requests()

    for probe in await load_probes(collection_db, second):
        worker.broker.enqueue(probe_message([probe.id]))
    await drained(worker)

    assert [p.status for p in await load_probes(collection_db, second)] == ["skipped"] * 3
    assert (await load_run(collection_db, second)).status == "canceled"
    assert fake_provider.requests() == requests_before


def test_retry_delays_honour_retry_after_and_grow_without_it(worker_settings: Settings) -> None:
    settings = derive_settings(
        worker_settings, probe_backoff_seconds=2.0, probe_backoff_max_seconds=30.0
    )
    assert retry_delay(settings, 1, 7.5) == 7.5
    assert retry_delay(settings, 3, 0.0) == 0.0
    first, third, tenth = (retry_delay(settings, n, None) for n in (1, 3, 10))
    assert 1.0 <= first <= 2.0  # 2 s with jitter down to half
    assert 4.0 <= third <= 8.0
    assert 15.0 <= tenth <= 30.0  # capped


def test_broker_url_options_are_read_and_kept_from_redis() -> None:
    options = redis_options(
        "redis://:secret@cache:6380/3?namespace=acme&heartbeat_timeout=5000"
        "&maintenance_chance=250&socket_timeout=5"
    )
    assert options == RedisOptions(
        url="redis://:secret@cache:6380/3?socket_timeout=5",
        namespace="acme",
        heartbeat_timeout_ms=5000,
        maintenance_chance=250,
    )
    assert redis_options("redis://cache/0") == RedisOptions(url="redis://cache/0")
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        redis_options("redis://cache/0?heartbeat_timeout=soon")


def test_each_worker_broker_is_its_own_with_the_actors_declared(worker_settings: Settings) -> None:
    first = worker_broker(worker_settings)
    again = worker_broker(worker_settings)
    assert again is not first  # nothing is registered globally: a broker is passed on
    assert {"process_run", "process_probes"} <= set(first.actors) == set(again.actors)


async def test_tenants_see_a_failure_s_category_and_status_never_the_provider_s_text(
    app: App,
    collection: SimpleNamespace,
    new_user: NewUser,
    fake_provider: FakeProviderServer,
    start_worker: StartWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = await new_user()
    tenant = await builders.make_workspace(app, owner.user_id, enabled=["openai", "anthropic"])
    await builders.insert_prompts(app, tenant.workspace_id, [PROMPT])
    fake_provider.inject("openai", Fault("server_error"))
    fake_provider.inject("anthropic", Fault("quota_exhausted"))
    worker = start_worker(database_url=app.settings.database_url, probe_max_attempts=1)
    run_id = await insert_run(app.db, tenant.workspace_id)
    await dispatch_pending_runs(app.db, worker.broker, run_ids=[run_id])
    await drained(worker)

    listed = await collection.runs.ListResponses(
        run_pb.ListResponsesRequest(workspace_id=tenant.workspace_id, run_id=run_id),
        metadata=owner.metadata,
    )
    errors = {r.provider: r.error for r in listed.responses}
    assert errors == {
        ws_pb.PROVIDER_OPENAI: "provider error (500)",
        ws_pb.PROVIDER_ANTHROPIC: "provider rate limit (429)",
    }
    host = urlsplit(fake_provider.base_url("openai")).hostname
    assert host and all(host not in error for error in errors.values())
    # The provider's own words are in the worker log, for the operators.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "The server had an error." in logged
