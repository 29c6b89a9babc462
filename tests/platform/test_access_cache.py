"""The read path across replicas, as clients meet it.

The access cache (service.access_cache): reads are served from it, and every change that alters
a decision or a view reaches every replica within the documented bound (1 s): a removed member
loses access on both of two `beacon serve` processes, a renamed workspace shows its new name on
both. Hot read limits (service.rate_limits.BatchedCounters): counted in batches, still one
budget for both processes."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
import redis.asyncio as redis_async
from google.protobuf.field_mask_pb2 import FieldMask

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.config import Settings
from tests.conftest import NewUser, all_stubs, delete_redis_keys
from tests.platform.processes import BeaconProcess, eventually, serve_env
from tests.support import REDIS_URL, expect_error
from tests.tenancy.membership_support import add_and_accept, create_workspace

STALENESS_BOUND = 1.0  # seconds: service.access_cache.TTL_SECONDS, the documented worst case
if TYPE_CHECKING:
    from tests.conftest import TestUser

_METRICS_PORT = re.compile(r"metrics on port (\d+)")


def metric(server: BeaconProcess, name: str, label: str) -> float:
    """The value of `name{...label...}` on the server's /metrics (0 when absent)."""
    match = _METRICS_PORT.search(server.log())
    assert match, server.log()
    url = f"http://127.0.0.1:{match.group(1)}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def get_workspace(stubs: object, user: TestUser, workspace_id: str) -> ws_pb.Workspace:
    reply: ws_pb.Workspace = await stubs.workspaces.GetWorkspace(  # type: ignore[attr-defined]
        ws_pb.GetWorkspaceRequest(workspace_id=workspace_id), metadata=user.metadata
    )
    return reply


@pytest.mark.postgres_only
async def test_two_replicas_serve_reads_from_cache_and_see_changes_within_one_second(
    settings: Settings, new_user: NewUser, tmp_path: Path
) -> None:
    env = serve_env(settings, BEACON_METRICS_ADDR="127.0.0.1:0", BEACON_LOG_LEVEL="INFO")
    servers = [await BeaconProcess.start(tmp_path, env)]
    try:
        servers.append(await BeaconProcess.start(tmp_path, env))
        channels = [grpc.aio.insecure_channel(s.target) for s in servers]
        try:
            a, b = (all_stubs(c) for c in channels)
            owner, member = await new_user(), await new_user()
            workspace = await create_workspace(a, owner)
            await add_and_accept(a, workspace.id, owner, member)

            # Repeated reads on B are answered from its cache.
            hits = metric(servers[1], "beacon_access_cache_total", 'result="hit"')
            for _ in range(5):
                assert (await get_workspace(b, member, workspace.id)).id == workspace.id
            assert metric(servers[1], "beacon_access_cache_total", 'result="hit"') >= hits + 4

            # A rename on A shows on B within the bound, carried by a notification.
            notified = metric(servers[1], "beacon_access_invalidations_total", "notify")
            await a.workspaces.UpdateWorkspace(
                ws_pb.UpdateWorkspaceRequest(
                    workspace=ws_pb.Workspace(id=workspace.id, name="Renamed Elsewhere"),
                    update_mask=FieldMask(paths=["name"]),
                ),
                metadata=owner.metadata,
            )
            renamed = time.monotonic()

            async def shows_new_name() -> bool:
                view = await get_workspace(b, member, workspace.id)
                return view.name == "Renamed Elsewhere"

            await eventually(shows_new_name, what="B to show the new name", within=5)
            assert time.monotonic() - renamed <= STALENESS_BOUND
            assert metric(servers[1], "beacon_access_invalidations_total", "notify") > notified

            # The member, removed on A, loses access on both replicas within the bound.
            for stubs in (a, b):
                await get_workspace(stubs, member, workspace.id)
            await a.memberships.RemoveMember(
                member_pb.RemoveMemberRequest(workspace_id=workspace.id, user_id=member.user_id),
                metadata=owner.metadata,
            )
            removed = time.monotonic()
            for stubs in (a, b):

                async def refused(stubs: object = stubs) -> bool:
                    try:
                        await get_workspace(stubs, member, workspace.id)
                    except grpc.aio.AioRpcError as error:
                        assert error.code() == grpc.StatusCode.NOT_FOUND
                        return True
                    return False

                await eventually(refused, what="the removed member to be refused", within=5)
                assert time.monotonic() - removed <= STALENESS_BOUND
            # The owner still reads it on both.
            for stubs in (a, b):
                assert (await get_workspace(stubs, owner, workspace.id)).id == workspace.id
        finally:
            for channel in channels:
                await channel.close()
    finally:
        for server in servers:
            await server.stop()


@pytest.mark.postgres_only
async def test_hot_read_limits_are_batched_yet_shared_by_two_replicas(
    settings: Settings, new_user: NewUser, tmp_path: Path
) -> None:
    # GetWorkspace declares 1200 per 60 s per user: a hot rule, here scaled to 6.
    prefix = f"beacon-test-batched-{uuid.uuid4().hex[:8]}"
    env = serve_env(settings, BEACON_RATE_LIMIT_KEY_PREFIX=prefix, BEACON_RATE_LIMIT_SCALE="0.005")
    servers = [await BeaconProcess.start(tmp_path, env)]
    client = redis_async.from_url(REDIS_URL)
    try:
        servers.append(await BeaconProcess.start(tmp_path, env))
        channels = [grpc.aio.insecure_channel(s.target) for s in servers]
        try:
            a, b = (all_stubs(c) for c in channels)
            owner = await new_user()
            workspace = await create_workspace(a, owner)
            for _ in range(6):  # exact within one process
                await get_workspace(a, owner, workspace.id)
            await expect_error(
                grpc.StatusCode.RESOURCE_EXHAUSTED, get_workspace(a, owner, workspace.id)
            )

            async def flushed() -> bool:
                keys = [k async for k in client.scan_iter(match=f"{prefix}:batched:*GetWorkspace*")]
                counts = [int(await client.get(k) or 0) for k in keys]
                return counts == [6]

            # A's counts reach the shared counter in a batch, not one round trip per call...
            await eventually(flushed, what="A's calls to be counted in Redis", within=5)
            # ...and the other replica refuses the user's very first call.
            await expect_error(
                grpc.StatusCode.RESOURCE_EXHAUSTED, get_workspace(b, owner, workspace.id)
            )
        finally:
            for channel in channels:
                await channel.close()
    finally:
        for server in servers:
            await server.stop()
        await client.aclose()
        await delete_redis_keys(prefix)
