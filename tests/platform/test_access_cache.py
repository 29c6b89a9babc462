"""The read path across replicas, as clients meet it.

The access cache (service.access_cache): reads are served from it; every change that alters
a decision or a view takes effect on the very next call to the server that made it, and is
published (`pg_notify` on `beacon_access`) for the other replicas, which apply it; an entry
expires after its TTL, never more than the documented 1 s, whatever it was configured to.
Hot read limits (service.rate_limits.BatchedCounters): counted in batches, still one budget
for both processes."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import pytest
import redis.asyncio as redis_async
from google.protobuf.field_mask_pb2 import FieldMask
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.access_cache import CHANNEL, EVERYTHING, TTL_SECONDS, AccessCache
from service.config import Settings
from service.domain.actor import Access
from tests.support import REDIS_URL, expect_error
from tests.support.app import NewUser, all_stubs, delete_redis_keys
from tests.support.builders import add_and_accept, create_workspace
from tests.support.processes import BeaconProcess, eventually, serve_env

if TYPE_CHECKING:
    from tests.support.app import TestUser

_METRICS_PORT = re.compile(r"metrics on port (\d+)")
MEMBER, OWNER = member_pb.WORKSPACE_ROLE_MEMBER, member_pb.WORKSPACE_ROLE_OWNER


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


def hits_here() -> float:
    """Access checks this process (the in-process test server) answered from its cache."""
    return REGISTRY.get_sample_value("beacon_access_cache_total", {"result": "hit"}) or 0.0


async def get_workspace(stubs: object, user: TestUser, workspace_id: str) -> ws_pb.Workspace:
    reply: ws_pb.Workspace = await stubs.workspaces.GetWorkspace(  # type: ignore[attr-defined]
        ws_pb.GetWorkspaceRequest(workspace_id=workspace_id), metadata=user.metadata
    )
    return reply


# Expiry, with a clock the test moves ------------------------------------------------------


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


KEY = ("ws", "user_cached", "ws_cached")
ACCESS = Access(organization_id="org_cached", workspace_id="ws_cached", workspace_role="owner")


def test_an_entry_is_served_until_its_ttl_and_gone_after() -> None:
    clock = Clock()
    cache = AccessCache(shared=False, ttl=0.5, clock=clock)
    cache.put(KEY, ACCESS, cache.generation)
    clock.now += 0.49
    assert cache.get(KEY) == ACCESS
    clock.now += 0.02
    assert cache.get(KEY) is None
    # Gone for good, not only hidden: moving the clock back does not bring it back.
    clock.now -= 0.2
    assert cache.get(KEY) is None


@pytest.mark.parametrize("configured", [TTL_SECONDS * 2, 3600.0])
def test_a_ttl_above_the_documented_bound_is_clamped_to_it(configured: float) -> None:
    clock = Clock()
    cache = AccessCache(shared=False, ttl=configured, clock=clock)
    assert cache.ttl == TTL_SECONDS == 1.0
    cache.put(KEY, ACCESS, cache.generation)
    clock.now += TTL_SECONDS - 0.01
    assert cache.get(KEY) == ACCESS
    clock.now += 0.02
    assert cache.get(KEY) is None


def test_a_server_gets_a_cache_within_the_bound_by_default() -> None:
    cache = AccessCache(shared=False)
    assert 0 < cache.ttl <= TTL_SECONDS <= 1.0
    assert cache.enabled


# Changes that take access away ------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A change (made by `apply`, as the owner or the member) that must take the member's
    access away; `attempt` is the member's call it must refuse, with `refused`; one of `tags`
    (or everything) must be invalidated."""

    role: member_pb.WorkspaceRole.ValueType  # the member's role before the change
    apply: Callable[[SimpleNamespace, str, TestUser, TestUser], Awaitable[Any]]
    refused: grpc.StatusCode
    tags: Callable[[str, TestUser], set[str]]
    attempt: Callable[[SimpleNamespace, str, TestUser], Awaitable[Any]] = lambda s, ws, user: (
        get_workspace(s, user, ws)
    )


