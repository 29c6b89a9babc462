"""Every RPC by every kind of caller, with the status each must get.

The expected code of a cell follows from the RPC's `(beacon.v1.auth)` option and the caller's
relation to the target: UNAUTHENTICATED without valid credentials; NOT_FOUND when the caller
cannot see the target; PERMISSION_DENIED when they see it without the role (or are a service
key the RPC does not admit); otherwise the call passes auth and succeeds — or meets the one
domain rule its table entry names. Each cell runs against a fresh tenant (`World`), and a
call that fails leaves that tenant's rows exactly as they were.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeAlias

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from beacon.v1 import insights_service_pb2 as insights_pb
from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import options_pb2
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.auth import service_keys
from service.clock import new_id
from service.config import Settings
from service.domain.collection import suggestions
from service.rpc_options import MethodRules, method_rules
from tests.security import world as w
from tests.security.calls import Outcome, invoke, methods_by_path
from tests.security.snapshots import ORGANIZATION_TABLES, TABLES, WORKSPACE_TABLES, snapshot
from tests.security.world import World, build_world

Code: TypeAlias = grpc.StatusCode
OK: Code = Code.OK
UNAUTHENTICATED: Code = Code.UNAUTHENTICATED
PERMISSION_DENIED: Code = Code.PERMISSION_DENIED
NOT_FOUND: Code = Code.NOT_FOUND

# What each user caller may see of the target: (organization role, effective workspace role).
VISIBILITY: dict[str, tuple[str | None, str | None]] = {
    w.OTHER_TENANT: (None, None),
    w.GUEST: (None, "member"),
    w.WORKSPACE_MEMBER: (None, "member"),
    w.WORKSPACE_OWNER: (None, "owner"),
    w.ORG_MEMBER: ("member", "member"),
    w.ORG_ADMIN: ("admin", "owner"),
    w.ORG_OWNER: ("owner", "owner"),
    w.BILLING_ADMIN: ("billing_admin", None),
}
KEY_SCOPES = {w.SERVICE_KEY: frozenset[str](), w.WORKOS_KEY: frozenset({"workos"})}


def expected_refusal(rules: MethodRules, caller: str) -> Code | None:
    """The code that refuses `caller`, or None when the call passes auth."""
    if caller in (w.NO_TOKEN, w.EXPIRED_TOKEN, w.WRONG_SIGNATURE):
        return UNAUTHENTICATED
    if caller in KEY_SCOPES:
        admitted = bool(rules.service_scope) and rules.service_scope in KEY_SCOPES[caller]
        return None if admitted else PERMISSION_DENIED
    org_role, ws_role = VISIBILITY[caller]
    level = rules.level
    if level == options_pb2.AUTH_LEVEL_PROTECTED:
        return None
    if level == options_pb2.AUTH_LEVEL_WORKSPACE_MEMBER:
        return None if ws_role else NOT_FOUND
    if level == options_pb2.AUTH_LEVEL_WORKSPACE_OWNER:
        if ws_role is None:
            return NOT_FOUND
        return None if ws_role == "owner" else PERMISSION_DENIED
    if level == options_pb2.AUTH_LEVEL_ORGANIZATION_MEMBER:
        return None if org_role else NOT_FOUND
    if level == options_pb2.AUTH_LEVEL_ORGANIZATION_ADMIN:
        if org_role is None:
            return NOT_FOUND
        return None if org_role in ("owner", "admin") else PERMISSION_DENIED
    raise AssertionError(f"{rules.name}: auth level {level} has no expectation")


def fresh_email() -> str:
    return f"sec-invitee-{uuid.uuid4().hex[:12]}@example.com"


@dataclass(frozen=True)
class Entry:
    """How to call one RPC against a world, and which callers that pass auth still meet a
    domain rule (with the code they get)."""

    request: Callable[[World], Message]
    outcomes: Mapping[str, Code] = field(default_factory=dict)


ORG = "/beacon.v1.OrganizationService/"
WS = "/beacon.v1.WorkspaceService/"
MEMBERS = "/beacon.v1.MembershipService/"
SCHEDULES = "/beacon.v1.ScheduleService/"
PROMPTS = "/beacon.v1.PromptService/"
RUNS = "/beacon.v1.RunService/"
INSIGHTS = "/beacon.v1.InsightsService/"


def recent(x: World) -> dict[str, Any]:
    """A range holding the world's answers (those of this second too), the same all day (two
    reads of a test ask for the same range)."""
    today = int(time.time()) // 86400 * 86400
    return {
        "start_time": Timestamp(seconds=today - 7 * 86400),
        "end_time": Timestamp(seconds=today + 2 * 86400),
    }


def source_of(x: World) -> str:
    """The source the world's answers cite (`tests.security.tenants.populate`)."""
    return f"{x.workspace_id.replace('_', '-')}.example"


