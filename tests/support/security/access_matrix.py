"""The access matrix: for every RPC, how to call it against a `World` and which callers that
pass auth still meet a domain rule. Each new RPC adds its Entry to TABLE; the security suites
(access matrix, read isolation, audit completeness, fuzz, idempotency) walk it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from beacon.v1 import billing_service_pb2 as billing_pb
from beacon.v1 import insights_service_pb2 as insights_pb
from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import options_pb2
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from beacon.v1 import webhook_service_pb2 as webhook_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.rpc_options import MethodRules
from tests.support.security import world as w
from tests.support.security.world import World

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
    if level == options_pb2.AUTH_LEVEL_ORGANIZATION_BILLING:
        if org_role is None:
            return NOT_FOUND
        return None if org_role in ("owner", "billing_admin") else PERMISSION_DENIED
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
WEBHOOKS = "/beacon.v1.WebhookService/"
BILLING = "/beacon.v1.BillingService/"
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
    """The source the world's answers cite (`tests.support.security.tenants.populate`)."""
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
    WEBHOOKS + "CreateWebhookEndpoint": Entry(
        lambda x: webhook_pb.CreateWebhookEndpointRequest(
            workspace_id=x.workspace_id,
            url="https://hooks.example.com/beacon",
            event_types=["run.completed"],
        )
    ),
    WEBHOOKS + "ListWebhookEndpoints": Entry(
        lambda x: webhook_pb.ListWebhookEndpointsRequest(workspace_id=x.workspace_id)
    ),
    WEBHOOKS + "UpdateWebhookEndpoint": Entry(
        lambda x: webhook_pb.UpdateWebhookEndpointRequest(
            workspace_id=x.workspace_id,
            endpoint=webhook_pb.WebhookEndpoint(id=x.webhook_endpoint_id, description="Slack"),
            update_mask=FieldMask(paths=["description"]),
        )
    ),
    WEBHOOKS + "DeleteWebhookEndpoint": Entry(
        lambda x: webhook_pb.DeleteWebhookEndpointRequest(
            workspace_id=x.workspace_id, endpoint_id=x.webhook_endpoint_id
        )
    ),
    WEBHOOKS + "RotateWebhookSecret": Entry(
        lambda x: webhook_pb.RotateWebhookSecretRequest(
            workspace_id=x.workspace_id, endpoint_id=x.webhook_endpoint_id
        )
    ),
    WEBHOOKS + "SendWebhookPing": Entry(
        lambda x: webhook_pb.SendWebhookPingRequest(
            workspace_id=x.workspace_id, endpoint_id=x.webhook_endpoint_id
        )
    ),
    WEBHOOKS + "ListWebhookDeliveries": Entry(
        lambda x: webhook_pb.ListWebhookDeliveriesRequest(workspace_id=x.workspace_id)
    ),
    WEBHOOKS + "ResendWebhookDeliveries": Entry(
        lambda x: webhook_pb.ResendWebhookDeliveriesRequest(
            workspace_id=x.workspace_id, delivery_id=x.webhook_delivery_id
        )
    ),
    WEBHOOKS + "CreateAlertRule": Entry(
        lambda x: webhook_pb.CreateAlertRuleRequest(
            workspace_id=x.workspace_id,
            alert_rule=webhook_pb.AlertRule(
                kind=webhook_pb.ALERT_KIND_MENTION_RATE_DROP,
                threshold=15,
                trailing_runs=5,
                min_sample=20,
            ),
        )
    ),
    WEBHOOKS + "ListAlertRules": Entry(
        lambda x: webhook_pb.ListAlertRulesRequest(workspace_id=x.workspace_id)
    ),
    WEBHOOKS + "DeleteAlertRule": Entry(
        lambda x: webhook_pb.DeleteAlertRuleRequest(
            workspace_id=x.workspace_id, alert_rule_id=x.alert_rule_id
        )
    ),
    WEBHOOKS + "ListAlerts": Entry(
        lambda x: webhook_pb.ListAlertsRequest(workspace_id=x.workspace_id)
    ),
    WEBHOOKS + "GetDigest": Entry(
        lambda x: webhook_pb.GetDigestRequest(workspace_id=x.workspace_id)
    ),
    WEBHOOKS + "SetDigest": Entry(
        lambda x: webhook_pb.SetDigestRequest(
            workspace_id=x.workspace_id,
            frequency=webhook_pb.DIGEST_FREQUENCY_WEEKLY,
            hour=9,
            weekday=1,
            time_zone="Europe/Paris",
        )
    ),
    PROMPTS + "SetDefaultMarket": Entry(
        lambda x: prompt_pb.SetDefaultMarketRequest(
            workspace_id=x.workspace_id, market=prompt_pb.Market(country="DE")
        )
    ),
    BILLING + "GetCostEstimate": Entry(
        lambda x: billing_pb.GetCostEstimateRequest(workspace_id=x.workspace_id)
    ),
    BILLING + "SetSpendingCap": Entry(
        lambda x: billing_pb.SetSpendingCapRequest(
            organization_id=x.organization_id,
            workspace_id=x.workspace_id,
            monthly_cap_micros=50_000_000,
        )
    ),
    BILLING + "GetSpending": Entry(
        lambda x: billing_pb.GetSpendingRequest(organization_id=x.organization_id)
    ),
    BILLING + "ListUsage": Entry(
        lambda x: billing_pb.ListUsageRequest(organization_id=x.organization_id)
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
