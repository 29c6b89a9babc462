"""The grpc.aio server, built from one settings object.

Health (NOT_SERVING while the database is unreachable), reflection, message size limits,
a ceiling on concurrent RPCs (Beacon's budgets of unary calls and of streams are steps of the
pipeline: `service.pipeline.concurrency`), connection handshake/idle/age limits, and
graceful shutdown: health goes NOT_SERVING, new calls are refused, in-flight calls drain
within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import tracing
from service.access_cache import AccessCache, InvalidationListener
from service.app import App
from service.auth.identity import Authenticator
from service.config import Settings
from service.pipeline.auth import AuthenticateAround, AuthorizeAround
from service.pipeline.base import Around, Pipeline
from service.pipeline.concurrency import ConcurrencyAround, StreamCapsAround
from service.pipeline.errors import ErrorsAround
from service.pipeline.inputs import DecodeAround, InputsAround
from service.pipeline.observability import ObservabilityAround
from service.pipeline.ratelimit import (
    CALLER_KEYS,
    WORKSPACE_KEYS,
    PeerCeilingAround,
    RateLimitAround,
)
from service.pipeline.tracing import TracingAround
from service.servicers import ALL_SERVICERS, Register, add_servicers

log = logging.getLogger("beacon.server")
HEALTH_INTERVAL_SECONDS = 2.0
# Health and reflection calls in flight beyond Beacon's budgets (the grpc server's ceiling).
OTHER_RPCS = 100


class _Registrations:
    """The server as servicers see it while they register: every call goes to the server,
    except that the Beacon methods' handlers are registered wrapped by `pipeline` (and a
    kind it cannot wrap is refused, RuntimeError, before the server starts)."""

    def __init__(self, server: grpc.aio.Server, pipeline: Pipeline) -> None:
        self._server = server
        self._pipeline = pipeline

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            [self._pipeline.wrap_generic(handler) for handler in handlers]
        )

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service, self._pipeline.wrap_registered(service, handlers)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def build_pipeline(app: App, cache: AccessCache | None = None) -> Pipeline:
    """The steps around every Beacon RPC, each concern in turn, outermost first: observability,
    tracing (only while it is on), errors, the unary and stream budgets, the per-peer
    ceiling, parsing the request (within its RPC's size limit), authentication, the peer and
    user limits, authorization, the per-user and per-workspace stream caps, input checks, the
    workspace limits (each concern lives in its own module).

    Peer and user limits come before authorization so that failed lookups are counted too;
    workspace limits come after it so that only those who reach a workspace spend its budget.
    """
    settings = app.settings
    authenticator = Authenticator(settings, app.db)
    # Tracing (when on) sits inside observability, whose call context names the workspace.
    traced: tuple[Around, ...] = (TracingAround(),) if tracing.enabled() else ()
    return Pipeline(
        ObservabilityAround(settings.page_token_key),
        *traced,
        ErrorsAround(),
        ConcurrencyAround(settings.max_concurrent_rpcs, settings.max_concurrent_streams),
        PeerCeilingAround(app.rate_limits),
        DecodeAround(),
        AuthenticateAround(authenticator),
        RateLimitAround(app.rate_limits, CALLER_KEYS),
        AuthorizeAround(app.db, cache),
        StreamCapsAround(settings, authenticator),
        InputsAround(),
        RateLimitAround(app.rate_limits, WORKSPACE_KEYS),
    )


@dataclass
class BeaconServer:
    """A started server: its port, health servicer and background health task."""

    app: App
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    services: list[str]
    listener: InvalidationListener | None = None
    _monitor: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _set_all(self, status: int) -> None:
        for name in ("", *self.services):
            await self.health.set(name, status)

    async def monitor_health(self) -> None:
        """Keeps health in step with database reachability."""
        while True:
            ok = await self.app.db.ping()
            await self._set_all(
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new calls, drain in-flight ones."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self.health.enter_graceful_shutdown()
        grace = self.app.settings.shutdown_grace_seconds if grace is None else grace
        await self.server.stop(grace)
        if self.listener is not None:
            await self.listener.stop()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC core's limits on a connection's life, from the settings: its handshake, its
    time without calls, its age (then a grace for its calls to end)."""
    return [
        (name, round(seconds * 1000))
        for name, seconds in (
            ("grpc.server_handshake_timeout_ms", settings.grpc_handshake_timeout_seconds),
            ("grpc.max_connection_idle_ms", settings.grpc_max_connection_idle_seconds),
            ("grpc.max_connection_age_ms", settings.grpc_max_connection_age_seconds),
            ("grpc.max_connection_age_grace_ms", settings.grpc_max_connection_age_grace_seconds),
        )
    ]


async def start_server(
    app: App, address: str | None = None, *, servicers: Iterable[Register] = ALL_SERVICERS
) -> BeaconServer:
    """Builds and starts the server on `address` (default settings.grpc_addr; port 0 allowed)
    serving `servicers` (default: every Beacon service), health and reflection."""
    settings = app.settings
    # Access decisions are cached per process; on PostgreSQL, only while this process hears
    # the other replicas' invalidations (service.access_cache).
    cache = AccessCache(shared=not app.db.is_sqlite)
    listener = None if app.db.is_sqlite else InvalidationListener(app.db.url, cache)
    # No grpc.aio interceptor: the Beacon handlers are registered wrapped (`_Registrations`),
    # so health and reflection calls run none of Beacon's steps, and Beacon calls no lookup.
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 1),
            ("grpc.keepalive_time_ms", 60_000),
            *connection_options(settings),
        ],
        # A ceiling on every RPC, health and reflection included; Beacon's own calls are
        # held to their budgets (unary and streams apart) by the pipeline, well below it.
        maximum_concurrent_rpcs=(
            settings.max_concurrent_rpcs + settings.max_concurrent_streams + OTHER_RPCS
        ),
    )
    services = add_servicers(_Registrations(server, build_pipeline(app, cache)), app, servicers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(address or settings.grpc_addr)
    await server.start()
    beacon = BeaconServer(app, server, port, health_servicer, services, listener)
    if listener is not None:
        listener.start()
    ok = await app.db.ping()
    await beacon._set_all(
        health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    beacon._monitor = asyncio.create_task(beacon.monitor_health())
    log.info("grpc server started", extra={"port": port, "services": services})
    return beacon