TABLE: dict[str, Entry] = {
    ORG + "CreateOrganization": Entry(
        lambda x: org_pb.CreateOrganizationRequest(name=f"Org {uuid.uuid4().hex[:8]}")
    ),
    ORG + "ListMyOrganizations": Entry(lambda x: org_pb.ListMyOrganizationsRequest()),
    ORG + "GetOrganization": Entry(
        lambda x: org_pb.GetOrganizationRequest(organization_id=x.organization_id)
    ),
    ORG + "UpdateOrganization": Entry(
        lambda x: org_pb.UpdateOrganizationRequest(
            organization=org_pb.Organization(id=x.organization_id, name="Renamed Org"),
            update_mask=FieldMask(paths=["name"]),
        )
    ),
    ORG + "GetNavigationState": Entry(lambda x: org_pb.GetNavigationStateRequest()),
    ORG + "SetCurrentWorkspace": Entry(
        lambda x: org_pb.SetCurrentWorkspaceRequest(workspace_id=x.workspace_id)
    ),
    ORG + "GetOrganizationAccess": Entry(
        lambda x: org_pb.GetOrganizationAccessRequest(organization_id=x.organization_id)
    ),
    ORG + "ResolveWorkosOrganizationId": Entry(
        lambda x: org_pb.ResolveWorkosOrganizationIdRequest(organization_id=x.organization_id)
    ),
    ORG + "LinkWorkosOrganization": Entry(
        lambda x: org_pb.LinkWorkosOrganizationRequest(
            organization_id=x.organization_id, workos_organization_id=f"org_{uuid.uuid4().hex}"
        )
    ),
    ORG + "UnlinkWorkosOrganization": Entry(
        lambda x: org_pb.UnlinkWorkosOrganizationRequest(organization_id=x.organization_id)
    ),
    ORG + "ListAuditEvents": Entry(
        lambda x: org_pb.ListAuditEventsRequest(organization_id=x.organization_id)
    ),
    WS + "CreateWorkspace": Entry(
        lambda x: ws_pb.CreateWorkspaceRequest(name=f"Workspace {uuid.uuid4().hex[:8]}")
    ),
    WS + "ListWorkspaces": Entry(lambda x: ws_pb.ListWorkspacesRequest()),
    WS + "GetWorkspace": Entry(lambda x: ws_pb.GetWorkspaceRequest(workspace_id=x.workspace_id)),
    WS + "UpdateWorkspace": Entry(
        lambda x: ws_pb.UpdateWorkspaceRequest(
            workspace=ws_pb.Workspace(id=x.workspace_id, name="Renamed Workspace"),
            update_mask=FieldMask(paths=["name"]),
        )
    ),
    WS + "DeleteWorkspace": Entry(
        lambda x: ws_pb.DeleteWorkspaceRequest(workspace_id=x.workspace_id)
    ),
    # Protected: only the deleted workspace's effective owners restore it; everyone else
    # (its plain members too) gets the NOT_FOUND of a workspace that does not exist.
    WS + "UndeleteWorkspace": Entry(
        lambda x: ws_pb.UndeleteWorkspaceRequest(workspace_id=x.deleted_workspace_id),
        outcomes=dict.fromkeys(
            (w.OTHER_TENANT, w.GUEST, w.WORKSPACE_MEMBER, w.ORG_MEMBER, w.BILLING_ADMIN),
            NOT_FOUND,
        ),
    ),
    WS + "GenerateWorkspaceIconUploadUrl": Entry(
        lambda x: ws_pb.GenerateWorkspaceIconUploadUrlRequest()
    ),
    WS + "GetEnabledProviders": Entry(
        lambda x: ws_pb.GetEnabledProvidersRequest(workspace_id=x.workspace_id)
    ),
    WS + "SetEnabledProviders": Entry(
        lambda x: ws_pb.SetEnabledProvidersRequest(
            workspace_id=x.workspace_id, providers=[ws_pb.PROVIDER_GOOGLE]
        )
    ),
    # The caller is never the target organization's only owner: the founder stays.
    WS + "DeleteAccount": Entry(lambda x: ws_pb.DeleteAccountRequest()),
    MEMBERS + "ListMembers": Entry(
        lambda x: member_pb.ListMembersRequest(workspace_id=x.workspace_id)
    ),
    MEMBERS + "AddMember": Entry(
        lambda x: member_pb.AddMemberRequest(
            workspace_id=x.workspace_id, email=fresh_email(), role=member_pb.WORKSPACE_ROLE_MEMBER
        )
    ),
    MEMBERS + "UpdateMemberRole": Entry(
        lambda x: member_pb.UpdateMemberRoleRequest(
            workspace_id=x.workspace_id,
            user_id=x.member.user_id,
            role=member_pb.WORKSPACE_ROLE_OWNER,
        )
    ),
    MEMBERS + "RemoveMember": Entry(
        lambda x: member_pb.RemoveMemberRequest(
            workspace_id=x.workspace_id, user_id=x.member.user_id
        )
    ),
    # Access through the organization role leaves no explicit membership to leave.
    MEMBERS + "LeaveWorkspace": Entry(
        lambda x: member_pb.LeaveWorkspaceRequest(workspace_id=x.workspace_id),
        outcomes=dict.fromkeys((w.ORG_MEMBER, w.ORG_ADMIN, w.ORG_OWNER), Code.FAILED_PRECONDITION),
    ),
    MEMBERS + "GetJoinInfo": Entry(
        lambda x: member_pb.GetJoinInfoRequest(workspace_id=x.workspace_id)
    ),
    MEMBERS + "RotateJoinCode": Entry(
        lambda x: member_pb.RotateJoinCodeRequest(workspace_id=x.workspace_id)
    ),
    MEMBERS + "JoinWorkspaceByCode": Entry(
        lambda x: member_pb.JoinWorkspaceByCodeRequest(code=x.join_code)
    ),
    MEMBERS + "ListOrganizationMembers": Entry(
        lambda x: member_pb.ListOrganizationMembersRequest(organization_id=x.organization_id)
    ),
    MEMBERS + "InviteOrganizationMember": Entry(
        lambda x: member_pb.InviteOrganizationMemberRequest(
            organization_id=x.organization_id,
            email=fresh_email(),
            role=org_pb.ORGANIZATION_ROLE_MEMBER,
        )
    ),
    MEMBERS + "UpdateOrganizationMemberRole": Entry(
        lambda x: member_pb.UpdateOrganizationMemberRoleRequest(
            organization_id=x.organization_id,
            user_id=x.org_member.user_id,
            role=org_pb.ORGANIZATION_ROLE_ADMIN,
        )
    ),
    MEMBERS + "RemoveOrganizationMember": Entry(
        lambda x: member_pb.RemoveOrganizationMemberRequest(
            organization_id=x.organization_id, user_id=x.org_member.user_id
        )
    ),
    MEMBERS + "ListMyInvitations": Entry(lambda x: member_pb.ListMyInvitationsRequest()),
    # Every user caller holds a pending invitation of the target: accepting it is theirs.
    MEMBERS + "AcceptInvitation": Entry(
        lambda x: member_pb.AcceptInvitationRequest(invitation_id=x.invitation_id)
    ),
    MEMBERS + "DeclineInvitation": Entry(
        lambda x: member_pb.DeclineInvitationRequest(invitation_id=x.invitation_id)
    ),
    SCHEDULES + "GetSchedule": Entry(
        lambda x: schedule_pb.GetScheduleRequest(workspace_id=x.workspace_id)
    ),
    SCHEDULES + "SetSchedule": Entry(
        lambda x: schedule_pb.SetScheduleRequest(workspace_id=x.workspace_id, cron="0 9 * * 1")
    ),
    SCHEDULES + "GetCronTiming": Entry(
        lambda x: schedule_pb.GetCronTimingRequest(workspace_id=x.workspace_id)
    ),
    PROMPTS + "StorePrompts": Entry(
        lambda x: prompt_pb.StorePromptsRequest(
            workspace_id=x.workspace_id, prompts=["Which CRM do you recommend?"]
        )
    ),
    PROMPTS + "ListPrompts": Entry(
        lambda x: prompt_pb.ListPromptsRequest(workspace_id=x.workspace_id)
    ),
    PROMPTS + "AddPrompts": Entry(
        lambda x: prompt_pb.AddPromptsRequest(
            workspace_id=x.workspace_id, prompts=["Which analytics tool is best?"]
        )
    ),
    PROMPTS + "DeletePrompt": Entry(lambda x: prompt_pb.DeletePromptRequest(prompt_id=x.prompt_id)),
    RUNS + "StartRun": Entry(lambda x: run_pb.StartRunRequest(workspace_id=x.workspace_id)),
    RUNS + "GetRun": Entry(lambda x: run_pb.GetRunRequest(run_id=x.run_id)),
    RUNS + "ListRuns": Entry(lambda x: run_pb.ListRunsRequest(workspace_id=x.workspace_id)),
    RUNS + "CancelRun": Entry(lambda x: run_pb.CancelRunRequest(run_id=x.run_id)),
    RUNS + "WatchRun": Entry(lambda x: run_pb.WatchRunRequest(run_id=x.ended_run_id)),
    RUNS + "ListResponses": Entry(
        lambda x: run_pb.ListResponsesRequest(workspace_id=x.workspace_id)
    ),
    RUNS + "GetVisibilityReport": Entry(
        lambda x: run_pb.GetVisibilityReportRequest(
            workspace_id=x.workspace_id,
            start_time=Timestamp(seconds=int(time.time()) - 7 * 86400),
            end_time=Timestamp(seconds=int(time.time()) + 86400),  # answers of this second too
            granularity=run_pb.GRANULARITY_DAY,
        )
    ),
    INSIGHTS + "GetSourcesReport": Entry(
        lambda x: insights_pb.GetSourcesReportRequest(workspace_id=x.workspace_id, **recent(x))
    ),
    INSIGHTS + "ListCitedUrls": Entry(
        lambda x: insights_pb.ListCitedUrlsRequest(
            workspace_id=x.workspace_id, domain=source_of(x), **recent(x)
        )
    ),
    INSIGHTS + "GetPromptReport": Entry(
        lambda x: insights_pb.GetPromptReportRequest(
            workspace_id=x.workspace_id, granularity=run_pb.GRANULARITY_DAY, **recent(x)
        )
    ),
    INSIGHTS + "ListCompetitorSuggestions": Entry(
        lambda x: insights_pb.ListCompetitorSuggestionsRequest(workspace_id=x.workspace_id)
    ),
    INSIGHTS + "DecideCompetitorSuggestion": Entry(
        lambda x: insights_pb.DecideCompetitorSuggestionRequest(
            workspace_id=x.workspace_id,
            suggestion_id=x.suggestion_id,
            decision=insights_pb.SUGGESTION_DECISION_DISMISS,
        )
    ),
}

