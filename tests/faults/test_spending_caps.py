"""A monthly spending cap holds across two `beacon worker` processes sharing the counters in
Redis: once a workspace's cap is reached mid-run no worker starts another call for it, and
the month's spend stays under the cap (each call reserves more than the fake's answers cost)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from service.config import Settings
from service.db.models import Probe, Run, Workspace
from tests.collection.pipeline_fixtures import insert_run, make_workspace
from tests.fakes.provider_server import FakeProviderServer
from tests.faults.fleet import eventually, fleet_settings, running_fleet
from tests.platform.processes import RedisProcess

pytestmark = pytest.mark.postgres_only

# gpt-5 at the shipped prices for the fake's usage (10 in, 50 out, one search).
ANSWER_COST = 10_513
PROMPTS = 24


async def test_two_workers_stop_calling_once_the_cap_is_reached(
    backend: str,
    settings: Settings,
    database_url: str,
    redis_server: RedisProcess,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    # Calls in flight on both workers at once when the cap comes.
    fake_provider.set_latency(0.2)
    config = fleet_settings(settings, database_url, redis_server, fake_provider)
    cap = 6 * ANSWER_COST
    async with running_fleet(config, tmp_path) as fleet:
        db = fleet.database
        workspace_id = await make_workspace(
            db, prompts=[f"capped prompt {i}" for i in range(PROMPTS)], providers=("openai",)
        )
        async with db.transaction() as session:
            await session.execute(
                update(Workspace).where(Workspace.id == workspace_id).values(monthly_cap_micros=cap)
            )
        # In the outbox: a ticker sends it.
        run_id = await insert_run(db, workspace_id)

        async def ended() -> Run | None:
            async with db.transaction(write=False) as session:
                run = await session.get(Run, run_id)
                return run if run is not None and run.end_time is not None else None

        run = await eventually(ended, "the capped run to end", 60)
        async with db.transaction(write=False) as session:
            probes = list(await session.scalars(select(Probe).where(Probe.run_id == run_id)))
        answered = [p for p in probes if p.status == "succeeded"]
        stopped = [p for p in probes if p.error.startswith("spending cap reached")]
        assert answered and stopped, fleet.logs()
        assert len(answered) + len(stopped) == PROMPTS
        assert fake_provider.requests("openai") == len(answered)
        assert sum(p.cost_micros for p in answered) <= cap
        assert run.status == "partial"
        assert run.failure_reason.startswith("spending cap reached")
        # Both workers asked: the cap was held across processes, not within one.
        logs = [worker.log.read_text(errors="replace") for worker in fleet.workers]
        assert len(fleet.workers) == 2
        await fleet.stop_all()
    assert all(logs)
