"""OrganizationService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from beacon.v1 import organization_service_pb2, organization_service_pb2_grpc
from service.app import App


class OrganizationServicer(organization_service_pb2_grpc.OrganizationServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app


def add(server: grpc.aio.Server, app: App) -> str:
    organization_service_pb2_grpc.add_OrganizationServiceServicer_to_server(OrganizationServicer(app), server)
    return str(organization_service_pb2.DESCRIPTOR.services_by_name["OrganizationService"].full_name)
