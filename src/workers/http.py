"""The workers' HTTP client: httpx's interface over aiohttp's connection pool.

Provider adapters speak `httpx.AsyncClient`. httpx's own pool (httpcore 1.0) walks every pooled
connection, with a readability syscall for each, whenever a request is queued or finishes: with
a hundred keep-alive connections that costs milliseconds of CPU per request and caps one process
far below the rate its concurrency allows. aiohttp's pool hands out idle connections in
constant time, so the worker sends through it while adapters keep the httpx API.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends requests with one aiohttp session (HTTP/1.1 keep-alive).

    The session is opened on first use, on the running event loop; responses are read whole.
    Content decoding is left to httpx (aiohttp passes bodies through as received).
    """

    def __init__(self, *, max_connections: int, keepalive_seconds: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=self._keepalive_seconds,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        body = await request.aread()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=_timeout(request.extensions.get("timeout", {})),
            ) as response:
                content = await response.read()
                return httpx.Response(
                    status_code=response.status,
                    headers=list(response.raw_headers),
                    content=content,
                    request=request,
                )
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.NetworkError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _timeout(timeouts: dict[str, Any]) -> aiohttp.ClientTimeout:
    """httpx's per-phase timeouts (seconds or None) in aiohttp's terms."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=_add(timeouts.get("pool"), timeouts.get("connect")),
        sock_connect=timeouts.get("connect"),
        sock_read=timeouts.get("read"),
    )


def _add(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else first + second


def build_client(*, max_connections: int, timeout: float) -> httpx.AsyncClient:
    """The shared client of a worker process (one keep-alive pool for every provider)."""
    return httpx.AsyncClient(
        transport=AiohttpTransport(max_connections=max_connections), timeout=timeout
    )
