"""Worker benchmark: probes per second from one `beacon worker` process against slow providers.

The fake providers (their own process) answer after 200 ms, so `concurrency` probes in flight
allow at most concurrency / 0.2 probes per second: the table compares the measured rate with
that bound, and reports the worker's CPU time per probe. One run of 5,000 probes per level
(1,250 prompts x 4 providers), on PostgreSQL with each broker: Redis, and RabbitMQ (confirmed
deliveries, its default) where it answers. With py-spy installed, an extra run at concurrency
100 on the first broker is profiled and its CPU samples split by component.

Then one worker holds thousands of calls in flight: concurrency 2,000 against fake providers
answering after 5 s (their own process again), so the bound is 2,000 / 5 = 400 probes/s. The
table gives the overall rate (run start to end, including the ramp-up and the last wave) and
the steady rate (completions after the first wave, over the time from the first completion to
the last), the most calls the fake saw in flight at once, and the worker's resident memory.

  python -m bench.bench_workers [--probes N] [--levels 25,50,100,200] [--brokers redis,rabbitmq]
                                [--in-flight 2000] [--in-flight-latency 5] [--in-flight-probes N]
                                [--only levels|in-flight]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dramatiq
import httpx
from sqlalchemy import func, insert, select

from bench._common import (
    Process,
    available_brokers,
    broker_namespace,
    fake_providers,
    profile_shares,
    provider_env,
    py_spy,
    redis_namespace,
    table,
    wait_until,
    worker_env,
)
from bench._servers import BEACON, Backend, scratch_backend
from service.broker import broker_of
from service.clock import new_id, utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Organization, Probe, Prompt, Run, Workspace
from service.outbox import dispatch_pending_runs

LATENCY = 0.2
PROVIDERS = ("openai", "anthropic", "mistral", "cohere")
PROFILED_LEVEL = 100
IN_FLIGHT = 2000
IN_FLIGHT_LATENCY = 5.0
IN_FLIGHT_TARGET = 0.9
RSS_LIMIT_MB = 500
RSS_SAMPLE_SECONDS = 0.25


@dataclass(frozen=True)
class Measure:
    broker: str
    concurrency: int
    probes: int
    seconds: float
    cpu_seconds: float
    succeeded: int
    latency_ms: float  # mean time of a provider call as the worker saw it

    @property
    def rate(self) -> float:
        return self.probes / self.seconds

    @property
    def bound(self) -> float:
        return self.concurrency / LATENCY

    @property
    def observed_bound(self) -> float:
        """The rate the concurrency allows at the provider latency actually observed."""
        return self.concurrency / (self.latency_ms / 1000)


async def seed_workspace(db: Database, prompts: int) -> str:
    """A workspace with `prompts` prompts and the benchmark's providers enabled."""
    now = utcnow()
    suffix = uuid.uuid4().hex[:10]
    org_id, ws_id = new_id("org"), new_id("ws")
    async with db.transaction() as session:
        session.add(Organization(id=org_id, name="Bench", slug=f"bench-{suffix}"))
        await session.flush()
        session.add(
            Workspace(
                id=ws_id,
                organization_id=org_id,
                name="Acme",
                slug=f"bench-{suffix}",
                domain="acme.com",
                competitors=[{"name": "HubSpot", "domain": "hubspot.com"}],
                enabled_providers=list(PROVIDERS),
            )
        )
        await session.flush()
        rows = [
            {
                "id": new_id("prm"),
                "workspace_id": ws_id,
                "text": f"best crm for a team of {n} people, acme.com or hubspot.com?",
                "text_hash": f"{suffix}-{n}",
                "create_time": now,
            }
            for n in range(prompts)
        ]
        await session.execute(insert(Prompt), rows)
    return ws_id


