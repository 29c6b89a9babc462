"""The options of every Beacon RPC (auth, rate limits, request size and the bounds of its
repeated fields), read once from the descriptors."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor
from google.protobuf.message import Message

from beacon.v1 import (
    billing_service_pb2,
    insights_service_pb2,
    membership_service_pb2,
    options_pb2,
    organization_service_pb2,
    prompt_service_pb2,
    run_service_pb2,
    schedule_service_pb2,
    webhook_service_pb2,
    workspace_service_pb2,
)
from service.domain.inputs import ItemBound

SERVICE_FILES: tuple[FileDescriptor, ...] = (
    organization_service_pb2.DESCRIPTOR,
    workspace_service_pb2.DESCRIPTOR,
    membership_service_pb2.DESCRIPTOR,
    schedule_service_pb2.DESCRIPTOR,
    webhook_service_pb2.DESCRIPTOR,
    prompt_service_pb2.DESCRIPTOR,
    run_service_pb2.DESCRIPTOR,
    billing_service_pb2.DESCRIPTOR,
    insights_service_pb2.DESCRIPTOR,
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests: int
    period_seconds: int
    key: int  # options_pb2.RateLimitKey
    fail_closed: bool
    when_field: str


# A request larger than this is refused unparsed unless its RPC declares another limit.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class MethodRules:
    """What the interceptors need to know about one RPC."""

    name: str  # "beacon.v1.WorkspaceService/GetWorkspace"
    level: int  # options_pb2.AuthLevel
    resource_fields: tuple[str, ...]
    service_scope: str
    rate_limits: tuple[RateLimit, ...]
    request_type: type[Message]
    max_request_bytes: int
    item_bounds: tuple[ItemBound, ...]


def item_bounds(descriptor: Descriptor, prefix: tuple[str, ...] = ()) -> list[ItemBound]:
    """The `(beacon.v1.max_items)` bounds of a request's repeated fields, nested messages
    included (well-known google.protobuf types excepted). ValueError when a repeated field
    declares none, or when a bounded field sits inside a repeated message (its bound would
    multiply rather than hold)."""
    bounds: list[ItemBound] = []
    for field in descriptor.fields:
        path = (*prefix, field.name)
        nested = field.message_type
        if nested is not None and nested.full_name.startswith("google.protobuf."):
            continue
        if field.is_repeated:
            limit = field.GetOptions().Extensions[options_pb2.max_items]
            if not limit:
                raise ValueError(f"{descriptor.full_name}.{field.name} declares no max_items")
            bounds.append(ItemBound(path, limit))
            if nested is not None and item_bounds(nested):
                raise ValueError(f"{field.full_name}: bounded fields inside a repeated message")
        elif field.type == FieldDescriptor.TYPE_MESSAGE and nested is not None:
            bounds.extend(item_bounds(nested, path))
    return bounds


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
        request_type=message_factory.GetMessageClass(method.input_type),
        max_request_bytes=options.Extensions[options_pb2.max_request_bytes]
        or DEFAULT_MAX_REQUEST_BYTES,
        item_bounds=tuple(item_bounds(method.input_type)),
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
