"""Health follows the database: NOT_SERVING while it is unreachable, SERVING once it answers,
and calls that need it meanwhile fail UNAVAILABLE (never INTERNAL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy.engine import make_url

import service.server
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import organization_service_pb2_grpc
from service.app import App
from service.auth.tokens import mint_dev_token
from service.config import Settings
from service.server import BeaconServer, start_server
from tests.support import PG_ADMIN_URL
from tests.support.app import make_settings
from tests.support.assertions import expect_refusal
from tests.support.processes import BEACON_SERVICES, eventually, free_port, health_status

SERVICES = ("", *sorted(BEACON_SERVICES))
SERVING = int(health_pb2.HealthCheckResponse.SERVING)
NOT_SERVING = int(health_pb2.HealthCheckResponse.NOT_SERVING)


@pytest.fixture(autouse=True)
def fast_health_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.server, "HEALTH_INTERVAL_SECONDS", 0.05)


@contextlib.asynccontextmanager
async def server_on(database_url: str, tmp: Path) -> AsyncIterator[tuple[BeaconServer, Settings]]:
    settings = make_settings("sqlite", database_url, tmp, "health")
    app = App.from_settings(settings)
    server = await start_server(app, "127.0.0.1:0")
    try:
        yield server, settings
    finally:
        await server.stop(grace=0.5)
        await app.close()


async def statuses(server: BeaconServer) -> set[int | None]:
    target = f"127.0.0.1:{server.port}"
    return {await health_status(target, service) for service in SERVICES}


async def becomes(server: BeaconServer, status: int) -> None:
    async def reached() -> bool:
        return await statuses(server) == {status}

    await eventually(reached, what=f"health {status} for every service")


async def expect_database_unavailable(server: BeaconServer, settings: Settings) -> None:
    """A first call of a new user needs the database (the user row): UNAVAILABLE."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        token = mint_dev_token(settings, email="health-check@example.com")
        got = await expect_refusal(
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            organization_service_pb2_grpc.OrganizationServiceStub(channel).ListMyOrganizations(
                org_pb.ListMyOrganizationsRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
            ),
        )
        # When to come back: RetryInfo, and the same delay as a retry-after trailer.
        delay = got.details["RetryInfo"].retry_delay.seconds
        assert delay >= 1 and got.trailers["retry-after"] == str(delay)


async def test_sqlite_in_a_missing_directory_is_not_serving_until_it_exists(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "created-later"
    async with server_on(f"sqlite+aiosqlite:///{directory}/beacon.db", tmp_path) as (server, s):
        assert await statuses(server) == {NOT_SERVING}
        await expect_database_unavailable(server, s)
        directory.mkdir()
        await becomes(server, SERVING)


async def test_postgres_on_a_closed_port_is_not_serving(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/beacon"
    async with server_on(url, tmp_path) as (server, settings):
        assert await statuses(server) == {NOT_SERVING}
        await expect_database_unavailable(server, settings)


@dataclass
class TcpProxy:
    """A TCP relay to PostgreSQL that a test can cut and restore on the same port."""

    upstream: tuple[str, int]
    port: int = field(default_factory=free_port)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def proxied(url: str, proxy: TcpProxy) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


@pytest.fixture
def pg_upstream(backend: str) -> Iterator[tuple[str, int]]:
    parsed = make_url(PG_ADMIN_URL)
    yield parsed.host or "127.0.0.1", parsed.port or 5432


@pytest.mark.postgres_only
async def test_postgres_outage_turns_health_not_serving_and_back(
    settings: Settings, pg_upstream: tuple[str, int], tmp_path: Path
) -> None:
    proxy = TcpProxy(pg_upstream)
    await proxy.start()
    async with server_on(proxied(settings.database_url, proxy), tmp_path) as (server, _):
        assert await statuses(server) == {SERVING}
        await proxy.cut()
        await becomes(server, NOT_SERVING)
        await proxy.start()
        await becomes(server, SERVING)
    await proxy.cut()
