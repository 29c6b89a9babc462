"""Cron schedules: validation, fire times across daylight-saving changes, the schedule row.

A schedule is a standard 5-field cron expression (minute hour day-of-month month day-of-week,
croniter syntax) evaluated in an IANA time zone. Fire times follow the usual cron conventions
when the clocks change: a wall-clock time skipped by a spring-forward fires at the first
instant after the gap, and a wall-clock time repeated by a fall-back fires once (at its first
occurrence) unless the hour field is a wildcard (`*`, `*/2`), which keeps firing in real time.
"""

from __future__ import annotations

import calendar
import itertools
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, CroniterError, croniter
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.database import send_runs_after_commit
from service.db.models import Run, Schedule, Workspace
from service.domain import audit
from service.domain.actor import Actor
from service.domain.collection import runs
from service.domain.errors import InvalidArgument
from service.domain.money.caps import SpendingCapReached
from service.domain.money.estimates import Pricing
from service.domain.notifications import spending_alerts
from service.domain.tenancy import workspace_views
from service.domain.tenancy.workspace_views import WorkspaceView

DEFAULT_TIME_ZONE = "UTC"
MAX_CRON_LENGTH = 120
# How far ahead daylight-saving changes are examined for fire times squeezed together.
HORIZON = timedelta(days=731)
FIELD_NAMES = "minute hour day-of-month month day-of-week"
MINUTES_PER_DAY = 24 * 60
# Larger than any daylight-saving change in the tz database (they are 30 to 60 minutes).
MAX_CLOCK_CHANGE_MINUTES = 180


@dataclass(frozen=True, slots=True)
class ValidSchedule:
    """A cron expression (whitespace normalized) and time zone that passed every check."""

    cron: str
    time_zone: str


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A workspace's schedule: cron is empty (and next_run_time None) when unscheduled."""

    cron: str
    time_zone: str
    next_run_time: datetime | None


UNSCHEDULED = ScheduleState(cron="", time_zone=DEFAULT_TIME_ZONE, next_run_time=None)


def parse_schedule(
    cron: str,
    time_zone: str = "",
    min_interval: int | timedelta = 15,
    *,
    now: datetime,
) -> ValidSchedule:
    """Validates a cron expression and time zone (empty means UTC).

    `min_interval` (minutes, or a timedelta) is the smallest allowed time between two
    consecutive firings, daylight-saving changes within two years of `now` included.
    Raises InvalidArgument naming `cron` or `time_zone`.
    """
    zone_name = parse_time_zone(time_zone)
    expression = _parse_cron_syntax(cron)
    try:
        next_fire_time(expression, zone_name, now)
    except CroniterBadDateError:
        raise InvalidArgument(
            "cron", "never fires: no date matches its day-of-month, month and day-of-week"
        ) from None
    limit = min_interval if isinstance(min_interval, timedelta) else timedelta(minutes=min_interval)
    if limit > timedelta(0):
        _check_minimum_interval(expression, zone_name, now, limit)
    return ValidSchedule(cron=expression, time_zone=zone_name)


def parse_time_zone(time_zone: str) -> str:
    """The canonical IANA zone name (empty means UTC; case-insensitive).

    Raises InvalidArgument naming `time_zone` for anything else.
    """
    name = _zone_names().get((time_zone.strip() or DEFAULT_TIME_ZONE).lower())
    if name is None:
        raise InvalidArgument("time_zone", "is not an IANA time zone name (e.g. Europe/Paris)")
    return name


def next_fire_time(cron: str, time_zone: str, after: datetime) -> datetime:
    """The first firing of `cron` in `time_zone` strictly after `after` (aware), in UTC.

    Raises CroniterBadDateError for an expression that never fires.
    """
    return next(fire_times(cron, time_zone, after))


