"""Every table of Beacon; Alembic autogenerates from this metadata."""

from service.db.base import Base
from service.db.models.collection import (
    CompetitorRollup,
    HourlyCompetitorRollup,
    HourlyVisibilityRollup,
    Probe,
    Prompt,
    QuarterHourCompetitorRollup,
    QuarterHourVisibilityRollup,
    Run,
    Schedule,
    UsageRollup,
    VisibilityRollup,
)
from service.db.models.identity import IdempotencyKey, ServiceKey, User
from service.db.models.notifications import (
    Alert,
    AlertRule,
    Digest,
    WebhookDelivery,
    WebhookEndpoint,
)
from service.db.models.tenancy import (
    AuditEvent,
    File,
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    Workspace,
    WorkspaceInvitation,
    WorkspaceMember,
)

__all__ = [
    "Alert",
    "AlertRule",
    "AuditEvent",
    "Base",
    "CompetitorRollup",
    "Digest",
    "File",
    "HourlyCompetitorRollup",
    "HourlyVisibilityRollup",
    "IdempotencyKey",
    "Organization",
    "OrganizationInvitation",
    "OrganizationMember",
    "Probe",
    "Prompt",
    "QuarterHourCompetitorRollup",
    "QuarterHourVisibilityRollup",
    "Run",
    "Schedule",
    "ServiceKey",
    "UsageRollup",
    "User",
    "VisibilityRollup",
    "WebhookDelivery",
    "WebhookEndpoint",
    "Workspace",
    "WorkspaceInvitation",
    "WorkspaceMember",
]
