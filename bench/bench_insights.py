"""Insights benchmark: one-year GetSourcesReport and GetPromptReport through a real server.

Workspaces with 10,000 to 1,000,000 answers spread evenly over one year (six providers, 50
prompts, one to three citations on ~100 sources, competitor lists as in bench_report) are
generated in PostgreSQL with generate_series at the head revision; their insight rollups are
then filled by SQL that sums what `insight_rollups.add_answers` adds per answer (each
answer's sources, prompt sums and competitor mentions per UTC month, day, hour and
quarter-hour),
since the answers are not written through the worker here. The reports are timed through
`beacon serve` (one call at a time, over gRPC) in UTC and in each further `--zones` time
zone. Ratios are against the smallest workspace; targets: p50 <= 50 ms at 1M in every zone,
1M/10k <= 2.

  python -m bench.bench_insights [--sizes 10000,100000,1000000] [--calls 40]
      [--zones America/New_York,Asia/Kolkata]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import Message
from sqlalchemy import text

from beacon.v1 import insights_service_pb2 as pb
from beacon.v1 import insights_service_pb2_grpc
from beacon.v1 import run_service_pb2 as run_pb
from bench._common import table
from bench._servers import (
    BENCH_SECRET,
    PG_ADMIN_URL,
    REDIS_URL,
    Backend,
    _admin,
    production_backend_available,
    serve,
)
from bench.bench_report import (
    END,
    SEED_MEMBER,
    SEED_ORGANIZATION,
    SEED_WORKSPACE,
    START,
    Measured,
    percentiles,
    process_cpu,
    stamp,
    timed,
    vacuum_url,
)
from service.auth.identity import ensure_user
from service.auth.tokens import Claims, mint_dev_token
from service.clock import new_id
from service.config import Settings
from service.db.database import Database
from service.db.migrate import upgrade

PROMPTS = 50
PER_RUN = PROMPTS * 6  # one probe per (prompt, provider) in a run
SEED_RUNS = text(
    "INSERT INTO runs (id, workspace_id, trigger, status, prompt_ids, providers, prompt_count, "
    "create_time, cancel_requested, failure_reason) SELECT :id || '_r' || r, :id, 'manual', "
    "'succeeded', '[]', '[]', 0, :start, false, '' FROM generate_series(0, CAST(:n AS int) / CAST(:per_run AS int)) AS r"
)
# Answer g completes at START + g/n of the year; every eighth failed. Run g / PER_RUN asks
# prompt g % PROMPTS of provider (g / PROMPTS) % 6.
SEED_PROBES = text(
    "INSERT INTO probes (id, run_id, workspace_id, prompt_id, prompt_text, provider, status, "
    "attempts, model, text, citations, brand_mentioned, brand_rank, competitors, "
    "brand_citations, citation_count, latency_ms, error, create_time, complete_time) "
    "SELECT :id || '_' || g, :id || '_r' || (g / CAST(:per_run AS int)), :id, "
    "'prm_' || (g % CAST(:prompts AS int)), "
    "'question ' || (g % CAST(:prompts AS int)), "
    "(ARRAY['openai','anthropic','google','perplexity','mistral','cohere'])"
    "[1 + (g / CAST(:prompts AS int)) % 6], "
    "CASE WHEN g % 8 = 7 THEN 'failed' ELSE 'succeeded' END, 1, 'model', 'answer', "
    "CAST(CASE g % 3 "
    'WHEN 0 THEN \'[{"url": "https://acme.com/p", "domain": "acme.com"}]\' '
    'WHEN 1 THEN \'[{"url": "https://site\' || (g % 97) || \'.com/a", "domain": "site\' '
    '|| (g % 97) || \'.com"}, {"url": "https://rival.com/", "domain": "rival.com"}]\' '
    'ELSE \'[{"url": "https://site\' || (g % 89) || \'.org/b", "domain": "site\' '
    '|| (g % 89) || \'.org"}, {"url": "https://acme.com/q", "domain": "acme.com"}, '
    '{"url": "https://site\' || (g % 7) || \'.net/", "domain": "site\' || (g % 7) '
    "|| '.net\"}]' END AS json), "
    "g % 3 = 0, CASE WHEN g % 3 = 0 THEN 1 + g % 5 ELSE 0 END, "
    'CAST((ARRAY[\'[]\', \'[{"name": "Rival", "rank": 1}]\', '
    '\'[{"name": "Rival", "rank": 1}, {"name": "Other", "rank": 2}]\', '
    '\'[{"name": "Third", "rank": 2}]\'])[1 + g % 4] AS json), '
    "CASE WHEN g % 3 = 1 THEN 0 ELSE 1 END, 1 + g % 3, 500, '', :start, "
    "CAST(:start AS timestamptz) + (g * (365.0 * 86400 / :n)) * interval '1 second' "
    "FROM generate_series(0, :n - 1) AS g"
)
# Each unit's bucket of an answer's complete_time, in UTC.
BUCKETS = {
    "m": "timezone('UTC', date_trunc('month', timezone('UTC', p.complete_time)))",
    "d": "timezone('UTC', date_trunc('day', timezone('UTC', p.complete_time)))",
    "h": "timezone('UTC', date_trunc('hour', timezone('UTC', p.complete_time)))",
    "q": "timezone('UTC', date_trunc('hour', timezone('UTC', p.complete_time)) "
    "+ interval '15 minutes' * floor(extract(minute FROM timezone('UTC', p.complete_time)) / 15))",
}
ANSWERS = "FROM probes AS p WHERE p.workspace_id = :id AND p.status = 'succeeded'"
# The seeded citation domains are registrable domains already: they are their own sources.
FILL = (
    "INSERT INTO source_rollups (workspace_id, unit, bucket, provider, domain, citations, "
    "answers) SELECT p.workspace_id, :unit, {bucket}, p.provider, c.value ->> 'domain', "
    "count(*), count(DISTINCT p.id) FROM probes AS p, json_array_elements(p.citations) AS c "
    "WHERE p.workspace_id = :id AND p.status = 'succeeded' GROUP BY 1, 2, 3, 4, 5",
    "INSERT INTO prompt_rollups (workspace_id, unit, bucket, prompt_id, provider, responses, "
    "brand_mentions, rank_sum, ranked, brand_citations, citations) SELECT p.workspace_id, "
    ":unit, {bucket}, p.prompt_id, p.provider, count(*), "
    "sum(CASE WHEN p.brand_mentioned THEN 1 ELSE 0 END), "
    "sum(CASE WHEN p.brand_mentioned AND p.brand_rank > 0 THEN p.brand_rank ELSE 0 END), "
    "sum(CASE WHEN p.brand_mentioned AND p.brand_rank > 0 THEN 1 ELSE 0 END), "
    "sum(p.brand_citations), sum(p.citation_count) " + ANSWERS + " GROUP BY 1, 2, 3, 4, 5",
    "INSERT INTO prompt_competitor_rollups (workspace_id, unit, bucket, prompt_id, provider, "
    "name, mentions) SELECT p.workspace_id, :unit, {bucket}, p.prompt_id, p.provider, "
    "c.value ->> 'name', count(DISTINCT p.id) FROM probes AS p, "
    "json_array_elements(p.competitors) AS c WHERE p.workspace_id = :id "
    "AND p.status = 'succeeded' GROUP BY 1, 2, 3, 4, 5, 6",
    "INSERT INTO answered_prompts (workspace_id, prompt_id, text) SELECT DISTINCT "
    "p.workspace_id, p.prompt_id, p.prompt_text " + ANSWERS + " ON CONFLICT DO NOTHING",
)


async def seed(url: str, sizes: Sequence[int]) -> tuple[str, dict[int, str]]:
    """The workspaces, their answers and insight rollups; a token of their owner, the ids."""
    settings = Settings(database_url=url, auth_secret=BENCH_SECRET)
    db = Database(url)
    email = "insights-bench@example.com"
    user_id = await ensure_user(
        db, Claims(settings.auth_dev_issuer, f"dev|{email}", email, True, "Bench")
    )
    now = datetime.now(UTC)
    workspaces = {size: new_id("ws") for size in sizes}
    async with db.transaction() as session:
        await session.execute(SEED_ORGANIZATION, {"now": now})
        await session.execute(SEED_MEMBER, {"user_id": user_id, "now": now})
        for size, workspace_id in workspaces.items():
            params = {"id": workspace_id, "now": now, "start": START, "n": size}
            await session.execute(SEED_WORKSPACE, params)
            await session.execute(SEED_RUNS, {**params, "per_run": PER_RUN})
            await session.execute(SEED_PROBES, {**params, "per_run": PER_RUN, "prompts": PROMPTS})
            for statement in FILL:
                for unit, bucket in BUCKETS.items():
                    await session.execute(
                        text(statement.format(bucket=bucket)), {"id": workspace_id, "unit": unit}
                    )
    await db.dispose()
    await vacuum_url(url)
    return mint_dev_token(settings, email=email, name="Bench", ttl_seconds=3600), workspaces


def requests(workspace_id: str, time_zone: str) -> dict[str, Message]:
    span: dict[str, Any] = {"start_time": stamp(START), "end_time": stamp(END)}
    return {
        "sources": pb.GetSourcesReportRequest(workspace_id=workspace_id, **span),
        "prompts, weekly": pb.GetPromptReportRequest(
            workspace_id=workspace_id,
            granularity=run_pb.GRANULARITY_WEEK,
            time_zone=time_zone,
            **span,
        ),
        "prompts, daily": pb.GetPromptReportRequest(
            workspace_id=workspace_id,
            granularity=run_pb.GRANULARITY_DAY,
            time_zone=time_zone,
            **span,
        ),
    }


async def measure(
    port: int, pid: int, token: str, workspaces: dict[int, str], calls: int, time_zone: str
) -> dict[str, dict[int, Measured]]:
    """Each report of each workspace, through the server."""
    results: dict[str, dict[int, Measured]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = insights_service_pb2_grpc.InsightsServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        for size, workspace_id in workspaces.items():
            for name, request in requests(workspace_id, time_zone).items():
                method = (
                    stub.GetSourcesReport
                    if isinstance(request, pb.GetSourcesReportRequest)
                    else stub.GetPromptReport
                )

                async def call(method=method, request=request) -> object:  # type: ignore[no-untyped-def]
                    return await method(request, metadata=metadata)

                results.setdefault(name, {})[size] = await timed(call, calls, process_cpu(pid))
    return results


def run(sizes: Sequence[int], calls: int, zones: Sequence[str]) -> list[str]:
    name = f"beacon_bench_insights_{uuid.uuid4().hex[:10]}"
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(url)
        began = time.perf_counter()
        token, workspaces = asyncio.run(seed(url, sizes))
        seeded = time.perf_counter() - began
        backend = Backend("postgres+redis", url, REDIS_URL)
        env = {"BEACON_RATE_LIMIT_SCALE": "1000000", "BEACON_LOG_LEVEL": "WARNING"}
        with serve(backend, 1, **env) as group:
            pid = group.processes[0].pid
            measured = {
                zone or "UTC": asyncio.run(measure(group.port, pid, token, workspaces, calls, zone))
                for zone in ["", *zones]
            }
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    smallest, largest = min(sizes), max(sizes)
    rows = []
    verdicts = []
    for zone, reports in measured.items():
        for report, by_size in reports.items():
            base = percentiles(by_size[smallest].samples)[0]
            for size in sizes:
                p50, p99 = percentiles(by_size[size].samples)
                rows.append((report, zone, f"{size:,}", p50, p99, p50 / base, by_size[size].cpu_ms))
            top = percentiles(by_size[largest].samples)[0]
            ratio = top / base
            verdicts.append(
                f"  {report}, {zone}: p50 at {largest:,} = {top:.1f} ms "
                f"({'met' if top <= 50 else 'MISSED'}), {largest:,}/{smallest:,} = {ratio:.2f} "
                f"({'met' if ratio <= 2 else 'MISSED'})"
            )
    headers = ("report", "zone", "answers", "p50 ms", "p99 ms", f"p50/{smallest:,}", "app CPU ms")
    return [
        f"one-year insights reports ({START.date()}..{END.date()}), PostgreSQL; answers and "
        f"rollups seeded in {seeded:.1f}s; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs",
        *table(headers, rows),
        "targets (p50 <= 50 ms at the largest size, largest/smallest <= 2):",
        *verdicts,
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--zones", default="America/New_York,Asia/Kolkata")
    args = parser.parse_args()
    if not production_backend_available():
        print("insights benchmark: PostgreSQL and Redis are not reachable; skipped")
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    zones = [z for z in args.zones.split(",") if z]
    for line in run(sizes, args.calls, zones):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
