"""RunService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from beacon.v1 import run_service_pb2, run_service_pb2_grpc
from service.app import App


class RunServicer(run_service_pb2_grpc.RunServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app


def add(server: grpc.aio.Server, app: App) -> str:
    run_service_pb2_grpc.add_RunServiceServicer_to_server(RunServicer(app), server)
    return str(run_service_pb2.DESCRIPTOR.services_by_name["RunService"].full_name)
