"""Cron validation and fire times (pure functions: no database, no server)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.collection.schedules import fire_times, next_fire_time, parse_schedule
from service.domain.errors import InvalidArgument

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def refused(cron: str, time_zone: str = "", minutes: int = 15) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        parse_schedule(cron, time_zone, minutes, now=NOW)
    return caught.value


@pytest.mark.parametrize(
    ("cron", "time_zone"),
    [
        ("0 * * * *", ""),
        ("59 23 * * *", "UTC"),
        ("0 0 * * *", "Europe/Paris"),
        ("*/15 * * * *", "UTC"),
        ("0,15,30,45 * * * *", "Europe/Berlin"),
        ("0,30 9-17 * * 1-5", "America/New_York"),
        ("30 2 * * *", "Europe/Berlin"),
        ("0 0 29 2 *", "UTC"),
        ("0 12 1 jan,jul *", "Asia/Tokyo"),
        ("0 8 * * mon", "Australia/Lord_Howe"),
        ("0,59 0,23 * * 1", "UTC"),
    ],
)
def test_allowed_expressions(cron: str, time_zone: str) -> None:
    schedule = parse_schedule(cron, time_zone, 15, now=NOW)
    assert schedule.cron == cron
    assert schedule.time_zone == (time_zone or "UTC")


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("", "expected 5 fields"),
        ("* * * *", "got 4"),
        ("0 0 * * * *", "got 6"),
        ("0 0 * * * 2030", "got 6"),
        ("@daily", "@daily are not supported"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 25 * * *", "not a valid cron expression"),
        ("*/0 * * * *", "not a valid cron expression"),
        ("a b c d e", "not a valid cron expression"),
        ("H * * * *", "not a valid cron expression"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 * * * " + "x" * 200, "at most 120 characters"),
    ],
)
def test_invalid_expressions_name_cron(cron: str, message: str) -> None:
    error = refused(cron)
    assert error.violations[0].field == "cron"
    assert message in error.violations[0].description


@pytest.mark.parametrize(
    ("cron", "gap"),
    [
        ("*/5 * * * *", "5 minutes"),
        ("* * * * *", "1 minute"),
        ("0,10 * * * *", "10 minutes"),
        ("*/14 * * * *", "4 minutes apart (00:56 and 01:00)"),
        ("0,59 0,23 * * *", "1 minute apart (23:59 and 00:00)"),
    ],
)
def test_too_frequent_expressions_are_refused(cron: str, gap: str) -> None:
    error = refused(cron)
    assert error.violations[0].field == "cron"
    assert f"fires {gap}" in error.violations[0].description
    assert "at most once every 15 minutes" in error.violations[0].description


def test_minimum_interval_edges() -> None:
    assert parse_schedule("*/15 * * * *", "", 15, now=NOW).cron == "*/15 * * * *"
    assert "fires 15 minutes apart" in refused("*/15 * * * *", minutes=16).message
    assert parse_schedule("*/5 * * * *", "", 5, now=NOW).cron == "*/5 * * * *"
    assert parse_schedule("* * * * *", "", 0, now=NOW).cron == "* * * * *"
    assert parse_schedule("*/20 * * * *", "", timedelta(minutes=20), now=NOW)
    assert parse_schedule("0 0,12 * * *", "", 720, now=NOW)
    assert "fires 720 minutes apart" in refused("0 0,12 * * *", minutes=721).message
    # 23:50 and 00:05 the next day are 15 minutes apart; 23:50 and 00:04 are 14.
    assert parse_schedule("50,5 23,0 * * *", "", 15, now=NOW)
    assert "fires 14 minutes apart (23:50 and 00:04)" in refused("50,4 23,0 * * *").message


def test_a_clock_change_squeezing_two_firings_is_refused() -> None:
    # 01:50 and 02:50 are an hour apart, but on 28 March 2027 02:50 does not exist in Berlin
    # and fires at 03:00, ten minutes after 01:50.
    error = refused("50 1,2 * * *", "Europe/Berlin")
    assert "fires 10 minutes apart (2027-03-28 01:50 and 03:00 Europe/Berlin" in error.message
    assert parse_schedule("50 1,2 * * *", "UTC", 15, now=NOW)
    assert parse_schedule("45 1,2 * * *", "Europe/Berlin", 15, now=NOW)


@pytest.mark.parametrize("time_zone", ["Mars/Olympus", "UTC+2", "../etc/passwd", "x" * 100])
def test_unknown_time_zones_name_time_zone(time_zone: str) -> None:
    error = refused("0 0 * * *", time_zone)
    assert error.violations[0].field == "time_zone"


def test_time_zone_names_are_canonicalized() -> None:
    assert parse_schedule("0 0 * * *", " europe/paris ", 15, now=NOW).time_zone == "Europe/Paris"
    assert parse_schedule(" 0   0 * *  * ", "", 15, now=NOW).cron == "0 0 * * *"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_next_fire_time_in_utc_and_zones() -> None:
    assert next_fire_time("0 0 * * *", "UTC", utc(2026, 5, 1, 10)) == utc(2026, 5, 2)
    assert next_fire_time("0 0 * * *", "UTC", utc(2026, 5, 2)) == utc(2026, 5, 3)
    # Midnight in Paris (UTC+2 in summer) is 22:00 UTC the day before.
    assert next_fire_time("0 0 * * *", "Europe/Paris", utc(2026, 5, 1, 10)) == utc(2026, 5, 1, 22)
    assert next_fire_time("0 9 * * 1", "America/New_York", utc(2026, 11, 23, 15)) == utc(
        2026, 11, 30, 14
    )
    fire = next_fire_time("*/15 * * * *", "UTC", utc(2026, 5, 1, 10, 7, 30))
    assert fire == utc(2026, 5, 1, 10, 15)
    assert fire.tzinfo is UTC


def test_spring_forward_fires_once_right_after_the_gap() -> None:
    # Europe/Berlin jumps from 02:00 to 03:00 (UTC+1 to UTC+2) on 29 March 2026.
    fires = fire_times("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12))
    assert [next(fires) for _ in range(3)] == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_fall_back_fires_a_fixed_time_once() -> None:
    # Europe/Berlin goes back from 03:00 to 02:00 (UTC+2 to UTC+1) on 25 October 2026:
    # 02:30 happens twice, the schedule fires at the first.
    fires = fire_times("30 2 * * *", "Europe/Berlin", utc(2026, 10, 23, 12))
    assert [next(fires) for _ in range(3)] == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    # Asked from inside the repeated hour, after the first 02:30: the next day.
    assert next_fire_time("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 10)) == utc(
        2026, 10, 26, 1, 30
    )


def test_fall_back_keeps_hourly_schedules_in_real_time() -> None:
    fires = fire_times("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 30))
    assert [next(fires) for _ in range(4)] == [
        utc(2026, 10, 25, 0),  # 02:00 CEST
        utc(2026, 10, 25, 1),  # 02:00 CET
        utc(2026, 10, 25, 2),  # 03:00 CET
        utc(2026, 10, 25, 3),
    ]


def test_next_fire_time_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire_time("0 0 * * *", "UTC", datetime(2026, 1, 1))


def test_a_year_of_firings_advances_strictly() -> None:
    fires = fire_times("0 3 * * *", "America/New_York", utc(2026, 1, 1))
    times = [next(fires) for _ in range(365)]
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps == {timedelta(hours=23), timedelta(hours=24), timedelta(hours=25)}


CRON_FIELD = st.one_of(
    st.text(alphabet="0123456789*/-,LW#?H janmonFEBsun", max_size=12),
    st.text(max_size=6),
    st.integers(-(10**30), 10**30).map(str),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(CRON_FIELD, max_size=7).map(" ".join), st.text(max_size=12))
def test_hostile_input_is_refused_as_invalid_argument_only(cron: str, time_zone: str) -> None:
    try:
        schedule = parse_schedule(cron, time_zone, 15, now=NOW)
    except InvalidArgument as error:
        assert error.violations[0].field in ("cron", "time_zone")
    else:
        first, second = itertools.islice(fire_times(schedule.cron, schedule.time_zone, NOW), 2)
        assert second - first >= timedelta(minutes=15)
