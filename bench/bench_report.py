"""Report benchmark: a one-year daily GetVisibilityReport, before and after the rollups.

Three workspaces with 10,000, 100,000 and 1,000,000 answers spread evenly over one year (six
providers, a third mentioning the brand, competitor lists of zero to two names) are generated
directly in PostgreSQL with generate_series, in a fresh database at the revision before the
rollups. "before" times the report as it was (counting every answer of the range: the
tests' report oracle, `scanned_report`, on that schema); then the database is migrated to head, whose
migration backfills the rollups (its time is shown), and "after" times GetVisibilityReport
through a real `beacon serve` (one call at a time, over gRPC), in UTC and in each further
`--zones` time zone (whose days add hourly rollups and, off the hour, quarter-hour ones;
no answers). The "before" scan groups every answer of the year by local day in one
statement (~2.6 s at 1M). Ratios are
against the 10k workspace of the same phase; targets (UTC): p50 <= 50 ms at 1M and
1M/10k <= 2.

  python -m bench.bench_report [--sizes 10000,100000,1000000] [--calls 60]
      [--zones America/New_York,Asia/Kolkata]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from alembic.script import ScriptDirectory
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from beacon.v1 import run_service_pb2 as pb
from beacon.v1 import run_service_pb2_grpc
from bench._common import CLOCK_TICKS, table
from bench._servers import (
    BENCH_SECRET,
    PG_ADMIN_URL,
    REDIS_URL,
    Backend,
    _admin,
    production_backend_available,
    serve,
)
from service.auth.identity import ensure_user
from service.auth.tokens import Claims, mint_dev_token
from service.clock import new_id
from service.config import Settings
from service.db.database import Database
from service.db.migrate import alembic_config, upgrade
from tests.support import report_oracle

START = datetime(2025, 11, 24, tzinfo=UTC)  # a Monday
END = START + timedelta(days=365)
ROLLUP_REVISION = "0004"
# Calls timed per size before the rollups (each counts every answer of the year).
BEFORE_CALLS = {10_000: 20, 100_000: 8, 1_000_000: 4}

SEED_ORGANIZATION = text(
    "INSERT INTO organizations (id, name, slug, create_time, update_time) "
    "VALUES ('org_report', 'Report bench', 'report-bench', :now, :now)"
)
SEED_WORKSPACE = text(
    "INSERT INTO workspaces (id, organization_id, name, slug, domain, brand_aliases, "
    "competitors, enabled_providers, version, create_time, update_time) VALUES (:id, "
    "'org_report', :id, :id, 'acme.com', '[]', "
    """'[{"name": "Rival", "domain": "rival.com"}, {"name": "Other", "domain": ""}]', """
    "'[]', 1, :now, :now)"
)
SEED_MEMBER = text(
    "INSERT INTO organization_members (organization_id, user_id, role, create_time) "
    "VALUES ('org_report', :user_id, 'owner', :now)"
)
SEED_RUN = text(
    "INSERT INTO runs (id, workspace_id, trigger, status, prompt_ids, providers, prompt_count, "
    "create_time, cancel_requested, failure_reason) VALUES (:run_id, :id, 'manual', "
    "'succeeded', '[]', '[]', 0, :start, false, '')"
)
# Answer g of n completes at START + g/n of the year; every eighth probe failed.
SEED_PROBES = text(
    "INSERT INTO probes (id, run_id, workspace_id, prompt_id, prompt_text, provider, status, "
    "attempts, model, text, citations, brand_mentioned, brand_rank, competitors, "
    "brand_citations, citation_count, latency_ms, error, create_time, complete_time) "
    "SELECT :id || '_' || g, :run_id, :id, 'prm_' || g, 'question', "
    "(ARRAY['openai','anthropic','google','perplexity','mistral','cohere'])[1 + g % 6], "
    "CASE WHEN g % 8 = 7 THEN 'failed' ELSE 'succeeded' END, 1, 'model', 'answer', '[]', "
    "g % 3 = 0, CASE WHEN g % 3 = 0 THEN 1 + g % 5 ELSE 0 END, "
    'CAST((ARRAY[\'[]\', \'[{"name": "Rival", "rank": 1}]\', '
    '\'[{"name": "Rival", "rank": 1}, {"name": "Other", "rank": 2}]\', '
    '\'[{"name": "Third", "rank": 2}]\'])[1 + g % 4] AS json), '
    "g % 2, 1 + g % 4, 500, '', :start, "
    "CAST(:start AS timestamptz) + (g * (365.0 * 86400 / :n)) * interval '1 second' "
    "FROM generate_series(0, :n - 1) AS g"
)


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


@dataclass
class Measured:
    """Wall-clock milliseconds per call, and the application's CPU milliseconds per call
    (the server process's, or this process's for the in-process scan; PostgreSQL's own CPU
    is not included)."""

    samples: list[float]
    cpu_ms: float
    rows: int = 0
    answers: int = 0


async def timed(
    call: Callable[[], Awaitable[object]], count: int, cpu_seconds: Callable[[], float]
) -> Measured:
    await call()  # warm-up (plans, caches, connections)
    samples = []
    cpu = cpu_seconds()
    for _ in range(count):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    return Measured(samples, (cpu_seconds() - cpu) * 1000 / count)


def process_cpu(pid: int) -> Callable[[], float]:
    def read() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    return read


async def seed(url: str, sizes: Sequence[int]) -> tuple[str, dict[int, str]]:
    """The workspaces and their answers; returns a token of their owner and the ids."""
    settings = Settings(database_url=url, auth_secret=BENCH_SECRET)
    db = Database(url)
    email = "report-bench@example.com"
    user_id = await ensure_user(
        db,
        Claims(settings.auth_dev_issuer, f"dev|{email}", email, True, "Bench"),
    )
    now = datetime.now(UTC)
    workspaces = {size: new_id("ws") for size in sizes}
    async with db.transaction() as session:
        await session.execute(SEED_ORGANIZATION, {"now": now})
        await session.execute(SEED_MEMBER, {"user_id": user_id, "now": now})
        for size, workspace_id in workspaces.items():
            params = {"id": workspace_id, "run_id": new_id("run"), "now": now, "start": START}
            await session.execute(SEED_WORKSPACE, params)
            await session.execute(SEED_RUN, params)
            await session.execute(SEED_PROBES, {**params, "n": size})
    await vacuum(db)
    await db.dispose()
    return mint_dev_token(settings, email=email, name="Bench", ttl_seconds=3600), workspaces


async def vacuum(db: Database) -> None:
    autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        await conn.exec_driver_sql("VACUUM ANALYZE")


async def vacuum_url(url: str) -> None:
    db = Database(url)
    try:
        await vacuum(db)
    finally:
        await db.dispose()


async def before(url: str, workspaces: dict[int, str]) -> dict[int, Measured]:
    """The report counted from every answer, as before the rollups."""
    db = Database(url)
    results = {}
    try:
        for size, workspace_id in workspaces.items():

            async def call(workspace_id: str = workspace_id) -> object:
                async with db.transaction(write=False) as session:
                    return await report_oracle.scanned_report(
                        session, workspace_id, start=START, end=END, granularity="day"
                    )

            results[size] = await timed(call, BEFORE_CALLS.get(size, 4), time.process_time)
    finally:
        await db.dispose()
    return results


async def after(
    port: int, pid: int, token: str, workspaces: dict[int, str], calls: int, time_zone: str = ""
) -> dict[int, Measured]:
    """GetVisibilityReport through the server, with the rows and answers of each report."""
    results: dict[int, Measured] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        for size, workspace_id in workspaces.items():
            request = pb.GetVisibilityReportRequest(
                workspace_id=workspace_id,
                start_time=stamp(START),
                end_time=stamp(END),
                granularity=pb.GRANULARITY_DAY,
                time_zone=time_zone,
            )

            async def call(request: pb.GetVisibilityReportRequest = request) -> object:
                return await stub.GetVisibilityReport(request, metadata=metadata)

            measured = await timed(call, calls, process_cpu(pid))
            report = await stub.GetVisibilityReport(request, metadata=metadata)
            measured.rows = len(report.rows)
            measured.answers = sum(r.responses for r in report.rows)
            results[size] = measured
    return results


def run(sizes: Sequence[int], calls: int, zones: Sequence[str]) -> list[str]:
    name = f"beacon_bench_report_{uuid.uuid4().hex[:10]}"
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        script = ScriptDirectory.from_config(alembic_config(url))
        previous = script.get_revision(ROLLUP_REVISION)
        assert previous is not None and isinstance(previous.down_revision, str)
        upgrade(url, previous.down_revision)
        began = time.perf_counter()
        token, workspaces = asyncio.run(seed(url, sizes))
        seeded = time.perf_counter() - began
        scans = asyncio.run(before(url, workspaces))
        began = time.perf_counter()
        upgrade(url)  # the migration backfills the rollups from the answers
        migrated = time.perf_counter() - began
        asyncio.run(vacuum_url(url))
        backend = Backend("postgres+redis", url, REDIS_URL)
        env = {"BEACON_RATE_LIMIT_SCALE": "1000000", "BEACON_LOG_LEVEL": "WARNING"}
        with serve(backend, 1, **env) as group:
            pid = group.processes[0].pid
            served = asyncio.run(after(group.port, pid, token, workspaces, calls))
            zoned = {
                zone: asyncio.run(after(group.port, pid, token, workspaces, calls // 2, zone))
                for zone in zones
            }
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    smallest, largest = min(sizes), max(sizes)
    rows = []
    phases = [("before (scan)", scans), ("after (rollups, RPC)", served)]
    phases += [(f"after, {zone}", measured) for zone, measured in zoned.items()]
    for phase, measured in phases:
        base = percentiles(measured[smallest].samples)[0]
        for size in sizes:
            p50, p99 = percentiles(measured[size].samples)
            m = measured[size]
            rows.append((phase, f"{size:,}", len(m.samples), p50, p99, p50 / base, m.cpu_ms))
    headers = ("phase", "answers", "calls", "p50 ms", "p99 ms", f"p50/{smallest:,}", "app CPU ms")
    lines = [
        f"one-year daily report ({START.date()}..{END.date()}), PostgreSQL; answers seeded in "
        f"{seeded:.1f}s, migration with rollup backfill {migrated:.1f}s; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        *table(headers, rows),
    ]
    for size in sizes:
        lines.append(
            f"  {size:,}: {served[size].rows} rows, {served[size].answers:,} answers counted"
        )
    p50 = percentiles(served[largest].samples)[0]
    ratio = p50 / percentiles(served[smallest].samples)[0]
    lines.append(
        f"targets: p50 at {largest:,} = {p50:.1f} ms (<= 50: {'met' if p50 <= 50 else 'MISSED'}),"
        f" {largest:,}/{smallest:,} = {ratio:.2f} (<= 2: {'met' if ratio <= 2 else 'MISSED'})"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--zones", default="America/New_York,Asia/Kolkata")
    args = parser.parse_args()
    if not production_backend_available():
        print("report benchmark: PostgreSQL and Redis are not reachable; skipped")
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    zones = [z for z in args.zones.split(",") if z]
    for line in run(sizes, args.calls, zones):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
