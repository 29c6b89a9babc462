"""Estimates before spending: what one run of a workspace costs, and a month of its schedule.

Each provider's cost per answer is the workspace's average over its last two months of
answers (`ledger.answer_costs`), or the price table's default usage at the configured model's
prices when it has none; a run asks every prompt (each market is a prompt) of every provider.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from service.config import PROVIDERS, Settings
from service.db.database import Reader
from service.domain.money import ledger
from service.domain.money.prices import PriceTable, price_table
from service.providers import BY_NAME

HISTORY_MONTHS = 2
MONTH = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Pricing:
    """The price table and the model each provider is asked with (from the settings)."""

    table: PriceTable
    models: Mapping[str, str] = field(default_factory=dict)

    def model(self, provider: str) -> str:
        spec = BY_NAME.get(provider)
        return self.models.get(provider) or (spec.model if spec is not None else "")

    @classmethod
    def of(cls, prices_file: str, prices: str, models: Mapping[str, str]) -> Pricing:
        return cls(price_table(prices_file, prices), dict(models))

    @classmethod
    def from_settings(cls, settings: Settings) -> Pricing:
        """The operator's price table and provider models."""
        models = {name: settings.provider(name).model for name in PROVIDERS}
        return cls.of(settings.prices_file, settings.prices, models)

    @classmethod
    def default(cls) -> Pricing:
        """The shipped price table and the registry's default models."""
        return cls(price_table())


@dataclass(frozen=True, slots=True)
class ProviderEstimate:
    """One provider's share of a run."""

    provider: str
    answer_cost_micros: int
    answers: int
    from_history: bool


@dataclass(frozen=True, slots=True)
class Estimate:
    """One run's estimated cost, and a month of the schedule's runs."""

    providers: list[ProviderEstimate]
    runs_per_month: int = 0
    month_to_date_micros: int = 0

    @property
    def run_cost_micros(self) -> int:
        return sum(p.answer_cost_micros * p.answers for p in self.providers)

    @property
    def month_cost_micros(self) -> int:
        return self.run_cost_micros * self.runs_per_month


async def estimate_run(
    reader: Reader,
    workspace_id: str,
    providers: Sequence[str],
    prompt_count: int,
    pricing: Pricing,
    now: datetime,
) -> Estimate:
    """The cost of asking `prompt_count` prompts of each of `providers` (see the module)."""
    history = await ledger.answer_costs(
        reader, workspace_id, ledger.months_back(now, HISTORY_MONTHS)
    )
    estimates = []
    for provider in providers:
        answers, cost = history.get(provider, (0, 0))
        if answers:
            per_answer, known = -(-cost // answers), True
        else:
            per_answer = pricing.table.default_answer_cost(provider, pricing.model(provider))
            known = False
        estimates.append(ProviderEstimate(provider, per_answer, prompt_count, known))
    return Estimate(estimates)


def runs_per_month(cron: str, time_zone: str, now: datetime) -> int:
    """How often the schedule fires in the 30 days from `now` (0 for no schedule).

    Counted from the cron's fields day by day (fires per day times matching days), not by
    walking every firing: a `*/15` schedule fires 2,880 times a month. Clock changes are
    ignored (an hour either way in an estimate)."""
    if not cron:
        return 0
    minutes, hours, days, months, weekdays = croniter(cron).expanded
    per_day = _count(minutes, 60) * _count(hours, 24)
    today = now.astimezone(ZoneInfo(time_zone or "UTC")).date()
    return per_day * sum(
        _fires_on(today + timedelta(days=offset), days, months, weekdays)
        for offset in range(MONTH.days)
    )


def _count(values: list[Any], every: int) -> int:
    return every if values == ["*"] else len(values)


def _fires_on(day: date, days: list[Any], months: list[Any], weekdays: list[Any]) -> bool:
    """Cron's day rule: the month must match; with both a day of the month and a day of the
    week restricted, either may match (Vixie cron)."""
    if months != ["*"] and day.month not in months:
        return False
    last = calendar.monthrange(day.year, day.month)[1]
    by_date = days == ["*"] or day.day in days or ("l" in days and day.day == last)
    by_weekday = weekdays == ["*"] or (day.weekday() + 1) % 7 in {
        d % 7 for d in weekdays if isinstance(d, int)
    }
    if days != ["*"] and weekdays != ["*"]:
        return by_date or by_weekday
    return by_date and by_weekday
