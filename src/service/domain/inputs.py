"""Raw request values: checking ids and emails, and quoting values back in error messages safely.

Error messages travel in gRPC trailers, which have a hard size limit: a value echoed back is
always shortened, so a hostile 100 kB field still yields a clean INVALID_ARGUMENT.
"""

from __future__ import annotations

import re

from service.domain.errors import InvalidArgument

ID_PATTERN = re.compile(r"^[a-z]{2,5}_[a-z0-9]{1,40}$")
QUOTE_MAX = 40
EMAIL_MAX_LENGTH = 254
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def quote(value: str) -> str:
    """`value` as a short printable literal for an error message."""
    if len(value) <= QUOTE_MAX:
        return repr(value)
    return repr(value[:QUOTE_MAX]) + "..."


def require_id(field: str, value: str) -> str:
    """`value` when it has the shape of a Beacon id (`org_...`, `file_...`); else
    InvalidArgument naming `field` (a malformed id cannot name anything)."""
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(field, "is not a valid id")
    return value


def require_request_id(value: str) -> str:
    """A request id (AIP-155): at most 100 printable characters (PostgreSQL refuses NUL)."""
    if len(value) > 100:
        raise InvalidArgument("request_id", "must be at most 100 characters")
    if any(not char.isprintable() for char in value):
        raise InvalidArgument("request_id", "must contain only printable characters")
    return value


def normalize_email(raw: str, *, field: str = "email") -> str:
    """The email trimmed and lowercased; InvalidArgument(field) unless it looks like one."""
    email = raw.strip().lower()
    if not email:
        raise InvalidArgument(field, "is required")
    if len(email) > EMAIL_MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {EMAIL_MAX_LENGTH} characters")
    if not email.isprintable() or _EMAIL_SHAPE.fullmatch(email) is None:
        raise InvalidArgument(field, "must be an email address such as name@example.com")
    return email
