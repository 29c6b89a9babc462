"""Estimates before spending: what one run of a workspace costs, and a month of its schedule.

Each provider's cost per answer is the workspace's average over its last two months of
answers (`ledger.answer_costs`), or the price table's default usage at the configured model's
prices when it has none; a run asks every prompt (each market is a prompt) of every provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from service.config import PROVIDERS, Settings
from service.db.database import Reader
from service.domain.money import ledger
from service.domain.money.prices import PriceTable, price_table
from service.providers import BY_NAME

HISTORY_MONTHS = 2
MONTH = timedelta(days=30)
# A schedule firing more often than this per month is counted up to it (the bound of the count).
MAX_RUNS_PER_MONTH = 31 * 24 * 60


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
        models = {name: str(getattr(settings, f"{name}_model")) for name in PROVIDERS}
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
    """How often the schedule fires in the 30 days from `now` (0 for no schedule)."""
    if not cron:
        return 0
    zone = ZoneInfo(time_zone or "UTC")
    moments = croniter(cron, now.astimezone(zone))
    end = now + MONTH
    fired = 0
    while fired < MAX_RUNS_PER_MONTH:
        following: datetime = moments.get_next(datetime)
        if following > end:
            break
        fired += 1
    return fired
