"""PostgreSQL restarted mid-run, and unreachable for 30 s mid-run (a private cluster, stopped
and started again): workers retry with backoff and go on, `serve` answers UNAVAILABLE with
RetryInfo and reports NOT_SERVING meanwhile, and everything recovers by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from service.config import Settings
from tests.support import failure
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.fleet import (
    Collection,
    Fleet,
    PostgresCluster,
    fault_database,
    fleet_settings,
    running_fleet,
)
from tests.support.processes import RedisProcess, eventually, health_status

pytestmark = pytest.mark.postgres_only

OUTAGE_SECONDS = 30.0
SERVING = int(health_pb2.HealthCheckResponse.SERVING)
NOT_SERVING = int(health_pb2.HealthCheckResponse.NOT_SERVING)


@pytest.fixture
async def cluster_database(backend: str, pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    async with fault_database(pg_cluster.admin_url) as url:
        yield url


def outage_settings(
    settings: Settings, url: str, redis: RedisProcess, fake: FakeProviderServer
) -> Settings:
    # No stalled-run sweep: the workers' own retries must carry the runs through.
    return fleet_settings(settings, url, redis, fake, run_stall_seconds=0.0)


async def mid_run(fleet: Fleet, fake: FakeProviderServer) -> Collection:
    collection = await fleet.collect(workspaces=3)
    async with asyncio.timeout(30):
        await fake.wait_for_requests(collection.probes // 4)
    return collection


async def test_postgres_restarted_mid_run_loses_no_run(
    backend: str,
    settings: Settings,
    pg_cluster: PostgresCluster,
    cluster_database: str,
    redis_server: RedisProcess,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    fake_provider.set_latency(0.3)
    config = outage_settings(settings, cluster_database, redis_server, fake_provider)
    async with running_fleet(config, tmp_path) as fleet:
        collection = await mid_run(fleet, fake_provider)
        await pg_cluster.stop()  # every connection of every process is cut
        await pg_cluster.start()
        await fleet.wait_until_ended(collection, within=60)
        await fleet.assert_collected(collection)
        await fleet.stop_all()


async def test_postgres_unreachable_for_30s_mid_run_is_ridden_out(
    backend: str,
    settings: Settings,
    pg_cluster: PostgresCluster,
    cluster_database: str,
    redis_server: RedisProcess,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    fake_provider.set_latency(0.3)
    config = outage_settings(settings, cluster_database, redis_server, fake_provider)
    async with running_fleet(config, tmp_path) as fleet:
        assert fleet.serve is not None
        target = fleet.serve.target
        collection = await mid_run(fleet, fake_provider)
        _, prompts, _, runs = fleet.stubs()
        md = collection.owners[0]
        request = run_pb.ListRunsRequest(workspace_id=collection.workspaces[0])
        listed = prompt_pb.ListPromptsRequest(workspace_id=collection.workspaces[0])

        await pg_cluster.stop()
        down = time.monotonic()

        async def not_serving() -> bool:
            return await health_status(target) == NOT_SERVING

        await eventually(not_serving, "serve to report NOT_SERVING", 15)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await runs.ListRuns(request, metadata=md, timeout=10)
        got = failure(refused.value)
        assert got.code == grpc.StatusCode.UNAVAILABLE, got.message
        assert got.details["RetryInfo"].retry_delay.seconds >= 1
        assert got.details["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"

        # The outage lasts its full 30 seconds, whatever the processes do meanwhile.
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down)))
        assert all(p.process.returncode is None for p in [*fleet.workers, *fleet.tickers])
        await pg_cluster.start()

        async def serving() -> bool:
            return await health_status(target) == SERVING

        await eventually(serving, "serve to report SERVING again", 15)

        async def answers() -> bool:
            # Each read path, the hot ones on the driver connection (service.db.compiled) too, on
            # whatever connections the pool kept through the outage.
            try:
                reply = await runs.ListRuns(request, metadata=md, timeout=10)
                one = run_pb.GetRunRequest(run_id=reply.runs[0].id)
                assert (await runs.GetRun(one, metadata=md, timeout=10)).id == one.run_id
                assert (await prompts.ListPrompts(listed, metadata=md, timeout=10)).prompts
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                return False
            return True

        await eventually(answers, "serve to answer again", 15)
        await fleet.wait_until_ended(collection, within=60)
        await fleet.assert_collected(collection)
        await fleet.stop_all()