def fire_times(cron: str, time_zone: str, after: datetime) -> Iterator[datetime]:
    """The firings of `cron` in `time_zone` strictly after `after` (aware), in UTC, in order."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    return _walk(croniter(cron, after.astimezone(ZoneInfo(time_zone))), cron, after)


def _walk(fires: croniter, cron: str, after: datetime) -> Iterator[datetime]:
    """`fire_times` from a croniter positioned at `after` in the zone."""
    hourly = cron.split()[1].startswith("*")
    while True:
        fire: datetime = fires.get_next(datetime)
        # The second pass through a repeated (fall-back) hour: a fixed hour has already fired.
        if fire.fold and not hourly:
            continue
        result = fire.astimezone(UTC)
        if result > after:
            yield result


# Files of a zoneinfo directory that are no IANA zone: the host's own setting (differs per
# machine), tzdata's placeholder zone "Factory" and the template of POSIX TZ strings.
_NOT_ZONES = frozenset({"localtime", "factory", "posixrules"})


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """IANA zone names by their lowercase spelling."""
    return {
        name.lower(): name
        for name in available_timezones()
        if name.lower() not in _NOT_ZONES and not name.startswith(("posix/", "right/"))
    }


def _parse_cron_syntax(cron: str) -> str:
    if len(cron) > MAX_CRON_LENGTH:
        raise InvalidArgument("cron", f"must be at most {MAX_CRON_LENGTH} characters")
    fields = cron.split()
    if not fields:
        raise InvalidArgument("cron", f"is empty; expected 5 fields ({FIELD_NAMES})")
    if len(fields) != 5:
        hint = "; macros such as @daily are not supported" if fields[0].startswith("@") else ""
        raise InvalidArgument(
            "cron", f"must have 5 fields ({FIELD_NAMES}), got {len(fields)}{hint}"
        )
    expression = " ".join(fields)
    try:
        valid = croniter.is_valid(expression)
        if valid:
            croniter.expand(expression)
    except (CroniterError, ValueError, KeyError, IndexError):
        valid = False
    if not valid:
        raise InvalidArgument("cron", f"{expression!r} is not a valid cron expression")
    return expression


def _times_of_day(expression: str) -> list[int]:
    """Minutes after midnight at which the expression fires on a matching day."""
    expanded = croniter.expand(expression)[0]
    minutes = range(60) if expanded[0] == ["*"] else [int(m) for m in expanded[0]]
    hours = range(24) if expanded[1] == ["*"] else [int(h) for h in expanded[1]]
    return sorted({h * 60 + m for h in hours for m in minutes})


def _check_minimum_interval(
    expression: str, zone_name: str, start: datetime, limit: timedelta
) -> None:
    limit_minutes = limit / timedelta(minutes=1)
    times = _times_of_day(expression)
    # On the wall clock every matching day fires at the same times.
    gaps = [(b - a, a, b) for a, b in itertools.pairwise(times)]
    across_midnight = MINUTES_PER_DAY - times[-1] + times[0]
    if across_midnight < limit_minutes + MAX_CLOCK_CHANGE_MINUTES and _consecutive_days_match(
        expression, start
    ):
        gaps.append((across_midnight, times[-1], times[0]))
    wall_gap, earlier, later = min(gaps, default=(MINUTES_PER_DAY, 0, 0))
    if wall_gap < limit_minutes:
        _refuse(wall_gap, f"{_hhmm(earlier)} and {_hhmm(later)}", limit)
    # A clock change shifts real time by its size: only look closer when that could matter.
    zone = ZoneInfo(zone_name)
    walker: croniter | None = None  # one for every change: building one expands the cron again
    for instant, shift in _clock_changes_from(zone_name, start.date()):
        if wall_gap - shift / timedelta(minutes=1) < limit_minutes:
            walker = walker or croniter(expression, start.astimezone(zone))
            _check_around(walker, expression, zone_name, instant, limit, shift)


def _check_around(
    walker: croniter,
    expression: str,
    zone_name: str,
    instant: datetime,
    limit: timedelta,
    shift: timedelta,
) -> None:
    """Walks the real fire times around one clock change, looking for two closer than the
    limit.

    Two fires the change brings closer than the limit straddle it (or both land just after
    a skipped hour), so both lie within limit + shift of it: only that window is walked.
    Away from the change fires are at least the limit apart, so the walk takes at most
    about 2 * (limit + shift) / limit steps (10 for `*/15` and a one-hour change), whatever
    the expression.
    """
    zone = ZoneInfo(zone_name)
    reach = limit + shift
    walker.set_current((instant - reach).astimezone(zone), force=True)
    fires = _walk(walker, expression, instant - reach)
    previous = next(fires)
    while previous < instant + reach:
        fire = next(fires)
        gap = fire - previous
        if gap < limit:
            first, second = previous.astimezone(zone), fire.astimezone(zone)
            _refuse(
                gap / timedelta(minutes=1),
                f"{first:%Y-%m-%d %H:%M} and {second:%H:%M} {zone_name} (a daylight-saving change)",
                limit,
            )
        previous = fire


def _refuse(gap_minutes: float, where: str, limit: timedelta) -> None:
    raise InvalidArgument(
        "cron",
        f"fires {_minutes(gap_minutes)} apart ({where}); schedules may fire at most once every "
        f"{_minutes(limit / timedelta(minutes=1))}",
    )


def _minutes(count: float) -> str:
    return f"{count:g} minute{'' if count == 1 else 's'}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _consecutive_days_match(expression: str, start: datetime) -> bool:
    """Whether the expression's days include two consecutive calendar days within the
    horizon: one cheap test per calendar day (croniter's own iteration costs a
    fraction of a millisecond per matching day, and days such as Mon, Wed, Fri never end it
    early)."""
    matches = _day_matcher(expression)
    day, end = start.date(), (start + HORIZON).date()
    previous = False
    while day <= end:
        day += timedelta(days=1)
        current = matches(day)
        if previous and current:
            return True
        previous = current
    return False


def _day_matcher(expression: str) -> Callable[[date], bool]:
    """Whether the expression fires on a calendar day, with croniter's semantics: months,
    days of month (`L`: the last), days of week (0 or 7 Sunday; `5#3`: the third Friday,
    `L5`: the last), either of the two day fields when both are restricted."""
    expanded, nth = croniter.expand(expression)
    doms, months, dows = expanded[2], expanded[3], expanded[4]

    def dom_ok(day: date) -> bool:
        return day.day in doms or ("l" in doms and day.day == _month_length(day))

    def dow_ok(day: date) -> bool:
        weekday = (day.weekday() + 1) % 7
        if weekday not in dows and not (weekday == 0 and 7 in dows):
            return False
        wanted = nth.get(weekday)
        if not wanted:
            return True
        return (day.day - 1) // 7 + 1 in wanted or (
            "l" in wanted and day.day + 7 > _month_length(day)
        )

    def matches(day: date) -> bool:
        if months != ["*"] and day.month not in months:
            return False
        if doms == ["*"]:
            return dows == ["*"] or dow_ok(day)
        if dows == ["*"]:
            return dom_ok(day)
        return dom_ok(day) or dow_ok(day)

    return matches


def _month_length(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


@lru_cache(maxsize=1024)
def _clock_changes_from(zone_name: str, day: date) -> tuple[tuple[datetime, timedelta], ...]:
    """The zone's clock changes within the horizon from the (UTC) day's start: the same for
    every schedule validated that day, so worked out once per zone and day."""
    start = datetime.combine(day, time(), UTC)
    return tuple(_clock_changes(ZoneInfo(zone_name), start, start + HORIZON))


def _clock_changes(
    zone: ZoneInfo, start: datetime, end: datetime
) -> list[tuple[datetime, timedelta]]:
    """UTC instants in [start, end) at which the zone's offset changes, with the change's size."""
    changes: list[tuple[datetime, timedelta]] = []
    step = timedelta(days=1)
    low = start
    while low < end:
        high = low + step
        before, after = low.astimezone(zone).utcoffset(), high.astimezone(zone).utcoffset()
        if before != after and before is not None and after is not None:
            left, right = low, high
            while right - left > timedelta(minutes=1):
                middle = left + (right - left) / 2
                if middle.astimezone(zone).utcoffset() == before:
                    left = middle
                else:
                    right = middle
            changes.append((right, abs(after - before)))
        low = high
    return changes


async def get_schedule(session: AsyncSession, workspace_id: str) -> ScheduleState:
    """The workspace's schedule, or UNSCHEDULED."""
    row = await session.get(Schedule, workspace_id)
    if row is None:
        return UNSCHEDULED
    return ScheduleState(cron=row.cron, time_zone=row.time_zone, next_run_time=row.next_run_time)


