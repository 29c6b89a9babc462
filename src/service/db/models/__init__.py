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
    VisibilityRollup,
)
from service.db.models.identity import IdempotencyKey, ServiceKey, User
from service.db.models.insights import (
    AnsweredPrompt,
    CitedUrlRollup,
    PromptCompetitorRollup,
    PromptRollup,
    SourceRollup,
    SuggestionDecision,
    SuggestionEvidence,
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
    "AnsweredPrompt",
    "AuditEvent",
    "Base",
    "CitedUrlRollup",
    "CompetitorRollup",
    "File",
    "HourlyCompetitorRollup",
    "HourlyVisibilityRollup",
    "IdempotencyKey",
    "Organization",
    "OrganizationInvitation",
    "OrganizationMember",
    "Probe",
    "Prompt",
    "PromptCompetitorRollup",
    "PromptRollup",
    "QuarterHourCompetitorRollup",
    "QuarterHourVisibilityRollup",
    "Run",
    "Schedule",
    "ServiceKey",
    "SourceRollup",
    "SuggestionDecision",
    "SuggestionEvidence",
    "User",
    "VisibilityRollup",
    "Workspace",
    "WorkspaceInvitation",
    "WorkspaceMember",
]
