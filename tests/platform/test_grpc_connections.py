"""gRPC connections that hold the server without using it: a TCP connection that never speaks
HTTP/2 and a channel left without calls are closed by the server, as the settings say."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.app import App
from service.server import BeaconServer, start_server

# How long a test waits for the server to close a connection before calling it held open
# (gRPC's own defaults keep both for 120 s and more).
CLOSE_DEADLINE_SECONDS = 20.0


@contextlib.asynccontextmanager
async def dedicated_server(app: App, **settings: Any) -> AsyncIterator[BeaconServer]:
    changed = App(settings=app.settings.model_copy(update=settings), db=app.db)
    server = await start_server(changed, "127.0.0.1:0")
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def test_a_connection_that_never_speaks_http2_is_closed_after_the_handshake_timeout(
    app: App,
) -> None:
    async with dedicated_server(
        app, grpc_handshake_timeout_seconds=1.0, grpc_max_connection_idle_seconds=600.0
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            async with asyncio.timeout(CLOSE_DEADLINE_SECONDS):
                while await reader.read(4096):  # the server's SETTINGS frame, then EOF
                    pass
        finally:
            writer.close()


async def test_an_idle_channel_is_closed_by_the_server(app: App) -> None:
    """After one call and no other, the server ends the connection (GOAWAY); the client's
    channel leaves READY, and the next call reconnects."""
    async with (
        dedicated_server(app, grpc_max_connection_idle_seconds=0.5) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest())
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        async with asyncio.timeout(CLOSE_DEADLINE_SECONDS):
            await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        assert channel.get_state() != grpc.ChannelConnectivity.READY
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
