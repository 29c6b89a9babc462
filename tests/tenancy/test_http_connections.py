"""The HTTP side under connections that hold it without finishing a request: slow headers and
slow bodies are cut off, a peer's connections are capped, requests are rate-limited."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from service.app import App
from service.http.server import HttpServer
from tests.support.builders import png_bytes, upload_ticket
from tests.support.hostile_images import dedicated_http, on

Stubs = SimpleNamespace
# How long a test waits for the server to close a connection before calling it held open.
CLOSE_DEADLINE_SECONDS = 20.0


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def drip_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, start: bytes
) -> bytes:
    """Sends `start`, then one more byte of a header value every 50 ms (never the header's
    end) until the server closes the connection; what the server said before closing.
    TimeoutError past the deadline."""
    received = bytearray()
    writer.write(start)
    async with asyncio.timeout(CLOSE_DEADLINE_SECONDS):
        while True:
            with contextlib.suppress(ConnectionError):
                writer.write(b"a")
                await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.05)
            except TimeoutError:
                continue
            except ConnectionError:
                return bytes(received)
            if not chunk:
                return bytes(received)
            received.extend(chunk)


async def test_connections_sending_headers_byte_by_byte_are_closed(app: App) -> None:
    """Slow-loris: headers that never end. Each connection is closed once the header timeout
    passes, however steadily it sends."""
    async with dedicated_http(app, http_header_timeout_seconds=1.0) as server:
        connections = [await connect(server) for _ in range(8)]
        request = b"POST /uploads/file_aaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\nX-Padding: "
        try:
            said = await asyncio.gather(
                *(drip_until_closed(reader, writer, request) for reader, writer in connections)
            )
        finally:
            for _, writer in connections:
                writer.close()
        assert said == [b""] * 8  # closed without an answer: no request ever arrived
        async with httpx.AsyncClient() as http:  # the side still serves whole requests
            health = await http.get(f"http://127.0.0.1:{server.port}/healthz")
            assert health.status_code == 200


async def test_an_upload_body_that_does_not_arrive_in_time_is_refused(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    """Headers in time, then ten bytes of a promised million: 408 once the body timeout
    passes, the connection closed, the URL still unused."""
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    async with dedicated_http(app, http_body_timeout_seconds=1.0) as server:
        url = urlsplit(on(server, ticket.upload_url))
        reader, writer = await connect(server)
        try:
            writer.write(
                f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 1000000\r\n\r\n0123456789".encode()
            )
            await writer.drain()
            async with asyncio.timeout(CLOSE_DEADLINE_SECONDS):
                answer = await reader.read()  # until the server closes
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"BODY_TIMEOUT" in answer
        async with httpx.AsyncClient(timeout=30) as http:
            accepted = await http.post(on(server, ticket.upload_url), content=png_bytes())
            assert accepted.status_code == 201


@pytest.mark.parametrize(
    "caps",
    [
        {"http_max_connections_per_peer": 4, "http_max_connections": 0},
        {"http_max_connections_per_peer": 0, "http_max_connections": 4},
    ],
    ids=["per-peer", "total"],
)
async def test_connections_beyond_the_cap_are_refused(app: App, caps: dict[str, int]) -> None:
    """Four idle connections are held; the fifth is answered 503 and closed at once. When
    one of the four goes, a new connection is served again."""
    async with dedicated_http(app, http_header_timeout_seconds=60.0, **caps) as server:
        held = [await connect(server) for _ in range(4)]
        try:
            reader, writer = await connect(server)
            async with asyncio.timeout(CLOSE_DEADLINE_SECONDS):
                refused = await reader.read()
            writer.close()
            assert refused.startswith(b"HTTP/1.1 503"), refused
            held.pop()[1].close()
            async with httpx.AsyncClient() as http:
                async with asyncio.timeout(CLOSE_DEADLINE_SECONDS):
                    while True:  # the server notices the closed connection soon after
                        with contextlib.suppress(httpx.HTTPError):
                            health = await http.get(f"http://127.0.0.1:{server.port}/healthz")
                            if health.status_code == 200:
                                break
                        await asyncio.sleep(0.05)
        finally:
            for _, held_writer in held:
                held_writer.close()


async def test_requests_beyond_the_peer_and_url_limits_get_429(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    async with (
        dedicated_http(app, http_peer_rate_limit_per_minute=6, upload_attempts_per_url=3) as server,
        httpx.AsyncClient(timeout=30) as http,
    ):
        url = on(server, ticket.upload_url)
        codes = [(await http.post(url, content=b"not an image")).status_code for _ in range(4)]
        assert codes == [415, 415, 415, 429]
        health = f"http://127.0.0.1:{server.port}/healthz"
        codes = [(await http.get(health)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = await http.get(health)
        assert limited.json()["error"]["code"] == "RATE_LIMITED"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
