"""The aiohttp server that runs beside the gRPC server, sharing its settings and database.

Routes:
- `POST /uploads/{file_id}?expires=..&sig=..` — the body of a signed, single-use upload
  URL (from GenerateWorkspaceIconUploadUrl). The URL is checked first (signature, expiry,
  attempts left, still unused); only then is the body read, as a stream with a size and a
  time cap, and accepted only when its bytes are a PNG, JPEG, WebP or GIF image without
  markup, decoded and re-encoded in a process of its own (`files.clean_upload`): what is
  stored and served is only pixels. In each process one attempt per URL runs at a time,
  and at most `upload_decode_concurrency` decodes.
- `GET /files/{file_id}?expires=..&sig=..` — an uploaded file, through a signed URL.
- `GET /healthz` — database reachable.

Connections: a request's headers must arrive within `http_header_timeout_seconds` of the
connection (or of the previous response); a peer address may hold at most
`http_max_connections_per_peer` connections and the side `http_max_connections` in all
(beyond, 503 and closed); every request counts against `http_peer_rate_limit_per_minute`.

`GET /metrics` (Prometheus) is served apart, on `settings.metrics_addr` (loopback by
default; empty disables it): metrics are for the operator, never on the public side.

Refusals are JSON `{"error": {"code": ..., "message": ...}}`: 403 for a bad signature,
408 for a body that did not arrive in time, 410 for an expired or already used URL, 413
above the size cap, 415 for other content (UNSUPPORTED_TYPE, UNSAFE_CONTENT for markup,
BAD_IMAGE for bytes that do not decode, IMAGE_TOO_LARGE, IMAGE_TOO_COMPLEX), 429 beyond a
rate limit and 503 while every decoding slot stays busy (both with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy.exc import DBAPIError

from beacon.v1 import options_pb2
from service.app import App
from service.config import Settings
from service.domain.errors import ResourceExhausted
from service.domain.tenancy import files
from service.domain.tenancy.files import FileStorage
from service.domain.tenancy.images import CleanImage, RefusedUpload
from service.rpc_options import RateLimit

log = logging.getLogger("beacon.http")
CHUNK_BYTES = 64 * 1024
APP_KEY = web.AppKey("beacon_app", App)
STORAGE_KEY = web.AppKey("beacon_storage", FileStorage)
# What a connection beyond a cap is told before it is closed.
_REFUSED_CONNECTION = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@dataclass
class HttpServer:
    """A started HTTP side: the port it listens on, and how to stop it."""

    runner: web.AppRunner
    listener: asyncio.Server
    port: int

    async def stop(self) -> None:
        self.listener.close()
        await self.runner.cleanup()


class ConnectionCaps:
    """Open connections per peer address and in all, against their caps (0: no cap)."""

    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer = per_peer
        self.total = total
        self.open: Counter[str] = Counter()

    def admit(self, peer: str) -> bool:
        """Counts a new connection from `peer`; False (not counted) beyond a cap."""
        if (self.total and self.open.total() >= self.total) or (
            self.per_peer and self.open[peer] >= self.per_peer
        ):
            return False
        self.open[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self.open[peer] -= 1
        if self.open[peer] <= 0:
            del self.open[peer]


class _GuardedConnection(asyncio.Protocol):
    """One connection: refused (503, closed) beyond the caps, otherwise handed to aiohttp's
    own protocol, which this forwards every event to."""

    def __init__(self, caps: ConnectionCaps, make: Callable[[], asyncio.Protocol]) -> None:
        self._caps = caps
        self._make = make
        self._inner: asyncio.Protocol | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        self._peer = str(peername[0]) if isinstance(peername, tuple) else ""
        if not self._caps.admit(self._peer):
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_REFUSED_CONNECTION)
            transport.close()
            return
        self._inner = self._make()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._caps.release(self._peer)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


@dataclass
class UploadGate:
    """In this process: one attempt at a time per upload URL (a second waits, then finds
    the URL used), and at most `decodes` images decoding at once."""

    decodes: asyncio.Semaphore
    _locks: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, file_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(file_id, (asyncio.Lock(), 0))
        self._locks[file_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[file_id]
            if users == 1:
                del self._locks[file_id]
            else:
                self._locks[file_id] = (lock, users - 1)


GATE_KEY = web.AppKey("beacon_upload_gate", UploadGate)


def _error(
    status: int, code: str, message: str, *, retry_after: float | None = None
) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def _signed(request: web.Request, method: str, path: str) -> web.Response | None:
    """None when the request carries a valid, unexpired signature for (method, path)."""
    settings = request.app[APP_KEY].settings
    expires = request.query.get("expires", "")
    sig = request.query.get("sig", "")
    if not files.signature_valid(settings, method, path, expires, sig):
        return _error(403, "BAD_SIGNATURE", "the URL signature is missing or invalid")
    now = time.time()
    if files.expires_too_far(settings, method, int(expires), now):
        return _error(403, "EXPIRES_TOO_FAR", "the URL expires later than this server allows")
    if int(expires) < now:
        return _error(410, "URL_EXPIRED", "the URL has expired; request a new one")
    return None


async def _limited(
    request: web.Request, rule: str, requests: int, period: int, subject: str
) -> web.Response | None:
    """None when `subject` has calls left under `rule` (`requests` per `period` seconds);
    else the 429 to answer."""
    if requests <= 0:
        return None
    limit = RateLimit(requests, period, options_pb2.RATE_LIMIT_KEY_PEER, False, "")
    try:
        await request.app[APP_KEY].rate_limits.hit(rule, 0, limit, subject)
    except ResourceExhausted as exhausted:
        return _error(
            429,
            "RATE_LIMITED",
            f"at most {requests} requests per {period} s {rule.removeprefix('http ')}",
            retry_after=exhausted.retry_after,
        )
    return None


@web.middleware
async def limit_peers(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """Every request counts against the per-peer limit of the HTTP side."""
    settings = request.app[APP_KEY].settings
    refused = await _limited(
        request,
        "http per peer",
        settings.http_peer_rate_limit_per_minute,
        60,
        f"peer:{request.remote}",
    )
    if refused is not None:
        return refused
    response: web.StreamResponse = await handler(request)
    return response


@web.middleware
async def database_unavailable(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """A request that meets the database down (a restart, a failover) is answered 503 with
    Retry-After, as gRPC answers UNAVAILABLE, never 500 (the soak's PostgreSQL restart
    caught four uploads checking their URL at that moment)."""
    try:
        response: web.StreamResponse = await handler(request)
    except (DBAPIError, ConnectionError) as exc:
        log.warning("database unavailable for %s: %s", request.path, type(exc).__name__)
        return _error(
            503, "DATABASE_UNAVAILABLE", "the database is unavailable; retry", retry_after=1
        )
    return response


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` bytes (never buffers more)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        body.extend(chunk)
        if len(body) > limit:
            return None
    return bytes(body)


async def upload(request: web.Request) -> web.Response:
    file_id = request.match_info["file_id"]
    refused = _signed(request, "POST", files.upload_path(file_id))
    if refused is not None:
        return refused
    app = request.app[APP_KEY]
    settings = app.settings
    refused = await _limited(
        request,
        "http per upload URL",
        settings.upload_attempts_per_url,
        settings.upload_url_ttl_seconds,
        f"upload:{file_id}",
    )
    if refused is not None:
        return refused
    async with request.app[GATE_KEY].one_at_a_time(file_id):
        if not await app.services.files.upload_pending(file_id):
            return _error(410, "URL_USED", "this upload URL was already used or has expired")
        return await _receive(request, app, file_id)


async def _receive(request: web.Request, app: App, file_id: str) -> web.Response:
    """Reads, cleans and stores the body of an upload to a URL that is still unused."""
    settings = app.settings
    limit = settings.icon_max_bytes
    try:
        async with asyncio.timeout(settings.http_body_timeout_seconds):
            data = await _read_capped(request, limit)
    except TimeoutError:
        response = _error(
            408,
            "BODY_TIMEOUT",
            f"the body did not arrive within {settings.http_body_timeout_seconds:g} seconds",
        )
        response.force_close()
        return response
    if data is None:
        return _error(413, "TOO_LARGE", f"uploads are limited to {limit} bytes")
    try:
        image = await _clean(request, data, settings)
    except RefusedUpload as bad:
        return _error(415, bad.code, bad.message)
    except TimeoutError:
        return _error(503, "BUSY", "too many uploads are being decoded; retry", retry_after=1)
    content_type, data = image.content_type, image.data
    claimed = await app.services.files.claim_upload(
        file_id, content_type=content_type, size=len(data)
    )
    if not claimed:
        return _error(410, "URL_USED", "this upload URL was already used or has expired")
    try:
        await request.app[STORAGE_KEY].put(file_id, data)
    except Exception:
        log.exception("storing an upload failed", extra={"file_id": file_id})
        await app.services.files.release_upload(file_id)
        return _error(503, "STORAGE_UNAVAILABLE", "the file could not be stored; retry")
    return web.json_response(
        {"storage_id": file_id, "content_type": content_type, "size": len(data)}, status=201
    )


async def _clean(request: web.Request, data: bytes, settings: Settings) -> CleanImage:
    """`files.clean_upload` in one of the decoding slots; TimeoutError when none frees up
    within the decode timeout."""
    decodes = request.app[GATE_KEY].decodes
    async with asyncio.timeout(settings.upload_decode_timeout_seconds):
        await decodes.acquire()
    try:
        return await files.clean_upload(data, settings)
    finally:
        decodes.release()


async def download(request: web.Request) -> web.StreamResponse:
    file_id = request.match_info["file_id"]
    refused = _signed(request, "GET", files.download_path(file_id))
    if refused is not None:
        return refused
    app = request.app[APP_KEY]
    content_type = await app.services.files.content_type(file_id)
    data = await request.app[STORAGE_KEY].get(file_id) if content_type else None
    if data is None:
        return _error(404, "NOT_FOUND", "no such file")
    return web.Response(
        body=data,
        content_type=content_type,
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def healthz(request: web.Request) -> web.Response:
    if await request.app[APP_KEY].db.ping():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "database unreachable"}, status=503)


def build_application(app: App, storage: FileStorage | None = None) -> web.Application:
    """The aiohttp application (routes above) for `app`."""
    settings = app.settings
    application = web.Application(middlewares=[limit_peers, database_unavailable])
    application[APP_KEY] = app
    application[STORAGE_KEY] = storage or files.storage_for(settings)
    application[GATE_KEY] = UploadGate(asyncio.Semaphore(settings.upload_decode_concurrency))
    application.add_routes(
        [
            web.post("/uploads/{file_id}", upload),
            web.get("/files/{file_id}", download),
            web.get("/healthz", healthz),
        ]
    )
    return application


async def _serve(application: web.Application, address: str, settings: Settings) -> HttpServer:
    """Serves `application` on `address`. aiohttp closes a connection that is idle (no
    request, or a request whose headers are still incomplete) for its keep-alive timeout,
    so that timeout is the header timeout."""
    host, _, port_text = address.rpartition(":")
    runner = web.AppRunner(
        application, access_log=None, keepalive_timeout=settings.http_header_timeout_seconds
    )
    await runner.setup()
    handlers = runner.server
    assert handlers is not None  # set by setup()
    caps = ConnectionCaps(settings.http_max_connections_per_peer, settings.http_max_connections)
    listener = await asyncio.get_running_loop().create_server(
        lambda: _GuardedConnection(caps, handlers),
        host.strip("[]") or "127.0.0.1",
        int(port_text),
        reuse_port=True,
    )
    return HttpServer(runner, listener, int(listener.sockets[0].getsockname()[1]))


async def start_metrics(app: App) -> HttpServer | None:
    """Serves `GET /metrics` on `settings.metrics_addr` (port 0 picks a free port); None
    when the address is empty or metrics are disabled."""
    settings = app.settings
    if not settings.metrics_addr or not settings.metrics_enabled:
        return None
    application = web.Application()
    application.add_routes([web.get("/metrics", metrics)])
    server = await _serve(application, settings.metrics_addr, settings)
    log.info("metrics server started", extra={"port": server.port})
    return server


async def start_http(app: App) -> HttpServer:
    """Starts the HTTP side on `settings.http_addr` (port 0 picks a free port).

    When `settings.public_http_url` is empty, signed URLs point at the address actually
    bound, so `http_addr` is updated to it.
    """
    settings = app.settings
    port_text = settings.http_addr.rpartition(":")[2]
    server = await _serve(build_application(app), settings.http_addr, settings)
    port = server.port
    if not settings.public_http_url and int(port_text) != port:
        settings.http_addr = f"{settings.http_addr.rpartition(':')[0]}:{port}"
        settings.__dict__.pop("effective_public_http_url", None)
    log.info("http server started", extra={"port": port})
    return server
