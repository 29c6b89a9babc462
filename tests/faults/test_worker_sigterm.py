"""SIGTERM of workers with provider calls in flight: each exits within the grace period and
hands its unfinished messages back at once, so a new worker finishes the collection long before
Redis would notice a dead worker (a minute), and nothing is lost or stored twice."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from service.config import Settings
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.processes import RedisProcess, eventually

pytestmark = pytest.mark.postgres_only

GRACE = 1.0


async def test_a_worker_stopped_mid_run_hands_back_its_probes_within_the_grace_period(
    backend: str,
    settings: Settings,
    database_url: str,
    redis_server: RedisProcess,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    fake_provider.set_latency(3.0)  # longer than the grace period: calls are cut short
    # No stalled-run sweep: the hand-back alone must bring the probes back.
    config = fleet_settings(
        settings,
        database_url,
        redis_server,
        fake_provider,
        shutdown_grace_seconds=GRACE,
        run_stall_seconds=0.0,
    )
    async with running_fleet(config, tmp_path) as fleet:
        collection = await fleet.collect(workspaces=2)

        # A worker may well prefetch every message: stop both, whichever holds the work.
        async def calls_out() -> bool:
            return fake_provider.in_flight >= 4

        await eventually(calls_out, "provider calls in flight", 30)
        started = time.monotonic()
        for worker in fleet.workers:
            worker.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GRACE + 10):
            codes = [await worker.process.wait() for worker in fleet.workers]
        took = time.monotonic() - started
        logs = [worker.log.read_text() for worker in fleet.workers]
        assert codes == [0, 0], logs
        assert took < GRACE + 5, f"the workers took {took:.1f}s to stop"
        assert any("handed" in log for log in logs), logs
        fake_provider.set_latency(0.05)
        fleet.workers.append(await fleet.start_process("worker", 3))

        # Well within Redis's one-minute heartbeat timeout, which would otherwise apply.
        await fleet.wait_until_ended(collection, within=30)
        await fleet.assert_collected(collection)
        await fleet.stop_all()
