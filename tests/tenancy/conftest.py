"""The HTTP side (icon uploads and downloads) next to the shared test server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from service.app import App
from service.http.server import HttpServer, start_http


@pytest.fixture(scope="session")
async def http_server(app: App) -> AsyncIterator[HttpServer]:
    """Beacon's HTTP side on a free port; signed URLs point at it."""
    server = await start_http(app)
    yield server
    await server.stop()


@pytest.fixture
async def http(http_server: HttpServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
