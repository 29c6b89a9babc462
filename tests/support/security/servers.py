"""A Beacon server of a module's own, on a database of its own (no tests here).

Modules that count rows (the fuzzer, the audit and isolation checks) run against their own
database, so that what they see is only their own writes; rate limits are scaled up so that
they may call every RPC many times.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from beacon.v1.membership_service_pb2_grpc import MembershipServiceStub
from service.app import App
from service.server import start_server
from tests.support.app import delete_redis_keys, make_settings, temporary_database


@dataclass
class PrivateServer:
    """A running server, its App and a channel to it."""

    app: App
    channel: grpc.aio.Channel
    memberships: MembershipServiceStub


@contextlib.asynccontextmanager
async def private_server(
    backend: str, tmp: Path, label: str, **over: Any
) -> AsyncIterator[PrivateServer]:
    """A server on a fresh migrated database named after `label`, dropped afterwards."""
    name = f"beacon_{label}_{uuid.uuid4().hex[:10]}"
    prefix = f"beacon-{label}-{name}"
    values: dict[str, Any] = {"rate_limit_scale": 1000.0, **over}
    async with temporary_database(backend, tmp, name) as url:
        app = App.from_settings(make_settings(backend, url, tmp, prefix, **values))
        server = await start_server(app, "127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield PrivateServer(app, channel, MembershipServiceStub(channel))
        finally:
            await server.stop(grace=1.0)
            await app.close()
    if backend == "postgres":
        await delete_redis_keys(prefix)
