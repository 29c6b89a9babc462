"""The collection commands as the domain convention has them: `(session, actor, args, now)`,
each recording its own audit event, keeping request ids, and having the runs it wrote sent
once its transaction has committed (against the real database, no server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.app import App
from service.clock import utcnow
from service.db.models import AuditEvent, IdempotencyKey, Run
from service.domain.actor import Actor
from service.domain.collection import prompts, runs, schedules
from service.domain.errors import FailedPrecondition
from service.outbox import dispatch_pending_runs
from tests.support import actor_of, unique
from tests.support import pipeline as fixtures
from tests.support.app import NewUser
from tests.support.builders import Tenant, make_workspace, stored_texts

stub_broker = fixtures.stub_broker

START_RUN = "beacon.v1.RunService/StartRun"
STORE_PROMPTS = "beacon.v1.PromptService/StorePrompts"
CONFIGURED = ("openai",)


async def audit_events(app: App, actor: Actor) -> list[AuditEvent]:
    """The events recorded for calls made as `actor` (its server request id)."""
    async with app.db.transaction(write=False) as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.request_id == actor.request_id)
        )
        return list(rows)


async def run_count(app: App, workspace_id: str) -> int:
    async with app.db.transaction(write=False) as session:
        count = await session.scalar(
            select(func.count()).select_from(Run).where(Run.workspace_id == workspace_id)
        )
    return int(count or 0)


async def with_prompts(app: App, user_id: str, texts: Sequence[str] = ("a", "b")) -> Tenant:
    tenant = await make_workspace(app, user_id)
    async with app.db.transaction() as session:
        await prompts.store_prompts(
            session, actor_of(user_id, STORE_PROMPTS), tenant.workspace_id, texts, now=utcnow()
        )
    return tenant


async def start(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    request_id: str = "",
    *,
    max_open: int = 1,
) -> runs.StartOutcome:
    """StartRun over every prompt with the configured provider, at the current time, in a
    workspace that may hold `max_open` open runs."""
    return await runs.start_run(
        session,
        actor,
        workspace_id,
        configured=CONFIGURED,
        max_open=max_open,
        request_id=request_id,
        now=utcnow(),
    )


class Sent:
    """A run sender that records what it was given and whether those runs were committed,
    then sends them to a broker nobody consumes, so that they leave the outbox (another
    test's ticker would otherwise run them)."""

    def __init__(self, app: App, broker: StubBroker) -> None:
        self.app = app
        self.broker = broker
        self.batches: list[list[str]] = []
        self.committed: list[bool] = []

    async def __call__(self, run_ids: Sequence[str]) -> int:
        self.batches.append(list(run_ids))
        # Another transaction sees the runs only once the writer has committed.
        async with self.app.db.transaction(write=False) as session:
            found = await session.scalar(
                select(func.count()).select_from(Run).where(Run.id.in_(list(run_ids)))
            )
        self.committed.append(found == len(run_ids))
        return await dispatch_pending_runs(self.app.db, self.broker, run_ids=run_ids)


@pytest.fixture(autouse=True)
async def sent(app: App, stub_broker: StubBroker) -> AsyncIterator[Sent]:
    """The shared database's run sender, replaced for each test of the module by one that
    records what it sends."""
    previous = app.db.run_sender
    app.db.run_sender = recorder = Sent(app, stub_broker)
    try:
        yield recorder
    finally:
        app.db.run_sender = previous


async def test_a_retried_request_id_returns_the_first_result_and_changes_nothing(
    app: App, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    actor = actor_of(user.user_id, STORE_PROMPTS)
    request_id = unique("req-")
    now = utcnow()
    async with app.db.transaction() as session:
        first = await prompts.store_prompts(
            session, actor, tenant.workspace_id, ["a", "b"], request_id=request_id, now=now
        )
    async with app.db.transaction() as session:
        again = await prompts.store_prompts(
            session,
            actor,
            tenant.workspace_id,
            ["something else"],
            request_id=request_id,
            now=now + timedelta(seconds=5),
        )
    assert again == first, "a retry must return the first result"
    assert set(await stored_texts(app, tenant.workspace_id)) == {"a", "b"}, "nothing changed"
    events = await audit_events(app, actor)
    assert len(events) == 1, "the change was made (and audited) once"
    assert events[0].create_time == now
    assert events[0].organization_id == tenant.organization_id


async def test_a_request_id_whose_result_an_earlier_version_stored_is_refused_not_redone(
    app: App, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    actor = actor_of(user.user_id, STORE_PROMPTS)
    request_id = unique("req-")
    async with app.db.transaction() as session:
        # What a server before the domain kept request ids stored: the protobuf response.
        session.add(
            IdempotencyKey(
                principal_id=actor.actor_id,
                method=f"{STORE_PROMPTS}|{tenant.workspace_id}",
                request_id=request_id,
                response=b"\n\x07\n\x05prm_x",
                create_time=utcnow(),
            )
        )
    with pytest.raises(FailedPrecondition) as refused:
        async with app.db.transaction() as session:
            await prompts.store_prompts(
                session, actor, tenant.workspace_id, ["a"], request_id=request_id, now=utcnow()
            )
    assert refused.value.reason == "REQUEST_ID_NOT_REPLAYABLE"
    assert [v.subject for v in refused.value.violations] == ["request_id"]
    assert await stored_texts(app, tenant.workspace_id) == {}, "the work is not done twice"


async def test_a_request_id_belongs_to_its_actor_and_workspace(app: App, new_user: NewUser) -> None:
    owner, other = await new_user(), await new_user()
    tenant = await with_prompts(app, owner.user_id)
    second = await with_prompts(app, owner.user_id)
    request_id = unique("req-")

    outcomes = []
    # The same id from another user, or for another workspace, is a request of its own.
    for user_id, workspace_id in [
        (owner.user_id, tenant.workspace_id),
        (other.user_id, tenant.workspace_id),
        (owner.user_id, second.workspace_id),
    ]:
        async with app.db.transaction() as session:
            actor = actor_of(user_id, START_RUN)
            outcomes.append(await start(session, actor, workspace_id, request_id, max_open=2))
    run_ids = {o.run.id for o in outcomes if o.run is not None}
    assert len(run_ids) == 3
    assert await run_count(app, tenant.workspace_id) == 2
    assert await run_count(app, second.workspace_id) == 1


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A StartRun with a request id, by a user of a workspace that has prompts."""

    actor: Actor
    workspace_id: str
    request_id: str


@pytest.fixture
async def run_request(app: App, new_user: NewUser) -> RunRequest:
    user = await new_user()
    tenant = await with_prompts(app, user.user_id)
    return RunRequest(actor_of(user.user_id, START_RUN), tenant.workspace_id, unique("req-"))


async def test_racing_calls_with_one_request_id_start_one_run(
    app: App, run_request: RunRequest, sent: Sent
) -> None:
    actor, workspace_id, request_id = (
        run_request.actor,
        run_request.workspace_id,
        run_request.request_id,
    )

    async def retry() -> runs.StartOutcome:
        async with app.db.transaction() as session:
            outcome = await start(session, actor, workspace_id, request_id)
            # Hold the transaction open so that the calls overlap.
            await asyncio.sleep(0.2)
            return outcome

    outcomes = await asyncio.gather(*(retry() for _ in range(3)))
    assert await run_count(app, workspace_id) == 1, "racing retries started one run"
    assert outcomes[0].run is not None
    assert all(o == outcomes[0] for o in outcomes), "every call answers the first result"
    assert len(await audit_events(app, actor)) == 1


async def test_started_runs_are_sent_after_commit_and_again_on_a_retry(
    app: App, run_request: RunRequest, sent: Sent
) -> None:
    for attempt in range(2):
        async with app.db.transaction() as session:
            outcome = await start(
                session, run_request.actor, run_request.workspace_id, run_request.request_id
            )
            assert len(sent.batches) == attempt, "nothing is sent before the commit"
    assert outcome.run is not None
    # The retry asks again (the dispatcher sends only a run not yet enqueued, so a first
    # send that failed is made good by the retry).
    assert sent.batches == [[outcome.run.id], [outcome.run.id]]
    assert sent.committed == [True, True], "runs are sent only once they are committed"


async def test_a_rolled_back_command_sends_nothing(app: App, new_user: NewUser, sent: Sent) -> None:
    user = await new_user()
    tenant = await with_prompts(app, user.user_id)
    with pytest.raises(RuntimeError):
        async with app.db.transaction() as session:
            await start(session, actor_of(user.user_id, START_RUN), tenant.workspace_id)
            raise RuntimeError("the call fails after the command")
    assert sent.batches == []
    assert await run_count(app, tenant.workspace_id) == 0


async def test_cancel_records_its_event_at_now(app: App, new_user: NewUser) -> None:
    user = await new_user()
    tenant = await with_prompts(app, user.user_id)
    async with app.db.transaction() as session:
        outcome = await start(session, actor_of(user.user_id, START_RUN), tenant.workspace_id)
    assert outcome.run is not None
    canceler = actor_of(user.user_id, "beacon.v1.RunService/CancelRun")
    now = utcnow() + timedelta(minutes=1)
    async with app.db.transaction() as session:
        view = await runs.cancel_run(
            session, canceler, tenant.workspace_id, outcome.run.id, now=now
        )
    assert view.status == "canceled" and view.end_time == now
    [event] = await audit_events(app, canceler)
    assert (event.action, event.target_ids, event.create_time) == (
        "beacon.v1.RunService/CancelRun",
        [outcome.run.id],
        now,
    )
    assert event.workspace_id == tenant.workspace_id


async def test_set_schedule_audits_once_and_sends_its_immediate_run(
    app: App, new_user: NewUser, sent: Sent
) -> None:
    user = await new_user()
    tenant = await with_prompts(app, user.user_id)
    actor = actor_of(user.user_id, "beacon.v1.ScheduleService/SetSchedule")
    charged: list[str] = []

    async def charge() -> None:
        charged.append(tenant.workspace_id)

    now = utcnow()
    async with app.db.transaction() as session:
        change = await schedules.set_schedule(
            session,
            actor,
            tenant.workspace_id,
            cron="0 6 * * *",
            time_zone="Europe/Paris",
            min_interval_minutes=15,
            configured_providers=CONFIGURED,
            max_open_runs=1,
            charge_run=charge,
            now=now,
        )
        assert sent.batches == [], "nothing is sent before the commit"
    run_id = change.immediate_run.run_id
    assert change.immediate_run.status == "queued" and run_id
    assert charged == [tenant.workspace_id]
    assert sent.batches == [[run_id]] and sent.committed == [True]
    assert (change.workspace.cron, change.workspace.time_zone) == ("0 6 * * *", "Europe/Paris")
    [event] = await audit_events(app, actor)
    assert event.target_ids == [tenant.workspace_id, run_id]
    assert event.create_time == now
