"""A second server on the shared test database whose settings give two providers keys.

The shared server has no provider credentials (every run would be NO_PROVIDERS); this one
has keys for OpenAI and Anthropic, and scaled-up rate limits so tests may start several runs;
WatchRun streams re-check access every 0.2 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest

from beacon.v1 import (
    billing_service_pb2_grpc,
    insights_service_pb2_grpc,
    prompt_service_pb2_grpc,
    run_service_pb2_grpc,
    schedule_service_pb2_grpc,
)
from service.app import App
from service.config import Settings
from service.server import start_server

CONFIGURED = ("openai", "anthropic")


@pytest.fixture(scope="session")
async def keyed_app(app: App, settings: Settings) -> App:
    # Validated (not model_copy): the flat provider names go into `providers`.
    keyed = Settings.model_validate(
        {
            **settings.model_dump(),
            **{f"{provider}_api_key": "test-key" for provider in CONFIGURED},
            "rate_limit_scale": 100.0,
            "watch_access_check_seconds": 0.2,
            "rate_limit_key_prefix": f"{settings.rate_limit_key_prefix}-collection",
        }
    )
    return App(settings=keyed, db=app.db)


@pytest.fixture(scope="session")
async def collection(keyed_app: App) -> AsyncIterator[SimpleNamespace]:
    """Stubs `.schedules .prompts .runs .billing` of a server whose OpenAI and Anthropic have keys."""
    server = await start_server(keyed_app, "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield SimpleNamespace(
            schedules=schedule_service_pb2_grpc.ScheduleServiceStub(channel),
            prompts=prompt_service_pb2_grpc.PromptServiceStub(channel),
            runs=run_service_pb2_grpc.RunServiceStub(channel),
            billing=billing_service_pb2_grpc.BillingServiceStub(channel),
            insights=insights_service_pb2_grpc.InsightsServiceStub(channel),
        )
    await server.stop(grace=1.0)
