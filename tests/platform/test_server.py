"""The server as a client sees it: health, reflection, auth refusal, token acceptance."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import run_service_pb2 as run_pb
from service.app import App
from service.server import start_server
from tests.support import expect_error
from tests.support.app import NewUser
from tests.support.processes import BEACON_SERVICES


async def test_health_is_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", *BEACON_SERVICES):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_reflection_lists_all_six_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    replies = [reply async for reply in stub.ServerReflectionInfo(requests())]
    assert len(replies) == 1, replies
    names = {s.name for s in replies[0].list_services_response.service}
    assert names >= BEACON_SERVICES | {"grpc.health.v1.Health"}


async def test_unauthenticated_call_is_refused_with_error_info(stubs: SimpleNamespace) -> None:
    failure = await expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        stubs.organizations.ListMyOrganizations(org_pb.ListMyOrganizationsRequest()),
    )
    info = failure.details["ErrorInfo"]
    assert info.reason == "NO_CREDENTIALS"
    assert info.domain == "beacon"
    assert info.metadata["request_id"]


async def test_dev_token_is_accepted(stubs: SimpleNamespace, new_user: NewUser) -> None:
    user = await new_user()
    created = await stubs.organizations.CreateOrganization(
        org_pb.CreateOrganizationRequest(name="Token Org"), metadata=user.metadata
    )
    reply = await stubs.organizations.ListMyOrganizations(
        org_pb.ListMyOrganizationsRequest(), metadata=user.metadata
    )
    assert [(o.id, o.name) for o in reply.organizations] == [(created.id, "Token Org")]


class ClientStreamingWatchRun(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Serves RunService/WatchRun as a client-streaming RPC: a handler kind the interceptors
    cannot wrap, so none of their checks (authentication first) would run on it."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != "/beacon.v1.RunService/WatchRun":
            return None

        async def consume(requests: AsyncIterator[Any], context: Any) -> Any:
            return run_pb.Run()

        return grpc.stream_unary_rpc_method_handler(consume)


def client_streaming_runs(server: grpc.aio.Server, _app: App) -> str:
    server.add_generic_rpc_handlers((ClientStreamingWatchRun(),))
    return "beacon.v1.RunService"


def unary_runs(server: grpc.aio.Server, _app: App) -> str:
    """The same method served unary-stream, as the product does: accepted."""

    class Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            async def watch(request: Any, context: Any) -> AsyncIterator[Any]:
                yield run_pb.Run()

            if details.method == "/beacon.v1.RunService/WatchRun":
                return grpc.unary_stream_rpc_method_handler(watch)
            return None

    server.add_generic_rpc_handlers((Handler(),))
    return "beacon.v1.RunService"


async def test_start_refuses_a_handler_kind_the_interceptors_cannot_wrap(app: App) -> None:
    with pytest.raises(RuntimeError, match=r"RunService/WatchRun has a stream-unary handler"):
        await start_server(app, "127.0.0.1:0", servicers=[client_streaming_runs])
    accepted = await start_server(app, "127.0.0.1:0", servicers=[unary_runs])
    await accepted.stop(grace=0)


def client_streaming_registered_runs(server: grpc.aio.Server, _app: App) -> str:
    """RunService/WatchRun as a client-streaming *registered* method (the route generated
    code also takes), not through a generic handler."""

    async def consume(requests: AsyncIterator[Any], context: Any) -> Any:
        return run_pb.Run()

    server.add_registered_method_handlers(
        "beacon.v1.RunService", {"WatchRun": grpc.stream_unary_rpc_method_handler(consume)}
    )
    return "beacon.v1.RunService"


async def test_start_refuses_a_registered_method_of_a_kind_that_cannot_be_wrapped(
    app: App,
) -> None:
    with pytest.raises(RuntimeError, match=r"RunService/WatchRun has a stream-unary handler"):
        await start_server(app, "127.0.0.1:0", servicers=[client_streaming_registered_runs])
