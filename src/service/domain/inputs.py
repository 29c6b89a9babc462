"""Raw request values: checking ids and emails, and quoting values back in error messages safely.

Error messages travel in gRPC trailers, which have a hard size limit: a value echoed back is
always shortened, so a hostile 100 kB field still yields a clean INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from service.domain.errors import Aborted, InvalidArgument

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


def _nul_fields(message: Message, prefix: str) -> Iterator[str]:
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            if not field.is_repeated:
                if "\x00" in value:
                    yield path
                continue
            for index, item in enumerate(value):
                if "\x00" in item:
                    yield f"{path}[{index}]"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                entries = [v for item in value.items() for v in item if isinstance(v, str)]
                if any("\x00" in item for item in entries):
                    yield path
                continue
            for item in value if field.is_repeated else [value]:
                yield from _nul_fields(item, path + ".")


def refuse_nul(request: Message) -> None:
    """InvalidArgument naming the first string field (dotted path, e.g. "competitors.name",
    with the index of a repeated string, e.g. "prompt_ids[1]")
    that holds a NUL character: PostgreSQL refuses NUL in text and SQLite would store it, so
    no such value may reach a query on either."""
    for path in _nul_fields(request, ""):
        raise InvalidArgument(path, "must not contain NUL characters")


def masked_paths(
    paths: Sequence[str], updatable: Sequence[str], *, default: Sequence[str] = ()
) -> list[str]:
    """The validated paths of an update's field mask (AIP-134), shared by every Update RPC.

    `*` means every updatable field; a path not in `updatable` is InvalidArgument naming
    `update_mask`; duplicates collapse. An empty mask means `default`, and is InvalidArgument
    when there is none.
    """
    if not paths:
        if default:
            return list(default)
        raise InvalidArgument(
            "update_mask", f"is required: name the fields to change ({', '.join(updatable)})"
        )
    result: list[str] = []
    for path in paths:
        if path == "*":
            return list(updatable)
        if path not in updatable:
            raise InvalidArgument(
                "update_mask", f"{quote(path)} is not updatable; updatable: {', '.join(updatable)}"
            )
        if path not in result:
            result.append(path)
    return result


def check_etag(field_name: str, etag: str, current: str, *, resource: str) -> None:
    """Aborted (ETAG_MISMATCH) when `etag` is set and is not `current` (AIP-154)."""
    if etag and etag != current:
        raise Aborted(
            f"{field_name} {quote(etag)} is stale: the {resource} changed (current etag "
            f"'{current}'); read it again and retry",
            reason="ETAG_MISMATCH",
        )
