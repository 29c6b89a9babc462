"""The aiohttp server that runs beside the gRPC server, sharing its settings and database.

Routes:
- `POST /uploads/{file_id}?expires=..&sig=..` — the body of a signed, single-use upload
  URL (from GenerateWorkspaceIconUploadUrl): read as a stream with a size cap, accepted
  only when its bytes are a PNG, JPEG, WebP or GIF image without markup, then decoded
  and re-encoded (`files.clean_image`): what is stored and served is only pixels.
- `GET /files/{file_id}?expires=..&sig=..` — an uploaded file, through a signed URL.
- `GET /healthz` — database reachable.

`GET /metrics` (Prometheus) is served apart, on `settings.metrics_addr` (loopback by
default; empty disables it): metrics are for the operator, never on the public side.

Refusals are JSON `{"error": {"code": ..., "message": ...}}`: 403 for a bad signature,
410 for an expired or already used URL, 413 above the size cap, 415 for other content
(UNSUPPORTED_TYPE, UNSAFE_CONTENT for markup, BAD_IMAGE for bytes that do not decode).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from service.app import App
from service.clock import utcnow
from service.domain import files
from service.domain.files import FileStorage

log = logging.getLogger("beacon.http")
CHUNK_BYTES = 64 * 1024
APP_KEY = web.AppKey("beacon_app", App)
STORAGE_KEY = web.AppKey("beacon_storage", FileStorage)


@dataclass
class HttpServer:
    """A started HTTP side: the port it listens on, and how to stop it."""

    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


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
    limit = app.settings.icon_max_bytes
    data = await _read_capped(request, limit)
    if data is None:
        return _error(413, "TOO_LARGE", f"uploads are limited to {limit} bytes")
    try:
        image = await asyncio.to_thread(files.clean_image, data)
    except files.RefusedUpload as bad:
        return _error(415, bad.code, bad.message)
    content_type, data = image.content_type, image.data
    async with app.db.transaction() as session:
        claimed = await files.claim_upload(
            session, file_id, content_type=content_type, size=len(data), now=utcnow()
        )
    if not claimed:
        return _error(410, "URL_USED", "this upload URL was already used or has expired")
    try:
        await request.app[STORAGE_KEY].put(file_id, data)
    except Exception:
        log.exception("storing an upload failed", extra={"file_id": file_id})
        async with app.db.transaction() as session:
            await files.release_upload(session, file_id)
        return _error(503, "STORAGE_UNAVAILABLE", "the file could not be stored; retry")
    return web.json_response(
        {"storage_id": file_id, "content_type": content_type, "size": len(data)}, status=201
    )


async def download(request: web.Request) -> web.StreamResponse:
    file_id = request.match_info["file_id"]
    refused = _signed(request, "GET", files.download_path(file_id))
    if refused is not None:
        return refused
    app = request.app[APP_KEY]
    async with app.db.transaction(write=False) as session:
        file = await files.uploaded_file(session, file_id)
        content_type = file.content_type if file is not None else ""
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
    application = web.Application()
    application[APP_KEY] = app
    application[STORAGE_KEY] = storage or files.storage_for(app.settings)
    application.add_routes(
        [
            web.post("/uploads/{file_id}", upload),
            web.get("/files/{file_id}", download),
            web.get("/healthz", healthz),
        ]
    )
    return application


async def _serve(application: web.Application, address: str) -> HttpServer:
    host, _, port_text = address.rpartition(":")
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port_text), reuse_port=True)
    await site.start()
    return HttpServer(runner, _bound_port(runner))


async def start_metrics(app: App) -> HttpServer | None:
    """Serves `GET /metrics` on `settings.metrics_addr` (port 0 picks a free port); None
    when the address is empty or metrics are disabled."""
    settings = app.settings
    if not settings.metrics_addr or not settings.metrics_enabled:
        return None
    application = web.Application()
    application.add_routes([web.get("/metrics", metrics)])
    server = await _serve(application, settings.metrics_addr)
    log.info("metrics server started", extra={"port": server.port})
    return server


async def start_http(app: App) -> HttpServer:
    """Starts the HTTP side on `settings.http_addr` (port 0 picks a free port).

    When `settings.public_http_url` is empty, signed URLs point at the address actually
    bound, so `http_addr` is updated to it.
    """
    settings = app.settings
    port_text = settings.http_addr.rpartition(":")[2]
    server = await _serve(build_application(app), settings.http_addr)
    port = server.port
    if not settings.public_http_url and int(port_text) != port:
        settings.http_addr = f"{settings.http_addr.rpartition(':')[0]}:{port}"
        settings.__dict__.pop("effective_public_http_url", None)
    log.info("http server started", extra={"port": port})
    return server


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTP server is not bound to a TCP port")
