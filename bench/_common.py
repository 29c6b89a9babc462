"""Helpers of the collection benchmarks: fake providers, broker namespaces, CPU time, tables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import redis

from bench._servers import BENCH_SECRET, BENCH_SIGNING_SECRET, REDIS_URL, Backend
from service.config import PROVIDERS
from tests.support.brokers import rabbitmq_available, temporary_vhost
from tests.support.fakes.dialects import API_ROOTS
from tests.support.fakes.provider_server import FAKE_API_KEY

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def redis_namespace() -> Iterator[str]:
    """A broker URL on a key namespace of its own, whose keys are deleted afterwards."""
    namespace = f"beacon-bench-{uuid.uuid4().hex[:10]}"
    try:
        yield f"{REDIS_URL}?namespace={namespace}"
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()


def available_brokers() -> list[str]:
    """The brokers a benchmark can run on here: Redis, and RabbitMQ when it answers
    (BEACON_TEST_AMQP_URL, default the local server)."""
    return ["redis", "rabbitmq"] if rabbitmq_available() else ["redis"]


@contextlib.asynccontextmanager
async def broker_namespace(broker: str) -> AsyncIterator[str]:
    """A URL of `broker` ("redis" or "rabbitmq") on a namespace or virtual host of its own,
    deleted afterwards."""
    if broker == "rabbitmq":
        async with temporary_vhost("beacon-bench") as url:
            yield url
        return
    with redis_namespace() as url:
        yield url


@contextlib.contextmanager
def fake_providers(latency: float) -> Iterator[str]:
    """The fake provider server in its own process; yields its root URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fakes.provider_server",
            "--port=0",
            f"--latency={latency}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().decode().strip()
        if not url.startswith("http"):
            raise RuntimeError("the fake provider server did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def provider_env(root: str) -> dict[str, str]:
    """BEACON_* variables pointing every provider at the fake server at `root`, without a
    request budget (the benchmarks measure the workers, not the budgets)."""
    env: dict[str, str] = {}
    for name in PROVIDERS:
        env[f"BEACON_{name.upper()}_API_KEY"] = FAKE_API_KEY
        env[f"BEACON_{name.upper()}_BASE_URL"] = f"{root}/{name}{API_ROOTS[name]}"
        env[f"BEACON_{name.upper()}_RPM"] = "0"
    return env


def worker_env(backend: Backend, broker_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    env.update(
        BEACON_DATABASE_URL=backend.database_url,
        BEACON_REDIS_URL=backend.redis_url,
        BEACON_BROKER_URL=broker_url,
        BEACON_AUTH_SECRET=BENCH_SECRET,
        BEACON_SIGNING_SECRET=BENCH_SIGNING_SECRET,
        BEACON_LOG_LEVEL="WARNING",
        BEACON_LOG_JSON="false",
    )
    env.update(extra)
    return env


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` now, in MiB (0 once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Process:
    """A `beacon` subprocess whose output goes to a log file."""

    def __init__(self, args: Sequence[str], env: dict[str, str], name: str) -> None:
        self.log = Path(tempfile.mkdtemp(prefix="beacon-bench-")) / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(list(args), env=env, stdout=out, stderr=out)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_mb(self) -> float:
        """Resident memory of the process now, in MiB."""
        return rss_mb(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.log.name} exited:\n{self.log.read_text()[-3000:]}")


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, seconds: float) -> None:
    """Polls `check` until it returns true; TimeoutError after `seconds`."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Right-aligned columns."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def py_spy() -> str | None:
    """The py-spy binary, if installed (the profiles are optional)."""
    return shutil.which("py-spy") or (
        str(Path(sys.executable).with_name("py-spy"))
        if Path(sys.executable).with_name("py-spy").exists()
        else None
    )


CATEGORIES = (
    ("database", ("sqlalchemy", "asyncpg", "aiosqlite")),
    ("broker (dramatiq, redis)", ("dramatiq", "/redis/")),
    ("HTTP client (httpx, aiohttp)", ("httpx", "aiohttp", "yarl", "multidict", "workers/http")),
    ("answer analysis", ("workers/analysis", "/re/", "unicodedata")),
    ("provider adapters", ("workers/providers",)),
    ("json", ("/json/",)),
    ("event loop, threads", ("asyncio", "threading", "selectors", "concurrent")),
    ("metrics", ("prometheus_client",)),
    ("beacon workers", ("workers/",)),
)


def profile_shares(collapsed: Path) -> list[tuple[str, float]]:
    """Share of CPU samples per category, from py-spy's collapsed stacks (leaf attribution:
    a sample counts for the innermost frame that belongs to a known category)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        counts[_category(stack.split(";"))] += samples
    return [(name, count / total) for name, count in counts.most_common()] if total else []


def _category(frames: Sequence[str]) -> str:
    for frame in reversed(frames):
        for name, markers in CATEGORIES:
            if any(marker in frame for marker in markers):
                return name
    return "other"