async def run_once(
    db: Database, broker: dramatiq.Broker, workspace_id: str, seconds: float
) -> tuple[str, float]:
    """Starts a run over every prompt and waits for its end; (run id, seconds it took)."""
    run_id = new_id("run")
    async with db.transaction() as session:
        session.add(
            Run(
                id=run_id,
                workspace_id=workspace_id,
                trigger="manual",
                status="queued",
                create_time=utcnow(),
            )
        )
    await dispatch_pending_runs(db, broker, run_ids=[run_id])

    async def ended() -> bool:
        async with db.transaction(write=False) as session:
            end = await session.scalar(select(Run.end_time).where(Run.id == run_id))
        return end is not None

    await wait_until(ended, f"run {run_id} to end", seconds)
    async with db.transaction(write=False) as session:
        start, end = (
            await session.execute(select(Run.start_time, Run.end_time).where(Run.id == run_id))
        ).one()
    return run_id, _seconds(start, end)


def _seconds(start: datetime | None, end: datetime | None) -> float:
    assert start is not None and end is not None
    return (end - start).total_seconds()


async def succeeded(db: Database, run_id: str) -> tuple[int, float]:
    """Probes that succeeded, and their mean provider latency in ms."""
    async with db.transaction(write=False) as session:
        count, latency = (
            await session.execute(
                select(func.count(), func.avg(Probe.latency_ms)).where(
                    Probe.run_id == run_id, Probe.status == "succeeded"
                )
            )
        ).one()
    return int(count or 0), float(latency or 0.0)


async def measure(
    backend: Backend, broker: str, root: str, concurrency: int, probes: int, profile: Path | None
) -> Measure:
    prompts = probes // len(PROVIDERS)
    async with broker_namespace(broker) as broker_url:
        env = worker_env(
            backend,
            broker_url,
            BEACON_WORKER_CONCURRENCY=str(concurrency),
            BEACON_PROVIDER_CONCURRENCY=str(concurrency),
            **provider_env(root),
        )
        settings = Settings(database_url=backend.database_url, broker_url=broker_url)
        sender = broker_of(settings)
        db = Database(backend.database_url, pool_size=4)
        worker = Process([BEACON, "worker"], env, f"worker-{concurrency}")
        try:
            # A small run first: the worker is up, its connections warm.
            warm = await seed_workspace(db, 2)
            await run_once(db, sender, warm, seconds=60)
            workspace = await seed_workspace(db, prompts)
            spy = _start_profile(worker.pid, profile) if profile else None
            cpu_before = worker.cpu_seconds()
            run_id, seconds = await run_once(db, sender, workspace, seconds=600)
            cpu = worker.cpu_seconds() - cpu_before
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(timeout=30)
            worker.check_alive()
            done, latency = await succeeded(db, run_id)
        finally:
            worker.stop()
            await db.dispose()
            sender.close()
    return Measure(broker, concurrency, prompts * len(PROVIDERS), seconds, cpu, done, latency)


@dataclass(frozen=True)
class InFlight:
    concurrency: int
    latency: float
    probes: int
    seconds: float
    steady_rate: float
    succeeded: int
    peak_in_flight: int
    rss_idle_mb: float
    rss_peak_mb: float
    cpu_seconds: float

    @property
    def bound(self) -> float:
        return self.concurrency / self.latency

    @property
    def rate(self) -> float:
        return self.probes / self.seconds


async def steady_rate(db: Database, run_id: str) -> float:
    """Completions after the first wave, per second from the first completion to the last."""
    async with db.transaction(write=False) as session:
        first, last, count = (
            await session.execute(
                select(
                    func.min(Probe.complete_time), func.max(Probe.complete_time), func.count()
                ).where(Probe.run_id == run_id)
            )
        ).one()
        assert first is not None, "no probe completed"
        first_wave = await session.scalar(
            select(func.count()).where(
                Probe.run_id == run_id, Probe.complete_time <= first + timedelta(seconds=1)
            )
        )
    span = _seconds(first, last)
    return (int(count) - int(first_wave or 0)) / span if span > 0 else 0.0


