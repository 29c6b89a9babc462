"""Every application service of a process, built once by `service.app.App`."""

from __future__ import annotations

from dataclasses import dataclass

from service.application.billing import BillingService
from service.application.files import FileService
from service.application.insights import InsightsService
from service.application.members import MemberService
from service.application.organizations import OrganizationService
from service.application.prompts import PromptService
from service.application.runs import RunService
from service.application.schedules import ChargeRun, ScheduleService
from service.application.service_keys import ServiceKeyService
from service.application.webhooks import WebhookService
from service.application.workspaces import WorkspaceService
from service.config import Settings
from service.db.database import Database


@dataclass(frozen=True, slots=True)
class Services:
    """Every application service of the process, built with the same database and settings."""

    workspaces: WorkspaceService
    organizations: OrganizationService
    members: MemberService
    prompts: PromptService
    schedules: ScheduleService
    runs: RunService
    files: FileService
    service_keys: ServiceKeyService
    billing: BillingService
    insights: InsightsService
    webhooks: WebhookService

    @classmethod
    def build(cls, db: Database, settings: Settings, charge_run: ChargeRun) -> Services:
        """The services of one process (`App` builds them once); `charge_run` charges the
        run a new schedule starts to the workspace's StartRun budget."""
        return cls(
            workspaces=WorkspaceService(db=db, settings=settings),
            organizations=OrganizationService(db=db, settings=settings),
            members=MemberService(db=db, settings=settings),
            prompts=PromptService(db=db, settings=settings),
            schedules=ScheduleService(db=db, settings=settings, charge_run=charge_run),
            runs=RunService(db=db, settings=settings),
            files=FileService(db=db, settings=settings),
            service_keys=ServiceKeyService(db=db, settings=settings),
            billing=BillingService(db=db, settings=settings),
            insights=InsightsService(db=db, settings=settings),
            webhooks=WebhookService(db=db, settings=settings),
        )
