"""Schedules: a workspace's cron schedule, the run a new one starts, and its timing."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.application.base import ServiceBase
from service.domain.actor import Actor
from service.domain.collection import schedules
from service.domain.collection.schedules import CronTiming, ScheduleChange, ScheduleState
from service.domain.money import caps
from service.domain.money.estimates import Estimate, Pricing

# Charges one run to a workspace's StartRun budget, raising to refuse it
# (`service.rate_limits.RateLimits.charge_run`).
ChargeRun = Callable[[str], Awaitable[None]]


@dataclass(slots=True, kw_only=True)
class ScheduleService(ServiceBase):
    """A workspace's schedule; the run a changed schedule starts is charged to the
    workspace's StartRun budget (`charge_run`)."""

    charge_run: ChargeRun

    async def get(self, workspace_id: str) -> ScheduleState:
        """The workspace's cron and time zone (empty when unscheduled)."""
        async with self.db.transaction(write=False) as session:
            return await schedules.get_schedule(session, workspace_id)

    async def set_schedule(
        self, actor: Actor, workspace_id: str, *, cron: str, time_zone: str
    ) -> tuple[ScheduleChange, Estimate | None]:
        """Sets or clears the schedule; a changed one starts a run at once. With a schedule
        set, also what it costs: a run and a month of them (`caps.estimate_workspace`)."""
        settings = self.settings
        pricing = Pricing.from_settings(settings)
        now = self.clock()
        async with self.db.transaction() as session:
            change = await schedules.set_schedule(
                session,
                actor,
                workspace_id,
                cron=cron,
                time_zone=time_zone,
                min_interval_minutes=settings.schedule_min_interval_minutes,
                configured_providers=settings.configured_providers(),
                max_open_runs=settings.max_open_runs_per_workspace,
                charge_run=functools.partial(self.charge_run, workspace_id),
                now=now,
                pricing=pricing,
            )
            estimate = None
            if cron.strip():
                estimate = await caps.estimate_workspace(
                    session,
                    workspace_id,
                    configured=settings.configured_providers(),
                    pricing=pricing,
                    now=now,
                )
        return change, estimate

    async def timing(self, workspace_id: str) -> CronTiming:
        """When the schedule fires next and when the last run was created."""
        async with self.db.transaction(write=False) as session:
            return await schedules.cron_timing(session, workspace_id)
