"""Fixtures of the platform suite: a server running the probe servicers on the session's app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest

from beacon.v1 import (
    membership_service_pb2_grpc,
    organization_service_pb2_grpc,
    run_service_pb2_grpc,
)
from service.app import App
from service.server import BeaconServer
from tests.support.probes import ProbeState, start_probe_server


@pytest.fixture(scope="session")
def probe_state() -> ProbeState:
    return ProbeState()


@pytest.fixture(scope="session")
async def probe_server(app: App, probe_state: ProbeState) -> AsyncIterator[BeaconServer]:
    server = await start_probe_server(app, probe_state)
    yield server
    await server.stop(grace=1.0)


@pytest.fixture(scope="session")
async def probe_channel(probe_server: BeaconServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_server.port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def probes(probe_channel: grpc.aio.Channel) -> SimpleNamespace:
    """Stubs of the probe server's services."""
    return SimpleNamespace(
        organizations=organization_service_pb2_grpc.OrganizationServiceStub(probe_channel),
        memberships=membership_service_pb2_grpc.MembershipServiceStub(probe_channel),
        runs=run_service_pb2_grpc.RunServiceStub(probe_channel),
    )
