"""Visibility report aggregation over hand-inserted probes (exact numbers, both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.app import App
from service.domain.collection import reports
from service.domain.errors import InvalidArgument
from tests.support.app import NewUser
from tests.support.builders import insert_probe, insert_run, make_workspace

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
END = START + timedelta(days=7)


def at(days: float, hours: float = 10) -> datetime:
    return START + timedelta(days=days, hours=hours)


def mentions(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "rank": rank} for rank, name in enumerate(names, start=1)]


@pytest.fixture
async def workspace_with_answers(app: App, new_user: NewUser) -> str:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id, competitors=["Rival", "Other"])
    run_id = await insert_run(app, tenant.workspace_id, create_time=START - timedelta(days=2))

    async def answer(provider: str, when: datetime, **fields: Any) -> None:
        await insert_probe(
            app, run_id, f"prm_{when.timestamp()}", provider, complete_time=when, **fields
        )

    # Monday, OpenAI: three answers, two mention the brand (ranks 1 and 2).
    await answer(
        "openai",
        at(0, 1),
        brand_mentioned=True,
        brand_rank=1,
        competitors=mentions("Acme", "Rival")[1:],
        brand_citations=1,
        citation_count=2,
    )
    await answer(
        "openai",
        at(0, 2),
        brand_mentioned=True,
        brand_rank=2,
        competitors=[{"name": "Rival", "rank": 1}, {"name": "Other", "rank": 3}],
        citation_count=3,
    )
    await answer("openai", at(0, 3), competitors=[{"name": "Rival", "rank": 1}])
    # Not answers: they never count.
    await answer("openai", at(0, 4), status="failed", error="quota", brand_mentioned=True)
    await answer("openai", at(0, 5), status="skipped", brand_mentioned=True)
    # Monday, Anthropic: one answer without the brand.
    await answer("anthropic", at(0, 6))
    # Wednesday, OpenAI: the brand first, a competitor no longer configured second.
    await answer(
        "openai", at(2), brand_mentioned=True, brand_rank=1, competitors=mentions("x", "Gone")[1:]
    )
    # Sunday 23:59:59 is still in the week; Monday 00:00 of the next week is not in range.
    await answer("anthropic", END - timedelta(seconds=1), brand_mentioned=True, brand_rank=1)
    await answer("anthropic", END, brand_mentioned=True, brand_rank=1)
    await answer("anthropic", START - timedelta(seconds=1), brand_mentioned=True, brand_rank=1)
    return tenant.workspace_id


def shares(row: reports.VisibilityRow) -> dict[str, tuple[int, float]]:
    return {c.name: (c.mentions, round(c.brand_share_of_voice, 6)) for c in row.competitors}


async def report(app: App, workspace_id: str, granularity: reports.Granularity) -> list[Any]:
    async with app.db.transaction(write=False) as session:
        return await reports.visibility_report(
            session, workspace_id, start=START, end=END, granularity=granularity
        )


async def test_daily_rows(app: App, workspace_with_answers: str) -> None:
    rows = await report(app, workspace_with_answers, "day")
    assert [(r.period_start, r.provider) for r in rows] == [
        (START, "openai"),
        (START, "anthropic"),
        (START + timedelta(days=2), "openai"),
        (START + timedelta(days=6), "anthropic"),
    ]
    monday = rows[0]
    assert monday.responses == 3
    assert monday.mention_rate == pytest.approx(2 / 3)
    assert monday.average_rank == pytest.approx(1.5)
    assert monday.brand_citation_share == pytest.approx(1 / 5)
    assert shares(monday) == {"Rival": (3, 0.4), "Other": (1, round(2 / 3, 6))}
    quiet = rows[1]
    assert (quiet.responses, quiet.mention_rate, quiet.average_rank) == (1, 0.0, 0.0)
    assert quiet.brand_citation_share == 0.0
    assert shares(quiet) == {"Rival": (0, 0.0), "Other": (0, 0.0)}
    wednesday = rows[2]
    assert [c.name for c in wednesday.competitors] == ["Rival", "Other", "Gone"]
    assert shares(wednesday) == {"Rival": (0, 1.0), "Other": (0, 1.0), "Gone": (1, 0.5)}
    assert rows[3].period_start.tzinfo is not None


async def test_weekly_rows(app: App, workspace_with_answers: str) -> None:
    rows = await report(app, workspace_with_answers, "week")
    assert [(r.period_start, r.provider) for r in rows] == [(START, "openai"), (START, "anthropic")]
    openai, anthropic = rows
    assert openai.responses == 4
    assert openai.mention_rate == pytest.approx(0.75)
    assert openai.average_rank == pytest.approx(4 / 3)
    assert openai.brand_citation_share == pytest.approx(0.2)
    assert shares(openai) == {"Rival": (3, 0.5), "Other": (1, 0.75), "Gone": (1, 0.75)}
    assert (anthropic.responses, anthropic.mention_rate, anthropic.average_rank) == (2, 0.5, 1.0)


async def test_weeks_start_on_monday(app: App, new_user: NewUser) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    run_id = await insert_run(app, tenant.workspace_id)
    sunday = datetime(2026, 3, 1, 12, tzinfo=UTC)
    await insert_probe(app, run_id, "prm_a", "openai", complete_time=sunday)
    await insert_probe(app, run_id, "prm_b", "openai", complete_time=sunday + timedelta(days=1))
    async with app.db.transaction(write=False) as session:
        rows = await reports.visibility_report(
            session,
            tenant.workspace_id,
            start=sunday - timedelta(days=1),
            end=sunday + timedelta(days=2),
            granularity="week",
        )
    assert [r.period_start for r in rows] == [datetime(2026, 2, 23, tzinfo=UTC), START]


@pytest.mark.parametrize(
    ("start", "end", "granularity", "field", "message"),
    [
        (None, END, "day", "start_time", "is required"),
        (START, None, "day", "end_time", "is required"),
        (START, START, "day", "end_time", "must be after start_time"),
        (END, START, "week", "end_time", "must be after start_time"),
        (START, START + timedelta(days=366, seconds=1), "day", "end_time", "at most 366 days"),
        (START, END, "", "granularity", "DAY or WEEK"),
        (START, END, "month", "granularity", "DAY or WEEK"),
    ],
)
def test_range_validation(
    start: datetime | None, end: datetime | None, granularity: str, field: str, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        reports.validate_range(start, end, granularity)
    assert caught.value.violations[0].field == field
    assert message in caught.value.violations[0].description


def test_a_range_of_exactly_366_days_is_allowed() -> None:
    assert reports.validate_range(START, START + timedelta(days=366), "week")[2] == "week"
