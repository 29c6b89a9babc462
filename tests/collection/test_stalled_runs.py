"""Runs whose messages vanished (a broker that lost its data) are sent again from the database,
once per deadline, by the ticker's next tick, and their pending probes go on with their next
attempt. A run that started, or had an answer, within the deadline is not stalled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import update

from service.broker import broker_of
from service.clock import utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Probe, Run
from service.messages import PROBE_QUEUE, RUN_QUEUE
from service.outbox import STALL_BACKLOG_LIMIT, dispatch_pending_runs, redispatch_stalled_runs
from tests.support import REDIS_URL, unique
from tests.support import pipeline as fixtures
from tests.support.pipeline import derive_settings, insert_run, load_run, make_workspace
from workers.context import WorkerContext
from workers.runs import expand_run
from workers.ticker import Ticker

collection_db = fixtures.collection_db
stub_broker = fixtures.stub_broker
fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
worker_settings = fixtures.worker_settings
no_schedules = fixtures.no_schedules

STALL = 60.0


def queued(broker: StubBroker, queue: str) -> list[dramatiq.Message[None]]:
    return [dramatiq.Message.decode(data) for data in list(broker.queues[queue].queue)]


async def resent(db: Database, broker: StubBroker, now: datetime) -> list[str]:
    """The runs a sweep at `now` sends again (the broker is emptied first)."""
    broker.flush_all()
    await redispatch_stalled_runs(db, broker, STALL, now=now)
    return [m.args[0] for m in queued(broker, RUN_QUEUE)]


@pytest.fixture
async def context(
    worker_settings: Settings, stub_broker: StubBroker, collection_db: Database
) -> AsyncIterator[WorkerContext]:
    made = WorkerContext.create(worker_settings, stub_broker, db=collection_db)
    yield made
    await made.close(dispose_db=False)


async def test_a_sent_run_nobody_took_is_sent_again_once_per_deadline(
    collection_db: Database, stub_broker: StubBroker
) -> None:
    ws = await make_workspace(collection_db)
    run_id = await insert_run(collection_db, ws)
    assert await dispatch_pending_runs(collection_db, stub_broker, run_ids=[run_id]) == 1
    stub_broker.flush_all()  # the broker restarted without its data
    sent = (await load_run(collection_db, run_id)).enqueue_time
    assert sent is not None

    assert run_id not in await resent(collection_db, stub_broker, sent + timedelta(seconds=59))
    late = utcnow() + timedelta(seconds=STALL + 1)
    assert await resent(collection_db, stub_broker, late) == [run_id]
    # Re-stamped: the next sweep leaves it alone until another deadline has passed.
    assert (await load_run(collection_db, run_id)).enqueue_time == late
    assert run_id not in await resent(collection_db, stub_broker, late + timedelta(seconds=59))
    assert run_id in await resent(collection_db, stub_broker, late + timedelta(seconds=61))


async def test_a_run_answering_or_behind_a_backlog_is_not_sent_again(
    collection_db: Database, stub_broker: StubBroker, context: WorkerContext
) -> None:
    ws = await make_workspace(collection_db, prompts=("one", "two"), providers=("openai",))
    run_id = await insert_run(collection_db, ws)
    await dispatch_pending_runs(collection_db, stub_broker, run_ids=[run_id])
    await expand_run(context, run_id)
    later = utcnow() + timedelta(seconds=STALL + 1)
    async with collection_db.transaction() as session:  # one probe answered a moment ago
        await session.execute(
            update(Probe)
            .where(Probe.run_id == run_id, Probe.prompt_text == "one")
            .values(status="succeeded", complete_time=later - timedelta(seconds=1))
        )
    assert run_id not in await resent(collection_db, stub_broker, later)

    # Idle, but thousands of messages are waiting: the wait is explained by the backlog.
    much_later = later + timedelta(seconds=STALL)
    stub_broker.flush_all()
    for _ in range(STALL_BACKLOG_LIMIT + 1):
        stub_broker.enqueue(queued_probe_message())
    await redispatch_stalled_runs(collection_db, stub_broker, STALL, now=much_later)
    assert not queued(stub_broker, RUN_QUEUE)
    assert run_id in await resent(collection_db, stub_broker, much_later)


def queued_probe_message() -> dramatiq.Message[None]:
    from service.messages import probe_message

    return probe_message(["rsp_unrelated"])


async def test_a_run_sent_again_resends_its_pending_probes_with_their_next_attempt(
    collection_db: Database, stub_broker: StubBroker, context: WorkerContext
) -> None:
    ws = await make_workspace(collection_db, prompts=("one", "two"), providers=("openai",))
    run_id = await insert_run(collection_db, ws)
    first = await expand_run(context, run_id)
    assert (first.created, first.sent) == (2, 2)
    async with collection_db.transaction() as session:  # "one" waits for its third attempt
        await session.execute(
            update(Probe)
            .where(Probe.run_id == run_id, Probe.prompt_text == "one")
            .values(attempts=2, error="HTTP 503")
        )
    stub_broker.flush_all()

    again = await expand_run(context, run_id)

    assert (again.created, again.sent) == (0, 2)
    messages = queued(stub_broker, PROBE_QUEUE)
    attempts = sorted((m.args[1] if len(m.args) > 1 else 1, len(m.args[0])) for m in messages)
    assert attempts == [(1, 1), (3, 1)]


# The ticker's sweep --------------------------------------------------------------------------


@pytest.fixture
def ticker_settings(settings: Settings, collection_db: Database) -> Settings:
    return derive_settings(settings, database_url=collection_db.url, run_stall_seconds=STALL)


async def sent_long_ago(
    db: Database,
    broker: StubBroker,
    workspace_id: str,
    *,
    start_ago: float | None = None,
    context: WorkerContext | None = None,
) -> str:
    """A run sent (and, with `context`, expanded into probes) two deadlines ago; started
    `start_ago` seconds ago when given. The broker is emptied: its messages are lost."""
    run_id = await insert_run(db, workspace_id)
    assert await dispatch_pending_runs(db, broker, run_ids=[run_id]) == 1
    if context is not None:
        await expand_run(context, run_id)
    now = utcnow()
    values: dict[str, object] = {"enqueue_time": now - timedelta(seconds=2 * STALL)}
    if start_ago is not None:
        values["start_time"] = now - timedelta(seconds=start_ago)
    async with db.transaction() as session:
        await session.execute(update(Run).where(Run.id == run_id).values(**values))
    broker.flush_all()
    return run_id


def times_sent(broker: StubBroker, run_id: str) -> int:
    return [m.args[0] for m in queued(broker, RUN_QUEUE)].count(run_id)


@pytest.mark.usefixtures("no_schedules")
async def test_the_next_tick_resends_a_run_idle_past_the_deadline_once(
    collection_db: Database, stub_broker: StubBroker, ticker_settings: Settings
) -> None:
    ws = await make_workspace(collection_db)
    never_started = await sent_long_ago(collection_db, stub_broker, ws)
    started_long_ago = await sent_long_ago(collection_db, stub_broker, ws, start_ago=2 * STALL)

    await Ticker(ticker_settings, collection_db, stub_broker).run_once()

    assert times_sent(stub_broker, never_started) == 1
    assert times_sent(stub_broker, started_long_ago) == 1
    # Sent again, it is no longer idle: the next tick, of this ticker or of another one
    # (whose sweep is due at once), leaves it alone.
    stub_broker.flush_all()
    await Ticker(ticker_settings, collection_db, stub_broker).run_once()
    assert times_sent(stub_broker, never_started) == times_sent(stub_broker, started_long_ago) == 0


@pytest.mark.usefixtures("no_schedules")
async def test_a_tick_leaves_a_run_that_started_or_answered_within_the_deadline(
    collection_db: Database,
    stub_broker: StubBroker,
    ticker_settings: Settings,
    context: WorkerContext,
) -> None:
    ws = await make_workspace(collection_db, prompts=("one", "two"), providers=("openai",))
    # Sent long ago, but a worker took it a moment ago (it may be expanding a large run).
    just_started = await sent_long_ago(collection_db, stub_broker, ws, start_ago=STALL / 2)
    # Started long ago, but one of its probes was answered a moment ago.
    answering = await sent_long_ago(
        collection_db, stub_broker, ws, start_ago=2 * STALL, context=context
    )
    async with collection_db.transaction() as session:
        await session.execute(
            update(Probe)
            .where(Probe.run_id == answering, Probe.prompt_text == "one")
            .values(status="succeeded", complete_time=utcnow() - timedelta(seconds=STALL / 2))
        )
    # Its twin, answered as long ago as it started, shows that the sweep did run.
    idle = await sent_long_ago(collection_db, stub_broker, ws, start_ago=2 * STALL, context=context)
    stub_broker.flush_all()

    await Ticker(ticker_settings, collection_db, stub_broker).run_once()

    assert times_sent(stub_broker, idle) == 1
    assert times_sent(stub_broker, just_started) == 0
    assert times_sent(stub_broker, answering) == 0


# A broker that lost its data ------------------------------------------------------------------


def redis_sends(broker: RedisBroker, run_id: str) -> int:
    """How many messages for `run_id` wait in the Redis broker's run queue."""
    data = broker.client.hvals(f"{broker.namespace}:{RUN_QUEUE}.msgs")
    return [json.loads(item)["args"][0] for item in data].count(run_id)


