"""Servicers: thin translation between protobuf messages and domain calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc

from service.app import App
from service.servicers import (
    billing,
    insights,
    membership,
    organization,
    prompt,
    run,
    schedule,
    webhook,
    workspace,
)

# Registers one service's servicer on a server; returns the service's full name.
Register = Callable[[grpc.aio.Server, App], str]

SERVICE_MODULES = (
    organization,
    workspace,
    membership,
    schedule,
    prompt,
    run,
    webhook,
    billing,
    insights,
)
ALL_SERVICERS: tuple[Register, ...] = tuple(module.add for module in SERVICE_MODULES)


def add_servicers(
    server: grpc.aio.Server, app: App, servicers: Iterable[Register] = ALL_SERVICERS
) -> list[str]:
    """Registers `servicers` (default: every Beacon service) on the server; returns their full
    names."""
    return [register(server, app) for register in servicers]
