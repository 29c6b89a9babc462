"""MembershipService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from beacon.v1 import membership_service_pb2, membership_service_pb2_grpc
from service.app import App


class MembershipServicer(membership_service_pb2_grpc.MembershipServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app


def add(server: grpc.aio.Server, app: App) -> str:
    membership_service_pb2_grpc.add_MembershipServiceServicer_to_server(MembershipServicer(app), server)
    return str(membership_service_pb2.DESCRIPTOR.services_by_name["MembershipService"].full_name)
