"""Billing: cost estimates, monthly spending caps and an organization's usage."""

from __future__ import annotations

from service.application.base import ServiceBase
from service.domain.actor import Actor
from service.domain.money import caps
from service.domain.money.caps import Spending, UsagePage
from service.domain.money.estimates import Estimate, Pricing


class BillingService(ServiceBase):
    """What a workspace's runs cost, and what an organization spends against its caps."""

    async def estimate(self, workspace_id: str) -> Estimate:
        """What a run of the workspace costs, and a month of its schedule."""
        settings = self.settings
        async with self.db.transaction(write=False) as session:
            return await caps.estimate_workspace(
                session,
                workspace_id,
                configured=settings.configured_providers(),
                pricing=Pricing.from_settings(settings),
                now=self.clock(),
            )

    async def set_spending_cap(
        self, actor: Actor, organization_id: str, workspace_id: str, monthly_cap_micros: int
    ) -> Spending:
        """Sets the organization's cap, or one workspace's with `workspace_id`."""
        async with self.db.transaction() as session:
            return await caps.set_spending_cap(
                session,
                actor,
                organization_id,
                workspace_id,
                monthly_cap_micros,
                now=self.clock(),
            )

    async def spending(self, organization_id: str) -> Spending:
        """The organization's caps and month-to-date spending, per workspace."""
        async with self.db.transaction(write=False) as session:
            return await caps.spending(session, organization_id, self.clock())

    async def list_usage(
        self, organization_id: str, months: int, *, page_size: int, page_token: str
    ) -> UsagePage:
        """A page of the organization's usage per month, workspace and provider."""
        async with self.db.transaction(write=False) as session:
            return await caps.list_usage(
                session,
                organization_id,
                months,
                self.clock(),
                page_size=page_size,
                page_token=page_token,
            )
