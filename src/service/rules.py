"""The auth and rate-limit options of every Beacon RPC, read once from the descriptors."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from google.protobuf.descriptor import FileDescriptor, MethodDescriptor

from beacon.v1 import (
    membership_service_pb2,
    options_pb2,
    organization_service_pb2,
    prompt_service_pb2,
    run_service_pb2,
    schedule_service_pb2,
    workspace_service_pb2,
)

SERVICE_FILES: tuple[FileDescriptor, ...] = (
    organization_service_pb2.DESCRIPTOR,
    workspace_service_pb2.DESCRIPTOR,
    membership_service_pb2.DESCRIPTOR,
    schedule_service_pb2.DESCRIPTOR,
    prompt_service_pb2.DESCRIPTOR,
    run_service_pb2.DESCRIPTOR,
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests: int
    period_seconds: int
    key: int  # options_pb2.RateLimitKey
    fail_closed: bool
    when_field: str


@dataclass(frozen=True, slots=True)
class MethodRules:
    """What the interceptors need to know about one RPC."""

    name: str  # "beacon.v1.WorkspaceService/GetWorkspace"
    level: int  # options_pb2.AuthLevel
    resource_fields: tuple[str, ...]
    service_scope: str
    rate_limits: tuple[RateLimit, ...]


def _rules(method: MethodDescriptor) -> MethodRules:
    options = method.GetOptions()
    auth = options.Extensions[options_pb2.auth]
    limits = options.Extensions[options_pb2.rate_limit]
    return MethodRules(
        name=f"{method.containing_service.full_name}/{method.name}",
        level=auth.level,
        resource_fields=tuple(auth.resource_fields),
        service_scope=auth.service_scope,
        rate_limits=tuple(
            RateLimit(r.requests, r.period_seconds, r.key, r.fail_closed, r.when_field)
            for r in limits
        ),
    )


def all_methods() -> list[MethodDescriptor]:
    """Every RPC of every Beacon service."""
    return [
        method
        for file in SERVICE_FILES
        for service in file.services_by_name.values()
        for method in service.methods
    ]


@cache
def method_rules() -> dict[str, MethodRules]:
    """Rules keyed by the gRPC path, e.g. "/beacon.v1.WorkspaceService/GetWorkspace"."""
    return {f"/{rules.name}": rules for rules in map(_rules, all_methods())}