async def fake_in_flight(root: str, reset: bool = False) -> int:
    """The most calls the fake providers held at once (since the last reset)."""
    async with httpx.AsyncClient() as client:
        if reset:
            reply = await client.post(f"{root}/_control", json={"reset": True}, timeout=10)
        else:
            reply = await client.get(f"{root}/_control", timeout=10)
    return int(reply.json()["max_in_flight"])


async def measure_in_flight(
    backend: Backend, root: str, concurrency: int, latency: float, probes: int
) -> InFlight:
    prompts = probes // len(PROVIDERS)
    with redis_namespace() as broker_url:
        env = worker_env(
            backend,
            broker_url,
            BEACON_WORKER_CONCURRENCY=str(concurrency),
            BEACON_PROVIDER_CONCURRENCY=str(concurrency),
            BEACON_PROVIDER_TIMEOUT_SECONDS=str(latency * 6),
            # The budget keys (none configured here, only 429 cooldowns) in the namespace too.
            BEACON_RATE_LIMIT_KEY_PREFIX=broker_url.rsplit("namespace=", 1)[1],
            **provider_env(root),
        )
        settings = Settings(database_url=backend.database_url, broker_url=broker_url)
        sender = broker_of(settings)
        db = Database(backend.database_url, pool_size=4)
        worker = Process([BEACON, "worker"], env, f"worker-in-flight-{concurrency}")
        peak_rss = 0.0

        async def sample_rss() -> None:
            nonlocal peak_rss
            while True:
                peak_rss = max(peak_rss, worker.rss_mb())
                await asyncio.sleep(RSS_SAMPLE_SECONDS)

        try:
            warm = await seed_workspace(db, 2)
            await run_once(db, sender, warm, seconds=120)
            workspace = await seed_workspace(db, prompts)
            idle_rss = worker.rss_mb()
            await fake_in_flight(root, reset=True)
            sampler = asyncio.create_task(sample_rss())
            cpu_before = worker.cpu_seconds()
            try:
                run_id, seconds = await run_once(db, sender, workspace, seconds=1800)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            cpu = worker.cpu_seconds() - cpu_before
            worker.check_alive()
            done, _ = await succeeded(db, run_id)
            steady = await steady_rate(db, run_id)
            peak = await fake_in_flight(root)
        finally:
            worker.stop()
            await db.dispose()
            sender.close()
    return InFlight(
        concurrency,
        latency,
        prompts * len(PROVIDERS),
        seconds,
        steady,
        done,
        peak,
        idle_rss,
        peak_rss,
        cpu,
    )


def in_flight_lines(r: InFlight) -> list[str]:
    lines = [
        f"Calls in flight (one `beacon worker`, concurrency {r.concurrency}; fake providers "
        f"answering in {r.latency:g} s; {r.probes} probes)"
    ]
    lines += table(
        (
            "bound/s",
            "probes/s",
            "vs bound",
            "steady/s",
            "steady vs bound",
            "peak in flight",
            "RSS idle MB",
            "RSS peak MB",
            "cpu ms/probe",
            "seconds",
            "succeeded",
        ),
        [
            (
                f"{r.bound:.0f}",
                f"{r.rate:.0f}",
                f"{r.rate / r.bound:.2f}",
                f"{r.steady_rate:.0f}",
                f"{r.steady_rate / r.bound:.2f}",
                r.peak_in_flight,
                f"{r.rss_idle_mb:.0f}",
                f"{r.rss_peak_mb:.0f}",
                f"{r.cpu_seconds / r.probes * 1000:.2f}",
                f"{r.seconds:.1f}",
                f"{r.succeeded}/{r.probes}",
            )
        ],
    )
    lines.append(
        f"target: steady vs bound >= {IN_FLIGHT_TARGET:.2f}, RSS peak < {RSS_LIMIT_MB} MB "
        f"({'met' if r.steady_rate / r.bound >= IN_FLIGHT_TARGET and r.rss_peak_mb < RSS_LIMIT_MB else 'NOT met'})"
    )
    return lines


