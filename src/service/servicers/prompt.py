"""PromptService: store, list, add and delete a workspace's prompts."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import empty_pb2

from beacon.v1 import prompt_service_pb2 as pb
from beacon.v1 import prompt_service_pb2_grpc
from service.app import App
from service.auth.context import current_actor
from service.domain.actor import Access
from service.domain.collection.prompts import PromptView
from service.domain.money.markets import Market
from service.domain.read_views import PromptRow
from service.pipeline.base import takes_access
from service.servicers.convert import market_from_proto, market_to_proto, timestamp


def prompt_to_proto(row: PromptView | PromptRow) -> pb.Prompt:
    """The Prompt message of a prompt (a read row or a command's view of one)."""
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


def _prompt_messages(rows: Iterable[PromptView | PromptRow]) -> list[pb.Prompt]:
    return [prompt_to_proto(row) for row in rows]


def _texts_and_markets(
    request: pb.StorePromptsRequest | pb.AddPromptsRequest,
) -> tuple[list[str], list[Market]]:
    """The request's texts (`prompts`, then `entries`) and the markets of its entries, validated
    (InvalidArgument naming `entries[i].market.*`)."""
    markets = [
        market_from_proto(entry.market, f"entries[{index}].market")
        for index, entry in enumerate(request.entries)
    ]
    return [*request.prompts, *(entry.text for entry in request.entries)], markets


class PromptServicer(prompt_service_pb2_grpc.PromptServiceServicer):
    """Each handler converts the request, makes one call to `service.application.prompts`
    and converts the result."""

    def __init__(self, app: App) -> None:
        self.prompts = app.services.prompts

    async def StorePrompts(
        self, request: pb.StorePromptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StorePromptsResponse:
        texts, entries = _texts_and_markets(request)
        stored = await self.prompts.store(
            current_actor(),
            request.workspace_id,
            texts,
            request_id=request.request_id,
            markets=entries,
        )
        return pb.StorePromptsResponse(
            prompts=_prompt_messages(stored.prompts),
            duplicates_dropped=stored.duplicates_dropped,
        )

    async def ListPrompts(
        self, request: pb.ListPromptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPromptsResponse:
        listed = await self.prompts.list_prompts(
            request.workspace_id, page_size=request.page_size, page_token=request.page_token
        )
        page, default = listed.page, listed.default_market
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
        texts, entries = _texts_and_markets(request)
        added = await self.prompts.add(
            current_actor(),
            request.workspace_id,
            texts,
            request_id=request.request_id,
            markets=entries,
        )
        return pb.AddPromptsResponse(
            added=_prompt_messages(added.prompts), duplicates_dropped=added.duplicates_dropped
        )

    @takes_access
    async def DeletePrompt(
        self, request: pb.DeletePromptRequest, context: grpc.aio.ServicerContext, access: Access
    ) -> empty_pb2.Empty:
        # The prompt's workspace, as the access check resolved it from the prompt id.
        await self.prompts.delete(current_actor(), access.workspace_id or "", request.prompt_id)
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
        stored = await self.prompts.set_default_market(
            current_actor(), request.workspace_id, market
        )
        return pb.SetDefaultMarketResponse(market=market_to_proto(stored))


def add(server: grpc.aio.Server, app: App) -> str:
    prompt_service_pb2_grpc.add_PromptServiceServicer_to_server(PromptServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["PromptService"].full_name)
