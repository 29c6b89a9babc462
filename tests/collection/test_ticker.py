"""The ticker: due schedules become exactly one run per slot, sent once, whatever happens."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select, update

from service.clock import new_ids, utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Run, Schedule, Workspace
from service.messages import RUN_QUEUE
from tests.support import pipeline as fixtures
from tests.support.pipeline import add_schedule, derive_settings, make_workspace
from workers.ticker import Ticker, tick

collection_db = fixtures.collection_db
stub_broker = fixtures.stub_broker
no_schedules = fixtures.no_schedules

pytestmark = pytest.mark.usefixtures("no_schedules")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def sent_run_ids(broker: StubBroker) -> list[str]:
    """Run ids of the process_run messages waiting in the broker."""
    return [dramatiq.Message.decode(data).args[0] for data in list(broker.queues[RUN_QUEUE].queue)]


async def runs_of(db: Database, workspace_id: str) -> list[Run]:
    async with db.transaction(write=False) as session:
        query = select(Run).where(Run.workspace_id == workspace_id).order_by(Run.scheduled_time)
        runs = list((await session.scalars(query)).all())
        session.expunge_all()  # keep the rows readable after the read-only rollback
        return runs


async def schedule_of(db: Database, workspace_id: str) -> Schedule:
    async with db.transaction(write=False) as session:
        row = await session.get(Schedule, workspace_id)
        assert row is not None
        session.expunge_all()
        return row


@pytest.fixture
def tick_settings(settings: Settings, collection_db: Database) -> Settings:
    """Room for several open runs per workspace: these tests fire slot after slot with no
    worker to end the runs (the cap itself: `test_open_run_cap.py`)."""
    return derive_settings(
        settings,
        database_url=collection_db.url,
        ticker_batch_size=7,
        max_open_runs_per_workspace=10,
    )


async def test_due_schedule_creates_one_queued_run_and_advances(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    ws = await make_workspace(collection_db)
    await add_schedule(collection_db, ws, "0 * * * *", at("2026-05-04T10:00:00"))

    result = await tick(collection_db, tick_settings, at("2026-05-04T10:00:30"), broker=stub_broker)

    (run,) = await runs_of(collection_db, ws)
    assert (run.trigger, run.status, run.scheduled_time) == (
        "schedule",
        "queued",
        at("2026-05-04T10:00:00"),
    )
    assert run.enqueue_time is not None
    assert sent_run_ids(stub_broker) == [run.id]
    assert (await schedule_of(collection_db, ws)).next_run_time == at("2026-05-04T11:00:00")
    assert (result.claimed, result.created, result.dispatched) == (1, 1, 1)


@pytest.mark.parametrize(
    ("cron", "time_zone", "due", "now", "slot", "following"),
    [
        pytest.param(
            "*/15 * * * *",
            "UTC",
            "2026-05-04T06:00:00",
            "2026-05-04T10:20:00",
            "2026-05-04T10:15:00",
            "2026-05-04T10:30:00",
            id="missed slots collapse into the latest",
        ),
        pytest.param(
            "0 9 * * 1",
            "UTC",
            "2025-01-06T09:00:00",
            "2026-05-06T12:00:00",
            "2026-05-04T09:00:00",
            "2026-05-11T09:00:00",
            id="missed for months: the latest Monday",
        ),
        pytest.param(
            "0 9 * * *",
            "America/New_York",
            "2026-11-23T14:00:00",
            "2026-11-23T14:00:05",
            "2026-11-23T14:00:00",
            "2026-11-24T14:00:00",
            id="09:00 in New York is 14:00 UTC in November",
        ),
    ],
)
async def test_one_run_for_the_latest_due_slot(
    collection_db: Database,
    tick_settings: Settings,
    stub_broker: StubBroker,
    cron: str,
    time_zone: str,
    due: str,
    now: str,
    slot: str,
    following: str,
) -> None:
    ws = await make_workspace(collection_db)
    await add_schedule(collection_db, ws, cron, at(due), time_zone)

    await tick(collection_db, tick_settings, at(now), broker=stub_broker)

    (run,) = await runs_of(collection_db, ws)
    assert run.scheduled_time == at(slot)
    assert (await schedule_of(collection_db, ws)).next_run_time == at(following)


async def test_one_batch_advances_each_schedule_to_its_own_next_time(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    crons = ["0 * * * *", "*/15 * * * *", "30 10 * * *", "0 9 * * 1", "*/20 * * * *"]
    workspaces = [await make_workspace(collection_db) for _ in crons]
    for ws, cron in zip(workspaces, crons, strict=True):
        await add_schedule(collection_db, ws, cron, at("2026-05-04T10:00:00"))

    result = await tick(collection_db, tick_settings, at("2026-05-04T10:05:00"), broker=stub_broker)

    assert result.claimed == len(crons)  # one batch (of 7)
    followings = [(await schedule_of(collection_db, ws)).next_run_time for ws in workspaces]
    assert followings == [
        at("2026-05-04T11:00:00"),
        at("2026-05-04T10:15:00"),
        at("2026-05-04T10:30:00"),
        at("2026-05-11T09:00:00"),
        at("2026-05-04T10:20:00"),
    ]
    for ws in workspaces:
        (run,) = await runs_of(collection_db, ws)
        assert run.scheduled_time == at("2026-05-04T10:00:00")


def test_run_ids_drawn_together_look_like_new_ids() -> None:
    ids = new_ids("run", 500)
    assert len(set(ids)) == 500
    assert all(re.fullmatch(r"run_[a-z2-7]{16}", run_id) for run_id in ids)
    assert len({run_id[4:8] for run_id in ids}) > 100  # not one draw repeated


async def test_schedules_not_due_are_untouched(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    ws = await make_workspace(collection_db)
    await add_schedule(collection_db, ws, "0 * * * *", at("2026-05-04T11:00:00"))
    before = await schedule_of(collection_db, ws)

    result = await tick(collection_db, tick_settings, at("2026-05-04T10:59:59"), broker=stub_broker)

    assert await runs_of(collection_db, ws) == []
    after = await schedule_of(collection_db, ws)
    assert (after.next_run_time, after.update_time) == (before.next_run_time, before.update_time)
    assert result.claimed == 0


async def test_deleted_workspace_is_advanced_without_a_run(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    ws = await make_workspace(collection_db, deleted=True)
    await add_schedule(collection_db, ws, "0 * * * *", at("2026-05-04T10:00:00"))

    await tick(collection_db, tick_settings, at("2026-05-04T10:05:00"), broker=stub_broker)

    assert await runs_of(collection_db, ws) == []
    assert (await schedule_of(collection_db, ws)).next_run_time == at("2026-05-04T11:00:00")


async def test_spring_forward_gap_fires_right_after_the_gap(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    # Berlin skips 02:00-03:00 on 2026-03-29: the 02:30 slot fires at 03:00 CEST (01:00 UTC).
    ws = await make_workspace(collection_db)
    await add_schedule(collection_db, ws, "30 2 * * *", at("2026-03-28T01:30:00"), "Europe/Berlin")

    await tick(collection_db, tick_settings, at("2026-03-28T01:30:10"), broker=stub_broker)
    assert (await schedule_of(collection_db, ws)).next_run_time == at("2026-03-29T01:00:00")

    await tick(collection_db, tick_settings, at("2026-03-29T01:00:10"), broker=stub_broker)
    runs = await runs_of(collection_db, ws)
    assert [run.scheduled_time for run in runs] == [
        at("2026-03-28T01:30:00"),
        at("2026-03-29T01:00:00"),
    ]
    # Back to 02:30 local, now CEST (UTC+2).
    assert (await schedule_of(collection_db, ws)).next_run_time == at("2026-03-30T00:30:00")


async def test_fall_back_repeated_hour_fires_once(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    # Berlin repeats 02:00-03:00 on 2026-10-25: 02:30 happens at 00:30 and 01:30 UTC.
    ws = await make_workspace(collection_db)
    await add_schedule(collection_db, ws, "30 2 * * *", at("2026-10-25T00:30:00"), "Europe/Berlin")

    await tick(collection_db, tick_settings, at("2026-10-25T00:30:05"), broker=stub_broker)
    await tick(collection_db, tick_settings, at("2026-10-25T01:30:05"), broker=stub_broker)

    (run,) = await runs_of(collection_db, ws)
    assert run.scheduled_time == at("2026-10-25T00:30:00")
    assert (await schedule_of(collection_db, ws)).next_run_time == at("2026-10-26T01:30:00")


async def test_racing_tickers_create_and_send_each_run_once(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    workspaces = [await make_workspace(collection_db, prompts=()) for _ in range(40)]
    for ws in workspaces:
        await add_schedule(collection_db, ws, "*/30 * * * *", at("2026-05-04T08:00:00"))
    # Three tickers, each with its own engine (its own connections), racing on one instant.
    engines = [Database(collection_db.url) for _ in range(3)]
    now = at("2026-05-04T09:10:00")
    try:
        results = await asyncio.gather(
            *(tick(db, tick_settings, now, broker=stub_broker) for db in engines)
        )
    finally:
        for db in engines:
            await db.dispose()

    runs = [run for ws in workspaces for run in await runs_of(collection_db, ws)]
    assert sorted((run.workspace_id, run.scheduled_time) for run in runs) == sorted(
        (ws, at("2026-05-04T09:00:00")) for ws in workspaces
    )
    assert sum(result.created for result in results) == len(workspaces)
    mine = {run.id for run in runs}
    sends = Counter(run_id for run_id in sent_run_ids(stub_broker) if run_id in mine)
    assert set(sends) == mine
    assert max(sends.values()) == 1
    for ws in workspaces:
        assert (await schedule_of(collection_db, ws)).next_run_time == at("2026-05-04T09:30:00")


class BrokenBroker(StubBroker):
    """A broker that is down: every enqueue fails."""

    def enqueue(self, message: dramatiq.Message[object], *, delay: int | None = None) -> None:  # type: ignore[override]
        raise ConnectionError("broker unreachable")


async def test_runs_written_before_a_failed_send_are_sent_by_the_next_tick(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    workspaces = [await make_workspace(collection_db) for _ in range(10)]
    for ws in workspaces:
        await add_schedule(collection_db, ws, "0 * * * *", at("2026-05-04T10:00:00"))
    down = BrokenBroker()
    down.declare_queue(RUN_QUEUE)

    first = await tick(collection_db, tick_settings, at("2026-05-04T10:00:01"), broker=down)

    runs = [run for ws in workspaces for run in await runs_of(collection_db, ws)]
    assert (first.created, first.dispatched) == (10, 0)
    assert all(run.enqueue_time is None for run in runs)

    # The broker is back; nothing is due any more, but the outbox still holds the runs.
    second = await tick(collection_db, tick_settings, at("2026-05-04T10:00:02"), broker=stub_broker)

    assert second.created == 0
    assert set(sent_run_ids(stub_broker)) >= {run.id for run in runs}
    again = [run for ws in workspaces for run in await runs_of(collection_db, ws)]
    assert [run.id for run in again] == [run.id for run in runs]
    assert all(run.enqueue_time is not None for run in again)


async def test_a_slot_that_already_has_its_run_creates_no_second_one(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    ws = await make_workspace(collection_db)
    await add_schedule(collection_db, ws, "0 * * * *", at("2026-05-04T10:00:00"))
    await tick(collection_db, tick_settings, at("2026-05-04T10:00:01"), broker=stub_broker)
    # Someone puts the schedule back (a restored backup, a manual edit): the slot is taken.
    async with collection_db.transaction() as session:
        row = await session.get(Schedule, ws)
        assert row is not None
        row.next_run_time = at("2026-05-04T10:00:00")

    result = await tick(collection_db, tick_settings, at("2026-05-04T10:00:02"), broker=stub_broker)

    assert len(await runs_of(collection_db, ws)) == 1
    assert (result.claimed, result.created) == (1, 0)
    assert (await schedule_of(collection_db, ws)).next_run_time == at("2026-05-04T11:00:00")


async def test_tick_leaves_later_schedules_for_later(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    due = [await make_workspace(collection_db) for _ in range(3)]
    later = await make_workspace(collection_db)
    for ws in due:
        await add_schedule(collection_db, ws, "0 * * * *", at("2026-05-04T10:00:00"))
    await add_schedule(collection_db, later, "0 * * * *", at("2026-05-04T12:00:00"))

    result = await tick(collection_db, tick_settings, at("2026-05-04T10:30:00"), broker=stub_broker)

    assert result.claimed == 3
    assert await runs_of(collection_db, later) == []
    assert (await schedule_of(collection_db, later)).next_run_time == at("2026-05-04T12:00:00")


async def test_the_ticker_loop_purges_workspaces_past_their_retention(
    collection_db: Database, tick_settings: Settings, stub_broker: StubBroker
) -> None:
    expired = await make_workspace(collection_db, deleted=True)
    recent = await make_workspace(collection_db, deleted=True)
    async with collection_db.transaction() as session:
        await session.execute(
            update(Workspace)
            .where(Workspace.id == expired)
            .values(
                delete_time=utcnow() - timedelta(days=tick_settings.workspace_retention_days + 1)
            )
        )

    await Ticker(tick_settings, collection_db, stub_broker).run_once()

    async with collection_db.transaction(write=False) as session:
        remaining = set(
            await session.scalars(select(Workspace.id).where(Workspace.id.in_([expired, recent])))
        )
    assert remaining == {recent}
