"""RunService: start, read, cancel and watch runs; their answers and visibility reports."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from beacon.v1 import run_service_pb2 as pb
from beacon.v1 import run_service_pb2_grpc
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.auth.context import current_actor, current_call
from service.clock import utcnow
from service.db.models import Probe
from service.domain import read_views
from service.domain.collection import reports, runs
from service.domain.collection.run_status import ProbeStatus, RunStatus
from service.domain.tenancy import workspace_access
from service.servicers.calls import resolved_workspace_id
from service.servicers.convert import (
    PROVIDER_FROM_PROTO,
    PROVIDER_TO_PROTO,
    request_time,
    timestamp,
)

RUN_STATUS_TO_PROTO: dict[str, pb.RunStatus.ValueType] = {
    RunStatus.QUEUED: pb.RUN_STATUS_QUEUED,
    RunStatus.RUNNING: pb.RUN_STATUS_RUNNING,
    RunStatus.SUCCEEDED: pb.RUN_STATUS_SUCCEEDED,
    RunStatus.PARTIAL: pb.RUN_STATUS_PARTIAL,
    RunStatus.FAILED: pb.RUN_STATUS_FAILED,
    RunStatus.CANCELED: pb.RUN_STATUS_CANCELED,
}
TRIGGER_TO_PROTO = {
    "manual": pb.RUN_TRIGGER_MANUAL,
    "schedule": pb.RUN_TRIGGER_SCHEDULE,
    "schedule_set": pb.RUN_TRIGGER_SCHEDULE_SET,
}
START_STATUS_TO_PROTO = {
    "queued": pb.START_RUN_STATUS_QUEUED,
    "empty": pb.START_RUN_STATUS_EMPTY,
    "no_providers": pb.START_RUN_STATUS_NO_PROVIDERS,
}
RESPONSE_STATUS_TO_PROTO: dict[str, pb.ResponseStatus.ValueType] = {
    ProbeStatus.PENDING: pb.RESPONSE_STATUS_PENDING,
    ProbeStatus.SUCCEEDED: pb.RESPONSE_STATUS_SUCCEEDED,
    ProbeStatus.FAILED: pb.RESPONSE_STATUS_FAILED,
    ProbeStatus.SKIPPED: pb.RESPONSE_STATUS_SKIPPED,
}
GRANULARITY_FROM_PROTO = {pb.GRANULARITY_DAY: "day", pb.GRANULARITY_WEEK: "week"}


def provider_name(value: int) -> str:
    """The domain name of a Provider enum value; unknown values give a name domain refuses."""
    return PROVIDER_FROM_PROTO.get(ws_pb.Provider.ValueType(value), f"provider {value}")


def run_to_proto(view: runs.RunView) -> pb.Run:
    """The Run message of a run view."""
    return pb.Run(
        id=view.id,
        workspace_id=view.workspace_id,
        status=RUN_STATUS_TO_PROTO.get(view.status, pb.RUN_STATUS_UNSPECIFIED),
        trigger=TRIGGER_TO_PROTO.get(view.trigger, pb.RUN_TRIGGER_UNSPECIFIED),
        scheduled_time=timestamp(view.scheduled_time),
        create_time=timestamp(view.create_time),
        end_time=timestamp(view.end_time),
        providers=[PROVIDER_TO_PROTO[p] for p in view.providers if p in PROVIDER_TO_PROTO],
        prompt_count=view.prompt_count,
        progress=[
            pb.ProviderProgress(
                provider=PROVIDER_TO_PROTO.get(p.provider, ws_pb.PROVIDER_UNSPECIFIED),
                total=p.total,
                done=p.done,
                failed=p.failed,
            )
            for p in view.progress
        ],
    )


def _citation(raw: dict[str, Any]) -> pb.Citation:
    return pb.Citation(
        url=str(raw.get("url", "")),
        title=str(raw.get("title", "")),
        domain=str(raw.get("domain", "")),
        brand=bool(raw.get("brand", False)),
    )


def response_to_proto(probe: Probe) -> pb.Response:
    """The Response message of a finished probe."""
    latency = Duration()
    latency.FromMilliseconds(probe.latency_ms)
    return pb.Response(
        id=probe.id,
        run_id=probe.run_id,
        prompt_id=probe.prompt_id,
        prompt_text=probe.prompt_text,
        provider=PROVIDER_TO_PROTO.get(probe.provider, ws_pb.PROVIDER_UNSPECIFIED),
        status=RESPONSE_STATUS_TO_PROTO.get(probe.status, pb.RESPONSE_STATUS_UNSPECIFIED),
        model=probe.model,
        text=probe.text,
        citations=[_citation(c) for c in probe.citations or []],
        brand_mentioned=probe.brand_mentioned,
        brand_rank=probe.brand_rank,
        competitors=[
            pb.CompetitorMention(name=str(c.get("name", "")), rank=int(c.get("rank", 0)))
            for c in sorted(probe.competitors or [], key=lambda c: int(c.get("rank", 0)))
        ],
        latency=latency,
        error=probe.error,
        attempts=probe.attempts,
        create_time=timestamp(probe.complete_time),
    )


def report_to_proto(workspace_id: str, rows: list[reports.VisibilityRow]) -> pb.VisibilityReport:
    """The report message; each row and competitor is added in place (`add`), which costs
    half of building messages and copying them into the repeated fields."""
    report = pb.VisibilityReport(workspace_id=workspace_id)
    add_row = report.rows.add
    provider = PROVIDER_TO_PROTO.get
    unspecified = ws_pb.PROVIDER_UNSPECIFIED
    for row in rows:
        add_competitor = add_row(
            provider=provider(row.provider, unspecified),
            # Periods start at whole seconds (local midnights): no FromDatetime per row.
            period_start={"seconds": int(row.period_start.timestamp())},
            responses=row.responses,
            mention_rate=row.mention_rate,
            average_rank=row.average_rank,
            brand_citation_share=row.brand_citation_share,
        ).competitors.add
        for name, mentions, share in row.competitors:
            add_competitor(name=name, mentions=mentions, brand_share_of_voice=share)
    return report


class RunServicer(run_service_pb2_grpc.RunServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def StartRun(
        self, request: pb.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartRunResponse:
        async with self.app.db.transaction() as session:
            outcome = await runs.start_run(
                session,
                current_actor(),
                resolved_workspace_id(),
                configured=self.app.settings.configured_providers(),
                max_open=self.app.settings.max_open_runs_per_workspace,
                prompt_ids=list(request.prompt_ids),
                providers=[provider_name(p) for p in request.providers],
                request_id=request.request_id,
                now=utcnow(),
            )
        return pb.StartRunResponse(
            status=START_STATUS_TO_PROTO[outcome.status],
            run=run_to_proto(outcome.run) if outcome.run is not None else None,
            providers_without_credentials=[
                PROVIDER_TO_PROTO[p] for p in outcome.providers_without_credentials
            ],
        )

    async def GetRun(self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext) -> pb.Run:
        async with self.app.db.read() as reader:
            view = await read_views.get_run(reader, resolved_workspace_id(), request.run_id)
        return run_to_proto(view)

    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        async with self.app.db.transaction(write=False) as session:
            page = await runs.list_runs(
                session,
                resolved_workspace_id(),
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return pb.ListRunsResponse(
            runs=[run_to_proto(view) for view in page.runs], next_page_token=page.next_page_token
        )

    async def CancelRun(
        self, request: pb.CancelRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.Run:
        async with self.app.db.transaction() as session:
            view = await runs.cancel_run(
                session, current_actor(), resolved_workspace_id(), request.run_id, now=utcnow()
            )
        return run_to_proto(view)

    async def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Run]:
        call = current_call()
        user_id = call.require_user_id()
        # The auth interceptor checked access and credentials once, at the start: check
        # them again while the stream lasts, so that a removed member, an expired token or
        # a revoked key stops seeing the run within seconds (and the stream's lifetime ends).
        check_access = functools.partial(
            workspace_access.authorize_view, user_id=user_id, resource_id=request.run_id
        )
        watch = runs.watch_run(
            self.app.db,
            resolved_workspace_id(),
            request.run_id,
            check_access=check_access,
            check_every=self.app.settings.watch_access_check_seconds,
            check_caller=call.stream_check,
        )
        async for view in watch:
            yield run_to_proto(view)

    async def ListResponses(
        self, request: pb.ListResponsesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponsesResponse:
        filters = runs.ResponseFilter(
            run_id=request.run_id,
            provider=provider_name(request.provider) if request.provider else "",
            prompt_id=request.prompt_id,
        )
        async with self.app.db.transaction(write=False) as session:
            page = await runs.list_responses(
                session,
                resolved_workspace_id(),
                filters,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            # Inside the transaction: its end expires the rows.
            return pb.ListResponsesResponse(
                responses=[response_to_proto(p) for p in page.responses],
                next_page_token=page.next_page_token,
            )

    async def GetVisibilityReport(
        self, request: pb.GetVisibilityReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.VisibilityReport:
        start, end, granularity, time_zone = reports.validate_range(
            request_time(request, "start_time"),
            request_time(request, "end_time"),
            GRANULARITY_FROM_PROTO.get(request.granularity, ""),
            request.time_zone,
        )
        workspace_id = resolved_workspace_id()
        async with self.app.db.transaction(write=False) as session:
            rows = await reports.visibility_report(
                session,
                workspace_id,
                start=start,
                end=end,
                granularity=granularity,
                time_zone=time_zone,
            )
        return report_to_proto(workspace_id, rows)


def add(server: grpc.aio.Server, app: App) -> str:
    run_service_pb2_grpc.add_RunServiceServicer_to_server(RunServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["RunService"].full_name)
