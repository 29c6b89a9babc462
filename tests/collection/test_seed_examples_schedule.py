"""The seed's schedule examples (workspace.getSchedule, setSchedule, getCronTiming) replayed.

Seed: `002_7e1cc7bb64088cf8.txt`. `schedule: null` is an empty cron here, `nextRun` /
`lastPromptRun` null are unset timestamps, and the immediate run's statuses "queued",
"empty", "failed" and "not-requested" are IMMEDIATE_RUN_STATUS_*.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from beacon.v1 import schedule_service_pb2 as pb
from service.app import App
from tests.support.app import NewUser
from tests.support.builders import insert_prompts, make_workspace


def next_midnight(after: datetime) -> datetime:
    return datetime(after.year, after.month, after.day, tzinfo=UTC) + timedelta(days=1)


async def test_get_set_and_time_a_schedule_as_the_seed_does(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    await insert_prompts(app, tenant.workspace_id, ["Which CRM do startups use?"])
    workspace = {"workspace_id": tenant.workspace_id}

    # const result = await trpc.workspace.getSchedule.query({ workspaceId }) -> null
    result = await collection.schedules.GetSchedule(
        pb.GetScheduleRequest(**workspace), metadata=user.metadata
    )
    assert result.cron == ""

    # const timing = await trpc.workspace.getCronTiming.query({ workspaceId }) -> nulls
    timing = await collection.schedules.GetCronTiming(
        pb.GetCronTimingRequest(**workspace), metadata=user.metadata
    )
    assert not timing.HasField("next_run_time")
    assert not timing.HasField("last_prompt_run_time")

    # await trpc.workspace.setSchedule.mutate({ workspaceId, schedule: "0 0 * * *" })
    # "Daily at midnight": the immediate run is queued with its job id.
    result = await collection.schedules.SetSchedule(
        pb.SetScheduleRequest(cron="0 0 * * *", **workspace), metadata=user.metadata
    )
    assert result.workspace.id == tenant.workspace_id
    assert result.workspace.schedule.cron == "0 0 * * *"
    assert result.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_QUEUED
    assert result.immediate_run.run_id.startswith("run_")

    result = await collection.schedules.GetSchedule(
        pb.GetScheduleRequest(**workspace), metadata=user.metadata
    )
    assert result.cron == "0 0 * * *"

    # nextRun: the next midnight (UTC); lastPromptRun: the immediate run just queued.
    timing = await collection.schedules.GetCronTiming(
        pb.GetCronTimingRequest(**workspace), metadata=user.metadata
    )
    now = datetime.now(UTC)
    next_run = timing.next_run_time.ToDatetime(tzinfo=UTC)
    assert next_run == next_midnight(last_run := timing.last_prompt_run_time.ToDatetime(tzinfo=UTC))
    assert timedelta(0) <= now - last_run < timedelta(minutes=1)

    # schedule: null disables it: "not-requested".
    result = await collection.schedules.SetSchedule(
        pb.SetScheduleRequest(cron="", **workspace), metadata=user.metadata
    )
    assert result.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_NOT_REQUESTED
    assert result.workspace.schedule.cron == ""
    timing = await collection.schedules.GetCronTiming(
        pb.GetCronTimingRequest(**workspace), metadata=user.metadata
    )
    assert not timing.HasField("next_run_time")
    assert timing.last_prompt_run_time.ToDatetime(tzinfo=UTC) == last_run


async def test_empty_when_there_are_no_prompts_to_analyze(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    result = await collection.schedules.SetSchedule(
        pb.SetScheduleRequest(workspace_id=tenant.workspace_id, cron="0 0 * * *"),
        metadata=user.metadata,
    )
    assert result.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_EMPTY


async def test_failed_with_the_error_when_the_run_cannot_start(
    app: App, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    # The shared server has no provider credentials at all.
    user = await new_user()
    tenant = await make_workspace(app, user.user_id, enabled=["openai"])
    await insert_prompts(app, tenant.workspace_id, ["q"])
    result = await stubs.schedules.SetSchedule(
        pb.SetScheduleRequest(workspace_id=tenant.workspace_id, cron="0 0 * * *"),
        metadata=user.metadata,
    )
    assert result.immediate_run.status == pb.IMMEDIATE_RUN_STATUS_FAILED
    assert result.immediate_run.reason == (
        "no enabled provider has credentials configured on the server (OPENAI)"
    )
    assert result.immediate_run.run_id == ""
