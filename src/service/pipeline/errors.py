"""Error mapping: domain exceptions become google.rpc.Status with details, once, here.

Unexpected exceptions become INTERNAL with the request id; the traceback goes to the log
and nothing else reaches the client.
"""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from service.auth.context import current_call
from service.domain import errors as e
from service.pipeline.base import Around, Stream, Unary
from service.rpc_options import MethodRules

log = logging.getLogger("beacon.errors")
DOMAIN = "beacon"

CODES: dict[type[e.DomainError], int] = {
    e.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    e.Unauthenticated: code_pb2.UNAUTHENTICATED,
    e.PermissionDenied: code_pb2.PERMISSION_DENIED,
    e.NotFound: code_pb2.NOT_FOUND,
    e.AlreadyExists: code_pb2.ALREADY_EXISTS,
    e.Aborted: code_pb2.ABORTED,
    e.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    e.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    e.Unavailable: code_pb2.UNAVAILABLE,
    e.Unimplemented: code_pb2.UNIMPLEMENTED,
}


def _pack(*messages: Any) -> list[any_pb2.Any]:
    packed = []
    for message in messages:
        item = any_pb2.Any()
        item.Pack(message)
        packed.append(item)
    return packed


def call_ids(request_id: str, correlation_id: str) -> dict[str, str]:
    """ErrorInfo metadata naming the call: the server's request id, and the client's
    `x-request-id` (as `correlation_id`) when it sent one."""
    return {
        "request_id": request_id,
        **({"correlation_id": correlation_id} if correlation_id else {}),
    }


def _retry_after(delay: float, details: list[Any], trailers: list[tuple[str, str]]) -> None:
    """RetryInfo and a `retry-after` trailer, in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(delay))
    details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds)))
    trailers.append(("retry-after", str(seconds)))


def to_status(
    error: e.DomainError, request_id: str, correlation_id: str = ""
) -> tuple[status_pb2.Status, list[Any]]:
    """The rich status of a domain error, and extra trailing metadata."""
    code = next(c for t, c in CODES.items() if isinstance(error, t))
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=DOMAIN,
        metadata={**error.metadata, **call_ids(request_id, correlation_id)},
    )
    details: list[Any] = [info]
    trailers: list[tuple[str, str]] = []
    if isinstance(error, e.InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    elif isinstance(error, e.FailedPrecondition) and error.violations:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    elif isinstance(error, e.Unavailable):
        _retry_after(error.retry_after, details, trailers)
    elif isinstance(error, e.ResourceExhausted):
        _retry_after(error.retry_after, details, trailers)
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.subject, description=error.quota
                    )
                ]
            )
        )
    status = status_pb2.Status(code=code, message=error.message, details=_pack(*details))
    return status, trailers


def _outage_sqlstate(exc: DBAPIError) -> bool:
    """A PostgreSQL error of class 08 (connection exception) or 57P (the server is shutting
    down, crashed, or cannot accept connections yet): an outage to retry, not a bug. The
    asyncpg dialect wraps such errors in a plain DBAPIError."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(("08", "57P"))


def translate(exc: BaseException) -> e.DomainError | None:
    """The domain error an infrastructure exception means, if any."""
    if isinstance(exc, e.DomainError):
        return exc
    if isinstance(exc, NotImplementedError):
        method = current_call().method
        return e.Unimplemented(f"{method} is not implemented yet", reason="NOT_IMPLEMENTED")
    if isinstance(exc, IntegrityError):
        return e.Aborted(
            "a concurrent request changed the same data; retry", reason="CONCURRENT_MODIFICATION"
        )
    # Connection errors here come from the database driver (the rate limiter and the
    # broker handle their own); other OSErrors (files, ...) are bugs and stay INTERNAL.
    if isinstance(exc, OperationalError | ConnectionError | TimeoutError) or (
        isinstance(exc, DBAPIError) and (exc.connection_invalidated or _outage_sqlstate(exc))
    ):
        return e.Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
    return None


def _database_error_fields(exc: DBAPIError) -> dict[str, str]:
    """What the log says of a database error: the driver's error class and code, the
    statement (its values are bound, and hidden: `hide_parameters`) and where it was
    raised; never the driver's message, which can quote a value (asyncpg's "invalid input
    for query argument $1: 'a@b.example'", PostgreSQL's "DETAIL: Key (email)=(...)")."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    # asyncpg's own error, under SQLAlchemy's adapter
    driver = type(getattr(orig, "__cause__", None) or orig or exc)
    return {
        "error": f"{driver.__module__}.{driver.__qualname__}",
        "error_code": str(code or ""),
        "statement": str(exc.statement or ""),
        "frames": "".join(traceback.format_tb(exc.__traceback__)),
    }


async def _abort(context: Any, exc: BaseException) -> None:
    call = current_call()
    error = translate(exc)
    if error is None:
        ids = {
            "method": call.method,
            "request_id": call.request_id,
            "correlation_id": call.correlation_id,
        }
        if isinstance(exc, DBAPIError):
            log.error("database error", extra={**ids, **_database_error_fields(exc)})
        else:
            log.error("unhandled exception", exc_info=exc, extra=ids)
        error = e.DomainError(f"internal error (request id {call.request_id})", reason="INTERNAL")
        status = status_pb2.Status(
            code=code_pb2.INTERNAL,
            message=error.message,
            details=_pack(
                error_details_pb2.ErrorInfo(
                    reason="INTERNAL",
                    domain=DOMAIN,
                    metadata=call_ids(call.request_id, call.correlation_id),
                )
            ),
        )
        trailers: list[Any] = []
    else:
        status, trailers = to_status(error, call.request_id, call.correlation_id)
    grpc_status = rpc_status.to_status(status)
    if trailers:
        grpc_status = grpc_status._replace(
            trailing_metadata=tuple(grpc_status.trailing_metadata) + tuple(trailers)
        )
    await context.abort_with_status(grpc_status)


_PASS_THROUGH = (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit)


class ErrorsAround(Around):
    async def call(self, rules: MethodRules, request: Any, context: Any, inner: Unary) -> Any:
        try:
            return await inner(request, context)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            await _abort(context, exc)

    async def stream(
        self, rules: MethodRules, request: Any, context: Any, inner: Stream
    ) -> AsyncIterator[Any]:
        try:
            async for item in inner(request, context):
                yield item
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            await _abort(context, exc)