CELLS = [(path, caller) for path in TABLE for caller in w.CALLERS]


def cell_id(cell: tuple[str, str]) -> str:
    path, caller = cell
    return f"{path.rsplit('/', 1)[1]}-{caller}"


def test_the_table_has_one_entry_per_rpc() -> None:
    assert set(TABLE) == set(method_rules()) == set(methods_by_path())


def test_every_table_of_a_workspace_is_in_the_tenants_snapshot() -> None:
    """A new table keyed by workspace (a rollup, say) must be compared row by row too."""
    keyed = {name for name, table in TABLES.items() if "workspace_id" in table.c}
    assert keyed - {"audit_events"} <= {*WORKSPACE_TABLES, *ORGANIZATION_TABLES}


def test_every_rpc_requires_credentials() -> None:
    open_levels = (options_pb2.AUTH_LEVEL_UNSPECIFIED, options_pb2.AUTH_LEVEL_OPEN)
    assert [p for p, rules in method_rules().items() if rules.level in open_levels] == []


def test_domain_outcomes_are_only_named_for_callers_that_pass_auth() -> None:
    rules = method_rules()
    for path, entry in TABLE.items():
        for caller in entry.outcomes:
            assert expected_refusal(rules[path], caller) is None, (path, caller)


@pytest.fixture(scope="module")
async def keys(app: App) -> AsyncIterator[dict[str, str]]:
    """Secrets of a service key without scopes and of one with the `workos` scope (both
    platform-internal: bound to all organizations, as each cell builds its own tenants)."""
    plain, plain_info = await service_keys.create_key(
        app.db, "security matrix", [], all_organizations=True
    )
    workos, workos_info = await service_keys.create_key(
        app.db, "security matrix", ["workos"], all_organizations=True
    )
    yield {w.SERVICE_KEY: plain, w.WORKOS_KEY: workos}
    for info in (plain_info, workos_info):
        await service_keys.revoke_key(app.db, info.id)