async def remove(stubs: SimpleNamespace, ws: str, owner: TestUser, member: TestUser) -> Any:
    request = member_pb.RemoveMemberRequest(workspace_id=ws, user_id=member.user_id)
    return await stubs.memberships.RemoveMember(request, metadata=owner.metadata)


async def demote(stubs: SimpleNamespace, ws: str, owner: TestUser, member: TestUser) -> Any:
    request = member_pb.UpdateMemberRoleRequest(
        workspace_id=ws, user_id=member.user_id, role=MEMBER
    )
    return await stubs.memberships.UpdateMemberRole(request, metadata=owner.metadata)


async def delete_workspace(
    stubs: SimpleNamespace, ws: str, owner: TestUser, member: TestUser
) -> Any:
    request = ws_pb.DeleteWorkspaceRequest(workspace_id=ws)
    return await stubs.workspaces.DeleteWorkspace(request, metadata=owner.metadata)


async def delete_account(stubs: SimpleNamespace, ws: str, owner: TestUser, member: TestUser) -> Any:
    request = ws_pb.DeleteAccountRequest()
    return await stubs.workspaces.DeleteAccount(request, metadata=member.metadata)


async def rename(stubs: SimpleNamespace, ws: str, user: TestUser) -> Any:
    """An owner-only call."""
    request = ws_pb.UpdateWorkspaceRequest(
        workspace=ws_pb.Workspace(id=ws, name=f"Renamed {uuid.uuid4().hex[:6]}"),
        update_mask=FieldMask(paths=["name"]),
    )
    return await stubs.workspaces.UpdateWorkspace(request, metadata=user.metadata)


def workspace_tag(ws: str, member: TestUser) -> set[str]:
    return {f"ws:{ws}"}


def user_tag(ws: str, member: TestUser) -> set[str]:
    return {f"user:{member.user_id}"}


NOT_FOUND, PERMISSION_DENIED = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED
CHANGES = {
    "removal": Change(MEMBER, remove, NOT_FOUND, workspace_tag),
    "role_change": Change(OWNER, demote, PERMISSION_DENIED, workspace_tag, attempt=rename),
    "workspace_deletion": Change(MEMBER, delete_workspace, NOT_FOUND, workspace_tag),
    "account_deletion": Change(MEMBER, delete_account, NOT_FOUND, user_tag),
}


