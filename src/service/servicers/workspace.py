"""WorkspaceService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from beacon.v1 import workspace_service_pb2, workspace_service_pb2_grpc
from service.app import App


class WorkspaceServicer(workspace_service_pb2_grpc.WorkspaceServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app


def add(server: grpc.aio.Server, app: App) -> str:
    workspace_service_pb2_grpc.add_WorkspaceServiceServicer_to_server(WorkspaceServicer(app), server)
    return str(workspace_service_pb2.DESCRIPTOR.services_by_name["WorkspaceService"].full_name)
