"""Cleaning an uploaded image: checked, decoded and encoded again, so only pixels are kept.

Decoding hostile bytes costs CPU and memory that nothing bounds but the image itself, so it
never runs in the server process: `files.clean_upload` runs `python -m service.domain.tenancy.images`
for each upload (this module imports only Pillow) at a lower priority; it caps its own
CPU time and address space, reads the upload on stdin and writes one JSON line, then the
clean bytes, on stdout; the server kills it past its timeout. Before any pixel is decoded
the image is bounded by what its header claims: at most MAX_ICON_SIDE pixels a side and
MAX_ICON_PIXELS in all, at most MAX_JPEG_SCANS scans in a JPEG (each scan is a pass over
every pixel: thousands fit in a few kilobytes), and only the first frame of an animation.
"""

from __future__ import annotations

import io
import json
import math
import re
import resource
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image

# Icons are small: the decoded image is bounded before its pixels are read.
MAX_ICON_SIDE = 4096
MAX_ICON_PIXELS = 2048 * 2048
# Encoders write up to ~12 scans for a progressive colour JPEG; the rest is an attack.
MAX_JPEG_SCANS = 64
# Lossy images are encoded again at the first of these qualities that fits the size cap.
LOSSY_QUALITIES = (90, 75, 60)
# The decoding process's address space (a 2048 x 2048 image needs a few tens of MiB).
MAX_DECODER_BYTES = 1024 * 1024 * 1024

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
# Markup a browser or another parser could act on, anywhere in the bytes: an image that is
# also an HTML/SVG/XML/PHP document (a polyglot) is refused even though it is re-encoded.
# Tokens are at least five bytes long, so compressed image data matches one by chance about
# once in 10^8 bytes.
_MARKUP = re.compile(
    rb"<(?:!doctype|\?xml|\?php|html|head[\s>]|body[\s>]|script|svg[\s>/]|iframe|object"
    rb"|embed|meta[\s>]|style|link[\s>]|form[\s>]|img[\s/])",
    re.IGNORECASE,
)
_PIL_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
# Modes each output format stores as they are; any other mode is converted.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})
_JPEG_MODES = frozenset({"L", "RGB"})


