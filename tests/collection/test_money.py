"""Markets and money over gRPC, on both backends, against the fake providers: each adapter's
request carries the market where its API takes one, answers store their usage and cost, runs
and workspaces show it, estimates precede spending and caps refuse, skip and stop runs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select, update

from beacon.v1 import billing_service_pb2 as billing_pb
from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import utcnow
from service.config import PROVIDERS, Settings
from service.db.database import Database
from service.db.models import Probe, UsageRollup, Workspace
from service.domain.money import ledger
from service.domain.tenancy.workspace_purge import purge_deleted_workspaces
from service.outbox import dispatch_pending_runs
from tests.support import builders, expect_error
from tests.support import pipeline as fixtures
from tests.support.app import NewUser
from tests.support.app import TestUser as Caller
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.pipeline import (
    StartWorker,
    drained,
    insert_run,
    load_probes,
    load_run,
    make_workspace,
)
from tests.support.worker_fleet import (
    fleet_settings,
    probes_finished,
    run_to_end,
    worker_processes,
)
from workers.context import WorkerContext
from workers.probes import run_probe
from workers.spending import UNREACHABLE_REASON, RedisCounters, SpendingGuard

collection_db = fixtures.collection_db
fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
worker_settings = fixtures.worker_settings
start_worker = fixtures.start_worker
stub_broker = fixtures.stub_broker

MUNICH = prompt_pb.Market(country="DE", region="Bavaria", city="Munich", language="de")
PLACE = {"country": "DE", "region": "Bavaria", "city": "Munich"}
# The fake's usage shapes at the shipped prices, in micro-units: see tests/support/fakes/dialects.py.
EXPECTED_COST = {
    "openai": 513 + 10_000,  # gpt-5: 10 in, 50 out, one web_search_call
    "anthropic": 350 + 10_000,  # claude-haiku-4-5: 100 in, 50 out, one web search request
    "google": 191 + 35_000,  # gemini-2.5-flash: 10 + 210 tool-use in, 50 out, grounded
    "perplexity": 6_780,  # its own usage.cost.total_cost, $0.00678
    "mistral": 504 + 30_000,  # 10 + 1000 connector tokens in, 50 out, one web search
    "cohere": 525,  # billed units: 10 in, 50 out
}
APPLIED = {"openai", "anthropic", "perplexity"}


@pytest.fixture
async def owner(new_user: NewUser) -> Caller:
    return await new_user()


async def test_a_market_is_part_of_a_prompt_and_is_validated(
    app: App, collection: SimpleNamespace, owner: Caller
) -> None:
    tenant = await builders.make_workspace(app, owner.user_id)
    ws = tenant.workspace_id
    stored = await collection.prompts.StorePrompts(
        prompt_pb.StorePromptsRequest(
            workspace_id=ws,
            prompts=["best crm"],
            entries=[
                prompt_pb.PromptEntry(text="best crm", market=prompt_pb.Market(country="us")),
                prompt_pb.PromptEntry(text="best crm", market=MUNICH),
                prompt_pb.PromptEntry(text="best crm ", market=MUNICH),
            ],
        ),
        metadata=owner.metadata,
    )
    # The same text in three markets (none, US, DE) is three prompts; the fourth repeats one.
    assert [(p.text, p.market.country) for p in stored.prompts] == [
        ("best crm", ""),
        ("best crm", "US"),
        ("best crm", "DE"),
    ]
    assert stored.duplicates_dropped == 1
    assert stored.prompts[2].market == MUNICH
    assert not stored.prompts[0].HasField("market")

    for entry, field in (
        (prompt_pb.PromptEntry(text="x", market=prompt_pb.Market(country="XX")), "country"),
        (
            prompt_pb.PromptEntry(
                text="x", market=prompt_pb.Market(country="DE", language="not a tag")
            ),
            "language",
        ),
    ):
        failed = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            collection.prompts.AddPrompts(
                prompt_pb.AddPromptsRequest(workspace_id=ws, entries=[entry]),
                metadata=owner.metadata,
            ),
        )
        violations = failed.details["BadRequest"].field_violations
        assert [v.field for v in violations] == [f"entries[0].market.{field}"]

    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        collection.prompts.SetDefaultMarket(
            prompt_pb.SetDefaultMarketRequest(workspace_id=ws, market=prompt_pb.Market(city="X")),
            metadata=owner.metadata,
        ),
    )
    reply = await collection.prompts.SetDefaultMarket(
        prompt_pb.SetDefaultMarketRequest(workspace_id=ws, market=prompt_pb.Market(country="fr")),
        metadata=owner.metadata,
    )
    assert reply.market == prompt_pb.Market(country="FR")
    listed = await collection.prompts.ListPrompts(
        prompt_pb.ListPromptsRequest(workspace_id=ws), metadata=owner.metadata
    )
    assert listed.default_market == prompt_pb.Market(country="FR")
    assert listed.total_size == 3


async def test_each_provider_gets_the_market_its_api_takes_and_each_answer_its_cost(
    app: App,
    collection: SimpleNamespace,
    owner: Caller,
    fake_provider: FakeProviderServer,
    start_worker: StartWorker,
) -> None:
    tenant = await builders.make_workspace(app, owner.user_id, enabled=list(PROVIDERS))
    ws = tenant.workspace_id
    await collection.prompts.StorePrompts(
        prompt_pb.StorePromptsRequest(
            workspace_id=ws,
            prompts=["crm asked from the default market"],
            entries=[prompt_pb.PromptEntry(text="crm asked in munich", market=MUNICH)],
        ),
        metadata=owner.metadata,
    )
    await collection.prompts.SetDefaultMarket(
        prompt_pb.SetDefaultMarketRequest(workspace_id=ws, market=prompt_pb.Market(country="GB")),
        metadata=owner.metadata,
    )
    before = await collection.billing.GetCostEstimate(
        billing_pb.GetCostEstimateRequest(workspace_id=ws), metadata=owner.metadata
    )
    # The collection server has keys for OpenAI and Anthropic only: they are estimated.
    assert [(p.provider, p.answers, p.from_history) for p in before.providers] == [
        ("openai", 2, False),
        ("anthropic", 2, False),
    ]
    assert before.run_cost_micros == 2 * sum(p.answer_cost_micros for p in before.providers)
    assert before.runs_per_month == 0 and before.month_to_date_micros == 0

    worker = start_worker(database_url=app.settings.database_url)
    run_id = await insert_run(app.db, ws)
    await dispatch_pending_runs(app.db, worker.broker, run_ids=[run_id])
    await drained(worker)

    for provider in PROVIDERS:
        bodies = {_prompt_of(provider, body): body for body in fake_provider.received(provider)}
        munich, default = bodies["crm asked in munich"], bodies["crm asked from the default market"]
        if provider in APPLIED:
            assert _location(provider, munich) == PLACE, provider
            assert _location(provider, default) == {"country": "GB"}, provider
        else:
            # Asked unchanged: no location anywhere in the request, the prompt as written.
            assert "Munich" not in json.dumps(munich) and "GB" not in json.dumps(default)

    listed = await collection.runs.ListResponses(
        run_pb.ListResponsesRequest(workspace_id=ws, run_id=run_id, page_size=100),
        metadata=owner.metadata,
    )
    assert len(listed.responses) == 12
    for response in listed.responses:
        name = PROVIDERS[list(PROVIDERS).index(_name(response.provider))]
        assert response.status == run_pb.RESPONSE_STATUS_SUCCEEDED, response.error
        assert response.market_applied == (name in APPLIED)
        expected = MUNICH if "munich" in response.prompt_text else prompt_pb.Market(country="GB")
        assert response.market == expected
        assert response.cost_micros == EXPECTED_COST[name], name
        assert response.input_tokens > 0 and response.output_tokens == 50
        assert response.search_calls == (0 if name == "cohere" else 1)

    run = await collection.runs.GetRun(run_pb.GetRunRequest(run_id=run_id), metadata=owner.metadata)
    assert run.cost_micros == 2 * sum(EXPECTED_COST.values())
    assert {_name(p.provider): p.cost_micros for p in run.progress} == {
        name: 2 * cost for name, cost in EXPECTED_COST.items()
    }

    usage = await collection.billing.ListUsage(
        billing_pb.ListUsageRequest(organization_id=tenant.organization_id),
        metadata=owner.metadata,
    )
    assert {row.provider: (row.answers, row.cost_micros) for row in usage.rows} == {
        name: (2, 2 * cost) for name, cost in EXPECTED_COST.items()
    }
    assert {row.workspace_id for row in usage.rows} == {ws}
    first = await collection.billing.ListUsage(
        billing_pb.ListUsageRequest(organization_id=tenant.organization_id, page_size=4),
        metadata=owner.metadata,
    )
    second = await collection.billing.ListUsage(
        billing_pb.ListUsageRequest(
            organization_id=tenant.organization_id,
            page_size=4,
            page_token=first.next_page_token,
        ),
        metadata=owner.metadata,
    )
    assert (len(first.rows), len(second.rows), second.next_page_token) == (4, 2, "")
    assert [*first.rows, *second.rows] == list(usage.rows)
    spending = await collection.billing.GetSpending(
        billing_pb.GetSpendingRequest(organization_id=tenant.organization_id),
        metadata=owner.metadata,
    )
    assert spending.month_to_date_micros == run.cost_micros
    assert [(w.workspace_id, w.month_to_date_micros) for w in spending.workspaces] == [
        (ws, run.cost_micros)
    ]
    after = await collection.billing.GetCostEstimate(
        billing_pb.GetCostEstimateRequest(workspace_id=ws), metadata=owner.metadata
    )
    # From history now: each provider's average answer.
    assert [(p.provider, p.answer_cost_micros, p.from_history) for p in after.providers] == [
        ("openai", EXPECTED_COST["openai"], True),
        ("anthropic", EXPECTED_COST["anthropic"], True),
    ]
    assert after.month_to_date_micros == run.cost_micros


async def test_a_run_over_a_cap_is_refused_with_the_figures(
    app: App, collection: SimpleNamespace, owner: Caller
) -> None:
    tenant = await builders.make_workspace(app, owner.user_id)
    await builders.insert_prompts(app, tenant.workspace_id, ["a", "b"])
    estimate = await collection.billing.GetCostEstimate(
        billing_pb.GetCostEstimateRequest(workspace_id=tenant.workspace_id), metadata=owner.metadata
    )
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        collection.billing.SetSpendingCap(
            billing_pb.SetSpendingCapRequest(
                organization_id=tenant.organization_id, monthly_cap_micros=-1
            ),
            metadata=owner.metadata,
        ),
    )
    for workspace_id in (tenant.workspace_id, ""):
        caps = await collection.billing.SetSpendingCap(
            billing_pb.SetSpendingCapRequest(
                organization_id=tenant.organization_id,
                workspace_id=workspace_id,
                monthly_cap_micros=estimate.run_cost_micros - 1,
            ),
            metadata=owner.metadata,
        )
        refused = await expect_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            collection.runs.StartRun(
                run_pb.StartRunRequest(workspace_id=tenant.workspace_id), metadata=owner.metadata
            ),
        )
        scope = "workspace" if workspace_id else "organization"
        info = refused.details["ErrorInfo"]
        assert info.reason == "SPENDING_CAP_REACHED"
        assert dict(info.metadata) | {"request_id": ""} == {
            "request_id": "",
            "scope": scope,
            "month_to_date_micros": "0",
            "estimate_micros": str(estimate.run_cost_micros),
            "cap_micros": str(estimate.run_cost_micros - 1),
        }
        assert "spending cap reached" in refused.message
        if workspace_id:
            assert caps.workspaces[0].monthly_cap_micros == estimate.run_cost_micros - 1
            # Lifted for the workspace, so that the organization's cap is what refuses next.
            await collection.billing.SetSpendingCap(
                billing_pb.SetSpendingCapRequest(
                    organization_id=tenant.organization_id,
                    workspace_id=workspace_id,
                    monthly_cap_micros=0,
                ),
                metadata=owner.metadata,
            )
        else:
            assert caps.monthly_cap_micros == estimate.run_cost_micros - 1

    # SetSchedule sets the schedule, estimates it, and says why its run did not start.
    reply = await collection.schedules.SetSchedule(
        schedule_pb.SetScheduleRequest(workspace_id=tenant.workspace_id, cron="0 9 * * *"),
        metadata=owner.metadata,
    )
    assert reply.immediate_run.status == schedule_pb.IMMEDIATE_RUN_STATUS_FAILED
    assert "spending cap reached" in reply.immediate_run.reason
    assert reply.estimate.run_cost_micros == estimate.run_cost_micros
    assert reply.estimate.runs_per_month in (30, 31)
    assert reply.estimate.month_cost_micros == (
        reply.estimate.runs_per_month * estimate.run_cost_micros
    )

    # Lifted: the run starts.
    await collection.billing.SetSpendingCap(
        billing_pb.SetSpendingCapRequest(
            organization_id=tenant.organization_id, monthly_cap_micros=0
        ),
        metadata=owner.metadata,
    )
    started = await collection.runs.StartRun(
        run_pb.StartRunRequest(workspace_id=tenant.workspace_id), metadata=owner.metadata
    )
    assert started.status == run_pb.START_RUN_STATUS_QUEUED


async def _cap(app: App, workspace_id: str, micros: int) -> None:
    async with app.db.transaction() as session:
        await session.execute(
            update(Workspace).where(Workspace.id == workspace_id).values(monthly_cap_micros=micros)
        )


async def test_a_scheduled_run_over_the_cap_is_skipped_with_the_reason(
    app: App,
    collection: SimpleNamespace,
    owner: Caller,
    fake_provider: FakeProviderServer,
    start_worker: StartWorker,
) -> None:
    tenant = await builders.make_workspace(app, owner.user_id, enabled=["openai"])
    await builders.insert_prompts(app, tenant.workspace_id, ["a scheduled prompt"])
    await _cap(app, tenant.workspace_id, 1)
    worker = start_worker(database_url=app.settings.database_url)
    run_id = await insert_run(app.db, tenant.workspace_id, trigger="schedule")
    await dispatch_pending_runs(app.db, worker.broker, run_ids=[run_id])
    await drained(worker)

    assert fake_provider.requests() == 0
    run = await collection.runs.GetRun(run_pb.GetRunRequest(run_id=run_id), metadata=owner.metadata)
    assert run.status == run_pb.RUN_STATUS_FAILED
    assert run.end_reason.startswith("skipped: spending cap reached: the workspace's cost")


async def test_calls_stop_once_the_cap_is_reached_mid_run(
    app: App,
    collection: SimpleNamespace,
    owner: Caller,
    fake_provider: FakeProviderServer,
    start_worker: StartWorker,
) -> None:
    tenant = await builders.make_workspace(app, owner.user_id, enabled=["openai"])
    await builders.insert_prompts(app, tenant.workspace_id, [f"prompt {i}" for i in range(12)])
    cap = 5 * EXPECTED_COST["openai"]
    await _cap(app, tenant.workspace_id, cap)
    worker = start_worker(database_url=app.settings.database_url)
    # A manual run the API let through (its estimate fits only without history).
    run_id = await insert_run(app.db, tenant.workspace_id)
    await dispatch_pending_runs(app.db, worker.broker, run_ids=[run_id])
    await drained(worker)

    run = await collection.runs.GetRun(run_pb.GetRunRequest(run_id=run_id), metadata=owner.metadata)
    async with app.db.transaction(write=False) as session:
        probes = list(await session.scalars(select(Probe).where(Probe.run_id == run_id)))
    answered = [p for p in probes if p.status == "succeeded"]
    stopped = [p for p in probes if p.error.startswith("spending cap reached")]
    assert answered and stopped and len(answered) + len(stopped) == 12
    # Only answered probes were asked, and they fit under the cap.
    assert fake_provider.requests("openai") == len(answered)
    assert sum(p.cost_micros for p in answered) <= cap
    assert run.status == run_pb.RUN_STATUS_PARTIAL
    assert run.end_reason.startswith("spending cap reached: the workspace's cost this month")
    assert run.cost_micros == sum(p.cost_micros for p in answered)


async def test_a_capped_call_fails_closed_when_the_counter_store_is_down(
    app: App,
    settings: Settings,
    fake_provider: FakeProviderServer,
    worker_settings: Settings,
    stub_broker: StubBroker,
    owner: Caller,
) -> None:
    capped = await builders.make_workspace(app, owner.user_id, enabled=["openai"])
    free = await builders.make_workspace(app, owner.user_id, enabled=["openai"])
    await _cap(app, capped.workspace_id, 10_000_000)
    probes = {}
    for tenant in (capped, free):
        [prompt_id] = await builders.insert_prompts(app, tenant.workspace_id, ["ask me"])
        run_id = await builders.insert_run(app, tenant.workspace_id)
        probes[tenant.workspace_id] = await builders.insert_probe(
            app, run_id, prompt_id, "openai", status="pending", prompt_text="ask me"
        )
    context_settings = fixtures.derive_settings(
        worker_settings, database_url=app.settings.database_url
    )
    context = WorkerContext.create(context_settings, stub_broker, db=app.db)
    # Nothing listens on port 1: every counter call fails.
    context.spending = SpendingGuard(RedisCounters("redis://127.0.0.1:1/0"), app.db, "test")
    try:
        await run_probe(context, probes[capped.workspace_id])
        await run_probe(context, probes[free.workspace_id])
    finally:
        await context.close(dispose_db=False)
    async with app.db.transaction(write=False) as session:
        rows = {
            p.workspace_id: p
            for p in await session.scalars(select(Probe).where(Probe.id.in_(probes.values())))
        }
    assert (rows[capped.workspace_id].status, rows[capped.workspace_id].error) == (
        "failed",
        UNREACHABLE_REASON,
    )
    # A workspace without a cap does not need the counters.
    assert rows[free.workspace_id].status == "succeeded"
    assert fake_provider.requests("openai") == 1
    run = await load_run(app.db, rows[capped.workspace_id].run_id)
    assert run.failure_reason == UNREACHABLE_REASON


def _name(provider: int) -> str:
    return ws_pb.Provider.Name(provider).removeprefix("PROVIDER_").lower()  # type: ignore[arg-type]


def _prompt_of(provider: str, body: dict[str, object]) -> str:
    if provider == "openai":
        return str(body["input"])
    if provider == "mistral":
        return str(body["inputs"])
    if provider == "google":
        return str(body["contents"][0]["parts"][0]["text"])  # type: ignore[index]
    return str(body["messages"][-1]["content"])  # type: ignore[index]


def _location(provider: str, body: dict[str, object]) -> dict[str, str]:
    if provider == "perplexity":
        return body["web_search_options"]["user_location"]  # type: ignore[index,no-any-return]
    location = dict(body["tools"][0]["user_location"])  # type: ignore[index]
    assert location.pop("type") == "approximate"
    return location


async def test_a_purged_workspace_takes_its_usage_with_it(app: App, owner: Caller) -> None:
    gone = await builders.make_workspace(app, owner.user_id)
    kept = await builders.make_workspace(app, owner.user_id)
    now = utcnow()
    async with app.db.transaction() as session:
        for tenant in (gone, kept):
            session.add(
                UsageRollup(
                    workspace_id=tenant.workspace_id,
                    month=ledger.month_of(now),
                    provider="openai",
                    answers=1,
                    input_tokens=1,
                    output_tokens=1,
                    search_calls=1,
                    cost_micros=1,
                )
            )
        workspace = await session.get(Workspace, gone.workspace_id)
        assert workspace is not None
        workspace.delete_time = now - timedelta(days=app.settings.workspace_retention_days + 1)
    assert (
        await purge_deleted_workspaces(
            app.db, now, retention_days=app.settings.workspace_retention_days
        )
        >= 1
    )
    async with app.db.transaction(write=False) as session:
        left = set(await session.scalars(select(UsageRollup.workspace_id)))
    assert gone.workspace_id not in left and kept.workspace_id in left


@pytest.mark.postgres_only  # two `beacon worker` processes share the counters through Redis
async def test_two_worker_processes_hold_one_cap(
    backend: str,
    settings: Settings,
    collection_db: Database,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    """With the cap at three answers' cost, a call reserving a default answer's cost fits
    only while nothing else is reserved or spent: over the whole fleet exactly one call is
    ever made (with a counter per process, each process would make one)."""
    # The one call is still in flight when the other process takes its first probes.
    fake_provider.set_latency(3.0)
    # Six probe messages: each worker holds at most two at once, so both take a share.
    prompts = [f"capped across processes {n}" for n in range(60)]
    ws = await make_workspace(collection_db, prompts=prompts, providers=("openai",))
    cap = 3 * EXPECTED_COST["openai"]
    async with collection_db.transaction() as session:
        await session.execute(
            update(Workspace).where(Workspace.id == ws).values(monthly_cap_micros=cap)
        )
    fleet = fleet_settings(backend, settings, collection_db, fake_provider)
    assert fleet.redis_url
    async with worker_processes(fleet, 2, tmp_path) as (addresses, sender):
        run = await run_to_end(collection_db, sender, ws, within=90)
        shares = [await probes_finished(address) for address in addresses]

    probes = await load_probes(collection_db, run.id)
    answered = [p for p in probes if p.status == "succeeded"]
    assert len(answered) == 1 and fake_provider.requests("openai") == 1
    assert all(p.error.startswith("spending cap reached") for p in probes if p.status == "failed")
    # Both processes worked on the run: the other one was held by the shared counter.
    assert sum(shares) == len(prompts) and all(share > 0 for share in shares), shares
    assert run.status == "partial"
    assert run.failure_reason.startswith("spending cap reached")
