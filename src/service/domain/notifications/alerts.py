"""Alert rules: checked when a run ends, fired once per movement, stored with their figures.

A rule compares the run that just ended with the trailing N completed (succeeded or partial)
runs before it, over one provider's answers or all of them ("overall"). It is evaluated for a
subject (a provider, "overall", a competitor) only when the run, and the trailing runs
together, have at least `min_sample` answers: one run of a few noisy answers fires nothing.
A subject that fired is remembered on the rule (`firing`) and does not fire again until a run
with enough answers finds its condition false (it recovered).

SPENDING_CAP_REACHED rules are not evaluated here: they fire when a cap stops the workspace's
spending (`spending_alerts`), and their minimum sample does not apply (a cap reached is a
fact about money, not a statistic over noisy answers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.db.models import Alert, AlertRule, Probe, Run
from service.domain import audit
from service.domain.actor import Actor
from service.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from service.domain.inputs import require_id
from service.domain.notifications import events
from service.domain.paging import parse_page

MENTION_RATE_DROP: Final = "mention_rate_drop"
MENTION_RATE_RISE: Final = "mention_rate_rise"
AVERAGE_RANK_WORSENS: Final = "average_rank_worsens"
COMPETITOR_APPEARS: Final = "competitor_appears"
DOMAIN_UNCITED: Final = "domain_uncited"
SPENDING_CAP_REACHED: Final = "spending_cap_reached"
# Kinds judged on the answers of each run that ends.
STATISTIC_KINDS: Final = (
    MENTION_RATE_DROP,
    MENTION_RATE_RISE,
    AVERAGE_RANK_WORSENS,
    COMPETITOR_APPEARS,
    DOMAIN_UNCITED,
)
KINDS: Final = (*STATISTIC_KINDS, SPENDING_CAP_REACHED)
THRESHOLD_KINDS: Final = (MENTION_RATE_DROP, MENTION_RATE_RISE, AVERAGE_RANK_WORSENS)
OVERALL: Final = "overall"
MAX_RULES_PER_WORKSPACE = 20
MAX_TRAILING_RUNS = 50
MAX_MIN_SAMPLE = 10_000
COMPLETED: Final = ("succeeded", "partial")


@dataclass(slots=True)
class Figures:
    """Sums over a set of answers (succeeded probes)."""

    answers: int = 0
    mentions: int = 0
    rank_sum: int = 0
    ranked: int = 0
    brand_citations: int = 0
    competitors: set[str] = field(default_factory=set)

    def add(self, other: Figures) -> None:
        self.answers += other.answers
        self.mentions += other.mentions
        self.rank_sum += other.rank_sum
        self.ranked += other.ranked
        self.brand_citations += other.brand_citations
        self.competitors |= other.competitors

    @property
    def mention_rate(self) -> float:
        """Percent of answers that mention the brand."""
        return round(100.0 * self.mentions / self.answers, 2) if self.answers else 0.0

    @property
    def average_rank(self) -> float | None:
        return round(self.rank_sum / self.ranked, 2) if self.ranked else None


# Run figures by provider.
RunFigures = dict[str, Figures]


async def figures_of_runs(
    session: AsyncSession, run_ids: Sequence[str], *, competitors: bool = False
) -> dict[str, RunFigures]:
    """Each run's answer figures by provider (competitor names only when asked)."""
    found: dict[str, RunFigures] = {run_id: {} for run_id in run_ids}
    if not run_ids:
        return found
    ranked = Probe.brand_rank > 0
    rows = await session.execute(
        select(
            Probe.run_id,
            Probe.provider,
            func.count(),
            func.sum(case((Probe.brand_mentioned.is_(True), 1), else_=0)),
            func.sum(case((ranked, Probe.brand_rank), else_=0)),
            func.sum(case((ranked, 1), else_=0)),
            func.sum(Probe.brand_citations),
        )
        .where(Probe.run_id.in_(run_ids), Probe.status == "succeeded")
        .group_by(Probe.run_id, Probe.provider)
    )
    for run_id, provider, answers, mentions, rank_sum, ranked_count, citations in rows:
        found[run_id][provider] = Figures(
            int(answers),
            int(mentions or 0),
            int(rank_sum or 0),
            int(ranked_count or 0),
            int(citations or 0),
        )
    if competitors:
        names = await session.execute(
            select(Probe.run_id, Probe.provider, Probe.competitors).where(
                Probe.run_id.in_(run_ids), Probe.status == "succeeded"
            )
        )
        for run_id, provider, mentioned in names:
            target = found[run_id].setdefault(provider, Figures())
            target.competitors.update(str(c.get("name", "")) for c in mentioned or ())
    return found


