"""Open streams cannot starve anyone: they have their own budget, apart from unary calls,
caps per user and per workspace, a bounded lifetime, and they end once their credentials do.

A server on the shared database with small budgets: 3 unary calls in flight, 3 streams per
user, 4 per workspace, and credentials re-checked every 0.2 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.auth.tokens import mint_dev_token
from service.clock import new_id, utcnow
from service.db.models import Run
from service.server import start_server
from tests.support import RpcFailure, failure, unique
from tests.support.app import NewUser, all_stubs
from tests.support.builders import seed_workspace

if TYPE_CHECKING:
    from tests.support.app import TestUser

UNARY_BUDGET = 3
PER_USER = 3
PER_WORKSPACE = 4
LIMITS = {
    "max_concurrent_rpcs": UNARY_BUDGET,
    "max_streams_per_user": PER_USER,
    "max_streams_per_workspace": PER_WORKSPACE,
    "watch_access_check_seconds": 0.2,
    "auth_leeway_seconds": 0,
}
# Generous: each is the bound of an event expected within a second or so.
WAIT_SECONDS = 20.0


async def serve(app: App, **over: Any) -> AsyncIterator[SimpleNamespace]:
    settings = app.settings.model_copy(update={**LIMITS, **over})
    server = await start_server(App(settings=settings, db=app.db), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield all_stubs(channel)
    finally:
        await server.stop(grace=1.0)


@pytest.fixture(scope="module")
async def limited(app: App) -> AsyncIterator[SimpleNamespace]:
    async for stubs in serve(app):
        yield stubs


@pytest.fixture(scope="module")
async def short_lived(app: App) -> AsyncIterator[SimpleNamespace]:
    async for stubs in serve(app, max_stream_seconds=1.0):
        yield stubs


async def open_run(app: App, workspace_id: str) -> str:
    """A running run (no worker will end it), so that its watchers stay connected."""
    run_id = new_id("run")
    async with app.db.transaction() as session:
        session.add(
            Run(
                id=run_id,
                workspace_id=workspace_id,
                trigger="manual",
                status="running",
                create_time=utcnow(),
            )
        )
    return run_id


def watch(stubs: SimpleNamespace, run_id: str, metadata: Any) -> Any:
    return stubs.runs.WatchRun(run_pb.WatchRunRequest(run_id=run_id), metadata=metadata)


async def first_message(call: Any) -> run_pb.Run:
    message = await asyncio.wait_for(call.read(), timeout=WAIT_SECONDS)
    assert message is not grpc.aio.EOF
    assert isinstance(message, run_pb.Run)
    return message


async def refused(call: Any) -> RpcFailure:
    """The failure a stream ends with, however many messages it sent before."""
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while await call.read() is not grpc.aio.EOF:
                pass
    except grpc.aio.AioRpcError as error:
        return failure(error)
    raise AssertionError("the stream ended OK")


async def held_streams(
    stubs: SimpleNamespace, run_id: str, user: TestUser, count: int
) -> list[Any]:
    calls = [watch(stubs, run_id, user.metadata) for _ in range(count)]
    for call in calls:
        assert (await first_message(call)).id == run_id
    return calls


async def test_a_user_holding_their_most_streams_leaves_other_users_calls_untouched(
    app: App, limited: SimpleNamespace, new_user: NewUser
) -> None:
    holder, bystander = await new_user(), await new_user()
    run_id = await open_run(app, await seed_workspace(app, holder.user_id))
    own_workspace = await seed_workspace(app, bystander.user_id)
    held = await held_streams(limited, run_id, holder, PER_USER)

    # The bystander has the whole unary budget: bursts of as many calls as it allows.
    get = ws_pb.GetWorkspaceRequest(workspace_id=own_workspace)
    for _ in range(5):
        answers = await asyncio.gather(
            *(
                limited.workspaces.GetWorkspace(get, metadata=bystander.metadata)
                for _ in range(UNARY_BUDGET)
            )
        )
        assert {a.id for a in answers} == {own_workspace}

    # One more stream of the holder's is refused, with the quota it hit.
    got = await refused(watch(limited, run_id, holder.metadata))
    assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.details["ErrorInfo"].reason == "TOO_MANY_STREAMS"
    assert got.details["ErrorInfo"].domain == "beacon"
    [violation] = got.details["QuotaFailure"].violations
    assert violation.subject == f"user:{holder.user_id}"
    assert "BEACON_MAX_STREAMS_PER_USER" in violation.description
    assert "RetryInfo" in got.details

    # Closing one frees its slot.
    held[0].cancel()
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            again = watch(limited, run_id, holder.metadata)
            try:
                assert (await first_message(again)).id == run_id
                break
            except grpc.aio.AioRpcError as error:
                assert failure(error).details["ErrorInfo"].reason == "TOO_MANY_STREAMS"
                await asyncio.sleep(0.05)
    for call in [*held[1:], again]:
        call.cancel()


async def test_a_workspace_holds_at_most_its_streams_whoever_opens_them(
    app: App, limited: SimpleNamespace, new_user: NewUser
) -> None:
    owner, member = await new_user(), await new_user()
    workspace_id = await seed_workspace(app, owner.user_id, member.user_id)
    run_id = await open_run(app, workspace_id)
    held = await held_streams(limited, run_id, owner, PER_USER)
    held += await held_streams(limited, run_id, member, PER_WORKSPACE - PER_USER)

    got = await refused(watch(limited, run_id, member.metadata))
    assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.details["ErrorInfo"].reason == "TOO_MANY_STREAMS"
    [violation] = got.details["QuotaFailure"].violations
    assert violation.subject == f"workspace:{workspace_id}"
    assert "BEACON_MAX_STREAMS_PER_WORKSPACE" in violation.description

    # The member, under their own cap, still watches another workspace's run.
    elsewhere = await open_run(app, await seed_workspace(app, member.user_id))
    held += await held_streams(limited, elsewhere, member, 1)
    for call in held:
        call.cancel()


async def test_a_stream_ends_unauthenticated_when_its_token_expires(
    app: App, limited: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    run_id = await open_run(app, await seed_workspace(app, user.user_id))
    token = mint_dev_token(app.settings, email=user.email, ttl_seconds=2)
    call = watch(limited, run_id, (("authorization", f"Bearer {token}"),))
    assert (await first_message(call)).id == run_id

    got = await refused(call)
    assert got.code == grpc.StatusCode.UNAUTHENTICATED
    assert got.details["ErrorInfo"].reason == "TOKEN_EXPIRED"


async def test_a_stream_ends_unauthenticated_when_its_service_key_is_revoked(
    app: App, limited: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    workspace_id = await seed_workspace(app, user.user_id)
    run_id = await open_run(app, workspace_id)
    secret, key = await app.services.service_keys.create(
        unique("watcher-"), ["act_as"], all_organizations=True
    )
    metadata = (("authorization", f"Bearer {secret}"), ("x-beacon-act-as", user.user_id))
    call = watch(limited, run_id, metadata)
    assert (await first_message(call)).id == run_id

    await app.services.service_keys.revoke(key.id)
    got = await refused(call)
    assert got.code == grpc.StatusCode.UNAUTHENTICATED
    assert got.details["ErrorInfo"].reason == "BAD_SERVICE_KEY"


async def test_a_stream_ends_at_its_lifetime_and_frees_its_slot(
    app: App, short_lived: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    run_id = await open_run(app, await seed_workspace(app, user.user_id))
    held = await held_streams(short_lived, run_id, user, PER_USER)

    for call in held:
        got = await refused(call)
        assert got.code == grpc.StatusCode.UNAVAILABLE
        assert got.details["ErrorInfo"].reason == "STREAM_LIFETIME_ENDED"
        assert "BEACON_MAX_STREAM_SECONDS" in got.message
    # Every slot came back: the user opens as many again.
    for call in await held_streams(short_lived, run_id, user, PER_USER):
        call.cancel()
