"""Benchmark plumbing: a scratch database and `beacon serve` processes sharing one port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from service.db.migrate import upgrade

PG_ADMIN_URL = os.environ.get(
    "BEACON_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BEACON_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BEACON = str(Path(sys.executable).with_name("beacon"))
BENCH_SECRET = "beacon-bench-secret-0123456789abcdef"
BENCH_SIGNING_SECRET = "beacon-bench-signing-secret-0123456789abcdef"


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
        return True
    return False


def production_backend_available() -> bool:
    return port_open("127.0.0.1", 5432) and port_open("127.0.0.1", 6379)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _admin(sql: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


@dataclass
class Backend:
    """Where the benchmark's servers keep their data."""

    name: str  # "postgres+redis" or "sqlite"
    database_url: str
    redis_url: str


@contextlib.contextmanager
def scratch_backend(prefer_production: bool = True) -> Iterator[Backend]:
    """A migrated, uniquely named database (PostgreSQL + Redis when reachable), removed after."""
    if prefer_production and production_backend_available():
        name = f"beacon_bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        try:
            upgrade(url)
            yield Backend("postgres+redis", url, REDIS_URL)
        finally:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    with tempfile.TemporaryDirectory(prefix="beacon-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        upgrade(url)
        yield Backend("sqlite", url, "")


def bench_env(backend: Backend, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "BEACON_DATABASE_URL": backend.database_url,
        "BEACON_REDIS_URL": backend.redis_url,
        "BEACON_AUTH_SECRET": BENCH_SECRET,
        "BEACON_SIGNING_SECRET": BENCH_SIGNING_SECRET,
        "BEACON_RATE_LIMIT_KEY_PREFIX": f"beacon-bench-{uuid.uuid4().hex[:8]}",
        "BEACON_LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


@dataclass
class ServerGroup:
    """`count` `beacon serve` processes sharing one gRPC port (SO_REUSEPORT)."""

    port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_ports: list[int] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def serve(backend: Backend, count: int, **extra_env: str) -> Iterator[ServerGroup]:
    """Starts `count` server processes on one port and waits until each reports its ports."""
    group = ServerGroup(port=free_port())
    env = bench_env(
        backend,
        BEACON_GRPC_ADDR=f"127.0.0.1:{group.port}",
        BEACON_HTTP_ADDR="127.0.0.1:0",
        BEACON_METRICS_ADDR="127.0.0.1:0",
        **extra_env,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="beacon-bench-logs-"))
    try:
        for index in range(count):
            err_path = log_dir / f"server-{index}.log"
            proc = subprocess.Popen(
                [BEACON, "serve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err_path.open("wb"),
            )
            group.processes.append(proc)
            group.metrics_ports.append(_wait_started(proc, err_path))
        yield group
    finally:
        group.stop()


_STARTED = re.compile(rb"beacon: gRPC on \S+, HTTP on port \d+, metrics on port (\d+)")


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _STARTED.search(log.read_bytes())
        if match:
            return int(match.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"beacon serve exited: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"beacon serve did not start: {log.read_text()[-2000:]}")
