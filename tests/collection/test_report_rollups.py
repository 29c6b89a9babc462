"""Visibility rollups: a report read from them equals the report counted from every answer.

The property test draws answers (with failed, skipped and pending probes, odd competitor
lists, times on and around midnight) and report ranges (whole days or not), stores the answers
as the worker does (probes and rollups in one transaction, in two batches), and compares
`visibility_report` with the report oracle's `scanned_report` (tests/support/report_oracle.py)
on both backends. The other tests cover the writers:
the worker's result batches (exactly once under duplicate delivery), the migration's backfill,
purges and rebuilds, and the RPC (a report over whole days reads no answers).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, Table, delete, event, func, insert, select, text, update

from beacon.v1 import run_service_pb2 as pb
from service.app import App
from service.clock import new_id, utcnow
from service.db.database import Database
from service.db.migrate import alembic_config, upgrade_async
from service.db.models import (
    CompetitorRollup,
    Probe,
    QuarterHourVisibilityRollup,
    Run,
    VisibilityRollup,
    Workspace,
)
from service.domain.collection import reports, rollups
from service.domain.tenancy.workspace_purge import purge_deleted_workspaces
from tests.support import builders
from tests.support import pipeline as fixtures
from tests.support import report_oracle as oracle
from tests.support.app import NewUser, temporary_database
from tests.support.pipeline import insert_run, make_workspace
from workers.probe_store import MARKET_AND_MONEY_COLUMNS, ProbeResult, ProbeStore

collection_db = fixtures.collection_db

BASE = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
DAY_SECONDS = 86_400
WINDOW_DAYS = 20
PROVIDERS = ("openai", "anthropic", "google")
NAMES = ("Rival", "Other", "Gone", "", "Ünïcode ✓")
CONFIGURED = (("Rival", "rival.com"), ("Other", ""))
RESULT_FIELDS = (
    "brand_mentioned",
    "brand_rank",
    "brand_citations",
    "citation_count",
    "competitors",
)

competitor = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(NAMES), "rank": st.integers(1, 5)}),
    st.just({"rank": 1}),  # no name: never counted
    st.just({"name": 7, "rank": 2}),  # not a string: never counted
)
# Seconds from BASE: often on or one second either side of a midnight.
moment = st.one_of(
    st.integers(-DAY_SECONDS, WINDOW_DAYS * DAY_SECONDS),
    st.builds(
        lambda day, shift: day * DAY_SECONDS + shift,
        st.integers(-1, WINDOW_DAYS),
        st.sampled_from((-1, 0, 1)),
    ),
)
answer = st.fixed_dictionaries(
    {
        "provider": st.sampled_from(PROVIDERS),
        "second": moment,
        "micros": st.sampled_from((0, 1, 999_999)),
        "status": st.sampled_from(("succeeded", "succeeded", "succeeded", "failed", "skipped")),
        "brand_mentioned": st.booleans(),
        "brand_rank": st.integers(0, 6),
        "brand_citations": st.integers(0, 3),
        "citation_count": st.integers(0, 6),
        "competitors": st.lists(competitor, max_size=4),
    }
)
duration = st.one_of(
    st.integers(1, 25 * DAY_SECONDS), st.integers(1, 25).map(lambda d: d * DAY_SECONDS)
)


def at(second: int, micros: int = 0, base: datetime = BASE) -> datetime:
    return base + timedelta(seconds=second, microseconds=micros)


async def store_answers(
    db: Database, workspace_id: str, drawn: Sequence[dict[str, Any]], base: datetime = BASE
) -> None:
    """Probes with their results and, in the same transaction, their rollups (as the worker
    writes them)."""
    run_id = await insert_run(db, workspace_id)
    async with db.transaction() as session:
        probes = [
            Probe(
                id=new_id("rsp"),
                run_id=run_id,
                workspace_id=workspace_id,
                prompt_id=f"prm_{index}",
                prompt_text="question",
                provider=item["provider"],
                status=item["status"],
                create_time=base,
                complete_time=at(item["second"], item["micros"], base),
                brand_mentioned=item["brand_mentioned"],
                brand_rank=item["brand_rank"],
                brand_citations=item["brand_citations"],
                citation_count=item["citation_count"],
                competitors=item["competitors"],
            )
            for index, item in enumerate(drawn)
        ]
        session.add_all(probes)
        await session.flush()
        await rollups.add_answers(
            session, [oracle.answer_of(p) for p in probes if p.status == "succeeded"]
        )


async def both_reports(
    db: Database,
    workspace_id: str,
    start: datetime,
    end: datetime,
    granularity: Any,
    time_zone: str = "UTC",
) -> tuple[list[reports.VisibilityRow], list[reports.VisibilityRow]]:
    async with db.transaction(write=False) as session:
        kwargs: dict[str, Any] = {
            "start": start,
            "end": end,
            "granularity": granularity,
            "time_zone": time_zone,
        }
        return (
            await reports.visibility_report(session, workspace_id, **kwargs),
            await oracle.scanned_report(session, workspace_id, **kwargs),
        )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(answer, max_size=25),
    second=st.lists(answer, max_size=15),
    start=moment,
    length=duration,
    granularity=st.sampled_from(("day", "week")),
)
async def test_reports_from_rollups_equal_reports_from_every_answer(
    collection_db: Database,
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
    start: int,
    length: int,
    granularity: Any,
) -> None:
    workspace_id = await make_workspace(collection_db, competitors=CONFIGURED)
    await store_answers(collection_db, workspace_id, first)
    await store_answers(collection_db, workspace_id, second)  # adds to existing rollup rows
    begin = at(start)
    rolled, scanned = await both_reports(
        collection_db, workspace_id, begin, begin + timedelta(seconds=length), granularity
    )
    assert rolled == scanned
    whole = await both_reports(
        collection_db,
        workspace_id,
        at(-2 * DAY_SECONDS),
        at((WINDOW_DAYS + 2) * DAY_SECONDS),
        granularity,
    )
    assert whole[0] == whole[1]
    assert sum(row.responses for row in whole[0]) == sum(
        1 for item in first + second if item["status"] == "succeeded"
    )


# Each zone with a window of WINDOW_DAYS from its base that holds a clock change (except the
# fixed half- and three-quarter-hour offsets): Santiago skips its midnight, Lord Howe moves
# by 30 minutes, Chatham and St John's are off the hour by 45 and 30 minutes.
ZONES = (
    ("America/New_York", datetime(2026, 3, 2, tzinfo=UTC)),
    ("Europe/Paris", datetime(2026, 10, 19, tzinfo=UTC)),
    ("Asia/Kolkata", BASE),
    ("Asia/Kathmandu", BASE),
    ("Australia/Lord_Howe", datetime(2026, 3, 30, tzinfo=UTC)),
    ("America/Santiago", datetime(2026, 8, 31, tzinfo=UTC)),
    ("Pacific/Chatham", datetime(2026, 3, 30, tzinfo=UTC)),
    ("America/St_Johns", BASE),
)
# Seconds from a zone's base: often on or one second either side of a UTC midnight or of a
# UTC quarter-hour (whole hours among them: the slots of the rollups; local midnights too).
local_moment = st.one_of(
    moment,
    st.builds(
        lambda quarter, shift: quarter * 900 + shift,
        st.integers(-96, WINDOW_DAYS * 96),
        st.sampled_from((-1, 0, 1)),
    ),
)


def expected_tallies(
    drawn: Sequence[dict[str, Any]],
    base: datetime,
    start: datetime,
    end: datetime,
    granularity: Any,
    zone: ZoneInfo,
) -> dict[tuple[datetime, str], tuple[int, int, dict[str, int]]]:
    """Counted here from the drawn answers: (local period start, provider) -> (answers,
    answers mentioning the brand, competitor -> answers naming it)."""
    tallies: dict[tuple[datetime, str], tuple[int, int, dict[str, int]]] = {}
    for item in drawn:
        when = at(item["second"], item["micros"], base)
        if item["status"] != "succeeded" or not start <= when < end:
            continue
        day = when.astimezone(zone).date()
        if granularity == "week":
            day -= timedelta(days=day.weekday())
        key = (reports.local_midnight(day, zone), item["provider"])
        count, mentioned, names = tallies.get(key, (0, 0, {}))
        for name in rollups.competitor_names(item["competitors"]):
            names[name] = names.get(name, 0) + 1
        tallies[key] = (count + 1, mentioned + int(item["brand_mentioned"]), names)
    return tallies


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone=st.sampled_from(ZONES),
    drawn=st.lists(
        st.builds(lambda item, second: {**item, "second": second}, answer, local_moment),
        max_size=25,
    ),
    start=local_moment,
    length=duration,
    granularity=st.sampled_from(("day", "week")),
)
async def test_reports_in_a_time_zone_equal_counting_every_answer_there(
    collection_db: Database,
    zone: tuple[str, datetime],
    drawn: list[dict[str, Any]],
    start: int,
    length: int,
    granularity: Any,
) -> None:
    name, base = zone
    workspace_id = await make_workspace(collection_db, competitors=CONFIGURED)
    await store_answers(collection_db, workspace_id, drawn, base)
    for begin, end in (
        (at(start, base=base), at(start + length, base=base)),
        (at(-2 * DAY_SECONDS, base=base), at((WINDOW_DAYS + 2) * DAY_SECONDS, base=base)),
    ):
        rolled, scanned = await both_reports(
            collection_db, workspace_id, begin, end, granularity, name
        )
        assert rolled == scanned
        assert {
            (row.period_start, row.provider): (
                row.responses,
                round(row.mention_rate * row.responses),
                {c.name: c.mentions for c in row.competitors if c.mentions},
            )
            for row in rolled
        } == expected_tallies(drawn, base, begin, end, granularity, ZoneInfo(name))


async def rollup_rows(db: Database, workspace_id: str) -> tuple[list[Any], list[Any]]:
    async with db.transaction(write=False) as session:
        totals = await session.execute(
            select(
                VisibilityRollup.provider,
                VisibilityRollup.responses,
                VisibilityRollup.brand_mentions,
                VisibilityRollup.rank_sum,
                VisibilityRollup.ranked,
                VisibilityRollup.brand_citations,
                VisibilityRollup.citations,
            )
            .where(VisibilityRollup.workspace_id == workspace_id)
            .order_by(VisibilityRollup.provider)
        )
        names = await session.execute(
            select(CompetitorRollup.provider, CompetitorRollup.name, CompetitorRollup.mentions)
            .where(CompetitorRollup.workspace_id == workspace_id)
            .order_by(CompetitorRollup.provider, CompetitorRollup.name)
        )
        return [tuple(r) for r in totals], [tuple(r) for r in names]


async def test_worker_results_are_rolled_up_once_however_often_they_are_saved(
    collection_db: Database,
) -> None:
    workspace_id = await make_workspace(collection_db, competitors=CONFIGURED)
    run_id = await insert_run(collection_db, workspace_id)
    probes = [(new_id("rsp"), provider) for provider in ("openai", "openai", "anthropic", "google")]
    async with collection_db.transaction() as session:
        session.add_all(
            Probe(
                id=probe_id,
                run_id=run_id,
                workspace_id=workspace_id,
                prompt_id=f"prm_{index}",
                prompt_text="question",
                provider=provider,
                status="pending",
                create_time=utcnow(),
            )
            for index, (probe_id, provider) in enumerate(probes)
        )
    values = {
        "text": "Rival, then Acme.",
        "brand_mentioned": True,
        "brand_rank": 2,
        "competitors": [{"name": "Rival", "rank": 1}, {"name": "Rival", "rank": 3}],
        "brand_citations": 1,
        "citation_count": 3,
    }
    results = [ProbeResult(probe_id, run_id, "succeeded", 1, values) for probe_id, _ in probes[:3]]
    results.append(ProbeResult(probes[3][0], run_id, "failed", 1, {"error": "quota"}))
    # Two workers save every result at the same time (duplicate delivery), then one again.
    workers = [ProbeStore(collection_db), ProbeStore(collection_db)]
    await asyncio.gather(*(store.save(result) for store in workers for result in results))
    await workers[0].save(results[0])

    totals, names = await rollup_rows(collection_db, workspace_id)
    assert totals == [("anthropic", 1, 1, 2, 1, 1, 3), ("openai", 2, 2, 4, 2, 2, 6)]
    assert names == [("anthropic", "Rival", 1), ("openai", "Rival", 2)]
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    rolled, scanned = await both_reports(
        collection_db, workspace_id, today, today + timedelta(days=1), "day"
    )
    assert rolled == scanned
    assert [(r.provider, r.responses) for r in rolled] == [("openai", 2), ("anthropic", 1)]


@pytest.fixture
async def fresh_database(
    backend: str, tmp_path: Path, collection_db: Database
) -> AsyncIterator[Database]:
    """A migrated database of its own (the migration test goes down and up again)."""
    async with temporary_database(
        backend, tmp_path, f"beacon_rollups_{uuid.uuid4().hex[:8]}"
    ) as url:
        db = Database(url)
        yield db
        await db.dispose()


# The probes table of that schema: the columns later revisions added (markets and money,
# 0008) are left out.
OLD_PROBES = Table(
    "probes",
    MetaData(),
    *(
        column._copy()
        for column in Probe.__table__.columns
        if column.name not in MARKET_AND_MONEY_COLUMNS
    ),
)
OLD_RUN = text(
    "INSERT INTO runs (id, workspace_id, trigger, status, prompt_ids, providers, prompt_count,"
    " create_time, cancel_requested, failure_reason)"
    " VALUES (:id, :ws, 'manual', 'queued', '[]', '[]', 0, :now, false, '')"
)


async def test_the_migration_backfills_rollups_from_existing_answers(
    fresh_database: Database,
) -> None:
    db = fresh_database
    workspace_id = await make_workspace(db, competitors=CONFIGURED)
    drawn = [
        {
            "provider": provider,
            "second": day * DAY_SECONDS + hour * 3600,
            "micros": 0,
            "status": status,
            "brand_mentioned": hour % 2 == 0,
            "brand_rank": hour % 3,
            "brand_citations": hour % 2,
            "citation_count": 2,
            "competitors": [{"name": NAMES[hour % len(NAMES)], "rank": 1}, {"name": "Rival"}],
        }
        for day in range(3)
        for hour in (0, 5, 23)
        for provider, status in (("openai", "succeeded"), ("anthropic", "succeeded"))
    ] + [{**_quiet("google"), "status": "failed"}]
    # Around Kolkata's (18:30 UTC) and Kathmandu's (18:15 UTC) midnights: the quarter-hours.
    drawn += [
        {**_quiet("mistral"), "status": "succeeded", "second": 18 * 3600 + minute * 60}
        for minute in (14, 15, 29, 30, 44)
    ]
    config = alembic_config(db.url)
    previous = ScriptDirectory.from_config(config).get_revision("0004").down_revision
    assert isinstance(previous, str)
    await asyncio.to_thread(command.downgrade, config, previous)
    # Answers stored before the rollups existed (the ORM writes only the probes table here;
    # the run row names only the columns of that schema).
    run_id = new_id("run")
    async with db.transaction() as session:
        await session.execute(OLD_RUN, {"id": run_id, "ws": workspace_id, "now": utcnow()})
    async with db.transaction() as session:
        for index, item in enumerate(drawn):
            await session.execute(
                insert(OLD_PROBES).values(
                    id=new_id("rsp"),
                    run_id=run_id,
                    workspace_id=workspace_id,
                    prompt_id=f"prm_{index}",
                    prompt_text="question",
                    provider=item["provider"],
                    status=item["status"],
                    create_time=BASE,
                    complete_time=at(item["second"]),
                    **{k: item[k] for k in RESULT_FIELDS},
                )
            )
    await upgrade_async(db.url)

    totals, names = await rollup_rows(db, workspace_id)
    assert sum(row[1] for row in totals) == 23
    assert names  # competitor mentions were backfilled too
    for granularity in ("day", "week"):
        for zone in ("UTC", "Asia/Kolkata", "Asia/Kathmandu"):
            rolled, scanned = await both_reports(
                db, workspace_id, at(-DAY_SECONDS), at(7 * DAY_SECONDS), granularity, zone
            )
            assert rolled == scanned
            assert sum(r.responses for r in rolled) == 23
    async with db.transaction(write=False) as session:
        quarters = await session.execute(
            select(QuarterHourVisibilityRollup.quarter_hour, QuarterHourVisibilityRollup.responses)
            .where(
                QuarterHourVisibilityRollup.workspace_id == workspace_id,
                QuarterHourVisibilityRollup.provider == "mistral",
            )
            .order_by(QuarterHourVisibilityRollup.quarter_hour)
        )
        assert [tuple(r) for r in quarters] == [
            (BASE + timedelta(hours=18), 1),
            (BASE + timedelta(hours=18, minutes=15), 2),
            (BASE + timedelta(hours=18, minutes=30), 2),
        ]


def _quiet(provider: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "second": 3600,
        "micros": 0,
        "brand_mentioned": False,
        "brand_rank": 0,
        "brand_citations": 0,
        "citation_count": 0,
        "competitors": [],
    }


async def test_purging_a_workspace_deletes_its_rollups(collection_db: Database) -> None:
    workspace_id = await make_workspace(collection_db, competitors=CONFIGURED)
    await store_answers(
        collection_db,
        workspace_id,
        [{**_quiet("openai"), "status": "succeeded", "competitors": [{"name": "Rival"}]}],
    )
    assert await rollup_rows(collection_db, workspace_id) != ([], [])
    async with collection_db.transaction() as session:
        await session.execute(
            update(Workspace).where(Workspace.id == workspace_id).values(delete_time=utcnow())
        )
    assert await purge_deleted_workspaces(collection_db, utcnow() + timedelta(days=31)) >= 1
    assert await rollup_rows(collection_db, workspace_id) == ([], [])


async def test_rebuild_after_deleting_a_run_matches_the_remaining_answers(
    collection_db: Database,
) -> None:
    workspace_id = await make_workspace(collection_db, competitors=CONFIGURED)
    kept = {**_quiet("openai"), "status": "succeeded", "brand_mentioned": True, "brand_rank": 1}
    gone = {**kept, "second": DAY_SECONDS + 60, "competitors": [{"name": "Gone"}]}
    await store_answers(collection_db, workspace_id, [kept])
    await store_answers(collection_db, workspace_id, [gone, kept])
    async with collection_db.transaction() as session:
        doomed = await session.scalar(
            select(Run.id)
            .where(Run.workspace_id == workspace_id)
            .order_by(Run.create_time.desc(), Run.id.desc())
            .limit(1)
        )
        count = await session.scalar(select(func.count()).where(Probe.run_id == doomed))
        assert count == 2
        await session.execute(delete(Run).where(Run.id == doomed))
        await oracle.rebuild(session, workspace_id, [BASE.date(), (BASE + timedelta(1)).date()])
    rolled, scanned = await both_reports(
        collection_db, workspace_id, BASE, BASE + timedelta(days=3), "day"
    )
    assert rolled == scanned
    assert [(r.period_start, r.responses) for r in rolled] == [(BASE, 1)]


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


# Six whole local days (from a local midnight to another) in zones off the whole hour.
LOCAL_DAYS = {
    zone: (BASE - offset, BASE + timedelta(days=6) - offset)
    for zone, offset in (
        ("Asia/Kolkata", timedelta(hours=5, minutes=30)),
        ("Asia/Kathmandu", timedelta(hours=5, minutes=45)),
    )
}


async def test_the_rpc_reads_whole_days_from_rollups_and_partial_days_from_answers(
    app: App, collection: SimpleNamespace, new_user: NewUser
) -> None:
    owner = await new_user()
    tenant = await builders.make_workspace(app, owner.user_id, competitors=["Rival"])
    run_id = await builders.insert_run(app, tenant.workspace_id, create_time=BASE)
    for index in range(12):  # every 9 hours from BASE: several days, partial and whole
        await builders.insert_probe(
            app,
            run_id,
            f"prm_{index}",
            ("openai", "anthropic")[index % 2],
            complete_time=BASE + timedelta(hours=9 * index),
            brand_mentioned=index % 3 != 0,
            brand_rank=index % 4,
            competitors=[{"name": "Rival", "rank": 1}] if index % 2 else [],
            citation_count=2,
            brand_citations=index % 2,
        )
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    async def call(
        start: datetime, end: datetime, granularity: Any, time_zone: str = ""
    ) -> list[pb.VisibilityRow]:
        report = await collection.runs.GetVisibilityReport(
            pb.GetVisibilityReportRequest(
                workspace_id=tenant.workspace_id,
                start_time=stamp(start),
                end_time=stamp(end),
                granularity=granularity,
                time_zone=time_zone,
            ),
            metadata=owner.metadata,
        )
        return list(report.rows)

    engine = app.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        whole = await call(BASE, BASE + timedelta(days=5), pb.GRANULARITY_DAY)
        # Whole local days off the whole hour (+05:30, +05:45) read quarter-hour rollups.
        local = {
            zone: await call(*LOCAL_DAYS[zone], pb.GRANULARITY_DAY, zone) for zone in LOCAL_DAYS
        }
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements and not [s for s in statements if "FROM probes" in s]
    assert sum(row.responses for row in whole) == 12
    for zone, rows in local.items():
        assert sum(row.responses for row in rows) == 12
        async with app.db.transaction(write=False) as session:
            expected = await oracle.scanned_report(
                session,
                tenant.workspace_id,
                start=LOCAL_DAYS[zone][0],
                end=LOCAL_DAYS[zone][1],
                granularity="day",
                time_zone=zone,
            )
        assert [(r.period_start.ToDatetime(tzinfo=UTC), r.responses) for r in rows] == [
            (e.period_start, e.responses) for e in expected
        ]

    start, end = BASE + timedelta(hours=15, minutes=30), BASE + timedelta(days=3, hours=9)
    rows = await call(start, end, pb.GRANULARITY_WEEK)
    async with app.db.transaction(write=False) as session:
        expected = await oracle.scanned_report(
            session, tenant.workspace_id, start=start, end=end, granularity="week"
        )
    assert [(r.period_start.ToDatetime(tzinfo=UTC), r.responses) for r in rows] == [
        (e.period_start, e.responses) for e in expected
    ]
    assert [(r.mention_rate, r.average_rank, r.brand_citation_share) for r in rows] == [
        (e.mention_rate, e.average_rank, e.brand_citation_share) for e in expected
    ]
    assert [[(c.name, c.mentions) for c in r.competitors] for r in rows] == [
        [(c.name, c.mentions) for c in e.competitors] for e in expected
    ]


@pytest.mark.postgres_only  # JIT is PostgreSQL's
async def test_the_rollup_statement_runs_without_jit_and_leaves_the_setting_as_it_was(
    collection_db: Database,
) -> None:
    workspace_id = await make_workspace(collection_db, competitors=CONFIGURED)
    await store_answers(collection_db, workspace_id, [{**_quiet("openai"), "status": "succeeded"}])
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = collection_db.engine.sync_engine
    async with collection_db.transaction(write=False) as session:
        before = await session.scalar(text("SHOW jit"))
        event.listen(engine, "before_cursor_execute", record)
        try:
            rows = await reports.visibility_report(
                session,
                workspace_id,
                start=BASE - timedelta(hours=5, minutes=30),
                end=BASE + timedelta(days=1),
                granularity="day",
                time_zone="Asia/Kolkata",
            )
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert await session.scalar(text("SHOW jit")) == before
    assert sum(r.responses for r in rows) == 1
    summing = next(i for i, s in enumerate(statements) if s.startswith("WITH totals"))
    assert statements[summing - 1] == "SET jit = off"
    assert statements[summing + 1] == "RESET jit"


async def test_answers_on_either_side_of_every_quarter_hour_fall_in_their_local_day(
    collection_db: Database,
) -> None:
    workspace_id = await make_workspace(collection_db, competitors=CONFIGURED)
    drawn = [
        {**_quiet(PROVIDERS[quarter % 3]), "status": "succeeded", "second": quarter * 900 + shift}
        for quarter in range(2 * 96)
        for shift in (-1, 0)
    ]
    await store_answers(collection_db, workspace_id, drawn)
    begin, end = at(-DAY_SECONDS), at(3 * DAY_SECONDS)
    for name in ("Asia/Kathmandu", "Asia/Kolkata", "Pacific/Chatham", "America/St_Johns"):
        rolled, scanned = await both_reports(collection_db, workspace_id, begin, end, "day", name)
        assert rolled == scanned
        assert {(row.period_start, row.provider): row.responses for row in rolled} == {
            key: count
            for key, (count, _, _) in expected_tallies(
                drawn, BASE, begin, end, "day", ZoneInfo(name)
            ).items()
        }
