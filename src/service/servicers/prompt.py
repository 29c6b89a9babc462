"""PromptService: store, list, add and delete a workspace's prompts."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import empty_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.v1 import prompt_service_pb2 as pb
from beacon.v1 import prompt_service_pb2_grpc
from service.app import App
from service.clock import utcnow
from service.db.models import Prompt
from service.domain import prompts, read_views
from service.domain.read_views import PromptRow
from service.servicers.calls import record_workspace_change, resolved_workspace_id
from service.servicers.convert import timestamp
from service.servicers.once import run_once


def prompt_to_proto(row: Prompt | PromptRow) -> pb.Prompt:
    """The Prompt message of a prompt row."""
    return pb.Prompt(
        id=row.id,
        workspace_id=row.workspace_id,
        text=row.text,
        create_time=timestamp(row.create_time),
    )


def _prompt_messages(rows: Iterable[Prompt | PromptRow]) -> list[pb.Prompt]:
    return [prompt_to_proto(row) for row in rows]


class PromptServicer(prompt_service_pb2_grpc.PromptServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def StorePrompts(
        self, request: pb.StorePromptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StorePromptsResponse:
        async def store(session: AsyncSession) -> pb.StorePromptsResponse:
            stored = await prompts.store_prompts(
                session, request.workspace_id, request.prompts, now=utcnow()
            )
            record_workspace_change(session, request.workspace_id, [request.workspace_id])
            return pb.StorePromptsResponse(
                prompts=_prompt_messages(stored.prompts),
                duplicates_dropped=stored.duplicates_dropped,
            )

        return await run_once(
            self.app.db,
            request.request_id,
            pb.StorePromptsResponse,
            store,
            scope=request.workspace_id,
        )

    async def ListPrompts(
        self, request: pb.ListPromptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPromptsResponse:
        async with self.app.db.read() as reader:
            page = await read_views.list_prompts(
                reader,
                request.workspace_id,
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return pb.ListPromptsResponse(
            prompts=_prompt_messages(page.prompts),
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def AddPrompts(
        self, request: pb.AddPromptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddPromptsResponse:
        async def add(session: AsyncSession) -> pb.AddPromptsResponse:
            added = await prompts.add_prompts(
                session, request.workspace_id, request.prompts, now=utcnow()
            )
            record_workspace_change(
                session, request.workspace_id, [row.id for row in added.prompts]
            )
            return pb.AddPromptsResponse(
                added=_prompt_messages(added.prompts), duplicates_dropped=added.duplicates_dropped
            )

        return await run_once(
            self.app.db, request.request_id, pb.AddPromptsResponse, add, scope=request.workspace_id
        )

    async def DeletePrompt(
        self, request: pb.DeletePromptRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        workspace_id = resolved_workspace_id()
        async with self.app.db.transaction() as session:
            await prompts.delete_prompt(session, workspace_id, request.prompt_id)
            record_workspace_change(session, workspace_id, [request.prompt_id])
        return empty_pb2.Empty()


def add(server: grpc.aio.Server, app: App) -> str:
    prompt_service_pb2_grpc.add_PromptServiceServicer_to_server(PromptServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["PromptService"].full_name)
