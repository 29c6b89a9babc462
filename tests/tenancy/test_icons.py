"""Workspace icons: signed, expiring, single-use uploads on the HTTP side, checked by size and
content, owned by the uploader, served back through signed GET URLs."""

from __future__ import annotations

import asyncio
import io
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
from google.protobuf.field_mask_pb2 import FieldMask
from PIL import Image

from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.config import Settings
from service.domain.tenancy import files
from service.http.server import HttpServer, start_metrics
from tests.support import expect_error
from tests.support.builders import new_workspace, png_bytes, upload_icon, upload_ticket

Stubs = SimpleNamespace


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    """(format, size, RGB pixels) of an image: what a viewer sees of it."""
    with Image.open(io.BytesIO(data)) as image:
        return str(image.format), image.size, image.convert("RGB").tobytes()


def set_icon(workspace_id: str, file_id: str) -> ws_pb.UpdateWorkspaceRequest:
    return ws_pb.UpdateWorkspaceRequest(
        workspace=ws_pb.Workspace(id=workspace_id, icon_file_id=file_id),
        update_mask=FieldMask(paths=["icon_file_id"]),
    )


async def test_png_round_trip_through_update_workspace(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient
) -> None:
    user = await new_user()
    workspace = (await new_workspace(stubs, user)).workspace
    assert workspace.icon_url == ""
    image = png_bytes(32, "green")
    icon = await upload_icon(stubs, http, user, image)
    updated = await stubs.workspaces.UpdateWorkspace(
        set_icon(workspace.id, icon), metadata=user.metadata
    )
    assert updated.icon_file_id == icon
    served = await http.get(updated.icon_url)
    assert served.status_code == 200
    assert pixels(served.content) == pixels(image)  # re-encoded: same pixels
    assert served.headers["content-type"] == "image/png"
    expires = int(parse_qs(urlsplit(updated.icon_url).query)["expires"][0])
    assert expires >= time.time() + 3000
    # A tampered URL serves nothing.
    forged = updated.icon_url.replace(f"expires={expires}", f"expires={expires + 3600}")
    assert (await http.get(forged)).status_code == 403
    cleared = await stubs.workspaces.UpdateWorkspace(
        set_icon(workspace.id, ""), metadata=user.metadata
    )
    assert cleared.icon_url == "" and cleared.icon_file_id == ""


async def test_oversize_upload_is_refused_and_the_url_stays_usable(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient, settings: Settings
) -> None:
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    too_big = png_bytes() + b"\x00" * settings.icon_max_bytes
    refused = await http.post(ticket.upload_url, content=too_big)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "TOO_LARGE"

    async def chunks() -> Any:  # no Content-Length: the cap holds on the stream itself
        yield png_bytes()
        for _ in range(settings.icon_max_bytes // 65536 + 2):
            yield b"\x00" * 65536

    streamed = await http.post(ticket.upload_url, content=chunks())
    assert streamed.status_code == 413
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        new_workspace(stubs, user, icon_file_id=ticket.storage_id),
    )
    accepted = await http.post(ticket.upload_url, content=png_bytes())
    assert accepted.status_code == 201


async def test_wrong_content_is_refused_whatever_the_header_says(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient
) -> None:
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    for body in (b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"%PDF-1.7 ...", b""):
        refused = await http.post(
            ticket.upload_url, content=body, headers={"Content-Type": "image/png"}
        )
        assert refused.status_code == 415
        assert refused.json()["error"]["code"] == "UNSUPPORTED_TYPE"


async def test_reused_url_is_refused_even_when_racing(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient
) -> None:
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    first = png_bytes(8, "red")
    results = await asyncio.gather(
        *(http.post(ticket.upload_url, content=png_bytes(8, c)) for c in ("red", "blue", "white"))
    )
    assert sorted(r.status_code for r in results) == [201, 410, 410]
    winner = next(i for i, r in enumerate(results) if r.status_code == 201)
    again = await http.post(ticket.upload_url, content=first)
    assert again.status_code == 410
    assert again.json()["error"]["code"] == "URL_USED"
    workspace = (await new_workspace(stubs, user, icon_file_id=ticket.storage_id)).workspace
    served = await http.get(workspace.icon_url)
    assert pixels(served.content) == pixels(png_bytes(8, ("red", "blue", "white")[winner]))


async def test_expired_or_forged_upload_urls_are_refused(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient, settings: Settings
) -> None:
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    past = int(time.time()) - 5
    expired = files.signed_url(settings, "POST", files.upload_path(ticket.storage_id), past)
    gone = await http.post(expired, content=png_bytes())
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "URL_EXPIRED"
    for forged in (
        ticket.upload_url[:-4] + "0000",
        ticket.upload_url.split("?")[0],
        ticket.upload_url.replace("/uploads/", "/files/"),
    ):
        response = await http.post(forged, content=png_bytes())
        assert response.status_code in (403, 405), forged
    # Signing a download URL does not make it an upload URL.
    download = files.signed_url(
        settings, "GET", files.download_path(ticket.storage_id), past + 3600
    )
    wrong_use = download.replace("/files/", "/uploads/")
    assert (await http.post(wrong_use, content=png_bytes())).status_code == 403


