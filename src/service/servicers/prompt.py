"""PromptService: store, list, add and delete a workspace's prompts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import grpc
from google.protobuf import empty_pb2

from beacon.v1 import prompt_service_pb2 as pb
from beacon.v1 import prompt_service_pb2_grpc
from service.app import App
from service.auth.context import current_actor
from service.clock import utcnow
from service.db.models import Prompt
from service.domain import read_views
from service.domain.collection import prompts
from service.domain.collection.prompts import PromptView
from service.domain.money import markets
from service.domain.money.markets import Market
from service.domain.read_views import PromptRow
from service.servicers.calls import resolved_workspace_id
from service.servicers.convert import market_from_proto, market_to_proto, timestamp


def prompt_to_proto(row: Prompt | PromptView | PromptRow) -> pb.Prompt:
    """The Prompt message of a prompt (a row, a read row or a command's view of one)."""
    message = pb.Prompt(
        id=row.id,
        workspace_id=row.workspace_id,
        text=row.text,
        create_time=timestamp(row.create_time),
    )
    market = Market.of(row.market)
    if market:
        message.market.CopyFrom(market_to_proto(market))
    return message


def _prompt_messages(rows: Iterable[Prompt | PromptView | PromptRow]) -> list[pb.Prompt]:
    return [prompt_to_proto(row) for row in rows]


class PromptServicer(prompt_service_pb2_grpc.PromptServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def StorePrompts(
        self, request: pb.StorePromptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StorePromptsResponse:
        stored = await self._change(prompts.store_prompts, request)
        return pb.StorePromptsResponse(
            prompts=_prompt_messages(stored.prompts),
            duplicates_dropped=stored.duplicates_dropped,
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
            default = await markets.default_market(reader, request.workspace_id)
        response = pb.ListPromptsResponse(
            prompts=_prompt_messages(page.prompts),
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )
        if default:
            response.default_market.CopyFrom(market_to_proto(default))
        return response

    async def AddPrompts(
        self, request: pb.AddPromptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddPromptsResponse:
        added = await self._change(prompts.add_prompts, request)
        return pb.AddPromptsResponse(
            added=_prompt_messages(added.prompts), duplicates_dropped=added.duplicates_dropped
        )

    async def DeletePrompt(
        self, request: pb.DeletePromptRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        async with self.app.db.transaction() as session:
            await prompts.delete_prompt(
                session, current_actor(), resolved_workspace_id(), request.prompt_id, now=utcnow()
            )
        return empty_pb2.Empty()

    async def SetDefaultMarket(
        self, request: pb.SetDefaultMarketRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetDefaultMarketResponse:
        market = Market(
            request.market.country,
            request.market.region,
            request.market.city,
            request.market.language,
        )
        async with self.app.db.transaction() as session:
            stored = await markets.set_default_market(
                session, current_actor(), request.workspace_id, market, now=utcnow()
            )
        return pb.SetDefaultMarketResponse(market=market_to_proto(stored))

    async def _change(
        self,
        command: Callable[..., Awaitable[prompts.StoredPrompts]],
        request: pb.StorePromptsRequest | pb.AddPromptsRequest,
    ) -> prompts.StoredPrompts:
        """Runs StorePrompts' or AddPrompts' command on the request's workspace and texts
        (`prompts`, then `entries` with their markets)."""
        entries = [
            market_from_proto(entry.market, f"entries[{index}].market")
            for index, entry in enumerate(request.entries)
        ]
        texts = [*request.prompts, *(entry.text for entry in request.entries)]
        async with self.app.db.transaction() as session:
            return await command(
                session,
                current_actor(),
                request.workspace_id,
                texts,
                markets=entries,
                request_id=request.request_id,
                now=utcnow(),
            )


def add(server: grpc.aio.Server, app: App) -> str:
    prompt_service_pb2_grpc.add_PromptServiceServicer_to_server(PromptServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["PromptService"].full_name)
