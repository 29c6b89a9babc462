"""PromptService: not implemented yet; every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from beacon.v1 import prompt_service_pb2, prompt_service_pb2_grpc
from service.app import App


class PromptServicer(prompt_service_pb2_grpc.PromptServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app


def add(server: grpc.aio.Server, app: App) -> str:
    prompt_service_pb2_grpc.add_PromptServiceServicer_to_server(PromptServicer(app), server)
    return str(prompt_service_pb2.DESCRIPTOR.services_by_name["PromptService"].full_name)
