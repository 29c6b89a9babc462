"""What a request may cost and what its values may hold, over a real server (issue 24, points
5, 8 and 12): repeated fields within their declared `(beacon.v1.max_items)`, requests within
their RPC's `(beacon.v1.max_request_bytes)` and parsed only then, undecodable bytes and bad
token claims answered with ErrorInfo, a bounded daylight-saving check, report ranges away
from datetime's limits, and names, zones, ids and emails that cannot pass for others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace
from typing import Any

import croniter
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as sched_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.auth.tokens import mint_dev_token
from service.config import Settings
from service.rpc_options import item_bounds
from tests.support import RpcFailure, expect_error, unique
from tests.support.builders import new_workspace
from tests.support.security.snapshots import row_counts

Stubs = SimpleNamespace
Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def violations(refused: RpcFailure) -> list[str]:
    return [v.field for v in refused.details["BadRequest"].field_violations]


async def refused_without_writing(
    app: App, code: grpc.StatusCode, call: Callable[[], Awaitable[Any]]
) -> RpcFailure:
    """The call fails with `code`, an ErrorInfo of domain beacon, and writes no row."""
    before = await row_counts(app)
    refused = await expect_error(code, call())
    info = refused.details.get("ErrorInfo")
    assert info is not None and info.domain == "beacon", refused
    assert await row_counts(app) == before
    return refused


# --- repeated fields and request size (point 5) -----------------------------------------


async def test_a_repeated_field_over_its_bound_is_refused_by_name_and_writes_nothing(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    """Seven entries of one provider would be harmless duplicates to the handler: the bound
    the contract declares refuses them from the length alone, naming the field."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    md = owner.metadata
    competitors = [ws_pb.Competitor(name=f"Rival {i}") for i in range(51)]
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (
            "providers",
            lambda: stubs.workspaces.SetEnabledProviders(
                ws_pb.SetEnabledProvidersRequest(
                    workspace_id=workspace.id, providers=[ws_pb.PROVIDER_ANTHROPIC] * 7
                ),
                metadata=md,
            ),
        ),
        (
            "workspace.competitors",
            lambda: stubs.workspaces.UpdateWorkspace(
                ws_pb.UpdateWorkspaceRequest(
                    workspace=ws_pb.Workspace(id=workspace.id, competitors=competitors),
                    update_mask=FieldMask(paths=["competitors"]),
                ),
                metadata=md,
            ),
        ),
        (
            "prompts",
            lambda: stubs.prompts.StorePrompts(
                prompt_pb.StorePromptsRequest(
                    workspace_id=workspace.id, prompts=["same prompt"] * 501
                ),
                metadata=md,
            ),
        ),
        (
            "prompt_ids",
            lambda: stubs.runs.StartRun(
                run_pb.StartRunRequest(workspace_id=workspace.id, prompt_ids=["prm_x"] * 501),
                metadata=md,
            ),
        ),
    ]
    for field, call in cases:
        refused = await refused_without_writing(app, grpc.StatusCode.INVALID_ARGUMENT, call)
        assert refused.details["ErrorInfo"].reason == "TOO_MANY_ITEMS", (field, refused)
        assert violations(refused) == [field], refused
    after = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=md
    )
    assert list(after.enabled_providers) == list(workspace.enabled_providers)
    assert after.etag == workspace.etag


