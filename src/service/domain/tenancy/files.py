"""Uploaded files (workspace icons): signed URLs, single-use uploads, storage of the bytes.

An upload starts as a `files` row in state `pending`, owned by the uploader, with a signed
URL that expires. The first valid POST to that URL moves the row to `uploaded` in one
conditional UPDATE, so a URL can never be used twice, even by racing requests. Reads go
through signed, expiring GET URLs. The bytes live behind the small `FileStorage` protocol:
a local directory by default; an S3-compatible store only needs `put`, `get` and `delete`.
The bytes are cleaned (`service.domain.tenancy.images`) in a process of their own before a URL is
used up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id, utcnow
from service.config import Settings
from service.db.models import File
from service.domain.errors import NotFound
from service.domain.inputs import require_id
from service.domain.tenancy import images
from service.domain.tenancy.images import CleanImage, RefusedUpload
from service.domain.tenancy.images import sniff_image_type as sniff_image_type

PENDING = "pending"
UPLOADED = "uploaded"
# Signed GET URLs expire on a grid of this many seconds, so that repeated reads of one
# workspace return the same icon URL (cacheable) for a while.
URL_EXPIRY_GRID_SECONDS = 300
# Servers behind one load balancer may disagree on the time by this much.
URL_CLOCK_SKEW_SECONDS = 5
_FILE_ID = re.compile(r"^file_[a-z2-7]{16}$")
DECODER_NICENESS = 10


class FileStorage(Protocol):
    """Where the bytes of uploaded files live, keyed by file id."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...


class LocalFileStorage:
    """Files in a local directory; writes are atomic (temporary file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _FILE_ID.fullmatch(key):
            raise ValueError(f"not a file id: {key!r}")
        return self.root / key[-2:] / key

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)


def storage_for(settings: Settings) -> FileStorage:
    """The configured storage backend (the local `<data_dir>/files` directory)."""
    return LocalFileStorage(Path(settings.data_dir) / "files")


# Signed URLs ------------------------------------------------------------------------------


def _signature(settings: Settings, method: str, path: str, expires: int) -> str:
    message = f"{method}\n{path}\n{expires}".encode()
    return hmac.new(settings.effective_signing_secret, message, hashlib.sha256).hexdigest()


def signed_url(settings: Settings, method: str, path: str, expires: int) -> str:
    """The public URL of `path` on the HTTP side, signed for `method` until `expires`."""
    query = urlencode({"expires": expires, "sig": _signature(settings, method, path, expires)})
    return f"{settings.effective_public_http_url}{path}?{query}"


def signature_valid(settings: Settings, method: str, path: str, expires: str, sig: str) -> bool:
    """Whether `sig` is the signature of (method, path, expires); says nothing of expiry."""
    if not expires.isdigit() or len(expires) > 12:
        return False
    expected = _signature(settings, method, path, int(expires))
    return hmac.compare_digest(expected, sig)


def expires_too_far(settings: Settings, method: str, expires: int, now: float) -> bool:
    """Whether `expires` lies further ahead than any URL this server signs for `method`.

    Such a URL was not made by `signed_url` under the current TTLs (a leaked key, or one
    signed before the TTL was shortened), so it is refused even with a valid signature.
    """
    if method == "POST":
        lifetime = settings.upload_url_ttl_seconds
    else:
        lifetime = settings.icon_url_ttl_seconds + URL_EXPIRY_GRID_SECONDS
    return expires > now + lifetime + URL_CLOCK_SKEW_SECONDS


def upload_path(file_id: str) -> str:
    return f"/uploads/{file_id}"


def download_path(file_id: str) -> str:
    return f"/files/{file_id}"


def download_url(settings: Settings, file_id: str, now: datetime | None = None) -> str:
    """A signed GET URL of an uploaded file, valid for at least `icon_url_ttl_seconds`."""
    moment = (now or utcnow()).timestamp() + settings.icon_url_ttl_seconds
    expires = math.ceil(moment / URL_EXPIRY_GRID_SECONDS) * URL_EXPIRY_GRID_SECONDS
    return signed_url(settings, "GET", download_path(file_id), expires)


# Uploads ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadTicket:
    """Where and until when the owner may upload the bytes of a new file."""

    file_id: str
    url: str
    expire_time: datetime
    max_bytes: int


async def create_upload(
    session: AsyncSession, settings: Settings, owner_id: str, *, now: datetime
) -> UploadTicket:
    """A new pending file owned by `owner_id`, made at `now`, and its signed, single-use
    upload URL."""
    expire_time = now + timedelta(seconds=settings.upload_url_ttl_seconds)
    file = File(
        id=new_id("file"),
        owner_id=owner_id,
        state=PENDING,
        upload_expire_time=expire_time,
        create_time=now,
    )
    session.add(file)
    await session.flush()
    url = signed_url(settings, "POST", upload_path(file.id), math.floor(expire_time.timestamp()))
    return UploadTicket(file.id, url, expire_time, settings.icon_max_bytes)


async def clean_upload(data: bytes, settings: Settings) -> CleanImage:
    """The upload `data` cleaned by `images.clean_image` in a process of its own (see
    `service.domain.tenancy.images`), killed after `upload_decode_timeout_seconds`.

    RefusedUpload as `images.clean_image` raises it, or IMAGE_TOO_COMPLEX when decoding
    took too long or too much; RuntimeError when the process failed otherwise.
    """
    timeout = settings.upload_decode_timeout_seconds
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        images.__name__,
        str(settings.icon_max_bytes),
        str(timeout),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Below the server's priority from its first instruction: the server's calls come first.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, process.pid, DECODER_NICENESS)
    try:
        out, err = await asyncio.wait_for(process.communicate(data), timeout)
    except TimeoutError:
        raise RefusedUpload(
            "IMAGE_TOO_COMPLEX", f"the image did not decode within {timeout:g} seconds"
        ) from None
    finally:
        if process.returncode is None:  # timed out, or the request was cancelled
            process.kill()
            await process.wait()
    if process.returncode != 0 or b"\n" not in out:
        if process.returncode is not None and process.returncode < 0:  # its CPU or memory cap
            raise RefusedUpload("IMAGE_TOO_COMPLEX", "the image takes too much to decode")
        raise RuntimeError(f"the image decoder failed: {err.decode(errors='replace')[-2000:]}")
    line, _, body = out.partition(b"\n")
    header = json.loads(line)
    if "code" in header:
        raise RefusedUpload(str(header["code"]), str(header["message"]))
    return CleanImage(str(header["content_type"]), body)


async def upload_pending(session: AsyncSession, file_id: str, *, now: datetime) -> bool:
    """Whether `file_id` still waits for its bytes at `now` (pending, unexpired): checked
    before an upload's body is read, so a used URL costs nothing to replay."""
    state = await session.scalar(
        select(File.state).where(File.id == file_id, File.upload_expire_time > now)
    )
    return state == PENDING


