"""Webhooks: deliveries a second from one `beacon worker` (with a `beacon ticker` handing it
the due deliveries) to a receiver on 127.0.0.1, and what configured endpoints add to StartRun.

    python -m bench.bench_webhooks [DELIVERIES]

Baselines measured in the same run: the same number of POSTs sent straight to the receiver
by this process (no database, no signing, as many at once as a worker message carries), and
StartRun on a workspace without endpoints or rules. Delivery is off the call path: the
StartRun ratio should be ~1.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import grpc
import httpx
from aiohttp import web
from sqlalchemy import func, select

from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import run_service_pb2_grpc
from bench._common import Process, redis_namespace, table, wait_until, worker_env
from bench._servers import BEACON, BENCH_SECRET, BENCH_SIGNING_SECRET, Backend, scratch_backend
from service.app import App
from service.auth.identity import ensure_user
from service.auth.tokens import Claims, mint_dev_token
from service.clock import utcnow
from service.config import Settings
from service.db.models import WebhookDelivery
from service.domain.actor import Actor
from service.domain.notifications import alerts, events
from service.server import start_server
from tests.support.builders import insert_prompts, make_workspace
from tests.support.webhook_builders import make_endpoint

WEBHOOK_KEY = "beacon-bench-webhook-secret-key-0123456789abcdef"
CONCURRENCY = 20  # deliveries per worker message (service.messages.DELIVERIES_PER_MESSAGE)
STARTS = 60
WARM_UP = 5
Metadata = tuple[tuple[str, str], ...]


async def receiver() -> tuple[web.AppRunner, int]:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{path:.*}", ok)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)


def settings_of(backend: Backend, broker_url: str) -> Settings:
    return Settings.model_validate(
        {
            "database_url": backend.database_url,
            "redis_url": backend.redis_url,
            "broker_url": broker_url,
            "auth_secret": BENCH_SECRET,
            "signing_secret": BENCH_SIGNING_SECRET,
            "webhook_secret_key": WEBHOOK_KEY,
            "openai_api_key": "bench",
            "rate_limit_scale": 10_000.0,
            "rate_limit_key_prefix": f"beacon-bench-{uuid.uuid4().hex[:8]}",
            "metrics_addr": "",
        }
    )


async def direct_rate(url: str, count: int) -> float:
    """POSTs a second straight from this process, CONCURRENCY at a time."""
    body = b'{"type":"ping","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        for start in range(0, count, CONCURRENCY):
            batch = range(start, min(count, start + CONCURRENCY))
            await asyncio.gather(*(client.post(url, content=body) for _ in batch))
        return count / (time.perf_counter() - started)


async def worker_rate(app: App, backend: Backend, broker_url: str, url: str, count: int) -> float:
    """Deliveries a second by one worker (the ticker every 0.1 s), from emit to all done."""
    user_id, _ = await owner(app)
    ws = (await make_workspace(app, user_id)).workspace_id
    await make_endpoint(app, ws, url)
    env = worker_env(
        backend,
        broker_url,
        BEACON_WEBHOOK_SECRET_KEY=WEBHOOK_KEY,
        BEACON_WEBHOOK_ALLOW_HTTP="true",
        BEACON_WEBHOOK_ALLOW_PRIVATE="true",
        BEACON_TICKER_INTERVAL_SECONDS="0.1",
        BEACON_WEBHOOK_BATCH_SIZE="500",
    )
    worker = Process([BEACON, "worker"], env, "worker")
    ticker = Process([BEACON, "ticker"], env, "ticker")
    try:
        # Warm up, off the clock: both processes started (slow on a loaded machine) and the
        # worker's resources built by a first delivery.
        await emit_and_wait(app, ws, 1, worker)
        started = time.perf_counter()
        await emit_and_wait(app, ws, count, worker)
        elapsed = time.perf_counter() - started
        async with app.db.transaction(write=False) as session:
            attempts = await session.scalar(
                select(func.sum(WebhookDelivery.attempts)).where(WebhookDelivery.workspace_id == ws)
            )
        print(f"attempts per delivery: {((attempts or 0) - 1) / count:.2f}", flush=True)
        return count / elapsed
    finally:
        worker.stop()
        ticker.stop()


async def emit_and_wait(app: App, workspace_id: str, count: int, worker: Process) -> None:
    """Emits `count` events to the workspace's endpoint and waits until all are delivered."""
    async with app.db.transaction() as session:
        for n in range(count):
            await events.emit(session, workspace_id, events.RUN_COMPLETED, {"n": n}, utcnow())

    async def done() -> bool:
        worker.check_alive()
        async with app.db.transaction(write=False) as session:
            left = await session.scalar(
                select(func.count()).where(
                    WebhookDelivery.workspace_id == workspace_id,
                    WebhookDelivery.status != "succeeded",
                )
            )
        return left == 0

    await wait_until(done, f"{count} deliveries", seconds=600)