async def test_urls_expiring_later_than_the_ttl_allows_are_refused(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient, settings: Settings
) -> None:
    """A validly signed URL whose `expires` lies beyond the configured TTL was not made by
    this server's current rules (a leaked key, an old TTL): refused, for both methods."""
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    path = files.upload_path(ticket.storage_id)
    far = int(time.time()) + settings.upload_url_ttl_seconds + 600
    refused = await http.post(files.signed_url(settings, "POST", path, far), content=png_bytes())
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "EXPIRES_TOO_FAR")
    assert (await http.post(ticket.upload_url, content=png_bytes())).status_code == 201
    workspace = (await new_workspace(stubs, user, icon_file_id=ticket.storage_id)).workspace
    assert (await http.get(workspace.icon_url)).status_code == 200
    forever = int(time.time()) + 10 * 365 * 86400
    download = files.signed_url(settings, "GET", files.download_path(ticket.storage_id), forever)
    refused = await http.get(download)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "EXPIRES_TOO_FAR")


async def test_someone_elses_or_unfinished_upload_is_not_found(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient
) -> None:
    owner, other = await new_user(), await new_user()
    theirs = await upload_icon(stubs, http, other)
    error = await expect_error(
        grpc.StatusCode.NOT_FOUND, new_workspace(stubs, owner, icon_file_id=theirs)
    )
    assert theirs in error.message
    workspace = (await new_workspace(stubs, owner)).workspace
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.workspaces.UpdateWorkspace(set_icon(workspace.id, theirs), metadata=owner.metadata),
    )
    pending = await upload_ticket(stubs, owner)
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.workspaces.UpdateWorkspace(
            set_icon(workspace.id, pending.storage_id), metadata=owner.metadata
        ),
    )
    unchanged = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=owner.metadata
    )
    assert unchanged.icon_file_id == "" and unchanged.etag == workspace.etag


def gif_bytes(color: str = "blue") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, "GIF", comment=b"harmless")
    return buffer.getvalue()


def with_comment(image: bytes, text: bytes) -> bytes:
    """A PNG whose tEXt chunk carries `text` (still a valid PNG)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", text.decode())
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(image)) as opened:
        opened.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


async def test_polyglot_uploads_are_refused(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient
) -> None:
    """Bytes that pass the magic check but carry markup are no icon, whatever follows."""
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    polyglots = (
        b"GIF89a<html><script>alert(document.domain)</script></html>",
        gif_bytes() + b"<html><body>hi</body></html>",  # a valid GIF, markup after its trailer
        with_comment(png_bytes(), b"<script>alert(1)</script>"),  # markup inside a chunk
        b"\x89PNG\r\n\x1a\n<svg onload=alert(1)>",
    )
    for body in polyglots:
        refused = await http.post(ticket.upload_url, content=body)
        assert refused.status_code == 415, body[:40]
        assert refused.json()["error"]["code"] == "UNSAFE_CONTENT", body[:40]
    truncated = png_bytes(32)[:60]  # magic bytes, then no image
    refused = await http.post(ticket.upload_url, content=truncated)
    assert (refused.status_code, refused.json()["error"]["code"]) == (415, "BAD_IMAGE")
    # None of them used the URL up.
    assert (await http.post(ticket.upload_url, content=png_bytes())).status_code == 201


async def test_served_icons_are_re_encoded_without_what_followed_the_image(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient
) -> None:
    user = await new_user()
    image = gif_bytes("blue")
    uploaded = image + b"\x00trailing bytes after the GIF trailer"
    ticket = await upload_ticket(stubs, user)
    accepted = await http.post(ticket.upload_url, content=uploaded)
    assert accepted.status_code == 201
    assert accepted.json()["content_type"] == "image/png"
    workspace = (await new_workspace(stubs, user, icon_file_id=ticket.storage_id)).workspace
    served = await http.get(workspace.icon_url)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content != uploaded and b"trailing" not in served.content
    assert b"harmless" not in served.content  # the GIF comment is gone too
    assert pixels(served.content)[1:] == pixels(image)[1:]


async def test_health_on_the_http_side_and_metrics_only_on_their_own_address(
    http: httpx.AsyncClient, http_server: HttpServer, app: App
) -> None:
    base = f"http://127.0.0.1:{http_server.port}"
    health = await http.get(f"{base}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert (await http.get(f"{base}/metrics")).status_code == 404
    private = App(
        settings=app.settings.model_copy(update={"metrics_addr": "127.0.0.1:0"}), db=app.db
    )
    metrics_server = await start_metrics(private)
    assert metrics_server is not None
    try:
        metrics = await http.get(f"http://127.0.0.1:{metrics_server.port}/metrics")
        assert metrics.status_code == 200
        assert "python_info" in metrics.text
        assert (
            await http.get(f"http://127.0.0.1:{metrics_server.port}/healthz")
        ).status_code == 404
    finally:
        await metrics_server.stop()
    disabled = App(settings=app.settings.model_copy(update={"metrics_addr": ""}), db=app.db)
    assert await start_metrics(disabled) is None