async def test_a_request_over_its_rpc_limit_is_refused_before_it_is_parsed(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    """100,000 provider entries (100 kB, far under the 4 MiB transport limit) exceed
    SetEnabledProviders' 64 KiB: refused as too large, not counted entry by entry; a prompt
    set over StorePrompts' 2 MiB likewise."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    md = owner.metadata
    huge_providers = ws_pb.SetEnabledProvidersRequest(
        workspace_id=workspace.id, providers=[ws_pb.PROVIDER_OPENAI] * 100_000
    )
    huge_prompts = prompt_pb.StorePromptsRequest(
        workspace_id=workspace.id, prompts=[f"{i} " + "p" * 1990 for i in range(1100)]
    )
    for call in (
        lambda: stubs.workspaces.SetEnabledProviders(huge_providers, metadata=md),
        lambda: stubs.prompts.StorePrompts(huge_prompts, metadata=md),
    ):
        refused = await refused_without_writing(app, grpc.StatusCode.INVALID_ARGUMENT, call)
        assert refused.details["ErrorInfo"].reason == "REQUEST_TOO_LARGE", refused
        assert violations(refused) == ["request"], refused


async def test_the_largest_valid_prompt_set_fits_under_the_limit(
    stubs: Stubs, new_user: Any
) -> None:
    """500 prompts of 2000 characters (the most a workspace holds) are one StorePrompts."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    texts = [f"{i:03d} " + "q" * 1996 for i in range(500)]
    stored = await stubs.prompts.StorePrompts(
        prompt_pb.StorePromptsRequest(workspace_id=workspace.id, prompts=texts),
        metadata=owner.metadata,
    )
    assert len(stored.prompts) == 500


def test_every_repeated_request_field_must_declare_a_bound() -> None:
    """The contract check the server runs at start-up: a repeated field without max_items
    (here a response's) is refused, so a new request field cannot slip in unbounded."""
    with pytest.raises(ValueError, match="declares no max_items"):
        item_bounds(member_pb.ListMembersResponse.DESCRIPTOR)


# --- undecodable bytes and hostile token claims (point 8) -------------------------------

UNDECODABLE = {
    "truncated varint": b"\xff\xff\xff",
    "length past the end": b"\x0a\x10ws_",
    "invalid UTF-8 in a string": b"\x0a\x02\xc3\x28",
}


@pytest.mark.parametrize("raw", UNDECODABLE.values(), ids=list(UNDECODABLE))
async def test_undecodable_request_bytes_are_invalid_argument_with_error_info(
    channel: grpc.aio.Channel, new_user: Any, app: App, raw: bytes
) -> None:
    """grpc would answer UNKNOWN with protobuf's error text; unary and streaming RPCs alike."""
    owner = await new_user()
    unary = channel.unary_unary("/beacon.v1.WorkspaceService/GetWorkspace")
    stream = channel.unary_stream("/beacon.v1.RunService/WatchRun")

    async def read_stream() -> None:
        async for _ in stream(raw, metadata=owner.metadata):
            pass

    for call in (lambda: unary(raw, metadata=owner.metadata), read_stream):
        refused = await refused_without_writing(app, grpc.StatusCode.INVALID_ARGUMENT, call)
        assert refused.details["ErrorInfo"].reason == "UNDECODABLE_REQUEST", refused
        assert violations(refused) == ["request"], refused


BAD_CLAIMS = {
    "NUL in email": {"email": "a\x00b@example.com"},
    "lone surrogate in email": {"email": "\ud83d@example.com"},
    "NUL in name": {"name": "Eve\x00"},
    "lone surrogate in name": {"name": "Eve \udc00"},
    "NUL in subject": {"subject": "dev|eve\x00"},
}


@pytest.mark.parametrize("claims", BAD_CLAIMS.values(), ids=list(BAD_CLAIMS))
async def test_token_claims_no_column_can_hold_are_unauthenticated(
    stubs: Stubs, settings: Settings, app: App, claims: dict[str, str]
) -> None:
    """Such a token failed every call with INTERNAL (PostgreSQL refuses NUL; a surrogate has
    no UTF-8): it is UNAUTHENTICATED with ErrorInfo, and no user row is written."""
    fields = {"email": f"{unique('eve')}@example.com", "name": "Eve", **claims}
    token = mint_dev_token(
        settings, email=fields["email"], name=fields["name"], subject=fields.get("subject")
    )
    refused = await refused_without_writing(
        app,
        grpc.StatusCode.UNAUTHENTICATED,
        lambda: stubs.organizations.ListMyOrganizations(
            org_pb.ListMyOrganizationsRequest(), metadata=bearer(token)
        ),
    )
    assert refused.details["ErrorInfo"].reason == "BAD_CLAIM", refused


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


async def test_report_ranges_near_the_ends_of_the_calendar_are_invalid_argument(
    stubs: Stubs, new_user: Any
) -> None:
    """Years 1 and 9999 overflowed datetime arithmetic (INTERNAL): refused by name."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    first = datetime(1, 1, 1, tzinfo=UTC)
    last = datetime(9999, 12, 31, tzinfo=UTC)
    for start, end, field in (
        (first, first + timedelta(days=7), "start_time"),
        (last - timedelta(days=7), last, "end_time"),
    ):
        for granularity in (run_pb.GRANULARITY_DAY, run_pb.GRANULARITY_WEEK):
            refused = await expect_error(
                grpc.StatusCode.INVALID_ARGUMENT,
                stubs.runs.GetVisibilityReport(
                    run_pb.GetVisibilityReportRequest(
                        workspace_id=workspace.id,
                        start_time=stamp(start),
                        end_time=stamp(end),
                        granularity=granularity,
                        time_zone="Pacific/Kiritimati",
                    ),
                    metadata=owner.metadata,
                ),
            )
            assert violations(refused) == [field], refused


# --- the daylight-saving check is bounded (point 5) -------------------------------------


async def test_a_quarter_hour_schedule_in_a_zone_with_dst_is_checked_in_few_steps(
    stubs: Stubs, new_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check walked every fire time two days either side of each clock change (1,500
    croniter steps, 0.1-0.35 s of the event loop for `*/15`); it walks only the window in
    which a change can bring two fires closer than the minimum interval. Counted, not timed."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    steps = 0
    real_get_next = croniter.croniter.get_next

    def counted(self: croniter.croniter, *args: Any, **kwargs: Any) -> Any:
        nonlocal steps
        steps += 1
        return real_get_next(self, *args, **kwargs)

    monkeypatch.setattr(croniter.croniter, "get_next", counted)
    reply = await stubs.schedules.SetSchedule(
        sched_pb.SetScheduleRequest(
            workspace_id=workspace.id, cron="*/15 * * * *", time_zone="America/New_York"
        ),
        metadata=owner.metadata,
    )
    assert reply.workspace.schedule.cron == "*/15 * * * *"
    # Four clock changes in the two-year horizon, about ten steps each, and the next fire.
    assert 0 < steps <= 100, steps


# --- names, zones, ids and emails (point 12) --------------------------------------------

FORMAT_CHARACTERS = {
    "bidi override": "\u202eAcme Corp",
    "only zero-width spaces": "\u200b\u200b\u200b",
    "zero-width space inside": "Ac\u200bme",
    "isolate": "Acme \u2066Corp\u2069",
    "byte order mark": "\ufeffAcme",
    "soft hyphen": "Ac\u00adme",
    "only joiners": "\u200d\u200c",
}


@pytest.mark.parametrize("text", FORMAT_CHARACTERS.values(), ids=list(FORMAT_CHARACTERS))
async def test_names_and_aliases_with_format_characters_are_refused(
    stubs: Stubs, new_user: Any, app: App, text: str
) -> None:
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    md = owner.metadata
    for field, call in (
        (
            "name",
            lambda: stubs.workspaces.CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(name=text, organization_id=workspace.organization_id),
                metadata=md,
            ),
        ),
        (
            "brand_aliases[0]",
            lambda: stubs.workspaces.CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(
                    name="Fine Name",
                    organization_id=workspace.organization_id,
                    brand_aliases=[text],
                ),
                metadata=md,
            ),
        ),
        (
            "workspace.competitors[0].name",
            lambda: stubs.workspaces.UpdateWorkspace(
                ws_pb.UpdateWorkspaceRequest(
                    workspace=ws_pb.Workspace(
                        id=workspace.id, competitors=[ws_pb.Competitor(name=text)]
                    ),
                    update_mask=FieldMask(paths=["competitors"]),
                ),
                metadata=md,
            ),
        ),
        (
            "organization.name",
            lambda: stubs.organizations.UpdateOrganization(
                org_pb.UpdateOrganizationRequest(
                    organization=org_pb.Organization(id=workspace.organization_id, name=text),
                    update_mask=FieldMask(paths=["name"]),
                ),
                metadata=md,
            ),
        ),
    ):
        refused = await refused_without_writing(app, grpc.StatusCode.INVALID_ARGUMENT, call)
        assert violations(refused) == [field], refused


async def test_joiners_between_letters_stay_allowed(stubs: Stubs, new_user: Any) -> None:
    """Persian needs the zero-width non-joiner, emoji sequences the joiner."""
    owner = await new_user()
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # with a non-joiner
    for name in (persian, "Family \U0001f468\u200d\U0001f469\u200d\U0001f467"):
        created = await new_workspace(stubs, owner, name=name)
        assert created.workspace.name == name


@pytest.mark.parametrize("zone", ["localtime", "Factory", "LOCALTIME", "posixrules"])
async def test_time_zones_that_are_no_iana_zone_are_refused(
    stubs: Stubs, new_user: Any, app: App, zone: str
) -> None:
    """ "localtime" is whatever the host is set to; "Factory" is tzdata's placeholder."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    refused = await refused_without_writing(
        app,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: stubs.schedules.SetSchedule(
            sched_pb.SetScheduleRequest(
                workspace_id=workspace.id, cron="0 9 * * *", time_zone=zone
            ),
            metadata=owner.metadata,
        ),
    )
    assert violations(refused) == ["time_zone"], refused


