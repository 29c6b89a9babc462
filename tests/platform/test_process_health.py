"""`/healthz` of `beacon worker` and `beacon ticker` on their metrics address: 200 while they
reach their broker and database, 503 naming what failed while they do not, and 200 again once
it is back, by itself.

The broker is a private redis-server on a free port (stopped with SHUTDOWN NOSAVE, started again
on the same port); the machine's Redis is left alone.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dramatiq.brokers.stub import StubBroker

from service.config import Settings
from tests.support.processes import BEACON, RedisProcess, eventually, free_port, serve_env
from workers.health import Health


@dataclass
class Process:
    command: str
    process: asyncio.subprocess.Process
    port: int
    log: Path

    async def healthz(self) -> tuple[int, dict[str, Any]] | None:
        """(status, body) of /healthz, or None while nothing answers."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(f"http://127.0.0.1:{self.port}/healthz") as reply,
            ):
                return reply.status, json.loads(await reply.text())
        except (aiohttp.ClientError, TimeoutError):
            if self.process.returncode is not None:
                raise AssertionError(
                    f"beacon {self.command} exited:\n{self.log.read_text()}"
                ) from None
            return None


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisProcess]:
    server = await RedisProcess.start()
    yield server
    await server.kill()


async def start(command: str, env: dict[str, str], tmp: Path) -> Process:
    port = free_port()
    log = tmp / f"beacon-{command}.log"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("BEACON_", "OTEL_"))}
    full |= {**env, f"BEACON_{command.upper()}_METRICS_ADDR": f"127.0.0.1:{port}"}
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(BEACON), command, env=full, stdout=out, stderr=out
        )
    return Process(command, process, port, log)


async def test_worker_and_ticker_healthz_fail_while_the_broker_is_down_and_recover(
    settings: Settings, redis_server: RedisProcess, tmp_path: Path
) -> None:
    env = serve_env(
        settings,
        BEACON_BROKER_URL=f"{redis_server.url}?namespace=healthz",
        BEACON_LOG_LEVEL="WARNING",
        BEACON_TICKER_INTERVAL_SECONDS="0.5",
    )
    processes = [await start(command, env, tmp_path) for command in ("worker", "ticker")]
    try:
        for process in processes:
            assert await eventually(
                functools.partial(_status, process, 200),
                what=f"{process.command} healthy",
                within=60,
            ) == {"status": "ok"}
        await redis_server.shutdown()
        for process in processes:
            body = await eventually(
                functools.partial(_status, process, 503),
                what=f"{process.command} to report the broker down",
                within=30,
            )
            assert body["status"] == "failing"
            assert set(body["failed"]) == {"broker"}, body
        restarted = await RedisProcess.start(redis_server.port)
        redis_server.process = restarted.process
        for process in processes:
            assert await eventually(
                functools.partial(_status, process, 200),
                what=f"{process.command} healthy again",
                within=30,
            ) == {"status": "ok"}
    finally:
        for process in processes:
            if process.process.returncode is None:
                process.process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.process.wait(), 30)
            except TimeoutError:
                process.process.kill()
                await process.process.wait()


async def _status(process: Process, code: int) -> dict[str, Any] | None:
    answer = await process.healthz()
    return answer[1] if answer is not None and answer[0] == code else None


async def test_an_unreachable_database_is_named_and_checks_are_cached(
    settings: Settings, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-directory" / "beacon.db"
    broken = settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{missing}"})
    health = Health(broken, StubBroker(), cache_seconds=3600)
    assert health.failures() == {"database": "unreachable"}
    missing.parent.mkdir()
    assert health.failures() == {"database": "unreachable"}  # cached: not checked again
    fresh = Health(broken, StubBroker(), cache_seconds=0)
    assert fresh.failures() == {}