def lose_data(broker: RedisBroker) -> None:
    """What a Redis restarted without persistence does to the broker's keys."""
    keys = list(broker.client.scan_iter(f"{broker.namespace}:*"))
    if keys:
        broker.client.delete(*keys)


@pytest.mark.usefixtures("no_schedules")
async def test_the_next_tick_resends_every_open_run_when_redis_lost_its_data(
    collection_db: Database, settings: Settings, ticker_settings: Settings
) -> None:
    url = f"{REDIS_URL}?namespace={unique('beacon-epoch-')}"
    broker = broker_of(derive_settings(settings, broker_url=url))
    assert isinstance(broker, RedisBroker)
    ticker = Ticker(ticker_settings, collection_db, broker)
    try:
        ws = await make_workspace(collection_db)
        run_id = await insert_run(collection_db, ws)
        assert await dispatch_pending_runs(collection_db, broker, run_ids=[run_id]) == 1
        await ticker.run_once()  # a first look sets the mark: a new namespace lost nothing
        assert redis_sends(broker, run_id) == 1  # nor is the run stalled

        lose_data(broker)
        await ticker.run_once()
        assert redis_sends(broker, run_id) == 1  # sent again at once, long before the deadline
        await ticker.run_once()
        assert redis_sends(broker, run_id) == 1  # the mark is back: once only
    finally:
        lose_data(broker)
        broker.close()