def ghost(world: World) -> World:
    """The world with every resource id replaced by a well-formed one that names nothing."""
    return dataclasses.replace(
        world,
        organization_id=new_id("org"),
        workspace_id=new_id("ws"),
        deleted_workspace_id=new_id("ws"),
        prompt_id=new_id("prm"),
        run_id=new_id("run"),
        ended_run_id=new_id("run"),
        suggestion_id=suggestions.suggestion_id("name", uuid.uuid4().hex),
        invitation_id=new_id("inv"),
    )


def as_seen(outcome: Outcome, world: World) -> tuple[str, str, dict[str, str]]:
    """What a NOT_FOUND tells the caller, with the world's ids masked: message, reason and
    ErrorInfo metadata (without the request id)."""
    assert outcome.failure is not None
    info = outcome.failure.details["ErrorInfo"]
    ids = (
        world.organization_id,
        world.workspace_id,
        world.deleted_workspace_id,
        world.prompt_id,
        world.run_id,
        world.invitation_id,
    )
    message = outcome.failure.message
    for id_ in (*ids, world.ended_run_id):
        message = message.replace(id_, "<id>")
    metadata = {k: v for k, v in info.metadata.items() if k != "request_id"}
    return message, info.reason, metadata


@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
async def test_access(
    cell: tuple[str, str],
    app: App,
    settings: Settings,
    channel: grpc.aio.Channel,
    stubs: SimpleNamespace,
    keys: dict[str, str],
) -> None:
    path, caller = cell
    entry = TABLE[path]
    world = await build_world(app, settings, stubs.memberships, caller, keys)
    refusal = expected_refusal(method_rules()[path], caller)
    expected = refusal or entry.outcomes.get(caller, OK)
    # Row counts of every table too: a refused call may not write anywhere, not only in the
    # target tenant.
    before = await snapshot(app, world, counts=True)

    outcome = await invoke(channel, methods_by_path()[path], entry.request(world), world.metadata)

    assert outcome.code == expected, f"{cell_id(cell)}: expected {expected.name}, got " + (
        outcome.describe()
    )
    if outcome.failure is not None:
        assert outcome.failure.message
        assert "ErrorInfo" in outcome.failure.details
        after = await snapshot(app, world, counts=True)
        assert before.changes(after) == [], "a refused call wrote"
    if expected == NOT_FOUND:
        # Exactly as if it did not exist: the answer for ids that name nothing.
        absent = ghost(world)
        missing = await invoke(
            channel, methods_by_path()[path], entry.request(absent), world.metadata
        )
        assert as_seen(outcome, world) == as_seen(missing, absent)