async def test_an_organization_id_field_refuses_ids_of_other_kinds(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    """A workspace, run or prompt id was resolved to its organization and answered."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    md = owner.metadata
    for other_id in (workspace.id, "run_abc123", "prm_abc123"):
        requests: list[tuple[Any, Any]] = [
            (stubs.organizations.GetOrganization, org_pb.GetOrganizationRequest),
            (stubs.organizations.GetOrganizationAccess, org_pb.GetOrganizationAccessRequest),
            (stubs.workspaces.ListWorkspaces, ws_pb.ListWorkspacesRequest),
        ]
        calls = [
            partial(rpc, message(organization_id=other_id), metadata=md)
            for rpc, message in requests
        ]
        calls.append(
            partial(
                stubs.workspaces.CreateWorkspace,
                ws_pb.CreateWorkspaceRequest(name="Elsewhere", organization_id=other_id),
                metadata=md,
            )
        )
        for call in calls:
            refused = await refused_without_writing(app, grpc.StatusCode.INVALID_ARGUMENT, call)
            assert violations(refused) == ["organization_id"], refused


async def test_a_kelvin_sign_email_is_not_the_ascii_address(
    stubs: Stubs, settings: Settings, new_user: Any
) -> None:
    """U+212A KELVIN SIGN lowercases to "k": a token for "\u212aate@..." saw and could accept
    the invitation sent to "kate@...". Only ASCII letters are folded."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    local = unique("kate")
    await stubs.memberships.AddMember(
        member_pb.AddMemberRequest(
            workspace_id=workspace.id,
            email=f"{local}@example.com",
            role=member_pb.WORKSPACE_ROLE_MEMBER,
        ),
        metadata=owner.metadata,
    )
    impostor = bearer(mint_dev_token(settings, email=f"\u212a{local[1:]}@example.com"))
    listed = await stubs.memberships.ListMyInvitations(
        member_pb.ListMyInvitationsRequest(), metadata=impostor
    )
    assert list(listed.invitations) == []
    invitee = bearer(mint_dev_token(settings, email=f"{local.upper()}@Example.COM"))
    listed = await stubs.memberships.ListMyInvitations(
        member_pb.ListMyInvitationsRequest(), metadata=invitee
    )
    assert [i.workspace_id for i in listed.invitations] == [workspace.id]


async def test_id_filters_refuse_ids_of_other_kinds(stubs: Stubs, new_user: Any) -> None:
    """Held to their kind like resource fields: a workspace id as a run or prompt filter."""
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    for field in ("run_id", "prompt_id"):
        request = run_pb.ListResponsesRequest(workspace_id=workspace.id)
        setattr(request, field, workspace.id)
        refused = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            stubs.runs.ListResponses(request, metadata=owner.metadata),
        )
        assert violations(refused) == [field], refused
