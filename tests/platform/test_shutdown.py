"""Graceful shutdown: health turns NOT_SERVING, new calls are refused, in-flight calls drain
within the grace period; `beacon serve` does the same on SIGTERM and exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import organization_service_pb2_grpc
from service.app import App
from service.config import Settings
from tests.support.app import NewUser
from tests.support.probes import ProbeState, start_probe_server
from tests.support.processes import BeaconProcess, eventually, serve_env

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_stop_drains_in_flight_calls_refuses_new_ones_and_reports_not_serving(
    app: App, new_user: NewUser
) -> None:
    state = ProbeState()
    server = await start_probe_server(app, state)
    target = f"127.0.0.1:{server.port}"
    user = await new_user()
    async with (
        grpc.aio.insecure_channel(target) as channel,
        grpc.aio.insecure_channel(target) as health_channel,
    ):
        organizations = organization_service_pb2_grpc.OrganizationServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(health_channel).Watch(health_pb2.HealthCheckRequest())
        assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING

        in_flight = asyncio.ensure_future(
            organizations.GetNavigationState(
                org_pb.GetNavigationStateRequest(), metadata=user.metadata
            )
        )
        await asyncio.wait_for(state.entered.wait(), 10)
        stopping = asyncio.create_task(server.stop(grace=10.0))

        assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
        watch.cancel()  # an open watch would itself be drained until the grace ends

        async def new_call_refused() -> bool:
            try:
                await organizations.ListMyOrganizations(
                    org_pb.ListMyOrganizationsRequest(), metadata=user.metadata, timeout=5
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                return True
            return False  # served: the server had not stopped accepting calls yet

        await eventually(new_call_refused, what="new calls to be refused during shutdown")
        assert not in_flight.done() and not stopping.done()

        state.release.set()
        reply = await asyncio.wait_for(in_flight, 10)
        assert reply.current_organization_id == "org_drained"
        await asyncio.wait_for(stopping, 10)


async def test_calls_still_running_when_the_grace_ends_are_cancelled(
    app: App, new_user: NewUser
) -> None:
    state = ProbeState()
    server = await start_probe_server(app, state)
    user = await new_user()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        organizations = organization_service_pb2_grpc.OrganizationServiceStub(channel)
        in_flight = asyncio.ensure_future(
            organizations.GetNavigationState(
                org_pb.GetNavigationStateRequest(), metadata=user.metadata
            )
        )
        await asyncio.wait_for(state.entered.wait(), 10)
        await asyncio.wait_for(server.stop(grace=0.2), 10)
        try:
            await asyncio.wait_for(in_flight, 10)
        except grpc.aio.AioRpcError as error:
            assert error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        else:
            raise AssertionError("a call past the grace period must not complete")


async def test_beacon_serve_drains_and_exits_zero_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    server = await BeaconProcess.start(
        tmp_path, serve_env(settings, BEACON_SHUTDOWN_GRACE_SECONDS="30")
    )
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
            server.process.send_signal(signal.SIGTERM)
            assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
            # The open watch is an in-flight call: the process waits for it...
            assert server.process.returncode is None
            watch.cancel()
            # ...and, with nothing left in flight, exits cleanly long before the grace ends.
            code = await asyncio.wait_for(server.process.wait(), 20)
            assert code == 0, server.log()
    finally:
        await server.stop()
