"""Redis restarts mid-run without its data: the ticker notices within a tick or two (the
broker's epoch mark is gone), sends the open runs again from PostgreSQL at once, and the
collection completes with every invariant intact, within two minutes with the default
settings (the stalled-run sweep alone would wait `run_stall_seconds`, ten minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as redis_async

from service.broker import redis_options
from service.config import Settings
from service.messages import PROBE_QUEUE, RUN_QUEUE
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.processes import RedisProcess, eventually

pytestmark = pytest.mark.postgres_only


async def test_redis_restarted_mid_run_losing_its_data_loses_no_run(
    backend: str,
    settings: Settings,
    database_url: str,
    redis_server: RedisProcess,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    fake_provider.set_latency(0.1)
    defaults = Settings.model_fields
    config = fleet_settings(
        settings,
        database_url,
        redis_server,
        fake_provider,
        # The defaults: a tick every 5 s, stalled runs re-sent after 10 minutes.
        ticker_interval_seconds=defaults["ticker_interval_seconds"].default,
        run_stall_seconds=defaults["run_stall_seconds"].default,
    )
    assert config.run_stall_seconds >= 600
    async with running_fleet(config, tmp_path) as fleet:
        # More probe messages than the two workers prefetch: some wait in Redis.
        collection = await fleet.collect(workspaces=6, prompts=12)

        async def mid_run() -> bool:
            started = fake_provider.requests() >= collection.probes // 8
            return started and await queued_messages(redis_server, fleet.settings) > 0

        await eventually(mid_run, "answers to come while messages wait in Redis", 30)
        answered = fake_provider.requests()
        await redis_server.kill()  # queued, delayed and unacknowledged messages: all gone
        restarted = await RedisProcess.start(port=redis_server.port)
        try:
            await fleet.wait_until_ended(collection, within=120)
            await fleet.assert_collected(collection)
            assert answered < collection.probes  # the restart did come mid-run
            resent = [t.log.read_text() for t in fleet.tickers]
            assert any("Redis restarted without its data" in log for log in resent), fleet.logs()
            await fleet.stop_all()
        finally:
            await restarted.kill()


async def queued_messages(server: RedisProcess, settings: Settings) -> int:
    """Messages waiting in the fleet's run and probe queues."""
    namespace = redis_options(settings.effective_broker_url).namespace
    client = redis_async.from_url(server.url)
    try:
        return sum(
            [int(await client.llen(f"{namespace}:{queue}")) for queue in (RUN_QUEUE, PROBE_QUEUE)]
        )
    finally:
        await client.aclose()
