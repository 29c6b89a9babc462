"""Ticker benchmark: due schedules to enqueued runs, with one and with three tickers.

For 10,000 and 100,000 due schedules (PostgreSQL + Redis, a fresh database each), the time from
the start of the tick until every run is in the broker, with 1 and with 3 ticker processes
racing; runs per slot and run messages are counted (duplicates must be 0). Then the time of one
tick that finds 1,000 due schedules among 10,000 and among 200,000 (median of 5, the two
databases ticked in alternation): the ratio shows that a tick costs what is due, not what exists. The single-ticker 100,000 run is timed by phase.

  python -m bench.bench_ticker [--sizes 10000,100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import dramatiq
import redis
from sqlalchemy import delete, func, select, text, update

from bench._common import redis_namespace, table
from bench._servers import REDIS_URL, Backend, scratch_backend
from service import outbox
from service.broker import broker_of, redis_options, send_messages
from service.config import Settings
from service.db.database import Database
from service.db.models import Run, Schedule
from service.messages import RUN_QUEUE
from workers import ticker

NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
DUE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# Not due at NOW; a due schedule advances past it (to 13:00), which tells them apart.
LATER = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)

SEED_ORGANIZATION = text(
    "INSERT INTO organizations (id, name, slug, create_time, update_time) "
    "VALUES ('org_bench', 'Bench', 'bench', :now, :now)"
)
SEED_WORKSPACES = text(
    "INSERT INTO workspaces (id, organization_id, name, slug, domain, brand_aliases, "
    "competitors, enabled_providers, version, create_time, update_time) "
    "SELECT 'ws_bench_' || g, 'org_bench', 'Bench ' || g, 'bench-' || g, 'acme.com', '[]', "
    "'[]', '[\"openai\"]', 1, :now, :now FROM generate_series(1, :total) AS g"
)
SEED_SCHEDULES = text(
    "INSERT INTO schedules (workspace_id, cron, time_zone, next_run_time, create_time, "
    "update_time) SELECT 'ws_bench_' || g, '0 * * * *', 'UTC', "
    "CASE WHEN g <= :due THEN CAST(:due_time AS timestamptz) ELSE CAST(:later AS timestamptz) "
    "END, :now, :now FROM generate_series(1, :total) AS g"
)


async def seed(url: str, total: int, due: int) -> None:
    db = Database(url)
    try:
        async with db.transaction() as session:
            await session.execute(SEED_ORGANIZATION, {"now": NOW})
            await session.execute(SEED_WORKSPACES, {"now": NOW, "total": total})
            await session.execute(
                SEED_SCHEDULES,
                {"now": NOW, "total": total, "due": due, "due_time": DUE, "later": LATER},
            )
        autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as conn:
            await conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        await db.dispose()


def ticker_settings(backend: Backend, broker_url: str, batch: int) -> Settings:
    return Settings(
        database_url=backend.database_url, broker_url=broker_url, ticker_batch_size=batch
    )


def _ticker_process(
    settings: Settings, start: Any, results: Any
) -> None:  # runs in a child process
    async def main() -> None:
        db = Database(settings.database_url)
        broker = broker_of(settings)
        await db.ping()
        start.wait()
        began = time.perf_counter()
        result = await ticker.tick(db, settings, NOW, broker=broker)
        results.put((result.created, result.dispatched, time.perf_counter() - began))
        await db.dispose()

    asyncio.run(main())


@dataclass(frozen=True)
class Race:
    due: int
    tickers: int
    seconds: float
    runs: int
    duplicate_runs: int
    messages: int
    duplicate_messages: int


def race(backend: Backend, broker_url: str, due: int, tickers: int, batch: int) -> Race:
    """`tickers` processes tick at once over `due` due schedules; seconds until all are done."""
    asyncio.run(seed(backend.database_url, due, due))
    settings = ticker_settings(backend, broker_url, batch)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=_ticker_process, args=(settings, start, results))
        for _ in range(tickers)
    ]
    for process in processes:
        process.start()
    time.sleep(3.0)  # let every process import and connect before the race starts
    began = time.perf_counter()
    start.set()
    finished = [results.get(timeout=600) for _ in processes]
    seconds = time.perf_counter() - began
    for process in processes:
        process.join(timeout=60)
    runs, distinct = asyncio.run(count_runs(backend.database_url))
    messages = sent_run_ids(broker_url)
    assert sum(created for created, _, _ in finished) == runs
    return Race(
        due=due,
        tickers=tickers,
        seconds=seconds,
        runs=runs,
        duplicate_runs=runs - distinct,
        messages=len(messages),
        duplicate_messages=len(messages) - len(set(messages)),
    )


async def count_runs(url: str) -> tuple[int, int]:
    """Runs, and distinct (workspace, slot) pairs among them."""
    db = Database(url)
    try:
        async with db.transaction(write=False) as session:
            runs = await session.scalar(select(func.count()).select_from(Run))
            distinct = await session.scalar(
                select(func.count()).select_from(
                    select(Run.workspace_id, Run.scheduled_time).distinct().subquery()
                )
            )
            unsent = await session.scalar(
                select(func.count()).where(Run.enqueue_time.is_(None)).select_from(Run)
            )
    finally:
        await db.dispose()
    assert unsent == 0, f"{unsent} runs were never sent"
    return int(runs or 0), int(distinct or 0)


def sent_run_ids(broker_url: str) -> list[str]:
    """The run ids of every process_run message waiting in the namespace's queue."""
    namespace = redis_options(broker_url).namespace
    client = redis.Redis.from_url(REDIS_URL)
    try:
        ids: list[str] = []
        for _, data in client.hscan_iter(f"{namespace}:{RUN_QUEUE}.msgs", count=5000):
            ids.append(dramatiq.Message.decode(data).args[0])
        return ids
    finally:
        client.close()


