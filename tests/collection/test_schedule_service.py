"""ScheduleService through a real server: get, set (with the immediate run), clear, timing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import grpc
import pytest
from sqlalchemy import select

from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import run_service_pb2_grpc, schedule_service_pb2_grpc
from beacon.v1 import schedule_service_pb2 as pb
from service.app import App
from service.db.models import AuditEvent, Run
from service.domain.collection.schedules import next_fire_time
from service.server import start_server
from tests.support import expect_error, unique
from tests.support.app import NewUser
from tests.support.builders import insert_prompts, make_workspace


async def set_schedule(
    collection: SimpleNamespace, user: object, workspace_id: str, cron: str, time_zone: str = ""
) -> pb.SetScheduleResponse:
    reply: pb.SetScheduleResponse = await collection.schedules.SetSchedule(
        pb.SetScheduleRequest(workspace_id=workspace_id, cron=cron, time_zone=time_zone),
        metadata=user.metadata,  # type: ignore[attr-defined]
    )
    return reply


async def test_setting_a_schedule_queues_an_immediate_run(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    await insert_prompts(app, tenant.workspace_id, ["best crm?", "cheapest crm?"])
    before = datetime.now(UTC)

    reply = await set_schedule(collection, user, tenant.workspace_id, "0 6 * * 1-5", "Europe/Paris")

    assert reply.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_QUEUED
    assert reply.immediate_run.run_id.startswith("run_")
    assert reply.workspace.id == tenant.workspace_id
    assert reply.workspace.schedule.cron == "0 6 * * 1-5"
    assert reply.workspace.schedule.time_zone == "Europe/Paris"
    run = await collection.runs.GetRun(
        run_pb.GetRunRequest(run_id=reply.immediate_run.run_id), metadata=user.metadata
    )
    assert run.trigger == run_pb.RUN_TRIGGER_SCHEDULE_SET
    assert run.status == run_pb.RUN_STATUS_QUEUED
    assert run.prompt_count == 2

    schedule = await collection.schedules.GetSchedule(
        pb.GetScheduleRequest(workspace_id=tenant.workspace_id), metadata=user.metadata
    )
    assert (schedule.workspace_id, schedule.cron, schedule.time_zone) == (
        tenant.workspace_id,
        "0 6 * * 1-5",
        "Europe/Paris",
    )
    timing = await collection.schedules.GetCronTiming(
        pb.GetCronTimingRequest(workspace_id=tenant.workspace_id), metadata=user.metadata
    )
    next_run = timing.next_run_time.ToDatetime(tzinfo=UTC)
    assert next_run == next_fire_time("0 6 * * 1-5", "Europe/Paris", before)
    assert next_run.astimezone(next_run.tzinfo).minute == 0
    assert timing.last_prompt_run_time.ToDatetime(tzinfo=UTC) == run.create_time.ToDatetime(
        tzinfo=UTC
    )


async def test_a_workspace_without_prompts_is_empty(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    reply = await set_schedule(collection, user, tenant.workspace_id, "0 0 * * *")
    assert reply.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_EMPTY
    assert reply.immediate_run.run_id == ""
    assert reply.workspace.schedule.cron == "0 0 * * *"
    assert reply.workspace.schedule.time_zone == "UTC"
    timing = await collection.schedules.GetCronTiming(
        pb.GetCronTimingRequest(workspace_id=tenant.workspace_id), metadata=user.metadata
    )
    assert timing.HasField("next_run_time")
    assert not timing.HasField("last_prompt_run_time")


async def test_providers_without_credentials_fail_the_immediate_run(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id, enabled=["google", "cohere"])
    await insert_prompts(app, tenant.workspace_id, ["q"])
    reply = await set_schedule(collection, user, tenant.workspace_id, "0 0 * * *")
    assert reply.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_FAILED
    assert "GOOGLE, COHERE" in reply.immediate_run.reason
    # The schedule itself is set.
    assert reply.workspace.schedule.cron == "0 0 * * *"


async def test_clearing_the_schedule(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    await set_schedule(collection, user, tenant.workspace_id, "0 0 * * *")
    reply = await set_schedule(collection, user, tenant.workspace_id, "")
    assert reply.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_NOT_REQUESTED
    assert reply.workspace.schedule.cron == ""
    schedule = await collection.schedules.GetSchedule(
        pb.GetScheduleRequest(workspace_id=tenant.workspace_id), metadata=user.metadata
    )
    assert schedule.cron == ""
    timing = await collection.schedules.GetCronTiming(
        pb.GetCronTimingRequest(workspace_id=tenant.workspace_id), metadata=user.metadata
    )
    assert not timing.HasField("next_run_time")
    # Clearing an unscheduled workspace is harmless.
    again = await set_schedule(collection, user, tenant.workspace_id, "  ")
    assert again.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_NOT_REQUESTED


async def test_too_frequent_or_invalid_schedules_are_refused_without_change(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    await insert_prompts(app, tenant.workspace_id, ["q"])
    await set_schedule(collection, user, tenant.workspace_id, "0 0 * * *")
    for cron, time_zone, field in [
        ("*/5 * * * *", "", "cron"),
        ("0,10 * * * *", "", "cron"),
        ("0 0 * *", "", "cron"),
        ("not a cron at all", "", "cron"),
        ("0 0 * * *", "Nowhere/City", "time_zone"),
    ]:
        failure = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            set_schedule(collection, user, tenant.workspace_id, cron, time_zone),
        )
        violations = failure.details["BadRequest"].field_violations
        assert [v.field for v in violations] == [field], cron
        assert field in failure.message
    schedule = await collection.schedules.GetSchedule(
        pb.GetScheduleRequest(workspace_id=tenant.workspace_id), metadata=user.metadata
    )
    assert schedule.cron == "0 0 * * *"
    async with app.db.transaction(write=False) as session:
        runs = list(
            await session.scalars(select(Run).where(Run.workspace_id == tenant.workspace_id))
        )
    assert len(runs) == 1  # only the first, valid SetSchedule started a run


async def test_set_schedule_is_audited(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    await insert_prompts(app, tenant.workspace_id, ["q"])
    reply = await set_schedule(collection, user, tenant.workspace_id, "30 8 * * *")
    async with app.db.transaction(write=False) as session:
        events = [
            (e.action, e.actor_id, e.organization_id, e.target_ids)
            for e in await session.scalars(
                select(AuditEvent).where(AuditEvent.workspace_id == tenant.workspace_id)
            )
        ]
    assert events == [
        (
            "beacon.v1.ScheduleService/SetSchedule",
            user.user_id,
            tenant.organization_id,
            [tenant.workspace_id, reply.immediate_run.run_id],
        )
    ]


async def test_other_tenants_see_nothing(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    owner, stranger = await new_user(), await new_user()
    tenant = await make_workspace(app, owner.user_id)
    await set_schedule(collection, owner, tenant.workspace_id, "0 0 * * *")
    for call in (
        collection.schedules.GetSchedule(
            pb.GetScheduleRequest(workspace_id=tenant.workspace_id), metadata=stranger.metadata
        ),
        collection.schedules.GetCronTiming(
            pb.GetCronTimingRequest(workspace_id=tenant.workspace_id), metadata=stranger.metadata
        ),
        set_schedule(collection, stranger, tenant.workspace_id, ""),
    ):
        await expect_error(grpc.StatusCode.NOT_FOUND, call)
    schedule = await collection.schedules.GetSchedule(
        pb.GetScheduleRequest(workspace_id=tenant.workspace_id), metadata=owner.metadata
    )
    assert schedule.cron == "0 0 * * *"


async def test_next_run_time_follows_the_time_zone(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    await set_schedule(collection, user, tenant.workspace_id, "0 9 * * *", "Asia/Tokyo")
    timing = await collection.schedules.GetCronTiming(
        pb.GetCronTimingRequest(workspace_id=tenant.workspace_id), metadata=user.metadata
    )
    next_run = timing.next_run_time.ToDatetime(tzinfo=UTC)
    assert (next_run.hour, next_run.minute) == (0, 0)  # 09:00 in Tokyo (UTC+9)
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)


@pytest.fixture
async def unscaled(keyed_app: App) -> AsyncIterator[SimpleNamespace]:
    """Stubs of a server with the product's own rate limits, on counters of its own."""
    settings = keyed_app.settings.model_copy(
        update={"rate_limit_scale": 1.0, "rate_limit_key_prefix": unique("beacon-test-runs-")}
    )
    server = await start_server(App(settings=settings, db=keyed_app.db), "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield SimpleNamespace(
            schedules=schedule_service_pb2_grpc.ScheduleServiceStub(channel),
            runs=run_service_pb2_grpc.RunServiceStub(channel),
        )
    await server.stop(grace=1.0)


