"""Every successful mutation leaves exactly one audit event; a read leaves none.

The RPCs come from the descriptors and their requests from the access matrix's TABLE, so a
new RPC is covered as soon as it exists. What a call wrote is measured (row counts of every
table and every row of the tenant, before and after), not assumed: a call that wrote anything
must have left one event naming its actor, its action (the RPC), the ids it changed and the
call's request id; one that wrote nothing must have left none. An RPC that is not named like
a read (Get/List/Watch/Resolve) must write when its table entry succeeds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import select

from service.db.models import AuditEvent, Organization
from service.rpc_options import method_rules
from tests.support.security import world as w
from tests.support.security.access_matrix import TABLE
from tests.support.security.calls import Metadata, bearer, invoke, is_read, methods_by_path
from tests.support.security.servers import PrivateServer, private_server
from tests.support.security.snapshots import snapshot
from tests.support.security.world import World, build_world

# Who calls each RPC: someone it succeeds for (the organization's co-owner unless named).
CALLER: dict[str, str] = {
    # Access through the organization leaves no explicit membership to leave.
    "/beacon.v1.MembershipService/LeaveWorkspace": w.WORKSPACE_MEMBER,
    # The co-owner already sees the workspace: joining would change nothing.
    "/beacon.v1.MembershipService/JoinWorkspaceByCode": w.OTHER_TENANT,
}
# Calls made first, so that the RPC has something to change.
BEFORE: dict[str, str] = {
    "/beacon.v1.OrganizationService/UnlinkWorkosOrganization": (
        "/beacon.v1.OrganizationService/LinkWorkosOrganization"
    ),
}
# Writes outside any organization's audit log, and the only tables they may write.
UNAUDITED: dict[str, set[str]] = {
    # A pending upload belongs to its uploader, not to an organization (SPEC: uploads).
    "/beacon.v1.WorkspaceService/GenerateWorkspaceIconUploadUrl": {"files"},
}
# Rows that record a call rather than make its change.
BOOKKEEPING = {"audit_events", "idempotency_keys"}
PATHS = sorted(methods_by_path())


@dataclass(frozen=True)
class Case:
    path: str
    variant: str = ""
    service_key: bool = False

    @property
    def id(self) -> str:
        name = self.path.rsplit("/", 1)[1]
        return "-".join(filter(None, (name, self.variant, "service_key" * self.service_key)))


CASES = [
    *(Case(path) for path in PATHS),
    # RPCs a scoped service key may call without acting as a user: the key is the actor.
    *(Case(path, service_key=True) for path in PATHS if method_rules()[path].service_scope),
]


@pytest.fixture(scope="module")
async def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PrivateServer]:
    tmp = tmp_path_factory.mktemp(f"audit-{backend}")
    # Providers with keys, so that StartRun makes a run rather than answering NO_PROVIDERS.
    keys = {"openai_api_key": "test-key", "anthropic_api_key": "test-key"}
    async with private_server(backend, tmp, "audit", **keys) as started:
        yield started


async def audit_events(server: PrivateServer, request_id: str) -> list[AuditEvent]:
    async with server.app.db.transaction(write=False) as session:
        found = await session.scalars(
            select(AuditEvent).where(AuditEvent.correlation_id == request_id)
        )
        return list(found)


async def organization_ids(server: PrivateServer) -> set[str]:
    async with server.app.db.transaction(write=False) as session:
        return set(await session.scalars(select(Organization.id)))


async def prepare(server: PrivateServer, case: Case) -> tuple[World, Metadata, str]:
    """The world, the caller's metadata and the actor id its audit events must name."""
    app = server.app
    kind = CALLER.get(case.path, w.ORG_OWNER)
    world = await build_world(app, app.settings, server.memberships, kind, {})
    if case.path in BEFORE:
        first = BEFORE[case.path]
        outcome = await invoke(
            server.channel, methods_by_path()[first], TABLE[first].request(world), world.metadata
        )
        assert outcome.code == grpc.StatusCode.OK, f"{first}: {outcome.describe()}"
    if case.service_key:
        scope = method_rules()[case.path].service_scope
        secret, info = await app.services.service_keys.create(
            "audit", [scope], all_organizations=True
        )
        return world, bearer(secret), info.id
    assert world.caller is not None
    return world, world.metadata, world.caller.user_id


def test_every_rpc_has_a_request() -> None:
    missing = [p for p in PATHS if p not in TABLE]
    assert not missing, f"add an Entry to tests.support.security.access_matrix.TABLE: {missing}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_a_successful_mutation_leaves_one_audit_event(
    case: Case, server: PrivateServer
) -> None:
    world, metadata, actor = await prepare(server, case)
    request_id = f"req-{uuid.uuid4().hex}"
    organizations = await organization_ids(server)
    before = await snapshot(server.app, world, counts=True)

    outcome = await invoke(
        server.channel,
        methods_by_path()[case.path],
        TABLE[case.path].request(world),
        (*metadata, ("x-request-id", request_id)),
    )

    assert outcome.code == grpc.StatusCode.OK, (
        f"{case.id} must succeed to be checked ({outcome.describe()}): name a caller it "
        "succeeds for in CALLER"
    )
    after = await snapshot(server.app, world, counts=True)
    wrote = [t for t in before.changes(after) if t not in BOOKKEEPING]
    events = await audit_events(server, request_id)
    if case.path in UNAUDITED:
        assert set(wrote) <= UNAUDITED[case.path] and events == [], (wrote, events)
        return
    if not wrote:
        assert is_read(case.path), (
            f"{case.id} wrote nothing: make its TABLE entry a request that mutates"
        )
        assert events == [], f"the read {case.id} left audit events"
        return
    assert len(events) == 1, f"{case.id} wrote {wrote} and left {len(events)} audit events"
    [event] = events
    assert event.actor_id == actor
    # The server's own request id identifies the event; the client's is the correlation id.
    assert event.request_id.startswith("req_") and event.request_id != request_id
    assert event.action == case.path.lstrip("/")
    assert event.target_ids, f"{case.id}: the audit event names no target"
    created = await organization_ids(server) - organizations
    expected = {world.organization_id} | created
    assert event.organization_id in expected, (event.organization_id, expected)
