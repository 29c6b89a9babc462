"""End to end, as a client sees it: a schedule's runs are asked, analysed, reported, repeated.

On SQLite the worker and ticker run in this process on the in-process broker (as `beacon dev`
does); on PostgreSQL they are real `beacon worker` and `beacon ticker` processes, once on a Redis
namespace of their own and, where RabbitMQ is reachable (BEACON_TEST_AMQP_URL), once on a
RabbitMQ virtual host of their own (the `broker` parameter). Either way the providers are the
local fake.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import dramatiq
import pika
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Select, delete, func, select, text, update

from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.broker import broker_of, redis_options
from service.clock import new_id, utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Organization, Run, Schedule
from service.messages import RUN_QUEUE
from service.outbox import dispatch_pending_runs
from tests.support import REDIS_URL, unique
from tests.support import pipeline as fixtures
from tests.support.app import NewUser
from tests.support.brokers import broker_url, rabbitmq_available
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.pipeline import (
    derive_settings,
    insert_run,
    load_probes,
    load_run,
    make_workspace,
    pipeline_settings,
    wait_for_end,
)
from tests.support.processes import Beacon, RabbitmqNode, beacon_env, eventually
from tests.support.running import pipeline

fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
collection_db = fixtures.collection_db

BEACON = Path(sys.executable).parent / "beacon"
T = TypeVar("T")

BEST = "which crm should a startup pick"
EMAIL = "crm with the best email sync"
BROKERS = ["redis", "rabbitmq"] if rabbitmq_available() else ["redis"]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    """The broker of the `beacon` processes on PostgreSQL (SQLite runs the in-process one)."""
    return str(request.param)


def asked(fake: FakeProviderServer, prompts: list[str]) -> int:
    """Requests the fake providers received for these prompts: the test's own, not those of
    runs that earlier tests of the session left unsent and this test's ticker sends."""
    return sum(fake.requests(prompt=prompt) for prompt in prompts)


async def test_schedule_runs_are_collected_analysed_reported_and_repeated(
    backend: str,
    broker: str,
    settings: Settings,
    app: App,
    stubs: SimpleNamespace,
    collection: SimpleNamespace,
    new_user: NewUser,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    user = await new_user()
    md = user.metadata
    created = await stubs.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(
            name="Acme",
            domain="acme.com",
            organization_name=unique("Org "),
            competitors=[ws_pb.Competitor(name="HubSpot", domain="hubspot.com")],
        ),
        metadata=md,
    )
    ws = created.workspace.id
    await stubs.workspaces.SetEnabledProviders(
        ws_pb.SetEnabledProvidersRequest(
            workspace_id=ws, providers=[ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC]
        ),
        metadata=md,
    )
    await collection.prompts.StorePrompts(
        prompt_pb.StorePromptsRequest(workspace_id=ws, prompts=[BEST, EMAIL]), metadata=md
    )
    fake_provider.script(
        BEST,
        "HubSpot is common, yet Acme is the better pick for startups.",
        [("https://acme.com/startups", "Acme for startups"), ("https://g2.com/crm", "G2")],
    )
    fake_provider.script(EMAIL, "HubSpot syncs email well.", [("https://hubspot.com/", "HubSpot")])

    async with pipeline(backend, broker, settings, fake_provider, tmp_path, app.db):
        # Setting the schedule runs it at once.
        reply = await collection.schedules.SetSchedule(
            schedule_pb.SetScheduleRequest(workspace_id=ws, cron="0 6 * * *"), metadata=md
        )
        assert reply.immediate_run.status == schedule_pb.IMMEDIATE_RUN_STATUS_QUEUED
        run = await wait_for_end(collection, reply.immediate_run.run_id, md)
        assert run.status == run_pb.RUN_STATUS_SUCCEEDED
        assert sorted((p.provider, p.total, p.done) for p in run.progress) == [
            (ws_pb.PROVIDER_OPENAI, 2, 2),
            (ws_pb.PROVIDER_ANTHROPIC, 2, 2),
        ]

        listed = await collection.runs.ListResponses(
            run_pb.ListResponsesRequest(workspace_id=ws, run_id=run.id), metadata=md
        )
        answers = {(r.prompt_text, r.provider): r for r in listed.responses}
        assert len(answers) == 4
        for provider in (ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC):
            best, email = answers[BEST, provider], answers[EMAIL, provider]
            assert best.status == run_pb.RESPONSE_STATUS_SUCCEEDED
            assert (best.brand_mentioned, best.brand_rank) == (True, 2)
            assert [(c.name, c.rank) for c in best.competitors] == [("HubSpot", 1)]
            assert [(c.domain, c.brand) for c in best.citations] == [
                ("acme.com", True),
                ("g2.com", False),
            ]
            assert (email.brand_mentioned, email.brand_rank) == (False, 0)

        start = Timestamp()
        start.FromDatetime(utcnow() - timedelta(days=1))
        end = Timestamp()
        end.FromDatetime(utcnow() + timedelta(days=1))
        report = await collection.runs.GetVisibilityReport(
            run_pb.GetVisibilityReportRequest(
                workspace_id=ws,
                start_time=start,
                end_time=end,
                granularity=run_pb.GRANULARITY_DAY,
            ),
            metadata=md,
        )
        by_provider: dict[int, list[run_pb.VisibilityRow]] = {}
        for row in report.rows:
            by_provider.setdefault(row.provider, []).append(row)
        assert set(by_provider) == {ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC}
        for rows in by_provider.values():
            assert sum(row.responses for row in rows) == 2
            assert all(row.mention_rate == pytest.approx(0.5) for row in rows)
            assert all(row.brand_citation_share == pytest.approx(1 / 3) for row in rows)

        # The next slot is due (rather than waiting until 06:00): the ticker fires it.
        async with app.db.transaction() as session:
            await session.execute(
                update(Schedule)
                .where(Schedule.workspace_id == ws)
                .values(next_run_time=utcnow() - timedelta(minutes=1))
            )

        async def scheduled_run() -> run_pb.Run | None:
            runs = await collection.runs.ListRuns(
                run_pb.ListRunsRequest(workspace_id=ws), metadata=md
            )
            found = [r for r in runs.runs if r.trigger == run_pb.RUN_TRIGGER_SCHEDULE]
            return found[0] if found else None

        fired = await eventually(scheduled_run, "the ticker to fire the due slot")
        fired = await wait_for_end(collection, fired.id, md)
        assert fired.status == run_pb.RUN_STATUS_SUCCEEDED
        assert fired.HasField("scheduled_time")
        timing = await collection.schedules.GetCronTiming(
            schedule_pb.GetCronTimingRequest(workspace_id=ws), metadata=md
        )
        assert timing.next_run_time.ToDatetime() > utcnow().replace(tzinfo=None)
        # Two prompts, two providers, two runs; runs other tests left unsent are not counted.
        assert asked(fake_provider, [BEST, EMAIL]) == 8