async def save_schedule(
    session: AsyncSession, workspace_id: str, schedule: ValidSchedule | None, *, now: datetime
) -> ScheduleState:
    """Stores (or, with None, deletes) the workspace's schedule; bumps the workspace's etag.

    The next run time is the first firing after `now`.
    """
    await session.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id)
        .values(version=Workspace.version + 1, update_time=now)
    )
    if schedule is None:
        await session.execute(delete(Schedule).where(Schedule.workspace_id == workspace_id))
        return UNSCHEDULED
    next_run = next_fire_time(schedule.cron, schedule.time_zone, now)
    row = await session.get(Schedule, workspace_id, with_for_update=True)
    if row is None:
        session.add(
            Schedule(
                workspace_id=workspace_id,
                cron=schedule.cron,
                time_zone=schedule.time_zone,
                next_run_time=next_run,
                create_time=now,
                update_time=now,
            )
        )
    else:
        row.cron, row.time_zone = schedule.cron, schedule.time_zone
        row.next_run_time, row.update_time = next_run, now
    await session.flush()
    return ScheduleState(cron=schedule.cron, time_zone=schedule.time_zone, next_run_time=next_run)


@dataclass(frozen=True, slots=True)
class CronTiming:
    """When the schedule fires next and when the workspace's last run was created."""

    next_run_time: datetime | None
    last_prompt_run_time: datetime | None


