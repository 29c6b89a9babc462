"""Keyset pagination with opaque page tokens, stable while rows are inserted between pages.

A page token is `mac || payload`, base64url: the MAC (HMAC-SHA256 with the page-token key
derived from BEACON_SIGNING_SECRET, truncated to 16 bytes) covers the list's scope, the
caller and the cursor. So a token is only valid for the list, the filters and the caller it
was issued to; anything else (forged, truncated, edited, another list's or another user's)
is INVALID_ARGUMENT on `page_token`, never an internal error. The key and the caller are
those of the current RPC (`service.domain.actor.page_caller`, set by the interceptors).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.sql import ColumnElement

from service.domain.actor import page_caller
from service.domain.errors import InvalidArgument

MAC_BYTES = 16
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True, slots=True)
class Page:
    """A parsed page request: size and the (time, id) cursor to continue after."""

    size: int
    after: tuple[datetime, str] | None
    scope: str
    key: bytes

    def where(self, time_col: Any, id_col: Any, *, descending: bool = False) -> ColumnElement[bool]:
        """The filter continuing after the cursor in (time, id) order."""
        if self.after is None:
            return and_(True)
        t, i = self.after
        if descending:
            return or_(time_col < t, and_(time_col == t, id_col < i))
        return or_(time_col > t, and_(time_col == t, id_col > i))

    def next_token(self, rows: list[Any], time_attr: str = "create_time") -> str:
        """Token for the page after `rows` (fetched with limit size + 1), or "" when done."""
        if len(rows) <= self.size:
            return ""
        last = rows[self.size - 1]
        return encode_token(self.key, self.scope, getattr(last, time_attr), last.id)


def parse_page(
    page_size: int, page_token: str, *, scope: str, default: int = 50, maximum: int = 100
) -> Page:
    """Validates page_size (0 means default) and page_token (bound to `scope` and the caller)."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    size = min(page_size or default, maximum)
    call = page_caller()
    if not call.page_key:
        raise RuntimeError("no page-token key in the call context")
    bound = f"{call.caller_id}|{scope}"
    if not page_token:
        return Page(size, None, bound, call.page_key)
    return Page(size, decode_token(call.page_key, bound, page_token), bound, call.page_key)


def _mac(key: bytes, scope: str, payload: bytes) -> bytes:
    return hmac.new(key, scope.encode() + b"|" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def encode_token(key: bytes, scope: str, time: datetime, row_id: str) -> str:
    """The token of the cursor (time, row_id) in the list `scope`."""
    payload = json.dumps([time.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_mac(key, scope, payload) + payload).decode().rstrip("=")


def decode_token(key: bytes, scope: str, token: str) -> tuple[datetime, str]:
    """The cursor of a token issued for `scope`; InvalidArgument("page_token") otherwise."""
    invalid = InvalidArgument(
        "page_token", "is not a token returned by this list with these filters to this caller"
    )
    if len(token) > MAX_TOKEN_CHARS:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    mac, payload = raw[:MAC_BYTES], raw[MAC_BYTES:]
    if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, _mac(key, scope, payload)):
        raise invalid
    # Only this server makes verified payloads; still, a bad one is the caller's token.
    try:
        time_text, row_id = json.loads(payload)
        after = datetime.fromisoformat(time_text)
    except (ValueError, TypeError):
        raise invalid from None
    if not isinstance(row_id, str):
        raise invalid
    return after, row_id
