"""Rate limits as a client meets them: exact counts per window and per user, limits that apply
only to some requests, one budget across server processes, and Redis outages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import redis.asyncio as redis_async

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import membership_service_pb2_grpc, organization_service_pb2_grpc
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.config import Settings
from service.server import start_server
from tests.support import RpcFailure, unique
from tests.support.app import NewUser, all_stubs, delete_redis_keys, make_settings
from tests.support.assertions import expect_refusal, passes_auth
from tests.support.builders import seed_organization, seed_workspace
from tests.support.probes import ProbeState, start_probe_server
from tests.support.processes import BeaconProcess, RedisProcess, eventually, serve_env

if TYPE_CHECKING:
    from tests.support.app import TestUser

JOIN = member_pb.JoinWorkspaceByCodeRequest(code="NOPE-NOPE-NOPE")
JOIN_QUOTA = "5 per 900s per user"


def join(stub: Any, user: TestUser) -> Any:
    return stub.JoinWorkspaceByCode(JOIN, metadata=user.metadata)


async def expect_rate_limited(call: Any, quota: str, subject: str, period: int) -> RpcFailure:
    got = await expect_refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", call)
    delay = got.details["RetryInfo"].retry_delay.seconds
    assert 0 < delay <= period
    [violation] = got.details["QuotaFailure"].violations
    assert (violation.subject, violation.description) == (subject, quota)
    assert got.trailers["retry-after"] == str(delay)
    return got


async def test_join_by_code_allows_exactly_five_calls_per_window_per_user(
    stubs: SimpleNamespace, new_user: NewUser
) -> None:
    user, other = await new_user(), await new_user()
    for _ in range(5):
        await passes_auth(join(stubs.memberships, user))
    for _ in range(2):
        await expect_rate_limited(
            join(stubs.memberships, user), JOIN_QUOTA, f"user:{user.user_id}", 900
        )
    # Another user's budget is untouched.
    for _ in range(5):
        await passes_auth(join(stubs.memberships, other))


async def test_create_workspace_limit_counts_only_creates_that_make_an_organization(
    stubs: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()

    def create(organization_name: str = "") -> Any:
        request = ws_pb.CreateWorkspaceRequest(
            name="Rate Limited", domain="example.com", organization_name=organization_name
        )
        return stubs.workspaces.CreateWorkspace(request, metadata=user.metadata)

    for _ in range(4):
        await passes_auth(create())
    for i in range(3):
        await passes_auth(create(organization_name=f"Limited Org {i}"))
    await expect_rate_limited(
        create(organization_name="One Too Many"),
        "3 per 3600s per user",
        f"user:{user.user_id}",
        3600,
    )
    await passes_auth(create())


async def test_start_run_budget_is_shared_by_the_members_of_a_workspace(
    stubs: SimpleNamespace, new_user: NewUser, app: App
) -> None:
    owner, member = await new_user(), await new_user()
    workspace_id = await seed_workspace(app, owner.user_id, member.user_id)
    elsewhere = await seed_workspace(app, owner.user_id)

    def start(user: TestUser, workspace: str = workspace_id) -> Any:
        request = run_pb.StartRunRequest(workspace_id=workspace)
        return stubs.runs.StartRun(request, metadata=user.metadata)

    for user in (owner, member, owner):
        await passes_auth(start(user))
    await expect_rate_limited(
        start(member), "3 per 60s per workspace", f"workspace:{workspace_id}", 60
    )
    await passes_auth(start(owner, elsewhere))


@pytest.mark.postgres_only
async def test_two_server_processes_share_one_budget(
    backend: str, settings: Settings, new_user: NewUser, tmp_path: Path
) -> None:
    prefix = f"beacon-test-multi-{uuid.uuid4().hex[:8]}"
    env = serve_env(settings, BEACON_RATE_LIMIT_KEY_PREFIX=prefix)
    servers = [await BeaconProcess.start(tmp_path, env)]
    try:
        servers.append(await BeaconProcess.start(tmp_path, env))
        user = await new_user()
        channels = [grpc.aio.insecure_channel(s.target) for s in servers]
        stubs = [membership_service_pb2_grpc.MembershipServiceStub(c) for c in channels]
        try:
            for i in range(5):
                await passes_auth(join(stubs[i % 2], user))
            for stub in stubs:
                await expect_rate_limited(join(stub, user), JOIN_QUOTA, f"user:{user.user_id}", 900)
        finally:
            for channel in channels:
                await channel.close()
    finally:
        for server in servers:
            await server.stop()
        await delete_redis_keys(prefix)


@pytest.fixture
async def private_redis() -> AsyncIterator[RedisProcess]:
    redis = await RedisProcess.start()
    yield redis
    await redis.kill()


async def test_redis_outage_fails_closed_or_open_as_each_rule_declares(
    app: App, backend: str, new_user: NewUser, private_redis: RedisProcess, tmp_path: Path
) -> None:
    prefix = f"beacon-test-outage-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        backend, app.settings.database_url, tmp_path, prefix, redis_url=private_redis.url
    )
    server = await start_probe_server(App(settings=settings, db=app.db), ProbeState())
    user = await new_user()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            memberships = membership_service_pb2_grpc.MembershipServiceStub(channel)
            organizations = organization_service_pb2_grpc.OrganizationServiceStub(channel)
            await join(memberships, user)
            client = redis_async.from_url(private_redis.url)
            try:
                assert [k async for k in client.scan_iter(match=f"{prefix}*")], "counted in Redis"
            finally:
                await client.aclose()

            await private_redis.kill()
            await expect_refusal(
                grpc.StatusCode.UNAVAILABLE, "RATE_LIMITER_UNAVAILABLE", join(memberships, user)
            )
            await organizations.ListMyOrganizations(
                org_pb.ListMyOrganizationsRequest(), metadata=user.metadata
            )

            # When Redis is back, the closed rule opens again without a restart.
            restarted = await RedisProcess.start(private_redis.port)
            try:

                async def joins() -> bool:
                    try:
                        await join(memberships, user)
                    except grpc.aio.AioRpcError as error:
                        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                        return False
                    return True

                await eventually(joins, what="JoinWorkspaceByCode once Redis is back")
            finally:
                await restarted.kill()
    finally:
        await server.stop(grace=1.0)


def fail_closed_calls(stubs: SimpleNamespace, workspace_id: str, organization_id: str) -> Any:
    """(name, call factory) of every RPC whose limits protect money or other tenants."""
    email = unique("invitee-") + "@example.com"
    return [
        (
            "StartRun",
            lambda md: stubs.runs.StartRun(
                run_pb.StartRunRequest(workspace_id=workspace_id), metadata=md
            ),
        ),
        (
            "SetSchedule",
            lambda md: stubs.schedules.SetSchedule(
                schedule_pb.SetScheduleRequest(workspace_id=workspace_id, cron="0 6 * * *"),
                metadata=md,
            ),
        ),
        (
            "StorePrompts",
            lambda md: stubs.prompts.StorePrompts(
                prompt_pb.StorePromptsRequest(workspace_id=workspace_id, prompts=["a"]), metadata=md
            ),
        ),
        (
            "AddPrompts",
            lambda md: stubs.prompts.AddPrompts(
                prompt_pb.AddPromptsRequest(workspace_id=workspace_id, prompts=["a"]), metadata=md
            ),
        ),
        (
            "CreateWorkspace",
            lambda md: stubs.workspaces.CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(name="W", domain="example.com"), metadata=md
            ),
        ),
        (
            "CreateWorkspace in a new organization",
            lambda md: stubs.workspaces.CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(name="W", domain="example.com", organization_name="O"),
                metadata=md,
            ),
        ),
        (
            "CreateOrganization",
            lambda md: stubs.organizations.CreateOrganization(
                org_pb.CreateOrganizationRequest(name="O"), metadata=md
            ),
        ),
        (
            "AddMember",
            lambda md: stubs.memberships.AddMember(
                member_pb.AddMemberRequest(workspace_id=workspace_id, email=email), metadata=md
            ),
        ),
        (
            "InviteOrganizationMember",
            lambda md: stubs.memberships.InviteOrganizationMember(
                member_pb.InviteOrganizationMemberRequest(
                    organization_id=organization_id, email=email
                ),
                metadata=md,
            ),
        ),
        (
            "JoinWorkspaceByCode",
            lambda md: stubs.memberships.JoinWorkspaceByCode(JOIN, metadata=md),
        ),
        (
            "DeleteAccount",
            lambda md: stubs.workspaces.DeleteAccount(ws_pb.DeleteAccountRequest(), metadata=md),
        ),
    ]


async def test_while_redis_is_down_money_and_tenant_limits_fail_closed_and_others_count_in_memory(
    app: App, backend: str, new_user: NewUser, private_redis: RedisProcess, tmp_path: Path
) -> None:
    prefix = f"beacon-test-closed-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        backend,
        app.settings.database_url,
        tmp_path,
        prefix,
        redis_url=private_redis.url,
        rate_limit_scale=0.01,  # ListMyOrganizations: 6 a minute
        peer_rate_limit_per_minute=100_000,
    )
    server = await start_server(App(settings=settings, db=app.db), "127.0.0.1:0")
    owner = await new_user()
    workspace_id = await seed_workspace(app, owner.user_id)
    organization_id = await seed_organization(app, owner.user_id)
    listing = org_pb.ListMyOrganizationsRequest()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stubs = all_stubs(channel)
            await private_redis.shutdown()

            for name, call in fail_closed_calls(stubs, workspace_id, organization_id):
                got = await expect_refusal(
                    grpc.StatusCode.UNAVAILABLE, "RATE_LIMITER_UNAVAILABLE", call(owner.metadata)
                )
                delay = got.details["RetryInfo"].retry_delay.seconds
                assert delay > 0, name
                assert got.trailers["retry-after"] == str(delay), name

            # A rule that does not fail closed is still a limit: counted in this process.
            for _ in range(6):
                await stubs.organizations.ListMyOrganizations(listing, metadata=owner.metadata)
            await expect_rate_limited(
                stubs.organizations.ListMyOrganizations(listing, metadata=owner.metadata),
                "6 per 60s per user",
                f"user:{owner.user_id}",
                60,
            )
    finally:
        await server.stop(grace=1.0)