async def cron_timing(session: AsyncSession, workspace_id: str) -> CronTiming:
    """The workspace's next scheduled run (None when unscheduled) and last run (None if none)."""
    state = await get_schedule(session, workspace_id)
    last = await session.scalar(
        select(func.max(Run.create_time)).where(Run.workspace_id == workspace_id)
    )
    return CronTiming(next_run_time=state.next_run_time, last_prompt_run_time=last)


UNCHANGED_REASON = "the schedule is unchanged"


@dataclass(frozen=True, slots=True)
class ImmediateRun:
    """The run SetSchedule triggers: queued (run_id), empty, failed (reason), not_requested
    (reason set when the schedule was unchanged)."""

    status: Literal["queued", "empty", "failed", "not_requested"]
    run_id: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ScheduleChange:
    """What SetSchedule did: the schedule now, its immediate run and the workspace after it."""

    schedule: ScheduleState
    immediate_run: ImmediateRun
    workspace: WorkspaceView


async def set_schedule(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    *,
    cron: str,
    time_zone: str,
    min_interval_minutes: int,
    configured_providers: Collection[str],
    max_open_runs: int,
    charge_run: Callable[[], Awaitable[None]],
    now: datetime,
    pricing: Pricing | None = None,
) -> ScheduleChange:
    """Sets (or, with an empty cron, clears) the schedule; a changed one starts a run at once,
    sent to the workers once the transaction commits.

    Setting the cron and time zone the workspace already has changes nothing and starts no
    run (not_requested). Before a run is started `charge_run` is awaited: it charges the
    workspace's run budget and raises (ResourceExhausted, Unavailable) to refuse the whole
    call. Raises InvalidArgument (`cron`, `time_zone`) before writing anything. While the
    workspace has `max_open_runs` runs open, the schedule is set and its immediate run is
    FAILED, naming the open run; when it would exceed a spending cap, FAILED with the figures.
    """
    schedule = (
        parse_schedule(cron, time_zone, min_interval_minutes, now=now) if cron.strip() else None
    )
    current = await _current_if_same(session, workspace_id, schedule)
    if current is not None:
        state, immediate = current, ImmediateRun("not_requested", reason=UNCHANGED_REASON)
    elif schedule is None:
        state = await save_schedule(session, workspace_id, None, now=now)
        immediate = ImmediateRun("not_requested")
    else:
        await charge_run()
        state = await save_schedule(session, workspace_id, schedule, now=now)
        immediate = await _immediate_run(
            session, workspace_id, configured_providers, max_open_runs, now, pricing
        )
    await audit.record_workspace_change(
        session, actor, workspace_id, target_ids=[workspace_id, immediate.run_id], now=now
    )
    if immediate.run_id:
        send_runs_after_commit(session, [immediate.run_id])
    return ScheduleChange(state, immediate, await workspace_views.load_view(session, workspace_id))


async def _current_if_same(
    session: AsyncSession, workspace_id: str, schedule: ValidSchedule | None
) -> ScheduleState | None:
    """The workspace's schedule when it has the cron and time zone of `schedule`, else None."""
    if schedule is None:
        return None
    current = await get_schedule(session, workspace_id)
    same = (current.cron, current.time_zone) == (schedule.cron, schedule.time_zone)
    return current if same else None


async def _immediate_run(
    session: AsyncSession,
    workspace_id: str,
    configured_providers: Collection[str],
    max_open_runs: int,
    now: datetime,
    pricing: Pricing | None,
) -> ImmediateRun:
    """Writes the run a changed schedule starts at once (every prompt, every enabled
    provider with credentials), or says why there is none."""
    try:
        outcome = await runs.queue_run(
            session,
            workspace_id=workspace_id,
            trigger="schedule_set",
            configured=configured_providers,
            max_open=max_open_runs,
            now=now,
            pricing=pricing,
        )
    except (runs.RunAlreadyOpen, SpendingCapReached) as error:
        if isinstance(error, SpendingCapReached):  # SetSchedule's transaction commits it
            await spending_alerts.run_refused(
                session,
                workspace_id,
                error,
                trigger=spending_alerts.SCHEDULE_SET,
                run_id="",
                now=now,
            )
        return ImmediateRun("failed", reason=error.message)
    if outcome.run is not None:
        return ImmediateRun("queued", run_id=outcome.run.id)
    if outcome.status == "empty":
        return ImmediateRun("empty")
    missing = ", ".join(p.upper() for p in outcome.providers_without_credentials)
    reason = (
        f"no enabled provider has credentials configured on the server ({missing})"
        if missing
        else "the workspace has no enabled providers"
    )
    return ImmediateRun("failed", reason=reason)
