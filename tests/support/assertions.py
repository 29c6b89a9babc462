"""Assertions on calls as a client sees them (code, ErrorInfo reason and domain) and on the
request log line the server writes for them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from tests.support import RpcFailure, expect_error
from tests.support.processes import eventually

AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def expect_refusal(code: grpc.StatusCode, reason: str, call: Awaitable[Any]) -> RpcFailure:
    """Awaits a call that must fail with `code` and an ErrorInfo of `reason` (domain beacon)."""
    got = await expect_error(code, call)
    info = got.details["ErrorInfo"]
    assert (info.reason, info.domain) == (reason, "beacon"), got.message
    assert info.metadata["request_id"], "every error names its request id"
    return got


async def passes_auth(call: Awaitable[Any]) -> Any:
    """The response of a call that the interceptors let through, or None when the handler
    itself refused it (e.g. UNIMPLEMENTED, NOT_FOUND) for reasons that are not auth or limits."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        assert error.code() not in (
            *AUTH_CODES,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
        ), f"{error.code()}: {error.details()}"
        return None


async def rpc_log_record(caplog: pytest.LogCaptureFixture, request_id: str) -> logging.LogRecord:
    """The `beacon.rpc` line of a call the client sent with `x-request-id: request_id` (the
    line's correlation id). A refused call's status reaches the client before the server
    has finished logging it, so the line is awaited rather than expected at once."""

    async def logged() -> logging.LogRecord | None:
        found = [
            r
            for r in caplog.records
            if r.name == "beacon.rpc" and getattr(r, "correlation_id", None) == request_id
        ]
        return found[0] if found else None

    return await eventually(logged, what=f"the request log line of {request_id}", within=5)
