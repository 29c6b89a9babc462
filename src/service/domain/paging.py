"""Keyset pagination with opaque page tokens, stable while rows are inserted between pages."""

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

from service.domain.errors import InvalidArgument

_KEY = b"beacon-page-token"


@dataclass(frozen=True, slots=True)
class Page:
    """A parsed page request: size and the (time, id) cursor to continue after."""

    size: int
    after: tuple[datetime, str] | None
    scope: str

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
        return encode_token(self.scope, getattr(last, time_attr), last.id)


def parse_page(
    page_size: int, page_token: str, *, scope: str, default: int = 50, maximum: int = 100
) -> Page:
    """Validates page_size (0 means default) and page_token (bound to `scope`)."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    size = min(page_size or default, maximum)
    if not page_token:
        return Page(size, None, scope)
    return Page(size, _decode_token(page_token, scope), scope)


def encode_token(scope: str, time: datetime, row_id: str) -> str:
    payload = json.dumps([time.isoformat(), row_id], separators=(",", ":")).encode()
    mac = hmac.new(_KEY, scope.encode() + b"|" + payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def _decode_token(token: str, scope: str) -> tuple[datetime, str]:
    invalid = InvalidArgument(
        "page_token", "is not a token returned by this list with these filters"
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    mac, payload = raw[:12], raw[12:]
    expected = hmac.new(_KEY, scope.encode() + b"|" + payload, hashlib.sha256).digest()[:12]
    if not hmac.compare_digest(mac, expected):
        raise invalid
    time_text, row_id = json.loads(payload)
    return datetime.fromisoformat(time_text), str(row_id)
