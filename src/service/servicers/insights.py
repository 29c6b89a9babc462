"""InsightsService: cited sources, cited URLs, visibility per prompt, competitor suggestions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import grpc

from beacon.v1 import insights_service_pb2 as pb
from beacon.v1 import insights_service_pb2_grpc
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.auth.context import current_actor
from service.domain.collection import insight_reports, reports, suggestions
from service.domain.errors import InvalidArgument
from service.servicers.convert import (
    PROVIDER_FROM_PROTO,
    PROVIDER_TO_PROTO,
    time_field,
    timestamp,
)

CLASS_TO_PROTO = {
    "brand": pb.SOURCE_CLASS_BRAND,
    "competitor": pb.SOURCE_CLASS_COMPETITOR,
    "other": pb.SOURCE_CLASS_OTHER,
}
KIND_TO_PROTO = {"domain": pb.SUGGESTION_KIND_DOMAIN, "name": pb.SUGGESTION_KIND_NAME}
DECISION_FROM_PROTO: dict[int, suggestions.Decision] = {
    pb.SUGGESTION_DECISION_ACCEPT: "accepted",
    pb.SUGGESTION_DECISION_DISMISS: "dismissed",
}
GRANULARITY_FROM_PROTO = {run_pb.GRANULARITY_DAY: "day", run_pb.GRANULARITY_WEEK: "week"}


def _range(
    request: pb.GetSourcesReportRequest | pb.ListCitedUrlsRequest,
) -> tuple[datetime, datetime]:
    """The request's range, checked as GetVisibilityReport checks it."""
    start, end, _, _ = reports.validate_range(
        time_field(request, "start_time"), time_field(request, "end_time"), "day"
    )
    return start, end


def _provider(name: str) -> ws_pb.Provider.ValueType:
    """The Provider of a provider name; PROVIDER_UNSPECIFIED for "" (every provider)."""
    return PROVIDER_TO_PROTO.get(name, ws_pb.PROVIDER_UNSPECIFIED)


def _sources(
    message: pb.SourceList | pb.SourcesReport, items: Sequence[insight_reports.Source], attr: str
) -> None:
    add = getattr(message, attr).add
    for s in items:
        add(
            domain=s.domain,
            source_class=CLASS_TO_PROTO[s.source_class],
            competitor=s.competitor,
            citations=s.citations,
            answers=s.answers,
            answer_share=s.answer_share,
        )


def _providers(field: str, values: Sequence[int]) -> list[str]:
    names = []
    for index, value in enumerate(values):
        name = PROVIDER_FROM_PROTO.get(ws_pb.Provider.ValueType(value))
        if name is None:
            raise InvalidArgument(f"{field}[{index}]", "is not a provider")
        names.append(name)
    return sorted(set(names))


def suggestion_to_proto(item: suggestions.Suggestion) -> pb.CompetitorSuggestion:
    return pb.CompetitorSuggestion(
        id=item.id,
        kind=KIND_TO_PROTO[item.kind],
        label=item.label,
        answers=item.answers,
        providers=[_provider(p) for p in item.providers],
        last_time=timestamp(item.last_time),
        example_response_id=item.example_response_id,
    )


class InsightsServicer(insights_service_pb2_grpc.InsightsServiceServicer):
    """Each handler converts (and checks) the request, makes one call to
    `service.application.insights` and converts the result."""

    def __init__(self, app: App) -> None:
        self.insights = app.services.insights

    async def GetSourcesReport(
        self, request: pb.GetSourcesReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.SourcesReport:
        start, end = _range(request)
        if request.order not in (0, pb.SOURCE_ORDER_CITATIONS, pb.SOURCE_ORDER_ANSWERS):
            raise InvalidArgument("order", "is not a SourceOrder")
        workspace_id = request.workspace_id
        found = await self.insights.sources_report(
            workspace_id,
            start=start,
            end=end,
            order="answers" if request.order == pb.SOURCE_ORDER_ANSWERS else "citations",
            limit=request.max_sources,
        )
        report = pb.SourcesReport(
            workspace_id=workspace_id, previous_start_time=timestamp(found.previous_start)
        )
        for listed in found.lists:
            message = report.lists.add(provider=_provider(listed.provider), answers=listed.answers)
            _sources(message, listed.sources, "sources")
        _sources(report, found.new_sources, "new_sources")
        _sources(report, found.lost_sources, "lost_sources")
        return report

    async def ListCitedUrls(
        self, request: pb.ListCitedUrlsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCitedUrlsResponse:
        domain = insight_reports.source_domain("domain", request.domain)
        start, end = _range(request)
        urls, token = await self.insights.cited_urls(
            request.workspace_id,
            domain,
            start=start,
            end=end,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        response = pb.ListCitedUrlsResponse(domain=domain, next_page_token=token)
        for item in urls:
            add = response.urls.add(url=item.url, citations=item.citations).prompts.add
            for prompt_id, count in sorted(item.prompts.items(), key=lambda p: (-p[1], p[0])):
                add(prompt_id=prompt_id, citations=count)
        return response

    async def GetPromptReport(
        self, request: pb.GetPromptReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.PromptReport:
        start, end, granularity, time_zone = reports.validate_range(
            time_field(request, "start_time"),
            time_field(request, "end_time"),
            GRANULARITY_FROM_PROTO.get(request.granularity, ""),
            request.time_zone,
        )
        prompt_ids = insight_reports.check_filter("prompt_ids", list(request.prompt_ids))
        providers = _providers("providers", list(request.providers))
        workspace_id = request.workspace_id
        rows = await self.insights.prompt_report(
            workspace_id,
            start=start,
            end=end,
            granularity=granularity,
            time_zone=time_zone,
            prompt_ids=prompt_ids,
            providers=providers,
            by_provider=request.by_provider,
        )
        report = pb.PromptReport(workspace_id=workspace_id)
        for row in rows:
            add = report.rows.add(
                prompt_id=row.prompt_id,
                prompt_text=row.prompt_text,
                provider=_provider(row.provider),
                period_start={"seconds": int(row.period_start.timestamp())},
                responses=row.responses,
                mention_rate=row.mention_rate,
                average_rank=row.average_rank,
                brand_citation_share=row.brand_citation_share,
            ).competitors.add
            for name, mentions, share in row.competitors:
                add(name=name, mentions=mentions, brand_share_of_voice=share)
        return report

    async def ListCompetitorSuggestions(
        self, request: pb.ListCompetitorSuggestionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCompetitorSuggestionsResponse:
        items, token = await self.insights.list_suggestions(
            request.workspace_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListCompetitorSuggestionsResponse(
            suggestions=[suggestion_to_proto(item) for item in items], next_page_token=token
        )

    async def DecideCompetitorSuggestion(
        self, request: pb.DecideCompetitorSuggestionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompetitorSuggestion:
        decision = DECISION_FROM_PROTO.get(request.decision)
        if decision is None:
            raise InvalidArgument("decision", "is required: ACCEPT or DISMISS")
        suggestions.parse_suggestion_id(request.suggestion_id)
        item = await self.insights.decide(
            current_actor(), request.workspace_id, request.suggestion_id, decision
        )
        return suggestion_to_proto(item)


def add(server: grpc.aio.Server, app: App) -> str:
    insights_service_pb2_grpc.add_InsightsServiceServicer_to_server(InsightsServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["InsightsService"].full_name)
