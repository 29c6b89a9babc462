"""Insight rollups: every insight rollup read over any range and periods equals counting the
answers themselves.

The property test draws answers (failed and skipped ones among them, citations on hosts
grouped under one registrable domain, on a public suffix and on Unicode domains, competitor
lists, times on and around UTC midnights and quarter-hours in zones off the hour), stores
them as the worker does (probes and rollups in one transaction, in two batches), and compares
`insight_rollups.read` for each rollup with a scan that places each answer in its local
period and adds what `Rollup.contributions` says it adds, on both backends.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from service.clock import new_id, utcnow
from service.db.database import Database
from service.db.models import Probe, SuggestionDecision, Workspace
from service.db.sql_dialects import table_of
from service.domain.collection import insight_rollups, reports
from service.domain.tenancy.workspace_purge import purge_deleted_workspaces
from tests.support import pipeline as fixtures
from tests.support.pipeline import insert_run, make_workspace

collection_db = fixtures.collection_db

DAY_SECONDS = 86_400
WINDOW_DAYS = 10
PROVIDERS = ("openai", "anthropic")
PROMPTS = ("prm_a", "prm_b", "prm_c")
HOSTS = (
    "acme.co.uk",
    "blog.acme.co.uk",
    "shop.globex.com",
    "news.example.org",
    "github.io",
    "bücher.de",
    "",
)
ZONES = (
    ("UTC", datetime(2026, 3, 2, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 3, 2, tzinfo=UTC)),
    ("Asia/Kolkata", datetime(2026, 3, 2, tzinfo=UTC)),
    ("Pacific/Chatham", datetime(2026, 3, 30, tzinfo=UTC)),
)

citation = st.builds(
    lambda host, path: {"url": f"https://{host}/{path}", "title": "", "domain": host},
    st.sampled_from(HOSTS),
    st.sampled_from(("", "a", "b?x=1")),
)
moment = st.one_of(
    st.integers(-DAY_SECONDS, WINDOW_DAYS * DAY_SECONDS),
    st.builds(
        lambda slot, offset: slot * 900 + offset,
        st.integers(-96, WINDOW_DAYS * 96),
        st.sampled_from((-1, 0, 1)),
    ),
)
answer = st.fixed_dictionaries(
    {
        "provider": st.sampled_from(PROVIDERS),
        "prompt_id": st.sampled_from(PROMPTS),
        "second": moment,
        "status": st.sampled_from(("succeeded", "succeeded", "succeeded", "failed")),
        "brand_mentioned": st.booleans(),
        "brand_rank": st.integers(0, 4),
        "brand_citations": st.integers(0, 3),
        "citations": st.lists(citation, max_size=4),
        "competitors": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(("Globex", "Initech")), "rank": st.integers(1, 3)}
            ),
            max_size=2,
        ),
        "text": st.sampled_from(("", "1. **Initech** - good\n2. Hooli: fine", "| Zoho | 1 |")),
    }
)
duration = st.one_of(
    st.integers(1, 12 * DAY_SECONDS), st.integers(1, 12).map(lambda d: d * DAY_SECONDS)
)


async def store_answers(
    db: Database, workspace_id: str, drawn: Sequence[dict[str, Any]], base: datetime
) -> None:
    """Probes with their results and, in the same transaction, their rollups (a run asks a
    prompt of a provider once: answers to the same pair go to runs of their own)."""
    runs: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    placed = []
    for item in drawn:
        key = (item["prompt_id"], item["provider"])
        seen[key] = seen.get(key, -1) + 1
        if seen[key] == len(runs):
            runs.append(await insert_run(db, workspace_id))
        placed.append((runs[seen[key]], item))
    async with db.transaction() as session:
        probes = [
            Probe(
                id=new_id("rsp"),
                run_id=run_id,
                workspace_id=workspace_id,
                prompt_id=item["prompt_id"],
                prompt_text=f"text of {item['prompt_id']}",
                provider=item["provider"],
                status=item["status"],
                create_time=base,
                complete_time=base + timedelta(seconds=item["second"]),
                text=item["text"],
                citations=item["citations"],
                citation_count=len(item["citations"]),
                brand_mentioned=item["brand_mentioned"],
                brand_rank=item["brand_rank"],
                brand_citations=item["brand_citations"],
                competitors=item["competitors"],
            )
            for run_id, item in placed
        ]
        session.add_all(probes)
        await session.flush()
        await insight_rollups.add_answers(
            session,
            [insight_rollups.stored_answer(p) for p in probes if p.status == "succeeded"],
        )


async def scanned(
    db: Database, workspace_id: str, rollup: insight_rollups.Rollup, bounds: list[datetime]
) -> insight_rollups.Sums:
    """The rollup's sums per (period, keys), counted from every answer between the bounds."""
    found: insight_rollups.Sums = {}
    async with db.transaction(write=False) as session:
        probes = (
            await session.execute(
                select(Probe).where(Probe.workspace_id == workspace_id, Probe.status == "succeeded")
            )
        ).scalars()
        for probe in probes:
            assert probe.complete_time is not None
            if not bounds[0] <= probe.complete_time < bounds[-1]:
                continue
            i = bisect.bisect_right(bounds, probe.complete_time) - 1
            for keys, sums, _ in rollup.contributions(insight_rollups.stored_answer(probe)):
                total = found.setdefault((i, *keys), [0] * len(sums))
                for index, value in enumerate(sums):
                    total[index] += value
    return {key: sums for key, sums in found.items() if any(sums)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone=st.sampled_from(ZONES),
    first=st.lists(answer, max_size=15),
    second=st.lists(answer, max_size=10),
    start=moment,
    length=duration,
    granularity=st.sampled_from(("day", "week")),
)
async def test_insight_rollups_equal_counting_every_answer(
    collection_db: Database,
    zone: tuple[str, datetime],
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
    start: int,
    length: int,
    granularity: Any,
) -> None:
    name, base = zone
    workspace_id = await make_workspace(collection_db)
    await store_answers(collection_db, workspace_id, first, base)
    await store_answers(collection_db, workspace_id, second, base)  # adds to existing rows
    begin = base + timedelta(seconds=start)
    for lo, hi in (
        (begin, begin + timedelta(seconds=length)),
        (base - timedelta(days=2), base + timedelta(days=WINDOW_DAYS + 2)),
    ):
        bounds, _ = reports.periods(lo, hi, granularity, ZoneInfo(name))
        for rollup in insight_rollups.ROLLUPS:
            async with collection_db.transaction(write=False) as session:
                rolled = await insight_rollups.read(
                    session, rollup, workspace_id, reports.plan(bounds)
                )
            assert rolled == await scanned(collection_db, workspace_id, rollup, bounds), (
                rollup.table.name
            )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drawn=st.lists(
        st.builds(
            lambda item, day, second: {**item, "second": day * DAY_SECONDS + second},
            answer,
            st.integers(-5, 130),
            st.sampled_from((0, 1, DAY_SECONDS - 1)),
        ),
        max_size=12,
    ),
    start=st.integers(-3, 3),
    days=st.integers(28, 62),
    zone=st.sampled_from(ZONES),
)
async def test_ranges_holding_whole_months_read_month_rollups_equal_to_the_answers(
    collection_db: Database,
    drawn: list[dict[str, Any]],
    start: int,
    days: int,
    zone: tuple[str, datetime],
) -> None:
    """Two periods of 28 to 62 days from about March 1st (the bases are Mar 2 and Mar 30):
    their whole UTC months (March, April, May) are read from the month buckets."""
    name, base = zone
    workspace_id = await make_workspace(collection_db)
    await store_answers(collection_db, workspace_id, drawn, base)
    lo = base + timedelta(days=start)
    bounds = [lo, lo + timedelta(days=days), lo + timedelta(days=2 * days)]
    for rollup in insight_rollups.ROLLUPS:
        async with collection_db.transaction(write=False) as session:
            rolled = await insight_rollups.read(session, rollup, workspace_id, reports.plan(bounds))
        assert rolled == await scanned(collection_db, workspace_id, rollup, bounds), (
            rollup.table.name,
            name,
        )


