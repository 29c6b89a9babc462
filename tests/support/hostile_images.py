"""Images made to cost the decoder, and a dedicated HTTP side to send them to (no tests here)."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from PIL import Image

from service.app import App
from service.http.server import HttpServer, start_http
from tests.support import unique


def scan_bomb_jpeg(scans: int, size: int = 2048) -> bytes:
    """A progressive JPEG of `size`² pixels whose last scan is repeated `scans` times: a few
    bytes each, but each one a pass over every pixel (1000 scans: ~2.4 s of decoding)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "white").save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * scans + data[end:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels, with one tiny compressed row."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def noisy_webp(size: int, quality: int) -> bytes:
    """A WebP photo-like image (smooth gradient plus noise) of `size`² pixels."""
    noise = Image.effect_noise((size, size), 64).convert("RGB")
    gradient = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    image = Image.blend(gradient, noise, 0.2)
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=quality)
    return buffer.getvalue()


def on(server: HttpServer, url: str) -> str:
    """`url` (signed for the session's HTTP side) sent to `server` instead: the signature
    covers the method, path and expiry, not the host."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{server.port}"))


@contextlib.asynccontextmanager
async def dedicated_http(app: App, **settings: Any) -> AsyncIterator[HttpServer]:
    """An HTTP side of its own on `app`'s database, with `settings` changed and rate-limit
    counters of its own."""
    changed = app.settings.model_copy(
        update={
            "http_addr": "127.0.0.1:0",
            "public_http_url": "http://unused.invalid",
            "rate_limit_key_prefix": unique(f"{app.settings.rate_limit_key_prefix}-http-"),
            **settings,
        }
    )
    server = await start_http(App(settings=changed, db=app.db))
    try:
        yield server
    finally:
        await server.stop()