ALIAS_ONLY = "which crm has the friendliest pricing"
DOMAIN_ONLY = "where can a startup compare crm plans"


async def test_a_brand_named_only_by_an_alias_or_its_domain_is_reported_mentioned(
    backend: str,
    app: App,
    settings: Settings,
    stubs: SimpleNamespace,
    collection: SimpleNamespace,
    new_user: NewUser,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    """The workspace's aliases and domain reach the analysis: an answer that names the brand
    only as "Zephyr Cloud" (an alias), or only as acme.com, mentions it, ranked after the
    competitor named first."""
    user = await new_user()
    md = user.metadata
    created = await stubs.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(
            name="Acme",
            domain="acme.com",
            organization_name=unique("Org "),
            brand_aliases=["Zephyr Cloud"],
            competitors=[ws_pb.Competitor(name="HubSpot", domain="hubspot.com")],
        ),
        metadata=md,
    )
    ws = created.workspace.id
    await stubs.workspaces.SetEnabledProviders(
        ws_pb.SetEnabledProvidersRequest(workspace_id=ws, providers=[ws_pb.PROVIDER_OPENAI]),
        metadata=md,
    )
    await collection.prompts.StorePrompts(
        prompt_pb.StorePromptsRequest(workspace_id=ws, prompts=[ALIAS_ONLY, DOMAIN_ONLY]),
        metadata=md,
    )
    fake_provider.script(ALIAS_ONLY, "HubSpot is popular, but Zephyr Cloud is cheaper.", [])
    fake_provider.script(DOMAIN_ONLY, "HubSpot lists its plans; so does acme.com/pricing.", [])

    async with pipeline(backend, "redis", settings, fake_provider, tmp_path, app.db):
        started = await collection.runs.StartRun(
            run_pb.StartRunRequest(workspace_id=ws), metadata=md
        )
        assert started.status == run_pb.START_RUN_STATUS_QUEUED, started
        run = await wait_for_end(collection, started.run.id, md)
    assert run.status == run_pb.RUN_STATUS_SUCCEEDED

    listed = await collection.runs.ListResponses(
        run_pb.ListResponsesRequest(workspace_id=ws, run_id=run.id), metadata=md
    )
    found = {
        r.prompt_text: (r.brand_mentioned, r.brand_rank, [(c.name, c.rank) for c in r.competitors])
        for r in listed.responses
    }
    assert found == {
        ALIAS_ONLY: (True, 2, [("HubSpot", 1)]),
        DOMAIN_ONLY: (True, 2, [("HubSpot", 1)]),
    }


