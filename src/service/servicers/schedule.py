"""ScheduleService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from beacon.v1 import schedule_service_pb2, schedule_service_pb2_grpc
from service.app import App


class ScheduleServicer(schedule_service_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app


def add(server: grpc.aio.Server, app: App) -> str:
    schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(ScheduleServicer(app), server)
    return str(schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name)