async def owner(app: App) -> tuple[str, str]:
    """A new user: (id, email)."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    claims = Claims(
        issuer=app.settings.auth_dev_issuer,
        subject=f"dev|{email}",
        email=email,
        email_verified=True,
        name="Bench",
    )
    return await ensure_user(app.db, claims), email


async def workspace_with(app: App, endpoints: int) -> tuple[str, Metadata]:
    """A workspace with prompts, `endpoints` endpoints and as many alert rules; its owner's
    call metadata."""
    user_id, email = await owner(app)
    ws = (await make_workspace(app, user_id)).workspace_id
    await insert_prompts(app, ws, [f"best crm {n}?" for n in range(5)])
    actor = Actor(actor_id="bench", user_id=None, service_key_id=None, request_id="bench")
    for n in range(endpoints):
        await make_endpoint(app, ws, f"https://hooks.example.com/{n}")
        async with app.db.transaction() as session:
            await alerts.create_rule(
                session,
                actor,
                ws,
                kind=alerts.MENTION_RATE_DROP,
                provider="",
                threshold=10.0,
                trailing_runs=5,
                min_sample=10,
                now=utcnow(),
            )
    token = mint_dev_token(app.settings, email=email, name="Bench")
    return ws, (("authorization", f"Bearer {token}"),)


async def start_latencies(app: App, endpoints: int) -> dict[int, list[float]]:
    """Seconds of each StartRun (then CancelRun, off the clock) on a workspace without
    endpoints and one with `endpoints` endpoints and rules, taking turns (after a warm-up)."""
    targets = {0: await workspace_with(app, 0), endpoints: await workspace_with(app, endpoints)}
    seconds: dict[int, list[float]] = {0: [], endpoints: []}
    server = await start_server(app, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            runs = run_service_pb2_grpc.RunServiceStub(channel)
            for turn in range(WARM_UP + STARTS):
                for key, (ws, metadata) in targets.items():
                    started = time.perf_counter()
                    reply = await runs.StartRun(
                        run_pb.StartRunRequest(workspace_id=ws), metadata=metadata
                    )
                    if turn >= WARM_UP:
                        seconds[key].append(time.perf_counter() - started)
                    await runs.CancelRun(
                        run_pb.CancelRunRequest(run_id=reply.run.id), metadata=metadata
                    )
    finally:
        await server.stop(grace=1.0)
    return seconds


async def run(count: int, backend: Backend, broker_url: str) -> list[str]:
    lines: list[str] = []
    app = App.from_settings(settings_of(backend, broker_url))
    runner, port = await receiver()
    try:
        url = f"http://127.0.0.1:{port}/hook"
        direct = await direct_rate(url, count)
        delivered = await worker_rate(app, backend, broker_url, url, count)
        lines += [f"backend: {backend.name}; {count} deliveries"]
        lines += table(
            ["path", "per second", "ratio"],
            [
                ["direct POSTs (baseline)", direct, 1.0],
                ["one worker", delivered, delivered / direct],
            ],
        )
        latencies = await start_latencies(app, 10)
        without, with_endpoints = latencies[0], latencies[10]
        base = statistics.median(without)
        lines.append("")
        lines += table(
            ["StartRun", "median ms", "p90 ms", "ratio"],
            [
                ["no endpoints (baseline)", base * 1000, _p90(without) * 1000, 1.0],
                [
                    "10 endpoints, 10 rules",
                    statistics.median(with_endpoints) * 1000,
                    _p90(with_endpoints) * 1000,
                    statistics.median(with_endpoints) / base,
                ],
            ],
        )
    finally:
        await runner.cleanup()
        await app.close()
    return lines


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    # The scratch database is made and dropped outside the event loop (it runs its own).
    with scratch_backend() as backend, redis_namespace() as broker_url:
        for line in asyncio.run(run(count, backend, broker_url)):
            print(line)


if __name__ == "__main__":
    main()