def total(by_provider: RunFigures, provider: str = "") -> Figures:
    """One provider's figures, or all providers' together when `provider` is empty."""
    result = Figures()
    for name, figures in by_provider.items():
        if not provider or name == provider:
            result.add(figures)
    return result


@dataclass(frozen=True, slots=True)
class Finding:
    """One subject of one rule on one run: whether its condition holds, and its figures."""

    subject: str
    holds: bool
    figures: dict[str, Any]


def _findings(
    rule: AlertRule, current: RunFigures, trailing: Sequence[RunFigures]
) -> Iterable[Finding]:
    """The subjects the rule can judge on this run (enough answers on both sides)."""
    minimum = rule.min_sample
    if rule.kind in THRESHOLD_KINDS:
        now, before = total(current, rule.provider), Figures()
        for figures in trailing:
            before.add(total(figures, rule.provider))
        if not trailing or now.answers < minimum or before.answers < minimum:
            return
        base: dict[str, Any] = {
            "sample": now.answers,
            "baseline_sample": before.answers,
            "trailing_runs": len(trailing),
            "threshold": rule.threshold,
        }
        subject = rule.provider or OVERALL
        if rule.kind == AVERAGE_RANK_WORSENS:
            cur, old = now.average_rank, before.average_rank
            if cur is None or old is None:
                return
            change = round(cur - old, 2)
            holds = change >= rule.threshold
        else:
            cur, old = now.mention_rate, before.mention_rate
            change = round(cur - old, 2)
            holds = (-change if rule.kind == MENTION_RATE_DROP else change) >= rule.threshold
        yield Finding(subject, holds, {**base, "current": cur, "baseline": old, "change": change})
        return
    providers = [rule.provider] if rule.provider else sorted(current)
    for provider in providers:
        now = current.get(provider, Figures())
        before = Figures()
        for figures in trailing:
            before.add(figures.get(provider, Figures()))
        if now.answers < minimum or before.answers < minimum:
            continue
        base = {"provider": provider, "sample": now.answers, "baseline_sample": before.answers}
        if rule.kind == DOMAIN_UNCITED:
            yield Finding(
                provider,
                before.brand_citations > 0 and now.brand_citations == 0,
                {**base, "current": now.brand_citations, "baseline": before.brand_citations},
            )
        elif len(trailing) >= rule.trailing_runs:  # COMPETITOR_APPEARS: a full window
            for name in sorted(now.competitors):
                new = name not in before.competitors
                yield Finding(
                    name, new, {**base, "competitor": name, "trailing_runs": len(trailing)}
                )


async def trailing_runs(
    session: AsyncSession, workspace_id: str, run_id: str, before: datetime, count: int
) -> list[str]:
    """The `count` completed runs that ended last before `before`, newest first."""
    return list(
        await session.scalars(
            select(Run.id)
            .where(
                Run.workspace_id == workspace_id,
                Run.id != run_id,
                Run.status.in_(COMPLETED),
                Run.end_time.is_not(None),
                Run.end_time <= before,
            )
            .order_by(Run.end_time.desc(), Run.id.desc())
            .limit(count)
        )
    )


async def evaluate_rules(
    session: AsyncSession, workspace_id: str, run_id: str, now: datetime
) -> list[Alert]:
    """Checks every rule of the workspace against the run that just completed; stores and
    sends (`alert.triggered`) the alerts that fire, and remembers which subjects fire."""
    rules = list(
        await session.scalars(
            select(AlertRule)
            .where(
                AlertRule.workspace_id == workspace_id,
                AlertRule.kind.in_(STATISTIC_KINDS),
            )
            .order_by(AlertRule.create_time, AlertRule.id)
        )
    )
    if not rules:
        return []
    window = max(rule.trailing_runs for rule in rules)
    previous = await trailing_runs(session, workspace_id, run_id, now, window)
    needs_names = any(rule.kind == COMPETITOR_APPEARS for rule in rules)
    figures = await figures_of_runs(session, [run_id, *previous], competitors=needs_names)
    fired: list[Alert] = []
    for rule in rules:
        trailing = [figures[r] for r in previous[: rule.trailing_runs]]
        firing = set(rule.firing)
        for finding in _findings(rule, figures[run_id], trailing):
            if not finding.holds:
                firing.discard(finding.subject)
            elif finding.subject not in firing:
                firing.add(finding.subject)
                fired.append(fire(session, rule, run_id, finding, now))
        if firing != set(rule.firing):
            rule.firing = sorted(firing)
    return fired


def fire(
    session: AsyncSession, rule: AlertRule, run_id: str, finding: Finding, now: datetime
) -> Alert:
    """Stores the rule's alert on the finding (`run_id` may be empty: no run)."""
    alert = Alert(
        id=new_id("alrt"),
        workspace_id=rule.workspace_id,
        alert_rule_id=rule.id,
        kind=rule.kind,
        run_id=run_id,
        subject=finding.subject,
        figures=finding.figures,
        create_time=now,
    )
    session.add(alert)
    return alert


