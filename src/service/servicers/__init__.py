"""Servicers: thin translation between protobuf messages and domain calls."""

from __future__ import annotations

import grpc

from service.app import App
from service.servicers import membership, organization, prompt, run, schedule, workspace

SERVICE_MODULES = (organization, workspace, membership, schedule, prompt, run)


def add_servicers(server: grpc.aio.Server, app: App) -> list[str]:
    """Registers every Beacon service on the server; returns their full names."""
    return [module.add(server, app) for module in SERVICE_MODULES]
