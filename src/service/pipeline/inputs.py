"""Checks every request's values need before any handler (or query) sees them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from service.domain.inputs import (
    parse_request,
    refuse_nul,
    refuse_other_kinds,
    refuse_too_many,
)
from service.pipeline.base import Around, Stream, Unary
from service.rpc_options import MethodRules


class DecodeAround(Around):
    """Parses the request's bytes, after refusing more than the RPC's
    `(beacon.v1.max_request_bytes)` unread: INVALID_ARGUMENT (REQUEST_TOO_LARGE or
    UNDECODABLE_REQUEST, with ErrorInfo) where grpc would answer UNKNOWN with protobuf's
    error text. The steps outside it see the bytes; those inside, the message.

    It runs before authentication: the size of a request is the cost every caller can
    impose, credentials or not, and saying that bytes do not parse reveals nothing.
    """

    parses_request = True

    async def call(self, rules: MethodRules, request: Any, context: Any, inner: Unary) -> Any:
        message = parse_request(rules.request_type, request, rules.max_request_bytes)
        return await inner(message, context)

    async def stream(
        self, rules: MethodRules, request: Any, context: Any, inner: Stream
    ) -> AsyncIterator[Any]:
        message = parse_request(rules.request_type, request, rules.max_request_bytes)
        async for item in inner(message, context):
            yield item


class InputsAround(Around):
    """INVALID_ARGUMENT for a repeated field holding more entries than its
    `(beacon.v1.max_items)` (checked from the lengths first, so no check below iterates an
    oversized list), then for a NUL character in any string field of the request, then for
    an id of another kind in a field named for one (`organization_id` holds `org_...`).

    It runs after authentication and authorization (whose queries take only well-formed ids),
    so a caller without credentials or access learns nothing from it.
    """

    async def before(self, rules: MethodRules, request: Any, context: Any) -> None:
        refuse_too_many(request, rules.item_bounds)
        refuse_nul(request)
        refuse_other_kinds(request)