def alert_data(alert: Alert) -> dict[str, Any]:
    """An alert as `alert.triggered` carries it."""
    return {
        "alert_id": alert.id,
        "alert_rule_id": alert.alert_rule_id,
        "workspace_id": alert.workspace_id,
        "kind": alert.kind,
        "run_id": alert.run_id,
        "subject": alert.subject,
        "figures": alert.figures,
        "create_time": events.rfc3339(alert.create_time),
    }


async def create_rule(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    *,
    kind: str,
    provider: str,
    threshold: float,
    trailing_runs: int,
    min_sample: int,
    now: datetime,
) -> AlertRule:
    """Adds a rule (at most 20 per workspace); InvalidArgument naming the field.
    SPENDING_CAP_REACHED ignores provider, threshold, trailing_runs and min_sample (stored
    empty): it fires on a cap reached, not on answers."""
    if kind not in KINDS:
        raise InvalidArgument("alert_rule.kind", "is required")
    if kind == SPENDING_CAP_REACHED:
        provider, trailing_runs, min_sample = "", 0, 0
    if kind in THRESHOLD_KINDS and not 0 < threshold <= 100:
        raise InvalidArgument("alert_rule.threshold", "must be above 0 and at most 100")
    statistic = kind in STATISTIC_KINDS
    if statistic and not 1 <= trailing_runs <= MAX_TRAILING_RUNS:
        raise InvalidArgument("alert_rule.trailing_runs", f"must be 1-{MAX_TRAILING_RUNS}")
    if statistic and not 1 <= min_sample <= MAX_MIN_SAMPLE:
        raise InvalidArgument("alert_rule.min_sample", f"must be 1-{MAX_MIN_SAMPLE}")
    count = await session.scalar(select(func.count()).where(AlertRule.workspace_id == workspace_id))
    if (count or 0) >= MAX_RULES_PER_WORKSPACE:
        raise FailedPrecondition(
            f"the workspace has {MAX_RULES_PER_WORKSPACE} alert rules already",
            reason="ALERT_RULE_LIMIT_REACHED",
        )
    rule = AlertRule(
        id=new_id("alr"),
        workspace_id=workspace_id,
        kind=kind,
        provider=provider,
        threshold=threshold if kind in THRESHOLD_KINDS else 0.0,
        trailing_runs=trailing_runs,
        min_sample=min_sample,
        firing=[],
        create_time=now,
    )
    session.add(rule)
    await audit.record_workspace_change(session, call, workspace_id, target_ids=[rule.id], now=now)
    return rule


async def list_rules(
    session: AsyncSession, workspace_id: str, *, page_size: int = 0, page_token: str = ""
) -> tuple[list[AlertRule], str]:
    """A page of the workspace's rules, oldest first, and the next page's token."""
    page = parse_page(page_size, page_token, scope=f"alert_rules|{workspace_id}")
    rows = list(
        await session.scalars(
            select(AlertRule)
            .where(
                AlertRule.workspace_id == workspace_id,
                page.where(AlertRule.create_time, AlertRule.id),
            )
            .order_by(AlertRule.create_time, AlertRule.id)
            .limit(page.size + 1)
        )
    )
    return rows[: page.size], page.next_token(rows)


async def delete_rule(
    session: AsyncSession, call: Actor, workspace_id: str, rule_id: str, now: datetime
) -> None:
    """Removes a rule; the alerts it fired stay."""
    require_id("alert_rule_id", rule_id)
    rule = await session.get(AlertRule, rule_id)
    if rule is None or rule.workspace_id != workspace_id:
        raise NotFound("alert rule", rule_id)
    await session.delete(rule)
    await audit.record_workspace_change(session, call, workspace_id, target_ids=[rule_id], now=now)


@dataclass(frozen=True, slots=True)
class AlertPage:
    alerts: list[Alert]
    next_page_token: str


async def list_alerts(
    session: AsyncSession, workspace_id: str, *, page_size: int, page_token: str
) -> AlertPage:
    """The workspace's alerts, newest first."""
    page = parse_page(page_size, page_token, scope=f"alerts|{workspace_id}")
    rows = list(
        await session.scalars(
            select(Alert)
            .where(
                Alert.workspace_id == workspace_id,
                page.where(Alert.create_time, Alert.id, descending=True),
            )
            .order_by(Alert.create_time.desc(), Alert.id.desc())
            .limit(page.size + 1)
        )
    )
    return AlertPage(rows[: page.size], page.next_token(rows))