async def claim_upload(
    session: AsyncSession,
    file_id: str,
    *,
    content_type: str,
    size: int,
    now: datetime,
) -> bool:
    """Marks a pending file, unexpired at `now`, uploaded; False when it was used, expired or
    gone.

    One conditional UPDATE: of two racing uploads to the same URL exactly one wins.
    """
    result = await session.execute(
        update(File)
        .where(File.id == file_id, File.state == PENDING, File.upload_expire_time > now)
        .values(state=UPLOADED, content_type=content_type, size=size, upload_time=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_upload(session: AsyncSession, file_id: str) -> None:
    """Returns a claimed file to pending (its bytes could not be stored)."""
    await session.execute(
        update(File)
        .where(File.id == file_id)
        .values(state=PENDING, content_type="", size=0, upload_time=None)
        .execution_options(synchronize_session=False)
    )


async def uploaded_file(session: AsyncSession, file_id: str) -> File | None:
    """The file when it has been uploaded, else None."""
    file = await session.get(File, file_id)
    return file if file is not None and file.state == UPLOADED else None


async def require_own_upload(session: AsyncSession, owner_id: str, field: str, file_id: str) -> str:
    """`file_id` when it names a file `owner_id` uploaded; NotFound otherwise (even when
    it exists but belongs to someone else, so ids of other users' files leak nothing).
    A malformed id is InvalidArgument naming `field`."""
    require_id(field, file_id)
    found = await session.scalar(
        select(File.id).where(File.id == file_id, File.owner_id == owner_id, File.state == UPLOADED)
    )
    if found is None:
        raise NotFound("file", file_id)
    return file_id


async def delete_bytes(storage: FileStorage, file_ids: Iterable[str]) -> None:
    """Removes the stored bytes of files whose rows are gone (best effort, after commit)."""
    for file_id in file_ids:
        await storage.delete(file_id)