async def tick_time(backend: Backend, broker_url: str, total: int, due: int, batch: int) -> float:
    """Seconds one tick takes over `due` due schedules among `total`."""
    await seed(backend.database_url, total, due)
    return (await ticks(backend, broker_url, due, batch, repeats=1))[0]


async def ticks(
    backend: Backend, broker_url: str, due: int, batch: int, repeats: int
) -> list[float]:
    """Seconds of `repeats` ticks over the seeded database, each firing the same `due`
    schedules again (their runs deleted, their due time put back)."""
    settings = ticker_settings(backend, broker_url, batch)
    db = Database(backend.database_url)
    times: list[float] = []
    try:
        broker = broker_of(settings)
        await db.ping()
        for _ in range(repeats):
            began = time.perf_counter()
            result = await ticker.tick(db, settings, NOW, broker=broker)
            times.append(time.perf_counter() - began)
            assert result.created == due
            async with db.transaction() as session:
                await session.execute(delete(Run))
                await session.execute(
                    update(Schedule).where(Schedule.next_run_time > LATER).values(next_run_time=DUE)
                )
    finally:
        await db.dispose()
    return times


def tick_costs(totals: Sequence[int], due: int, batch: int, rounds: int) -> dict[int, float]:
    """Median tick time over `due` due schedules for each total; the databases are seeded
    first, then ticked in alternation, so that a slower moment of the machine hits all."""
    times: dict[int, list[float]] = defaultdict(list)
    with contextlib.ExitStack() as stack:
        backends = {}
        for total in totals:
            backend = stack.enter_context(scratch_backend())
            backends[total] = (backend, stack.enter_context(redis_namespace()))
            asyncio.run(seed(backend.database_url, total, due))
        for _ in range(rounds):
            for total, (backend, broker_url) in backends.items():
                times[total] += asyncio.run(ticks(backend, broker_url, due, batch, repeats=1))
    return {total: statistics.median(values) for total, values in times.items()}


async def phases(backend: Backend, broker_url: str, due: int, batch: int) -> dict[str, float]:
    """One tick over `due` schedules with its claim and dispatch phases timed."""
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - began

        return wrapper

    def timed_send(*args: Any) -> None:
        began = time.perf_counter()
        send_messages(*args)
        spent["  of which Redis pipeline"] += time.perf_counter() - began

    claim = timed("claim: select, insert runs, advance", ticker.claim_due_schedules)
    sweep = timed("dispatch: stamp, send, commit", outbox.dispatch_pending_runs)
    spent["claim: select, insert runs, advance"] = 0.0
    spent["dispatch: stamp, send, commit"] = 0.0
    spent["  of which Redis pipeline"] = 0.0
    with (
        patch.object(ticker, "claim_due_schedules", claim),
        patch.object(ticker, "dispatch_pending_runs", sweep),
        patch.object(outbox, "send_messages", timed_send),
    ):
        cpu = time.process_time()
        total = await tick_time(backend, broker_url, due, due, batch)
        cpu = time.process_time() - cpu
    # The seeding is in `tick_time` too but runs in PostgreSQL, not in this process.
    return {"tick (wall)": total, **spent, "ticker process CPU (all threads)": cpu}


def main() -> list[str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--batch", type=int, default=Settings().ticker_batch_size)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    races: list[Race] = []
    for due in sizes:
        for tickers in (1, 3):
            with scratch_backend() as backend, redis_namespace() as broker_url:
                if backend.name != "postgres+redis":
                    raise SystemExit("the ticker benchmark needs PostgreSQL and Redis")
                races.append(race(backend, broker_url, due, tickers, args.batch))
    costs = tick_costs((10_000, 200_000), 1000, args.batch, rounds=5)
    with scratch_backend() as backend, redis_namespace() as broker_url:
        spent = asyncio.run(phases(backend, broker_url, max(sizes), args.batch))

    lines = [f"Ticker benchmark (PostgreSQL + Redis; batches of {args.batch} schedules)"]
    lines += table(
        (
            "due",
            "tickers",
            "seconds",
            "runs/s",
            "runs",
            "dup runs",
            "messages",
            "dup messages",
        ),
        [
            (
                r.due,
                r.tickers,
                f"{r.seconds:.2f}",
                f"{r.runs / r.seconds:.0f}",
                r.runs,
                r.duplicate_runs,
                r.messages,
                r.duplicate_messages,
            )
            for r in races
        ],
    )
    lines.append(
        "target: 100,000 due schedules enqueued in <= 5 s, 3 tickers no slower than 1; duplicates 0"
    )
    lines.append("")
    lines += table(
        ("due", "total schedules", "tick seconds (median of 5)"),
        [(1000, total, f"{seconds:.3f}") for total, seconds in costs.items()],
    )
    lines.append(
        f"ratio 200,000 / 10,000 total: {costs[200_000] / costs[10_000]:.2f} (target ~1: a tick "
        "costs what is due)"
    )
    lines.append("")
    lines.append(
        f"where one ticker's time goes ({max(sizes)} due; phases overlap: each batch is sent "
        "while the next is claimed; the rest of the wall time is PostgreSQL and Redis work):"
    )
    lines += table(("phase", "seconds"), [(name, f"{s:.2f}") for name, s in spent.items()])
    return lines


if __name__ == "__main__":
    print("\n".join(main()))