class RefusedUpload(Exception):
    """The bytes of an upload are not an acceptable image; `code` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CleanImage:
    """An upload decoded and re-encoded: only pixels, no metadata, comments or trailers."""

    content_type: str
    data: bytes


def sniff_image_type(data: bytes) -> str | None:
    """The image content type of `data` by its magic bytes (PNG, JPEG, WebP, GIF), else None."""
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return content_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _too_large(claimed: str) -> RefusedUpload:
    return RefusedUpload(
        "IMAGE_TOO_LARGE",
        f"the image {claimed}; icons may have at most {MAX_ICON_SIDE} pixels a side and"
        f" {MAX_ICON_PIXELS} pixels in all",
    )


def _check_size(width: int, height: int) -> None:
    if max(width, height) > MAX_ICON_SIDE or width * height > MAX_ICON_PIXELS:
        raise _too_large(f"is {width}x{height} pixels")


def _webp_chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, int]]:
    """(fourcc, payload offset) of the RIFF chunks in data[start:end]."""
    chunks = []
    while start + 8 <= end:
        size = int.from_bytes(data[start + 4 : start + 8], "little")
        chunks.append((data[start : start + 4], start + 8))
        start += 8 + size + (size & 1)
    return chunks


def _webp_header(data: bytes) -> tuple[int, int, bool]:
    """(width, height, lossless) of a WebP as its first chunks claim, read before Pillow
    (whose WebP decoder allocates the whole canvas as it opens the file)."""
    chunks = _webp_chunks(data, 12, len(data))
    if not chunks:
        raise RefusedUpload("BAD_IMAGE", "the image cannot be decoded")
    fourcc, at = chunks[0]
    head = data[at : at + 10]
    if fourcc == b"VP8X" and len(head) == 10:
        width = int.from_bytes(head[4:7], "little") + 1
        height = int.from_bytes(head[7:10], "little") + 1
        frames = [c for c in chunks if c[0] in (b"VP8 ", b"VP8L", b"ANMF")]
        first = frames[0] if frames else (b"", 0)
        if first[0] == b"ANMF":  # a frame's own chunks follow its 16-byte header
            inner = _webp_chunks(data, first[1] + 16, len(data))
            first = next((c for c in inner if c[0] in (b"VP8 ", b"VP8L")), (b"", 0))
        return width, height, first[0] == b"VP8L"
    if fourcc == b"VP8L" and len(head) >= 5:
        bits = int.from_bytes(head[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, True
    if fourcc == b"VP8 " and len(head) == 10:
        width = int.from_bytes(head[6:8], "little") & 0x3FFF
        height = int.from_bytes(head[8:10], "little") & 0x3FFF
        return width, height, False
    raise RefusedUpload("BAD_IMAGE", "the image cannot be decoded")


def jpeg_scan_count(data: bytes) -> int:
    """At least the number of scans in a JPEG: every scan starts with the SOS marker
    FF DA, which entropy-coded data never contains (it escapes FF as FF 00)."""
    return data.count(b"\xff\xda")


def clean_image(data: bytes, max_bytes: int) -> CleanImage:
    """Decodes an uploaded image and encodes it again in its own format (PNG, JPEG and WebP
    stay what they are, lossless WebP stays lossless, a JPEG keeps its quantization; GIF
    becomes PNG with its palette; animations keep their first frame), so what is stored is
    only pixels, about as large as what was sent and never more than `max_bytes`.

    RefusedUpload when the bytes are no PNG, JPEG, WebP or GIF by their magic bytes
    (UNSUPPORTED_TYPE), contain markup (UNSAFE_CONTENT), do not decode (BAD_IMAGE), claim
    more pixels than an icon may have or encode to more than `max_bytes`
    (IMAGE_TOO_LARGE), or are a JPEG of too many scans (IMAGE_TOO_COMPLEX). CPU-bound and
    fed hostile bytes: run it in its own process (`files.clean_upload`)."""
    sniffed = sniff_image_type(data)
    if sniffed is None:
        raise RefusedUpload("UNSUPPORTED_TYPE", "the upload must be a PNG, JPEG, WebP or GIF image")
    if _MARKUP.search(data):
        raise RefusedUpload("UNSAFE_CONTENT", "the image contains markup")
    lossless = False
    if sniffed == "image/webp":
        width, height, lossless = _webp_header(data)
        _check_size(width, height)
    if sniffed == "image/jpeg" and jpeg_scan_count(data) > MAX_JPEG_SCANS:
        raise RefusedUpload("IMAGE_TOO_COMPLEX", f"the JPEG has more than {MAX_JPEG_SCANS} scans")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(_PIL_FORMATS)) as image:
                if _PIL_FORMATS.get(image.format or "") != sniffed:
                    raise RefusedUpload("BAD_IMAGE", f"the image is not a valid {sniffed}")
                _check_size(*image.size)
                image.seek(0)
                image.load()
                return _encode(image, sniffed, lossless, max_bytes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large("claims far more pixels") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError):
        raise RefusedUpload("BAD_IMAGE", "the image cannot be decoded") from None


def _encode(image: Image.Image, sniffed: str, lossless: bool, max_bytes: int) -> CleanImage:
    """`image` encoded in the format of its upload, at the first setting (best first) whose
    output takes at most `max_bytes`."""
    # Only the pixels (and which palette entry is transparent) go to the encoder: no EXIF,
    # ICC profile, comment or text chunk of the upload is written again.
    image.info = {k: v for k, v in image.info.items() if k == "transparency"}
    tries: list[dict[str, Any]]
    if sniffed == "image/jpeg":
        kind, content_type = "JPEG", "image/jpeg"
        # The upload's own quantization first: about the size it was sent at.
        tries = [{"quality": "keep", "subsampling": "keep"}] if image.mode in _JPEG_MODES else []
        tries += [{"quality": quality} for quality in LOSSY_QUALITIES]
        if image.mode not in _JPEG_MODES:
            image = image.convert("RGB")
    elif sniffed == "image/webp":
        kind, content_type = "WEBP", "image/webp"
        tries = (
            [{"lossless": True}]
            if lossless
            else [{"quality": quality} for quality in LOSSY_QUALITIES]
        )
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    else:
        kind, content_type = "PNG", "image/png"
        tries = [{}]
        if image.mode not in _PNG_MODES:
            image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    size = 0
    for options in tries:
        out = io.BytesIO()
        image.save(out, kind, **options)
        size = len(out.getvalue())
        if size <= max_bytes:
            return CleanImage(content_type, out.getvalue())
    raise RefusedUpload(
        "IMAGE_TOO_LARGE",
        f"the image takes {size} bytes once cleaned, more than the {max_bytes} an icon may"
        " take; send a smaller one",
    )


def _limit_process(cpu_seconds: float) -> None:
    """Bounded CPU time and address space for this decoding process (the server lowers its
    priority as it starts it)."""
    cpu = math.ceil(cpu_seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (MAX_DECODER_BYTES, MAX_DECODER_BYTES))


def main(argv: list[str]) -> int:
    """`python -m service.domain.tenancy.images MAX_BYTES CPU_SECONDS`: the upload on stdin; on
    stdout one JSON line (`{"content_type": ...}` or `{"code": ..., "message": ...}`),
    then the clean image's bytes."""
    max_bytes, cpu_seconds = int(argv[0]), float(argv[1])
    _limit_process(cpu_seconds)
    data = sys.stdin.buffer.read(max_bytes + 1)
    try:
        image = clean_image(data, max_bytes)
    except RefusedUpload as refused:
        header, body = {"code": refused.code, "message": refused.message}, b""
    else:
        header, body = {"content_type": image.content_type}, image.data
    sys.stdout.buffer.write(json.dumps(header).encode() + b"\n" + body)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
