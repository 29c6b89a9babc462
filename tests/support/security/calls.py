"""Calling any Beacon RPC generically, from its method descriptor (no tests here)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from service.rpc_options import all_methods
from tests.support import RpcFailure, failure

Metadata = tuple[tuple[str, str], ...]
CALL_TIMEOUT_SECONDS = 15.0


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def rpc_path(method: MethodDescriptor) -> str:
    """The gRPC path, e.g. "/beacon.v1.WorkspaceService/GetWorkspace"."""
    return f"/{method.containing_service.full_name}/{method.name}"


def methods_by_path() -> dict[str, MethodDescriptor]:
    """Every Beacon RPC by its gRPC path."""
    return {rpc_path(method): method for method in all_methods()}


READ_VERBS = ("Get", "List", "Watch", "Resolve")


def is_read(path: str) -> bool:
    """Whether the RPC is named like a read (AIP standard and custom read methods)."""
    return path.rsplit("/", 1)[1].startswith(READ_VERBS)


def request_class(method: MethodDescriptor) -> type[Message]:
    return message_factory.GetMessageClass(method.input_type)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended: its status code and, when it failed, the decoded failure."""

    code: grpc.StatusCode
    failure: RpcFailure | None = None

    def describe(self) -> str:
        if self.failure is None:
            return str(self.code.name)
        return f"{self.code.name}: {self.failure.message[:200]}"


async def invoke(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Message,
    metadata: Metadata,
    *,
    stream_limit: int | None = None,
) -> Outcome:
    """Calls the RPC and reports how it ended; a server stream is read to its end, or
    canceled after `stream_limit` messages."""
    path = rpc_path(method)
    response = message_factory.GetMessageClass(method.output_type)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
            received = 0
            async for _ in stream:
                received += 1
                if stream_limit is not None and received >= stream_limit:
                    stream.cancel()
                    break
        else:
            await channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), failure(error))
    return Outcome(grpc.StatusCode.OK)


async def responses(
    channel: grpc.aio.Channel, method: MethodDescriptor, request: Message, metadata: Metadata
) -> list[Message]:
    """Calls the RPC and returns what it answered (every message of a server stream, read to
    its end); a failed call raises its AioRpcError."""
    path = rpc_path(method)
    response = message_factory.GetMessageClass(method.output_type)
    serializer = type(request).SerializeToString
    if method.server_streaming:
        stream = channel.unary_stream(
            path, request_serializer=serializer, response_deserializer=response.FromString
        )(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        return [message async for message in stream]
    reply = await channel.unary_unary(
        path, request_serializer=serializer, response_deserializer=response.FromString
    )(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    return [reply]