async def test_a_workspace_id_reveals_nothing_of_its_organization_to_outsiders(
    app: App,
    settings: Settings,
    channel: grpc.aio.Channel,
    stubs: SimpleNamespace,
    keys: dict[str, str],
) -> None:
    """UpdateOrganization also accepts a workspace id (the seed's form): an outsider naming
    another tenant's workspace gets the answer of a workspace that does not exist."""
    world = await build_world(app, settings, stubs.memberships, w.OTHER_TENANT, keys)
    method = methods_by_path()[ORG + "UpdateOrganization"]

    def rename(x: World) -> org_pb.UpdateOrganizationRequest:
        return org_pb.UpdateOrganizationRequest(
            workspace_id=x.workspace_id,
            organization=org_pb.Organization(name="Renamed Org"),
            update_mask=FieldMask(paths=["name"]),
        )

    real = await invoke(channel, method, rename(world), world.metadata)
    absent = ghost(world)
    missing = await invoke(channel, method, rename(absent), world.metadata)
    assert real.code == missing.code == NOT_FOUND
    assert as_seen(real, world) == as_seen(missing, absent)
    assert world.organization_id not in (real.failure.message if real.failure else "")


async def test_a_guest_naming_their_workspace_on_an_organization_rpc_is_denied_not_hidden(
    app: App,
    settings: Settings,
    channel: grpc.aio.Channel,
    stubs: SimpleNamespace,
    keys: dict[str, str],
) -> None:
    """A guest sees the workspace (and so knows it exists) but has no organization role:
    organization-level RPCs addressed by that workspace are PERMISSION_DENIED, and write
    nothing."""
    world = await build_world(app, settings, stubs.memberships, w.GUEST, keys)
    organization_rpcs = [
        path
        for path, rules in method_rules().items()
        if rules.level
        in (options_pb2.AUTH_LEVEL_ORGANIZATION_ADMIN, options_pb2.AUTH_LEVEL_ORGANIZATION_MEMBER)
        and "workspace_id" in rules.resource_fields
    ]
    assert organization_rpcs == [ORG + "UpdateOrganization"]
    method = methods_by_path()[ORG + "UpdateOrganization"]
    request = org_pb.UpdateOrganizationRequest(
        workspace_id=world.workspace_id,
        organization=org_pb.Organization(name="Renamed Org"),
        update_mask=FieldMask(paths=["name"]),
    )
    before = await snapshot(app, world)

    outcome = await invoke(channel, method, request, world.metadata)

    assert outcome.code == PERMISSION_DENIED, outcome.describe()
    assert outcome.failure is not None
    assert outcome.failure.details["ErrorInfo"].reason == "NOT_ORGANIZATION_MEMBER"
    assert before.changes(await snapshot(app, world)) == []
