"""Test-only servicers run behind the real server and interceptors.

They stand in for the product servicers so that platform tests see exactly what the
interceptors did: each call records the `CallContext` it ran with, fails on demand (the
`x-probe-raise` metadata names a failure registered in `ProbeState.failures`), or waits on an
event to stay in flight. `start_probe_server` builds the server with `service.server.start_server`
itself (health, reflection, interceptors, options), swapping only the servicers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from beacon.v1 import (
    membership_service_pb2,
    membership_service_pb2_grpc,
    organization_service_pb2,
    organization_service_pb2_grpc,
    run_service_pb2,
    run_service_pb2_grpc,
)
from service.app import App
from service.auth.context import CallContext, current_call
from service.server import BeaconServer, start_server
from service.servicers import Register

RAISE_HEADER = "x-probe-raise"
STREAM_ITEMS_HEADER = "x-probe-stream-items"

Failure = Callable[[], Awaitable[None]]
Metadata = tuple[tuple[str, str], ...]


@dataclass
class ProbeState:
    """What the probe servicers saw, and the levers tests pull on them."""

    calls: list[CallContext] = field(default_factory=list)
    failures: dict[str, Failure] = field(default_factory=dict)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self) -> CallContext:
        call = current_call()
        self.calls.append(call)
        return call

    def call_with_request_id(self, request_id: str) -> CallContext:
        found = [c for c in self.calls if c.correlation_id == request_id]
        assert len(found) == 1, f"expected one recorded call with request id {request_id}"
        return found[0]

    async def traced(
        self, rpc: Callable[..., Awaitable[Any]], request: Any, metadata: Metadata
    ) -> CallContext:
        """Makes a call with a fresh request id; returns the context the servicer ran with."""
        request_id = f"req-{uuid.uuid4().hex}"
        await rpc(request, metadata=(*metadata, ("x-request-id", request_id)))
        return self.call_with_request_id(request_id)

    async def fail_if_asked(self) -> None:
        name = current_call().metadata.get(RAISE_HEADER)
        if name:
            await self.failures[name]()


class ProbeOrganizations(organization_service_pb2_grpc.OrganizationServiceServicer):
    def __init__(self, state: ProbeState) -> None:
        self.state = state

    async def ListMyOrganizations(
        self, request: organization_service_pb2.ListMyOrganizationsRequest, context: Any
    ) -> organization_service_pb2.ListMyOrganizationsResponse:
        self.state.record()
        await self.state.fail_if_asked()
        return organization_service_pb2.ListMyOrganizationsResponse()

    async def CreateOrganization(
        self, request: organization_service_pb2.CreateOrganizationRequest, context: Any
    ) -> organization_service_pb2.Organization:
        self.state.record()
        await self.state.fail_if_asked()
        return organization_service_pb2.Organization(name=request.name)

    async def ResolveWorkosOrganizationId(
        self, request: organization_service_pb2.ResolveWorkosOrganizationIdRequest, context: Any
    ) -> organization_service_pb2.ResolveWorkosOrganizationIdResponse:
        self.state.record()
        return organization_service_pb2.ResolveWorkosOrganizationIdResponse()

    async def GetNavigationState(
        self, request: organization_service_pb2.GetNavigationStateRequest, context: Any
    ) -> organization_service_pb2.NavigationState:
        """The slow call: in flight until the test sets `release`."""
        self.state.record()
        self.state.entered.set()
        await self.state.release.wait()
        return organization_service_pb2.NavigationState(current_organization_id="org_drained")


class ProbeMemberships(membership_service_pb2_grpc.MembershipServiceServicer):
    def __init__(self, state: ProbeState) -> None:
        self.state = state

    async def JoinWorkspaceByCode(
        self, request: membership_service_pb2.JoinWorkspaceByCodeRequest, context: Any
    ) -> membership_service_pb2.JoinWorkspaceByCodeResponse:
        self.state.record()
        return membership_service_pb2.JoinWorkspaceByCodeResponse()


class ProbeRuns(run_service_pb2_grpc.RunServiceServicer):
    def __init__(self, state: ProbeState) -> None:
        self.state = state

    async def WatchRun(
        self, request: run_service_pb2.WatchRunRequest, context: Any
    ) -> AsyncIterator[run_service_pb2.Run]:
        """Streams `x-probe-stream-items` snapshots of the run, then fails if asked."""
        call = self.state.record()
        for _ in range(int(call.metadata.get(STREAM_ITEMS_HEADER, "1"))):
            yield run_service_pb2.Run(id=request.run_id)
        await self.state.fail_if_asked()


def _probe_servicers(state: ProbeState) -> list[Register]:
    # Only the probe methods are implemented: the rest answer UNIMPLEMENTED.
    def organizations(server: grpc.aio.Server, _app: App) -> str:
        organization_service_pb2_grpc.add_OrganizationServiceServicer_to_server(
            ProbeOrganizations(state),  # type: ignore[abstract]
            server,
        )
        return "beacon.v1.OrganizationService"

    def memberships(server: grpc.aio.Server, _app: App) -> str:
        membership_service_pb2_grpc.add_MembershipServiceServicer_to_server(
            ProbeMemberships(state),  # type: ignore[abstract]
            server,
        )
        return "beacon.v1.MembershipService"

    def runs(server: grpc.aio.Server, _app: App) -> str:
        run_service_pb2_grpc.add_RunServiceServicer_to_server(
            ProbeRuns(state),  # type: ignore[abstract]
            server,
        )
        return "beacon.v1.RunService"

    return [organizations, memberships, runs]


async def start_probe_server(app: App, state: ProbeState) -> BeaconServer:
    """`start_server` on 127.0.0.1:0 with the probe servicers in place of the product ones."""
    return await start_server(app, "127.0.0.1:0", servicers=_probe_servicers(state))