@pytest.mark.parametrize("kind", sorted(CHANGES))
async def test_a_change_takes_access_away_on_the_very_next_call_to_the_same_server(
    kind: str, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    """The member's access is cached (a repeated read is a hit), then taken away: the next
    call is refused at once, with no wait (the TTL would hide a missing invalidation only
    after up to 1 s)."""
    change = CHANGES[kind]
    owner, member = await new_user(), await new_user()
    workspace = await create_workspace(stubs, owner)
    await add_and_accept(stubs, workspace.id, owner, member, change.role)

    async def cached() -> bool:  # on PostgreSQL, once the server's listener is connected
        before = hits_here()
        await get_workspace(stubs, member, workspace.id)
        return hits_here() > before

    await eventually(cached, what="the member's access to be served from the cache", within=10)
    await change.apply(stubs, workspace.id, owner, member)
    await expect_error(change.refused, change.attempt(stubs, workspace.id, member))
    # The owner is still served (account deletion left the workspace to its owner).
    if kind != "workspace_deletion":
        assert (await get_workspace(stubs, owner, workspace.id)).id == workspace.id


# Across replicas (PostgreSQL) --------------------------------------------------------------


class Notifications:
    """The access cache's channel, heard as a replica hears it: every payload, in commit
    order. `sync` sends a marker of its own and returns once it came back, so every change
    committed before it has been heard (PostgreSQL delivers notifications in commit order)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.payloads: list[str] = []

    @classmethod
    async def listen(cls, database_url: str) -> Notifications:
        dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
        heard = cls(await asyncpg.connect(dsn))
        await heard.conn.add_listener(CHANNEL, heard._on_notify)
        return heard

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)

    async def sync(self) -> int:
        """How many payloads were heard up to (and with) a marker sent now."""
        marker = f"test-marker:{uuid.uuid4().hex}"
        await self.conn.execute("SELECT pg_notify($1, $2)", CHANNEL, marker)

        async def heard() -> int | None:
            return self.payloads.index(marker) + 1 if marker in self.payloads else None

        return await eventually(heard, what="the test's own marker", within=10)

    def tags_since(self, start: int, end: int) -> set[str]:
        return {tag for payload in self.payloads[start:end] for tag in payload.split(",")}

    async def close(self) -> None:
        await self.conn.close()


@pytest.mark.postgres_only
async def test_two_replicas_serve_reads_from_cache_and_apply_each_others_invalidations(
    settings: Settings, new_user: NewUser, tmp_path: Path
) -> None:
    """Every kind of change made on A publishes an invalidation naming what it changed (or
    everything); B hears it and refuses the member on its next call after hearing it. Nothing
    waits for the TTL: the test follows the notifications themselves."""
    env = serve_env(settings, BEACON_METRICS_ADDR="127.0.0.1:0", BEACON_LOG_LEVEL="INFO")
    servers = [await BeaconProcess.start(tmp_path, env)]
    heard: Notifications | None = None
    channels = [grpc.aio.insecure_channel(servers[0].target)]
    try:
        a = all_stubs(channels[0])
        owner = await new_user()
        workspace = await create_workspace(a, owner)
        # B starts after every write so far: it hears only what comes next.
        servers.append(await BeaconProcess.start(tmp_path, env))
        channels.append(grpc.aio.insecure_channel(servers[1].target))
        b = all_stubs(channels[1])

        def b_metric(name: str, label: str) -> float:
            return metric(servers[1], f"beacon_access_{name}_total", label)

        async def b_serves_from_cache() -> bool:  # its listener is connected
            hits = b_metric("cache", 'result="hit"')
            assert (await get_workspace(b, owner, workspace.id)).id == workspace.id
            return b_metric("cache", 'result="hit"') > hits

        await eventually(b_serves_from_cache, what="B to serve from its cache", within=10)
        heard = await Notifications.listen(settings.database_url)

        async def b_heard(count: int) -> None:
            """Waits until B has applied the first `count` notifications the test heard."""

            async def caught_up() -> bool:
                return b_metric("invalidations", "notify") >= count

            await eventually(caught_up, what=f"B to hear {count} notifications", within=10)

        # From here on B and the test hear the same notifications, in the same order.
        await b_heard(await heard.sync())
        assert b_metric("invalidations", "notify") == len(heard.payloads) == 1

        # A rename on A reaches B as a notification, and B then shows the new name.
        hits = b_metric("cache", 'result="hit"')
        for _ in range(5):
            assert (await get_workspace(b, owner, workspace.id)).id == workspace.id
        assert b_metric("cache", 'result="hit"') >= hits + 4
        start = len(heard.payloads)
        await rename(a, workspace.id, owner)
        await b_heard(end := await heard.sync())
        assert heard.tags_since(start, end) & {f"ws:{workspace.id}", EVERYTHING}
        renamed = await get_workspace(b, owner, workspace.id)
        assert renamed.name.startswith("Renamed "), renamed.name

        for kind, change in sorted(CHANGES.items()):
            member = await new_user()
            workspace = await create_workspace(a, owner)
            await add_and_accept(a, workspace.id, owner, member, change.role)
            start = await heard.sync()
            await b_heard(start)
            for stubs in (a, b):  # cached on both
                for _ in range(2):
                    await get_workspace(stubs, member, workspace.id)
            await change.apply(a, workspace.id, owner, member)
            await b_heard(end := await heard.sync())
            published = heard.tags_since(start, end)
            expected = change.tags(workspace.id, member)
            assert published & (expected | {EVERYTHING}), (
                f"{kind} published no invalidation of {expected}: {sorted(published)}"
            )
            for stubs in (a, b):
                await expect_error(change.refused, change.attempt(stubs, workspace.id, member))
    finally:
        for channel in channels:
            await channel.close()
        if heard is not None:
            await heard.close()
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
