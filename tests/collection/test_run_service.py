"""RunService through a real server: start, read, list, cancel and watch runs."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, select

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import run_service_pb2 as pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import utcnow
from service.db.models import Probe, Run
from tests.support import expect_error
from tests.support.app import NewUser
from tests.support.app import TestUser as Caller
from tests.support.builders import (
    add_workspace_member,
    audited_actions,
    end_run,
    finish_probe,
    insert_probe,
    insert_prompts,
    insert_run,
    make_workspace,
)

OPENAI, ANTHROPIC, GOOGLE = ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC, ws_pb.PROVIDER_GOOGLE


@pytest.fixture
async def owner(new_user: NewUser) -> Caller:
    return await new_user()


@pytest.fixture
async def workspace_id(app: App, owner: Caller) -> str:
    tenant = await make_workspace(app, owner.user_id, enabled=["openai", "anthropic", "google"])
    return tenant.workspace_id


def progress(run: pb.Run) -> list[tuple[int, int, int, int]]:
    return [(p.provider, p.total, p.done, p.failed) for p in run.progress]


async def start(
    collection: SimpleNamespace, user: Caller, workspace_id: str, **fields: Any
) -> pb.StartRunResponse:
    reply: pb.StartRunResponse = await collection.runs.StartRun(
        pb.StartRunRequest(workspace_id=workspace_id, **fields), metadata=user.metadata
    )
    return reply


async def get_run(collection: SimpleNamespace, user: Caller, run_id: str) -> pb.Run:
    run: pb.Run = await collection.runs.GetRun(
        pb.GetRunRequest(run_id=run_id), metadata=user.metadata
    )
    return run


async def run_count(app: App, workspace_id: str) -> int:
    async with app.db.transaction(write=False) as session:
        return len(
            list(await session.scalars(select(Run.id).where(Run.workspace_id == workspace_id)))
        )


async def test_start_run_queues_every_prompt_on_the_providers_with_keys(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    await insert_prompts(app, workspace_id, ["a", "b", "c"])
    reply = await start(collection, owner, workspace_id)
    assert reply.status == pb.START_RUN_STATUS_QUEUED
    run = reply.run
    assert run.id.startswith("run_")
    assert (run.workspace_id, run.status, run.trigger) == (
        workspace_id,
        pb.RUN_STATUS_QUEUED,
        pb.RUN_TRIGGER_MANUAL,
    )
    # Google is enabled but the server has no key for it: it is left out.
    assert list(run.providers) == [OPENAI, ANTHROPIC]
    assert run.prompt_count == 3
    assert progress(run) == [(OPENAI, 3, 0, 0), (ANTHROPIC, 3, 0, 0)]
    assert not run.HasField("end_time")
    assert await get_run(collection, owner, run.id) == run
    async with app.db.transaction(write=False) as session:
        row = await session.get(Run, run.id)
        assert row is not None
        assert (row.status, row.providers, row.prompt_ids) == (
            "queued",
            ["openai", "anthropic"],
            [],
        )


async def test_start_run_reads_its_workspace_once(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    """The access check's read of the workspace serves the whole call: its enabled providers
    choose the run's providers and its organization heads the audit event. Only the spending
    caps are read again, on purpose."""
    await insert_prompts(app, workspace_id, ["a"])
    reads: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if re.search(r"\bFROM workspaces\b", statement):
            reads.append(statement)

    engine = app.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        reply = await start(collection, owner, workspace_id, request_id="reads-once")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert reply.status == pb.START_RUN_STATUS_QUEUED
    assert list(reply.run.providers) == [OPENAI, ANTHROPIC]
    # The spending caps are read apart, fresh in the run's transaction (a cap lowered a moment
    # ago must hold: never from the access check's cached view); the view is read once.
    caps = [r for r in reads if "monthly_cap_micros" in r]
    assert len(caps) == 1, reads
    assert len(reads) - len(caps) <= 1, reads
    assert ("StartRun", [reply.run.id]) in await audited_actions(app, workspace_id)


async def test_start_run_on_a_subset(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    ids = await insert_prompts(app, workspace_id, ["a", "b", "c"])
    reply = await start(
        collection, owner, workspace_id, prompt_ids=[ids[2], ids[0], ids[2]], providers=[ANTHROPIC]
    )
    assert reply.status == pb.START_RUN_STATUS_QUEUED
    assert list(reply.run.providers) == [ANTHROPIC]
    assert progress(reply.run) == [(ANTHROPIC, 2, 0, 0)]
    async with app.db.transaction(write=False) as session:
        row = await session.get(Run, reply.run.id)
        assert row is not None and row.prompt_ids == [ids[2], ids[0]]


async def test_empty_and_no_providers_start_nothing(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    empty = await start(collection, owner, workspace_id)
    assert empty.status == pb.START_RUN_STATUS_EMPTY
    assert not empty.HasField("run")
    await insert_prompts(app, workspace_id, ["a"])
    missing = await start(collection, owner, workspace_id, providers=[OPENAI, GOOGLE])
    assert missing.status == pb.START_RUN_STATUS_NO_PROVIDERS
    assert list(missing.providers_without_credentials) == [GOOGLE]
    assert not missing.HasField("run")
    only_google = (
        await make_workspace(app, owner.user_id, enabled=["google", "cohere"])
    ).workspace_id
    await insert_prompts(app, only_google, ["a"])
    none = await start(collection, owner, only_google)
    assert none.status == pb.START_RUN_STATUS_NO_PROVIDERS
    assert list(none.providers_without_credentials) == [GOOGLE, ws_pb.PROVIDER_COHERE]
    assert await run_count(app, workspace_id) == 0
    assert await run_count(app, only_google) == 0


async def test_bad_start_requests(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    await insert_prompts(app, workspace_id, ["a"])
    other = (await make_workspace(app, owner.user_id)).workspace_id
    foreign = await insert_prompts(app, other, ["theirs"])
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        (
            {"providers": [ws_pb.PROVIDER_UNSPECIFIED]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "providers[0]",
        ),
        ({"providers": [OPENAI, 42]}, grpc.StatusCode.INVALID_ARGUMENT, "providers[1]"),
        ({"providers": [ws_pb.PROVIDER_MISTRAL]}, grpc.StatusCode.INVALID_ARGUMENT, "providers[0]"),
        ({"prompt_ids": ["nope"]}, grpc.StatusCode.INVALID_ARGUMENT, "prompt_ids[0]"),
        ({"prompt_ids": ["prm_a", "prm_\x00"]}, grpc.StatusCode.INVALID_ARGUMENT, "prompt_ids[1]"),
        ({"prompt_ids": ["prm_" + "a" * 100]}, grpc.StatusCode.INVALID_ARGUMENT, "prompt_ids[0]"),
        ({"prompt_ids": ["prm_unknown"]}, grpc.StatusCode.NOT_FOUND, ""),
        ({"prompt_ids": foreign}, grpc.StatusCode.NOT_FOUND, ""),
    ]
    for fields, code, field in cases:
        failure = await expect_error(code, start(collection, owner, workspace_id, **fields))
        if field:
            assert [v.field for v in failure.details["BadRequest"].field_violations] == [field]
    assert (
        "MISTRAL is not enabled"
        in (
            await expect_error(
                grpc.StatusCode.INVALID_ARGUMENT,
                start(collection, owner, workspace_id, providers=[ws_pb.PROVIDER_MISTRAL]),
            )
        ).message
    )
    assert await run_count(app, workspace_id) == 0


async def test_progress_comes_from_probes(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    run_id = await insert_run(app, workspace_id, providers=["openai", "anthropic"], prompt_count=2)
    for provider, status in [
        ("openai", "succeeded"),
        ("openai", "failed"),
        ("anthropic", "succeeded"),
        ("anthropic", "pending"),
    ]:
        await insert_probe(app, run_id, f"prm_{status}", provider, status=status)
    run = await get_run(collection, owner, run_id)
    assert run.status == pb.RUN_STATUS_RUNNING
    assert progress(run) == [(OPENAI, 2, 1, 1), (ANTHROPIC, 2, 1, 0)]


async def test_a_scheduled_run_before_expansion_plans_the_current_prompts(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    # The ticker writes runs without subsets or counts; the worker fills them in.
    await insert_prompts(app, workspace_id, ["a", "b"])
    run_id = await insert_run(app, workspace_id, providers=(), prompt_count=0, status="queued")
    run = await get_run(collection, owner, run_id)
    assert list(run.providers) == [OPENAI, ANTHROPIC, GOOGLE]
    assert run.prompt_count == 2
    assert progress(run) == [(OPENAI, 2, 0, 0), (ANTHROPIC, 2, 0, 0), (GOOGLE, 2, 0, 0)]


async def test_list_runs_newest_first_in_pages(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    base = utcnow() - timedelta(hours=1)
    ids = [
        await insert_run(app, workspace_id, create_time=base + timedelta(minutes=i))
        for i in range(5)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await collection.runs.ListRuns(
            pb.ListRunsRequest(workspace_id=workspace_id, page_size=2, page_token=token),
            metadata=owner.metadata,
        )
        seen.extend(run.id for run in page.runs)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    assert pages == 3


async def test_cancel_a_run_that_has_no_probes_yet(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    await insert_prompts(app, workspace_id, ["a"])
    run = (await start(collection, owner, workspace_id)).run
    canceled = await collection.runs.CancelRun(
        pb.CancelRunRequest(run_id=run.id), metadata=owner.metadata
    )
    assert canceled.status == pb.RUN_STATUS_CANCELED
    assert canceled.HasField("end_time")
    failure = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        collection.runs.CancelRun(pb.CancelRunRequest(run_id=run.id), metadata=owner.metadata),
    )
    assert failure.details["PreconditionFailure"].violations[0].type == "RUN_ENDED"
    assert await audited_actions(app, workspace_id) == [
        ("StartRun", [run.id]),
        ("CancelRun", [run.id]),
    ]
    async with app.db.transaction(write=False) as session:
        row = await session.get(Run, run.id)
        assert row is not None and row.cancel_requested


async def test_cancel_skips_pending_probes(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    run_id = await insert_run(app, workspace_id, prompt_count=3)
    for prompt, status in [("p1", "succeeded"), ("p2", "pending"), ("p3", "pending")]:
        await insert_probe(app, run_id, prompt, "openai", status=status)
    canceled = await collection.runs.CancelRun(
        pb.CancelRunRequest(run_id=run_id), metadata=owner.metadata
    )
    assert canceled.status == pb.RUN_STATUS_CANCELED
    assert progress(canceled) == [(OPENAI, 3, 1, 2)]
    async with app.db.transaction(write=False) as session:
        statuses = sorted(await session.scalars(select(Probe.status).where(Probe.run_id == run_id)))
    assert statuses == ["skipped", "skipped", "succeeded"]


async def test_cancel_completes_the_skipped_probes_and_counts_the_run_ended(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    # CancelRun and the workers end a run one way (service.domain.collection.run_lifecycle.cancel): skipped
    # probes get their complete time and reason, and the ended run is counted.
    run_id = await insert_run(app, workspace_id, prompt_count=2)
    await insert_probe(app, run_id, "p1", "openai", status="succeeded")
    await insert_probe(app, run_id, "p2", "openai", status="pending")
    ended = REGISTRY.get_sample_value("beacon_runs_ended_total", {"status": "canceled"}) or 0.0
    canceled = await collection.runs.CancelRun(
        pb.CancelRunRequest(run_id=run_id), metadata=owner.metadata
    )
    assert canceled.status == pb.RUN_STATUS_CANCELED
    assert REGISTRY.get_sample_value("beacon_runs_ended_total", {"status": "canceled"}) == (
        ended + 1
    )
    async with app.db.transaction(write=False) as session:
        run = await session.get(Run, run_id)
        skipped = (
            await session.scalars(
                select(Probe).where(Probe.run_id == run_id, Probe.status == "skipped")
            )
        ).one()
    assert run is not None and run.end_time is not None
    assert skipped.complete_time == run.end_time
    assert skipped.error == "the run was canceled"


async def test_cancel_leaves_a_finishing_run_to_its_worker(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    run_id = await insert_run(app, workspace_id, prompt_count=1)
    await insert_probe(app, run_id, "p1", "openai", status="succeeded")
    reply = await collection.runs.CancelRun(
        pb.CancelRunRequest(run_id=run_id), metadata=owner.metadata
    )
    # Every probe has finished: the worker ends the run with its real outcome.
    assert reply.status == pb.RUN_STATUS_RUNNING
    async with app.db.transaction(write=False) as session:
        row = await session.get(Run, run_id)
        assert row is not None and row.cancel_requested and row.end_time is None


async def test_strangers_see_no_runs(
    app: App, collection: SimpleNamespace, new_user: NewUser, owner: Caller, workspace_id: str
) -> None:
    stranger = await new_user()
    run_id = await insert_run(app, workspace_id)
    for call in (
        collection.runs.GetRun(pb.GetRunRequest(run_id=run_id), metadata=stranger.metadata),
        collection.runs.CancelRun(pb.CancelRunRequest(run_id=run_id), metadata=stranger.metadata),
        collection.runs.ListRuns(
            pb.ListRunsRequest(workspace_id=workspace_id), metadata=stranger.metadata
        ),
        start(collection, stranger, workspace_id),
        collection.runs.GetRun(pb.GetRunRequest(run_id="run_missing"), metadata=owner.metadata),
    ):
        await expect_error(grpc.StatusCode.NOT_FOUND, call)
    assert (await get_run(collection, owner, run_id)).status == pb.RUN_STATUS_RUNNING


async def next_message(call: Any) -> pb.Run | None:
    message = await asyncio.wait_for(call.read(), timeout=10)
    return None if message is grpc.aio.EOF else message


async def test_watch_run_streams_progress_until_the_run_ends(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    run_id = await insert_run(app, workspace_id, providers=["openai"], prompt_count=2)
    first = await insert_probe(app, run_id, "p1", "openai", status="pending")
    second = await insert_probe(app, run_id, "p2", "openai", status="pending")
    call = collection.runs.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=owner.metadata)

    initial = await next_message(call)
    assert initial is not None and progress(initial) == [(OPENAI, 2, 0, 0)]
    await finish_probe(app, first)
    update = await next_message(call)
    assert update is not None and progress(update) == [(OPENAI, 2, 1, 0)]
    await finish_probe(app, second, "failed", error="provider said no")
    await end_run(app, run_id, "partial")
    seen = [await next_message(call)]
    while seen[-1] is not None and seen[-1].status != pb.RUN_STATUS_PARTIAL:
        seen.append(await next_message(call))
    final = seen[-1]
    assert final is not None and progress(final) == [(OPENAI, 2, 1, 1)]
    assert final.HasField("end_time")
    assert await next_message(call) is None
    assert await call.code() == grpc.StatusCode.OK


async def test_watching_an_ended_run_sends_it_once(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    run_id = await insert_run(app, workspace_id, status="succeeded")
    await end_run(app, run_id, "succeeded")
    call = collection.runs.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=owner.metadata)
    messages = [message async for message in call]
    assert [m.status for m in messages] == [pb.RUN_STATUS_SUCCEEDED]


async def test_a_client_can_stop_watching(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    run_id = await insert_run(app, workspace_id)
    call = collection.runs.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=owner.metadata)
    assert await next_message(call) is not None
    call.cancel()
    assert await asyncio.wait_for(call.code(), timeout=5) == grpc.StatusCode.CANCELLED
    # The server is unharmed and the run untouched.
    assert (await get_run(collection, owner, run_id)).status == pb.RUN_STATUS_RUNNING


async def test_watching_a_stranger_s_run_is_not_found(
    app: App, collection: SimpleNamespace, new_user: NewUser, workspace_id: str
) -> None:
    stranger = await new_user()
    run_id = await insert_run(app, workspace_id)
    call = collection.runs.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=stranger.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await next_message(call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_watcher_removed_from_the_workspace_mid_stream_gets_not_found(
    app: App,
    collection: SimpleNamespace,
    stubs: SimpleNamespace,
    owner: Caller,
    new_user: NewUser,
    workspace_id: str,
) -> None:
    guest = await new_user()
    await add_workspace_member(app, workspace_id, guest.user_id, "member")
    run_id = await insert_run(app, workspace_id)
    request = pb.WatchRunRequest(run_id=run_id)
    watched = collection.runs.WatchRun(request, metadata=guest.metadata)
    kept = collection.runs.WatchRun(request, metadata=owner.metadata)
    assert await next_message(watched) is not None
    assert await next_message(kept) is not None

    await stubs.memberships.RemoveMember(
        member_pb.RemoveMemberRequest(workspace_id=workspace_id, user_id=guest.user_id),
        metadata=owner.metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while await next_message(watched) is not None:
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert run_id in (caught.value.details() or "")
    # The owner, who kept access, still follows the run to its end.
    await end_run(app, run_id, "succeeded")
    final = await next_message(kept)
    assert final is not None and final.status == pb.RUN_STATUS_SUCCEEDED
    assert await next_message(kept) is None