async def test_the_same_schedule_again_starts_no_run_and_changes_nothing(
    app: App, unscaled: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    await insert_prompts(app, tenant.workspace_id, ["best crm?"])
    first = await set_schedule(unscaled, user, tenant.workspace_id, "0 6 * * *", "Europe/Paris")
    assert first.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_QUEUED

    for cron, zone in [("0 6 * * *", "Europe/Paris"), ("0  6 * * *", "europe/paris")] * 3:
        again = await set_schedule(unscaled, user, tenant.workspace_id, cron, zone)
        assert again.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_NOT_REQUESTED
        assert again.immediate_run.reason == "the schedule is unchanged"
        assert again.workspace.etag == first.workspace.etag
    async with app.db.transaction(write=False) as session:
        runs = list(
            await session.scalars(select(Run.id).where(Run.workspace_id == tenant.workspace_id))
        )
    assert runs == [first.immediate_run.run_id]


async def test_schedule_runs_and_start_run_share_three_runs_a_minute_per_workspace(
    app: App, unscaled: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    workspace_id = tenant.workspace_id
    await insert_prompts(app, workspace_id, ["best crm?"])
    start = run_pb.StartRunRequest(workspace_id=workspace_id)

    async def cancel(run_id: str) -> None:
        """Ends the run, so that the next start is held by the rate limit alone (not by the
        workspace's one open run)."""
        await unscaled.runs.CancelRun(
            run_pb.CancelRunRequest(run_id=run_id), metadata=user.metadata
        )

    await cancel((await unscaled.runs.StartRun(start, metadata=user.metadata)).run.id)
    changed = await set_schedule(unscaled, user, workspace_id, "0 6 * * *")
    assert changed.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_QUEUED
    await cancel(changed.immediate_run.run_id)
    await cancel((await unscaled.runs.StartRun(start, metadata=user.metadata)).run.id)

    # The budget is spent: neither way starts a fourth run, and the schedule stays as it was.
    refused = await expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, set_schedule(unscaled, user, workspace_id, "0 7 * * *")
    )
    [violation] = refused.details["QuotaFailure"].violations
    assert (violation.subject, violation.description) == (
        f"workspace:{workspace_id}",
        "3 per 60s per workspace",
    )
    assert refused.details["RetryInfo"].retry_delay.seconds > 0
    await expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, unscaled.runs.StartRun(start, metadata=user.metadata)
    )
    schedule = await unscaled.schedules.GetSchedule(
        pb.GetScheduleRequest(workspace_id=workspace_id), metadata=user.metadata
    )
    assert schedule.cron == "0 6 * * *"
    # Setting what is already set costs nothing, so it still answers.
    same = await set_schedule(unscaled, user, workspace_id, "0 6 * * *")
    assert same.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_NOT_REQUESTED
    async with app.db.transaction(write=False) as session:
        runs = list(await session.scalars(select(Run.id).where(Run.workspace_id == workspace_id)))
    assert len(runs) == 3
