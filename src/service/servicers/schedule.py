"""ScheduleService: a workspace's cron schedule, its immediate run and its timing."""

from __future__ import annotations

import grpc

from beacon.v1 import schedule_service_pb2 as pb
from beacon.v1 import schedule_service_pb2_grpc
from service.app import App
from service.auth.context import current_actor
from service.servicers import convert
from service.servicers.convert import estimate_to_proto

IMMEDIATE_RUN_STATUS_TO_PROTO = {
    "queued": pb.IMMEDIATE_RUN_STATUS_QUEUED,
    "empty": pb.IMMEDIATE_RUN_STATUS_EMPTY,
    "failed": pb.IMMEDIATE_RUN_STATUS_FAILED,
    "not_requested": pb.IMMEDIATE_RUN_STATUS_NOT_REQUESTED,
}


class ScheduleServicer(schedule_service_pb2_grpc.ScheduleServiceServicer):
    """Each handler converts the request, makes one call to `service.application.schedules`
    and converts the result."""

    def __init__(self, app: App) -> None:
        self.settings = app.settings
        self.schedules = app.services.schedules

    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.Schedule:
        state = await self.schedules.get(request.workspace_id)
        return pb.Schedule(
            workspace_id=request.workspace_id, cron=state.cron, time_zone=state.time_zone
        )

    async def SetSchedule(
        self, request: pb.SetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetScheduleResponse:
        change, estimate = await self.schedules.set_schedule(
            current_actor(), request.workspace_id, cron=request.cron, time_zone=request.time_zone
        )
        immediate = change.immediate_run
        return pb.SetScheduleResponse(
            workspace=convert.workspace_to_proto(change.workspace, self.settings),
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
        timing = await self.schedules.timing(request.workspace_id)
        return pb.CronTiming(
            next_run_time=convert.timestamp(timing.next_run_time),
            last_prompt_run_time=convert.timestamp(timing.last_prompt_run_time),
        )


def add(server: grpc.aio.Server, app: App) -> str:
    schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(ScheduleServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["ScheduleService"].full_name)
