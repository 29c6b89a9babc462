"""A SERVER span per Beacon RPC (`service.tracing`): the root of the traces of the runs that
StartRun and SetSchedule start.

The span is named after the method and carries the gRPC status code and, once authorization
resolved it, the workspace id; never request fields, metadata or tokens. A client's own trace
context (`traceparent` metadata) is not trusted: every RPC starts a trace of its own, and the
client's `x-request-id` is on the request log line for correlation. Registered only while
tracing is on (see `service.server.build_pipeline`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry.trace import Span, SpanKind

from service import tracing
from service.auth.context import current_call
from service.pipeline.base import Around, Stream, Unary
from service.rpc_options import MethodRules

# Codes that are the server's failure rather than the caller's (OpenTelemetry's gRPC
# conventions): only these mark a server span failed.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _attributes(rules: MethodRules) -> dict[str, str | int | bool]:
    service, _, method = rules.name.partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _finish(span: Span | None, context: Any, failed: bool) -> None:
    if span is None:
        return
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    try:
        access = current_call().access
    except RuntimeError:  # outside the observability step's call context
        access = None
    if access is not None and access.workspace_id:
        span.set_attribute(tracing.WORKSPACE, access.workspace_id)
    if code in SERVER_FAULTS:
        tracing.mark_failed(span, code.name)


class TracingAround(Around):
    """Runs each call inside its SERVER span; see the module docstring."""

    async def call(self, rules: MethodRules, request: Any, context: Any, inner: Unary) -> Any:
        with tracing.span(
            rules.name, kind=SpanKind.SERVER, attributes=_attributes(rules), errors=False
        ) as span:
            failed = True
            try:
                result = await inner(request, context)
                failed = False
                return result
            finally:
                _finish(span, context, failed)

    async def stream(
        self, rules: MethodRules, request: Any, context: Any, inner: Stream
    ) -> AsyncIterator[Any]:
        with tracing.span(
            rules.name, kind=SpanKind.SERVER, attributes=_attributes(rules), errors=False
        ) as span:
            failed = True
            try:
                async for item in inner(request, context):
                    yield item
                failed = False
            finally:
                _finish(span, context, failed)