# Redis requeues a dead worker's messages once it misses heartbeats (2 s here; every broker
# command looks for such workers); RabbitMQ as soon as the worker's connection drops.
KILL_OPTIONS = {
    "redis": {"heartbeat_timeout": "2000", "maintenance_chance": "1000000"},
    "rabbitmq": {},
}


def kill_test_settings(settings: Settings, server: FakeProviderServer, url: str) -> Settings:
    """Four provider calls at a time, each taking half a second: a kill finds some in flight."""
    server.set_latency(0.5)
    return derive_settings(
        pipeline_settings(settings, server, url), worker_concurrency=4, provider_concurrency=4
    )


async def run_ended(db: Database, run_id: str) -> Run:
    async def ended() -> Run | None:
        run = await load_run(db, run_id)
        return run if run.end_time is not None else None

    return await eventually(ended, f"run {run_id} to end")


async def assert_every_probe_stored_once(db: Database, run: Run, prompts: list[str]) -> None:
    assert run.status == "succeeded"
    probes = await load_probes(db, run.id)
    assert sorted((p.prompt_text, p.provider) for p in probes) == sorted(
        (prompt, provider) for prompt in prompts for provider in ("openai", "anthropic")
    )
    assert all(p.status == "succeeded" and p.text for p in probes)