async def test_a_filtered_read_counts_only_the_given_keys(collection_db: Database) -> None:
    base = datetime(2026, 3, 2, tzinfo=UTC)
    workspace_id = await make_workspace(collection_db)
    drawn = [
        {
            "provider": provider,
            "prompt_id": prompt_id,
            "second": 3600 * hour + 7,  # off the quarter-hour: answers are read too
            "status": "succeeded",
            "brand_mentioned": True,
            "brand_rank": 1,
            "brand_citations": 0,
            "citations": [],
            "competitors": [],
            "text": "",
        }
        for provider in PROVIDERS
        for prompt_id in PROMPTS
        for hour in (1, 30)
    ]
    await store_answers(collection_db, workspace_id, drawn, base)
    bounds = [base + timedelta(seconds=7), base + timedelta(days=2)]
    async with collection_db.transaction(write=False) as session:
        rolled = await insight_rollups.read(
            session,
            insight_rollups.PROMPTS,
            workspace_id,
            reports.plan(bounds),
            {"prompt_id": ["prm_a"], "provider": ["openai"]},
        )
    assert rolled == {(0, "prm_a", "openai"): [2, 2, 2, 2, 0, 0]}


INSIGHT_TABLES = (
    *(rollup.table for rollup in insight_rollups.ROLLUPS),
    insight_rollups.ANSWERED_PROMPTS,
    insight_rollups.EVIDENCE,
    table_of(SuggestionDecision),
)


async def insight_rows(db: Database, workspace_id: str) -> dict[str, int]:
    async with db.transaction(write=False) as session:
        return {
            table.name: int(
                await session.scalar(
                    select(func.count())
                    .select_from(table)
                    .where(table.c.workspace_id == workspace_id)
                )
                or 0
            )
            for table in INSIGHT_TABLES
        }


async def test_purging_a_workspace_deletes_its_insight_rows(collection_db: Database) -> None:
    base = datetime(2026, 3, 2, tzinfo=UTC)
    workspace_id = await make_workspace(collection_db)
    cited = {
        "provider": "openai",
        "prompt_id": "prm_a",
        "second": 60,
        "status": "succeeded",
        "brand_mentioned": False,
        "brand_rank": 0,
        "brand_citations": 0,
        "citations": [
            {"url": "https://news.example.org/a", "title": "", "domain": "news.example.org"}
        ],
        "competitors": [{"name": "Globex", "rank": 1}],
        "text": "1. **Initech** - good",
    }
    await store_answers(collection_db, workspace_id, [cited], base)
    async with collection_db.transaction() as session:
        session.add(
            SuggestionDecision(
                workspace_id=workspace_id,
                kind="domain",
                key="example.org",
                decision="dismissed",
                decide_time=base,
            )
        )
    assert 0 not in (await insight_rows(collection_db, workspace_id)).values()
    async with collection_db.transaction() as session:
        await session.execute(
            update(Workspace).where(Workspace.id == workspace_id).values(delete_time=utcnow())
        )
    assert await purge_deleted_workspaces(collection_db, utcnow() + timedelta(days=31)) >= 1
    assert set((await insight_rows(collection_db, workspace_id)).values()) == {0}
