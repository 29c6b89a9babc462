"""The periodic digest: a `digest` event per workspace, daily or weekly at a local hour.

It summarises the period since the previous digest (at most one period back): runs ended,
answers, mention rate and average rank per provider, and the alerts fired. The ticker sends
the due ones (`send_due_digests`); `next_send_time` advances past now in the same transaction,
so a digest is sent once however many tickers run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Alert, Digest, Probe, Run, Schedule
from service.domain import audit
from service.domain.actor import Actor
from service.domain.errors import InvalidArgument
from service.domain.notifications import events
from service.domain.notifications.alerts import alert_data

OFF: Final = "off"
DAILY: Final = "daily"
WEEKLY: Final = "weekly"
PERIODS: Final = {DAILY: timedelta(days=1), WEEKLY: timedelta(days=7)}
MAX_ALERTS_IN_DIGEST = 100


@dataclass(frozen=True, slots=True)
class DigestState:
    """A workspace's digest; frequency OFF (and next_send_time None) when there is none."""

    frequency: str
    hour: int
    weekday: int
    time_zone: str
    next_send_time: datetime | None


def next_send_time(frequency: str, hour: int, weekday: int, zone: str, after: datetime) -> datetime:
    """The first local `hour`:00 (on ISO `weekday` when weekly) in `zone` after `after`, UTC."""
    local = after.astimezone(ZoneInfo(zone))
    candidate = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if frequency == WEEKLY:
        candidate += timedelta(days=(weekday - candidate.isoweekday()) % 7)
    step = PERIODS[frequency]
    while candidate.astimezone(UTC) <= after:
        candidate += step  # wall-clock arithmetic: the local hour holds across DST changes
    return candidate.astimezone(UTC)


async def get_digest(session: AsyncSession, workspace_id: str) -> DigestState:
    row = await session.get(Digest, workspace_id)
    if row is None:
        return DigestState(OFF, 0, 0, "", None)
    return DigestState(row.frequency, row.hour, row.weekday, row.time_zone, row.next_send_time)


async def set_digest(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    *,
    frequency: str,
    hour: int,
    weekday: int,
    time_zone: str,
    now: datetime,
) -> DigestState:
    """Sets the digest (OFF removes it); InvalidArgument naming the field."""
    if frequency not in (OFF, DAILY, WEEKLY):
        raise InvalidArgument("frequency", "is required")
    row = await session.get(Digest, workspace_id)
    if frequency == OFF:
        if row is not None:
            await session.delete(row)
    else:
        if not 0 <= hour <= 23:
            raise InvalidArgument("hour", "must be 0-23")
        weekday = weekday or 1
        if not 1 <= weekday <= 7:
            raise InvalidArgument("weekday", "must be 1 (Monday) - 7 (Sunday)")
        zone = await _zone(session, workspace_id, time_zone)
        due = next_send_time(frequency, hour, weekday, zone, now)
        if row is None:
            row = Digest(workspace_id=workspace_id)
            session.add(row)
        row.frequency, row.hour, row.weekday, row.time_zone = frequency, hour, weekday, zone
        row.next_send_time = due
    await audit.record_workspace_change(
        session, call, workspace_id, target_ids=[workspace_id], now=now
    )
    return await get_digest(session, workspace_id)


async def _zone(session: AsyncSession, workspace_id: str, time_zone: str) -> str:
    name = time_zone.strip()
    if not name:
        schedule = await session.get(Schedule, workspace_id)
        return schedule.time_zone if schedule is not None else "UTC"
    if len(name) > 64 or name.lower() in ("localtime", "factory", "posixrules"):
        raise InvalidArgument("time_zone", "is not an IANA time zone name (e.g. Europe/Paris)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            "time_zone", "is not an IANA time zone name (e.g. Europe/Paris)"
        ) from None
    return name


async def send_due_digests(session: AsyncSession, now: datetime, limit: int) -> int:
    """Queues the `digest` event of up to `limit` due digests and advances them; how many."""
    due = list(
        await session.scalars(
            select(Digest)
            .where(Digest.next_send_time <= now)
            .order_by(Digest.next_send_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for digest in due:
        period = PERIODS[digest.frequency]
        start = max(digest.last_send_time or now - period, now - period)
        data = await summary(session, digest.workspace_id, start, now)
        data["frequency"] = digest.frequency
        await events.emit(session, digest.workspace_id, events.DIGEST, data, now)
        digest.last_send_time = now
        digest.next_send_time = next_send_time(
            digest.frequency, digest.hour, digest.weekday, digest.time_zone, now
        )
    return len(due)


async def summary(
    session: AsyncSession, workspace_id: str, start: datetime, end: datetime
) -> dict[str, Any]:
    """The period's figures: runs ended by status, answers per provider, alerts fired."""
    runs = dict(
        (
            await session.execute(
                select(Run.status, func.count())
                .where(Run.workspace_id == workspace_id, Run.end_time >= start, Run.end_time < end)
                .group_by(Run.status)
            )
        ).all()
    )
    ranked = Probe.brand_rank > 0
    providers = await session.execute(
        select(
            Probe.provider,
            func.count(),
            func.sum(case((Probe.brand_mentioned.is_(True), 1), else_=0)),
            func.sum(case((ranked, Probe.brand_rank), else_=0)),
            func.sum(case((ranked, 1), else_=0)),
        )
        .where(
            Probe.workspace_id == workspace_id,
            Probe.status == "succeeded",
            Probe.complete_time >= start,
            Probe.complete_time < end,
        )
        .group_by(Probe.provider)
    )
    alerts = (
        await session.scalars(
            select(Alert)
            .where(
                Alert.workspace_id == workspace_id,
                Alert.create_time >= start,
                Alert.create_time < end,
            )
            .order_by(Alert.create_time, Alert.id)
            .limit(MAX_ALERTS_IN_DIGEST)
        )
    ).all()
    return {
        "workspace_id": workspace_id,
        "start_time": events.rfc3339(start),
        "end_time": events.rfc3339(end),
        "runs": {str(status): int(count) for status, count in sorted(runs.items())},
        "providers": {
            provider: {
                "responses": int(answers),
                "mention_rate": round(100.0 * int(mentions or 0) / answers, 2) if answers else None,
                "average_rank": round(int(rank_sum or 0) / ranked_count, 2)
                if ranked_count
                else None,
            }
            for provider, answers, mentions, rank_sum, ranked_count in providers
        },
        "alerts": [alert_data(alert) for alert in alerts],
    }