@pytest.mark.postgres_only  # real worker processes share PostgreSQL and the broker
async def test_a_worker_killed_mid_run_loses_no_probe_and_stores_each_once(
    backend: str,
    broker: str,
    settings: Settings,
    app: App,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    prompts = [f"which crm for team {n}" for n in range(6)]
    ws = await make_workspace(app.db, prompts=prompts, providers=("openai", "anthropic"))
    async with broker_url(broker, **KILL_OPTIONS[broker]) as url:
        worker_settings = kill_test_settings(settings, fake_provider, url)
        sender = broker_of(worker_settings)
        env = beacon_env(worker_settings)
        first = await Beacon.start("worker", env, tmp_path / "worker-1.log")
        second: Beacon | None = None
        try:
            run_id = await insert_run(app.db, ws)
            await dispatch_pending_runs(app.db, sender, run_ids=[run_id])
            async with asyncio.timeout(30):
                await fake_provider.wait_for_requests(2, prompts=prompts)
            await first.kill()  # SIGKILL with provider calls in flight, messages unacknowledged
            answered_before = asked(fake_provider, prompts)
            second = await Beacon.start("worker", env, tmp_path / "worker-2.log")
            run = await run_ended(app.db, run_id)
            await second.stop()
        finally:
            await first.kill()
            if second is not None:
                await second.kill()
            sender.close()

    await assert_every_probe_stored_once(app.db, run, prompts)
    # The (at least two) probes in flight at the kill were asked again, yet stored once.
    assert answered_before >= 2
    assert asked(fake_provider, prompts) >= len(prompts) * 2 + 2


@pytest.mark.postgres_only  # real worker and ticker processes share PostgreSQL
async def test_a_rabbitmq_crash_mid_run_loses_no_message(
    backend: str,
    settings: Settings,
    app: App,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    """A private RabbitMQ node is killed (SIGKILL) with probes queued, in flight and being sent,
    then booted again on its data: durable queues and confirmed, persistent messages bring the
    run to its end with every probe stored once."""
    node = await RabbitmqNode.start(tmp_path / uuid.uuid4().hex[:8])
    prompts = [f"which crm for region {n}" for n in range(10)]
    ws = await make_workspace(app.db, prompts=prompts, providers=("openai", "anthropic"))
    worker_settings = kill_test_settings(settings, fake_provider, node.url)
    sender = broker_of(worker_settings)
    env = beacon_env(worker_settings)
    processes = [
        await Beacon.start(command, env, tmp_path / f"{command}.log")
        for command in ("worker", "ticker")
    ]
    try:
        run_id = await insert_run(app.db, ws)
        await dispatch_pending_runs(app.db, sender, run_ids=[run_id])
        async with asyncio.timeout(30):
            await fake_provider.wait_for_requests(2, prompts=prompts)
        await node.kill()  # 20 probes: some answered, some in flight, the rest queued
        answered_before = asked(fake_provider, prompts)
        # A run started during the outage waits in the outbox: the ticker sends it later.
        late_id = await insert_run(app.db, ws)
        await dispatch_pending_runs(app.db, sender, run_ids=[late_id])
        await node.boot()
        run = await run_ended(app.db, run_id)
        late = await run_ended(app.db, late_id)
        for process in processes:
            await process.stop()
    finally:
        for process in processes:
            await process.kill()
        sender.close()
        await node.kill()

    assert answered_before < len(prompts) * 2  # the crash did come mid-run
    await assert_every_probe_stored_once(app.db, run, prompts)
    await assert_every_probe_stored_once(app.db, late, prompts)


SEED_SCHEDULES = text(
    "INSERT INTO schedules (workspace_id, cron, time_zone, next_run_time, create_time, "
    "update_time) SELECT id, '0 * * * *', 'UTC', :due, :now, :now FROM workspaces "
    "WHERE organization_id = :organization"
)
SEED_WORKSPACES = text(
    "INSERT INTO workspaces (id, organization_id, name, slug, domain, brand_aliases, "
    "competitors, enabled_providers, version, create_time, update_time) "
    "SELECT :prefix || g, :organization, 'Workspace ' || g, 'ws-' || g, '', '[]', '[]', "
    "'[\"openai\"]', 1, :now, :now FROM generate_series(1, :count) AS g"
)


@pytest.mark.postgres_only  # ticker processes share PostgreSQL and the broker
async def test_a_ticker_killed_mid_tick_loses_and_duplicates_no_run(
    backend: str, broker: str, settings: Settings, collection_db: Database, tmp_path: Path
) -> None:
    count = 20_000
    now = utcnow()
    organization = new_id("org")
    async with collection_db.transaction() as session:
        await session.execute(delete(Schedule))  # this database's other tests are done with them
        session.add(Organization(id=organization, name="Many", slug=organization))
        await session.flush()
        parameters = {"now": now, "organization": organization, "prefix": f"{organization}-"}
        await session.execute(SEED_WORKSPACES, {**parameters, "count": count})
        await session.execute(SEED_SCHEDULES, {**parameters, "due": now - timedelta(minutes=1)})
    runs = select(func.count()).select_from(Run).where(Run.workspace_id.like(f"{organization}-%"))

    async def counted(query: Select[int]) -> int:
        async with collection_db.transaction(write=False) as session:
            return int(await session.scalar(query) or 0)

    async def some_runs() -> int | None:
        return await counted(runs) or None

    async def all_sent() -> bool | None:
        due = select(func.count()).where(Schedule.next_run_time <= now).select_from(Schedule)
        unsent = runs.where(Run.enqueue_time.is_(None))
        return (await counted(due) == 0 and await counted(unsent) == 0) or None

    async with broker_url(broker) as url:
        ticker_settings = derive_settings(
            settings,
            database_url=collection_db.url,
            broker_url=url,
            ticker_batch_size=500,
            ticker_interval_seconds=0.2,
        )
        env = beacon_env(ticker_settings)
        first = await Beacon.start("ticker", env, tmp_path / "ticker-1.log")
        second: Beacon | None = None
        try:
            created = await eventually(some_runs, "the first ticker to create runs")
            await first.kill()  # SIGKILL in the middle of the tick
            second = await Beacon.start("ticker", env, tmp_path / "ticker-2.log")
            await eventually(all_sent, "the second ticker to fire and send everything")
            await second.stop()
            sent = await asyncio.to_thread(sent_run_ids, url)
        finally:
            await first.kill()
            if second is not None:
                await second.kill()

    assert created < count  # the kill did interrupt the first tick
    async with collection_db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(Run.id, Run.workspace_id, Run.scheduled_time).where(
                    Run.workspace_id.like(f"{organization}-%")
                )
            )
        ).all()
    assert len(rows) == count
    assert len({(ws, slot) for _, ws, slot in rows}) == count  # one run per workspace and slot
    assert {run_id for run_id, _, _ in rows} <= set(sent)  # every run reached the broker


def sent_run_ids(url: str) -> list[str]:
    """Run ids of the process_run messages waiting in the broker's run queue."""
    if url.startswith("amqp"):
        return [dramatiq.Message.decode(body).args[0] for body in _rabbitmq_messages(url)]
    namespace = redis_options(url).namespace
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [
            dramatiq.Message.decode(data).args[0]
            for _, data in client.hscan_iter(f"{namespace}:{RUN_QUEUE}.msgs", count=5000)
        ]
    finally:
        client.close()


def _rabbitmq_messages(url: str) -> list[bytes]:
    """The bodies of every message in the run queue (taken off it: the vhost goes next)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        waiting = channel.queue_declare(RUN_QUEUE, passive=True).method.message_count
        bodies: list[bytes] = []
        for method, _, body in channel.consume(RUN_QUEUE, auto_ack=True, inactivity_timeout=5):
            if method is None:
                break
            bodies.append(body)
            if len(bodies) == waiting:
                break
        return bodies
    finally:
        connection.close()
