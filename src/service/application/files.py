"""Uploaded files: the upload URLs GenerateWorkspaceIconUploadUrl hands out and the HTTP side
that receives and serves their bytes (`service.http.server`)."""

from __future__ import annotations

from service.application.base import ServiceBase
from service.domain.tenancy import files
from service.domain.tenancy.files import UploadTicket


class FileService(ServiceBase):
    """Single-use upload URLs and the state of each uploaded file."""

    async def create_upload(self, user_id: str) -> UploadTicket:
        """A new pending file owned by the user and its signed upload URL."""
        async with self.db.transaction() as session:
            return await files.create_upload(session, self.settings, user_id, now=self.clock())

    async def upload_pending(self, file_id: str) -> bool:
        """Whether the file's upload URL is still unused and unexpired."""
        async with self.db.transaction(write=False) as session:
            return await files.upload_pending(session, file_id, now=self.clock())

    async def claim_upload(self, file_id: str, *, content_type: str, size: int) -> bool:
        """Marks the file uploaded (False when its URL was used or expired meanwhile)."""
        async with self.db.transaction() as session:
            return await files.claim_upload(
                session, file_id, content_type=content_type, size=size, now=self.clock()
            )

    async def release_upload(self, file_id: str) -> None:
        """Returns a claimed file to pending: its bytes could not be stored."""
        async with self.db.transaction() as session:
            await files.release_upload(session, file_id)

    async def content_type(self, file_id: str) -> str:
        """The uploaded file's content type; empty when there is no such uploaded file."""
        async with self.db.transaction(write=False) as session:
            file = await files.uploaded_file(session, file_id)
            return file.content_type if file is not None else ""
