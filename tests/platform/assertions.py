"""Assertions on refused calls as a client sees them: code, ErrorInfo reason and domain."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc

from tests.support import RpcFailure, expect_error

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