def _start_profile(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    binary = py_spy()
    if binary is None:
        return None
    # --gil: samples of the thread holding the GIL, i.e. where the process spends CPU.
    command = [binary, "record", f"--pid={pid}", "--rate=200", "--gil", "--format=raw"]
    return subprocess.Popen(
        [*command, f"--output={output}", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> list[str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=5000)
    parser.add_argument("--levels", default="25,50,100,200")
    parser.add_argument("--brokers", default=",".join(available_brokers()))
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    parser.add_argument("--in-flight-latency", type=float, default=IN_FLIGHT_LATENCY)
    parser.add_argument("--in-flight-probes", type=int, default=6 * IN_FLIGHT)
    parser.add_argument("--only", choices=("levels", "in-flight"))
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    brokers = args.brokers.split(",")
    lines: list[str] = []
    if args.only != "levels":
        with scratch_backend() as backend, fake_providers(args.in_flight_latency) as root:
            if backend.name != "postgres+redis":
                raise SystemExit("the worker benchmark needs PostgreSQL and Redis")
            held = asyncio.run(
                measure_in_flight(
                    backend, root, args.in_flight, args.in_flight_latency, args.in_flight_probes
                )
            )
        if args.only == "in-flight":
            return in_flight_lines(held)
    with scratch_backend() as backend, fake_providers(LATENCY) as root:
        if backend.name != "postgres+redis":
            raise SystemExit("the worker benchmark needs PostgreSQL and Redis")
        results = [
            asyncio.run(measure(backend, broker, root, level, args.probes, None))
            for broker in brokers
            for level in levels
        ]
        shares: list[tuple[str, float]] = []
        profiled: Measure | None = None
        if py_spy() is not None:
            output = Path(tempfile.mkdtemp(prefix="beacon-bench-")) / "worker.collapsed"
            profiled = asyncio.run(
                measure(backend, brokers[0], root, PROFILED_LEVEL, args.probes, output)
            )
            time.sleep(0.5)
            if output.exists():
                shares = profile_shares(output)
    lines.append(
        f"Worker benchmark (one `beacon worker` process, PostgreSQL; fake providers "
        f"answering in {LATENCY * 1000:.0f} ms; {results[0].probes} probes per level)"
    )
    rows = [
        (
            r.broker,
            r.concurrency,
            f"{r.bound:.0f}",
            f"{r.rate:.0f}",
            f"{r.rate / r.bound:.2f}",
            f"{r.latency_ms:.0f}",
            f"{r.rate / r.observed_bound:.2f}",
            f"{r.cpu_seconds / r.probes * 1000:.2f}",
            f"{r.cpu_seconds / r.seconds * 100:.0f}%",
            f"{r.seconds:.1f}",
            f"{r.succeeded}/{r.probes}",
        )
        for r in results
    ]
    lines += table(
        (
            "broker",
            "concurrency",
            "bound/s",
            "probes/s",
            "vs bound",
            "call ms",
            "vs call ms",
            "cpu ms/probe",
            "cpu use",
            "seconds",
            "succeeded",
        ),
        rows,
    )
    lines.append("target: vs bound >= 0.80 at concurrency 100 (>= 400 probes/s)")
    lines.append(
        "call ms: mean provider call as the worker timed it (200 ms plus HTTP and event-loop "
        "delays); vs call ms: probes/s against concurrency / that mean"
    )
    if profiled is not None and shares:
        lines.append(
            f"where the worker's CPU goes (py-spy, {profiled.broker}, concurrency {PROFILED_LEVEL}, "
            f"{profiled.rate:.0f} probes/s while profiled):"
        )
        lines += table(("component", "share"), [(n, f"{s * 100:.0f}%") for n, s in shares])
    elif profiled is None:
        lines.append("(install py-spy for a CPU profile of the worker)")
    if args.only != "levels":
        lines += ["", *in_flight_lines(held)]
    return lines


if __name__ == "__main__":
    print("\n".join(main()))
