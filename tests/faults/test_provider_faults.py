"""A provider that hangs and one that answers malformed JSON: their probes fail (after their
retries) within the configured timeout, the other probes succeed, and every run ends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from service.config import Settings
from service.db.models import Probe
from tests.support.fakes.provider_server import FakeProviderServer, Fault
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.processes import RedisProcess

pytestmark = pytest.mark.postgres_only

TIMEOUT = 1.0
ATTEMPTS = 2


async def test_hanging_and_malformed_providers_fail_their_probes_and_every_run_ends(
    backend: str,
    settings: Settings,
    database_url: str,
    redis_server: RedisProcess,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    config = fleet_settings(
        settings,
        database_url,
        redis_server,
        fake_provider,
        provider_timeout_seconds=TIMEOUT,
        probe_max_attempts=ATTEMPTS,
    )
    async with running_fleet(config, tmp_path) as fleet:
        hung, malformed = "which crm suits team 0", "which crm suits team 1"
        # Every attempt at these prompts meets the fault (3 runs x 2 workspaces x attempts).
        fake_provider.inject("anthropic", *[Fault("hang", prompt=hung)] * 20)
        fake_provider.inject("openai", *[Fault("invalid_json", prompt=malformed)] * 20)
        started = time.monotonic()
        collection = await fleet.collect(workspaces=2)
        # Each hanging probe costs at most its attempts' timeouts plus a short backoff.
        await fleet.wait_until_ended(collection, within=30)
        took = time.monotonic() - started
        await fleet.assert_collected(collection, statuses=frozenset({"partial"}))
        async with fleet.database.transaction(write=False) as session:
            rows = (
                await session.execute(
                    select(
                        Probe.prompt_text, Probe.provider, Probe.status, Probe.attempts, Probe.error
                    ).where(Probe.workspace_id.in_(collection.workspaces))
                )
            ).all()
        failed = {(p, provider) for p, provider, status, *_ in rows if status == "failed"}
        assert failed == {(hung, "anthropic"), (malformed, "openai")}
        for prompt, provider, status, attempts, error in rows:
            if (prompt, provider) == (hung, "anthropic"):
                # Tenants see the category only; the provider's text goes to the worker log.
                assert (attempts, error) == (ATTEMPTS, "timeout")
            elif (prompt, provider) == (malformed, "openai"):
                assert error == "malformed provider response (200)" and attempts >= 1, error
            else:
                assert status == "succeeded"
        assert took < 30
        fake_provider.release_hangs()
        await fleet.stop_all()
