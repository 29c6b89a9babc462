"""A workspace has at most BEACON_MAX_OPEN_RUNS_PER_WORKSPACE (one by default) queued or
running runs, however StartRun, SetSchedule and the ticker race for it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from beacon.v1 import run_service_pb2 as pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from service.app import App
from service.clock import utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Run, Schedule
from service.domain.collection import runs
from tests.support import actor_of, expect_error, failure
from tests.support import pipeline as fixtures
from tests.support.app import NewUser
from tests.support.builders import insert_prompts, make_workspace
from tests.support.pipeline import add_schedule, derive_settings
from workers import ticker
from workers.ticker import TickResult, tick

collection_db = fixtures.collection_db
stub_broker = fixtures.stub_broker
no_schedules = fixtures.no_schedules

START_RUN = "beacon.v1.RunService/StartRun"
RACERS = 8


async def open_runs(db: Database, workspace_id: str) -> list[str]:
    async with db.transaction(write=False) as session:
        return list(
            await session.scalars(
                select(Run.id).where(Run.workspace_id == workspace_id, Run.end_time.is_(None))
            )
        )


async def test_racing_starts_open_one_run_and_the_rest_name_it(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    owner = await new_user()
    workspace_id = (await make_workspace(app, owner.user_id)).workspace_id
    await insert_prompts(app, workspace_id, ["best crm?"])
    request = pb.StartRunRequest(workspace_id=workspace_id)

    outcomes = await asyncio.gather(
        *(collection.runs.StartRun(request, metadata=owner.metadata) for _ in range(RACERS)),
        return_exceptions=True,
    )
    started = [o for o in outcomes if isinstance(o, pb.StartRunResponse)]
    refused = [failure(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(started) == 1 and len(refused) == RACERS - 1, outcomes
    run_id = started[0].run.id
    assert started[0].status == pb.START_RUN_STATUS_QUEUED
    assert await open_runs(app.db, workspace_id) == [run_id]
    for got in refused:
        assert got.code == grpc.StatusCode.FAILED_PRECONDITION
        info = got.details["ErrorInfo"]
        assert (info.reason, info.domain) == ("RUN_ALREADY_OPEN", "beacon")
        assert (info.metadata["run_id"], info.metadata["limit"]) == (run_id, "1")
        [violation] = got.details["PreconditionFailure"].violations
        assert (violation.type, violation.subject) == ("RUN_ALREADY_OPEN", run_id)
        assert "BEACON_MAX_OPEN_RUNS_PER_WORKSPACE" in got.message

    # SetSchedule still sets the schedule; its immediate run names the open one.
    changed = await collection.schedules.SetSchedule(
        schedule_pb.SetScheduleRequest(workspace_id=workspace_id, cron="0 6 * * *"),
        metadata=owner.metadata,
    )
    assert changed.workspace.schedule.cron == "0 6 * * *"
    assert changed.immediate_run.status == schedule_pb.IMMEDIATE_RUN_STATUS_FAILED
    assert run_id in changed.immediate_run.reason

    # Once it has ended (here: canceled), the next start opens a run again.
    await collection.runs.CancelRun(pb.CancelRunRequest(run_id=run_id), metadata=owner.metadata)
    again = await collection.runs.StartRun(request, metadata=owner.metadata)
    assert again.status == pb.START_RUN_STATUS_QUEUED and again.run.id != run_id
    assert await open_runs(app.db, workspace_id) == [again.run.id]


async def test_the_cap_is_per_workspace(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    owner = await new_user()
    busy = (await make_workspace(app, owner.user_id)).workspace_id
    other = (await make_workspace(app, owner.user_id)).workspace_id
    for workspace_id in (busy, other):
        await insert_prompts(app, workspace_id, ["best crm?"])
    first = await collection.runs.StartRun(
        pb.StartRunRequest(workspace_id=busy), metadata=owner.metadata
    )
    await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        collection.runs.StartRun(pb.StartRunRequest(workspace_id=busy), metadata=owner.metadata),
    )
    elsewhere = await collection.runs.StartRun(
        pb.StartRunRequest(workspace_id=other), metadata=owner.metadata
    )
    assert elsewhere.run.id != first.run.id
    assert elsewhere.status == pb.START_RUN_STATUS_QUEUED


@pytest.mark.usefixtures("no_schedules")
async def test_the_ticker_skips_a_slot_while_the_workspace_has_a_run_open(
    collection_db: Database, settings: Settings, stub_broker: StubBroker, new_user: NewUser
) -> None:
    tick_settings = derive_settings(settings, database_url=collection_db.url)
    user = await new_user()
    busy = await fixtures.make_workspace(collection_db)
    idle = await fixtures.make_workspace(collection_db)
    async with collection_db.transaction() as session:
        started = await runs.start_run(
            session,
            actor_of(user.user_id, START_RUN),
            busy,
            configured=("openai", "anthropic"),
            max_open=tick_settings.max_open_runs_per_workspace,
            now=utcnow(),
        )
    assert started.run is not None
    slot = datetime(2026, 5, 4, 10, tzinfo=UTC)
    for workspace_id in (busy, idle):
        await add_schedule(collection_db, workspace_id, "0 * * * *", slot)
    skipped_before = REGISTRY.get_sample_value("beacon_ticker_slots_skipped_total") or 0.0

    result = await tick(
        collection_db,
        tick_settings,
        datetime(2026, 5, 4, 10, 0, 30, tzinfo=UTC),
        broker=stub_broker,
    )

    assert (result.claimed, result.created, result.skipped) == (2, 1, 1)
    assert REGISTRY.get_sample_value("beacon_ticker_slots_skipped_total") == skipped_before + 1
    assert await open_runs(collection_db, busy) == [started.run.id]
    assert len(await open_runs(collection_db, idle)) == 1
    async with collection_db.transaction(write=False) as session:
        advanced = await session.scalar(
            select(Schedule.next_run_time).where(Schedule.workspace_id == busy)
        )
    assert advanced == datetime(2026, 5, 4, 11, tzinfo=UTC)


@pytest.mark.usefixtures("no_schedules")
async def test_ticker_and_starts_racing_leave_one_open_run_per_workspace(
    collection_db: Database, settings: Settings, stub_broker: StubBroker, new_user: NewUser
) -> None:
    tick_settings = derive_settings(settings, database_url=collection_db.url, ticker_batch_size=5)
    user = await new_user()
    workspaces = [await fixtures.make_workspace(collection_db) for _ in range(12)]
    slot = datetime(2026, 5, 4, 10, tzinfo=UTC)
    for workspace_id in workspaces:
        await add_schedule(collection_db, workspace_id, "0 * * * *", slot)

    async def start(workspace_id: str) -> str:
        try:
            async with collection_db.transaction() as session:
                outcome = await runs.start_run(
                    session,
                    actor_of(user.user_id, START_RUN),
                    workspace_id,
                    configured=("openai", "anthropic"),
                    max_open=1,
                    now=utcnow(),
                )
        except runs.RunAlreadyOpen:
            return "refused"
        return outcome.status

    now = datetime(2026, 5, 4, 10, 0, 30, tzinfo=UTC)
    ticked, *starts = await asyncio.gather(
        tick(collection_db, tick_settings, now, broker=stub_broker),
        *(start(workspace_id) for workspace_id in workspaces for _ in range(2)),
    )

    assert isinstance(ticked, TickResult)
    assert set(starts) <= {"queued", "refused"}
    async with collection_db.transaction(write=False) as session:
        per_workspace = dict(
            (
                await session.execute(
                    select(Run.workspace_id, func.count())
                    .where(Run.workspace_id.in_(workspaces), Run.end_time.is_(None))
                    .group_by(Run.workspace_id)
                )
            ).all()
        )
    assert per_workspace == dict.fromkeys(workspaces, 1)
    assert ticked.created + starts.count("queued") == len(workspaces)
    assert ticked.skipped == len(workspaces) - ticked.created


async def test_a_slot_whose_lane_a_racing_start_took_takes_another_free_lane(
    collection_db: Database,
    settings: Settings,
    stub_broker: StubBroker,
    new_user: NewUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs may be open; a StartRun took lane 0 after the tick read the lanes (the tick is
    handed lane 0 as free): the slot still gets its run, in lane 1, and is not skipped."""
    tick_settings = derive_settings(
        settings, database_url=collection_db.url, max_open_runs_per_workspace=2
    )
    user = await new_user()
    ws = await fixtures.make_workspace(collection_db)
    async with collection_db.transaction() as session:
        started = await runs.start_run(
            session,
            actor_of(user.user_id, START_RUN),
            ws,
            configured=("openai", "anthropic"),
            max_open=2,
            now=utcnow(),
        )
    assert started.run is not None
    slot = datetime(2026, 5, 4, 10, tzinfo=UTC)
    await add_schedule(collection_db, ws, "0 * * * *", slot)
    read_lanes = ticker._free_lanes
    reads: list[dict[str, int]] = []

    async def stale_first(*args: Any, **kwargs: Any) -> dict[str, int]:
        lanes = await read_lanes(*args, **kwargs)
        reads.append(lanes)
        return {ws: 0} if len(reads) == 1 else lanes  # what the tick read before the start

    monkeypatch.setattr(ticker, "_free_lanes", stale_first)

    result = await tick(
        collection_db,
        tick_settings,
        datetime(2026, 5, 4, 10, 0, 30, tzinfo=UTC),
        broker=stub_broker,
    )

    assert (result.claimed, result.created, result.skipped) == (1, 1, 0)
    assert len(reads) == 2
    assert len(await open_runs(collection_db, ws)) == 2
