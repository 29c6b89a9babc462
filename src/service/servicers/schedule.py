"""ScheduleService: a workspace's cron schedule, its immediate run and its timing."""

from __future__ import annotations

import functools

import grpc

from beacon.v1 import schedule_service_pb2 as pb
from beacon.v1 import schedule_service_pb2_grpc
from service.app import App
from service.auth.context import current_actor
from service.clock import utcnow
from service.domain.collection import schedules
from service.domain.money import caps
from service.domain.money.estimates import Pricing
from service.servicers import convert
from service.servicers.convert import estimate_to_proto

IMMEDIATE_RUN_STATUS_TO_PROTO = {
    "queued": pb.IMMEDIATE_RUN_STATUS_QUEUED,
    "empty": pb.IMMEDIATE_RUN_STATUS_EMPTY,
    "failed": pb.IMMEDIATE_RUN_STATUS_FAILED,
    "not_requested": pb.IMMEDIATE_RUN_STATUS_NOT_REQUESTED,
}


class ScheduleServicer(schedule_service_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.Schedule:
        async with self.app.db.transaction(write=False) as session:
            state = await schedules.get_schedule(session, request.workspace_id)
        return pb.Schedule(
            workspace_id=request.workspace_id, cron=state.cron, time_zone=state.time_zone
        )

    async def SetSchedule(
        self, request: pb.SetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetScheduleResponse:
        settings = self.app.settings
        async with self.app.db.transaction() as session:
            change = await schedules.set_schedule(
                session,
                current_actor(),
                request.workspace_id,
                cron=request.cron,
                time_zone=request.time_zone,
                min_interval_minutes=settings.schedule_min_interval_minutes,
                configured_providers=settings.configured_providers(),
                max_open_runs=settings.max_open_runs_per_workspace,
                charge_run=functools.partial(self.app.rate_limits.charge_run, request.workspace_id),
                now=utcnow(),
                pricing=Pricing.from_settings(settings),
            )
            estimate = None
            if request.cron.strip():
                estimate = await caps.estimate_workspace(
                    session,
                    request.workspace_id,
                    configured=settings.configured_providers(),
                    pricing=Pricing.from_settings(settings),
                    now=utcnow(),
                )
        immediate = change.immediate_run
        return pb.SetScheduleResponse(
            workspace=convert.workspace_to_proto(change.workspace, settings),
            immediate_run=pb.ImmediateRun(
                status=IMMEDIATE_RUN_STATUS_TO_PROTO[immediate.status],
                run_id=immediate.run_id,
                reason=immediate.reason,
            ),
            estimate=estimate_to_proto(estimate) if estimate is not None else None,
        )

    async def GetCronTiming(
        self, request: pb.GetCronTimingRequest, context: grpc.aio.ServicerContext
    ) -> pb.CronTiming:
        async with self.app.db.transaction(write=False) as session:
            timing = await schedules.cron_timing(session, request.workspace_id)
        return pb.CronTiming(
            next_run_time=convert.timestamp(timing.next_run_time),
            last_prompt_run_time=convert.timestamp(timing.last_prompt_run_time),
        )


def add(server: grpc.aio.Server, app: App) -> str:
    schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(ScheduleServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["ScheduleService"].full_name)
