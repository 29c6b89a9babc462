"""Raw request values: the request's bytes and the length of its repeated fields, checking ids
and emails, and quoting values back in error messages safely.

Error messages travel in gRPC trailers, which have a hard size limit: a value echoed back is
always shortened, so a hostile 100 kB field still yields a clean INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from service.domain.errors import Aborted, InvalidArgument

ID_PATTERN = re.compile(r"^[a-z]{2,5}_[a-z0-9]{1,40}$")
QUOTE_MAX = 40
EMAIL_MAX_LENGTH = 254
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


@dataclass(frozen=True, slots=True)
class ItemBound:
    """A repeated request field and the most entries it may hold: `path` is the chain of
    field names from the request (singular messages, then the repeated field itself)."""

    path: tuple[str, ...]
    max_items: int


def parse_request(message_type: type[Message], raw: bytes, max_bytes: int) -> Message:
    """The request `raw` encodes; InvalidArgument naming `request` when it is longer than
    `max_bytes` (checked before parsing: the cost of a request is bounded by its RPC's
    limit, not by the transport's) or is not a valid encoding of `message_type`."""
    if len(raw) > max_bytes:
        raise InvalidArgument(
            "request",
            f"is {len(raw)} bytes; this RPC accepts at most {max_bytes}",
            reason="REQUEST_TOO_LARGE",
        )
    try:
        return message_type.FromString(raw)
    except DecodeError:
        raise InvalidArgument(
            "request",
            f"is not a valid {message_type.DESCRIPTOR.full_name} (protobuf binary encoding)",
            reason="UNDECODABLE_REQUEST",
        ) from None


def refuse_too_many(request: Message, bounds: Iterable[ItemBound]) -> None:
    """InvalidArgument (TOO_MANY_ITEMS) naming the first repeated field (dotted path, e.g.
    "workspace.competitors") holding more entries than its bound. Reads lengths only, so it
    costs the same whatever the request holds."""
    for bound in bounds:
        holder: Any = request
        *parents, name = bound.path
        for parent in parents:
            if not holder.HasField(parent):
                break
            holder = getattr(holder, parent)
        else:
            count = len(getattr(holder, name))
            if count > bound.max_items:
                raise InvalidArgument(
                    ".".join(bound.path),
                    f"holds {count} entries; at most {bound.max_items} are accepted",
                    reason="TOO_MANY_ITEMS",
                )


def quote(value: str) -> str:
    """`value` as a short printable literal for an error message."""
    if len(value) <= QUOTE_MAX:
        return repr(value)
    return repr(value[:QUOTE_MAX]) + "..."


# Fields that name one kind of resource, by their name (or dotted path): an id of another
# kind there is refused, never resolved to the organization or workspace it belongs to.
ID_KINDS = {
    "organization_id": ("org_", "an organization id"),
    "organization.id": ("org_", "an organization id"),
    "workspace_id": ("ws_", "a workspace id"),
    "workspace.id": ("ws_", "a workspace id"),
    "run_id": ("run_", "a run id"),
    "prompt_id": ("prm_", "a prompt id"),
}


def require_id(field: str, value: str, *, prefix: str = "") -> str:
    """`value` when it has the shape of a Beacon id (`org_...`, `file_...`), of the kind the
    field names (`ID_KINDS`: an `organization_id` holds `org_...`) or `prefix` says (a field
    `ID_KINDS` cannot name, such as `prompt_ids[3]`); else InvalidArgument naming `field` (a
    malformed id cannot name anything). The one id check of the API."""
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(field, "is not a valid id")
    _require_kind(field, value, prefix)
    return value


def _require_kind(field: str, value: str, prefix: str = "") -> None:
    kind = (prefix, f"an id of the form {prefix}...") if prefix else ID_KINDS.get(field)
    if kind is not None and not value.startswith(kind[0]):
        raise InvalidArgument(field, f"must be {kind[1]} ({kind[0]}...)")


def refuse_other_kinds(request: Message) -> None:
    """InvalidArgument naming the first field of `ID_KINDS` (at the top of the request, or
    one level down such as `organization.id`) that holds an id of another kind: ids in
    filters and optional fields are held to their kind as resource fields are."""
    for field, value in request.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            if value:
                _require_kind(field.name, value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            for inner, inner_value in value.ListFields():
                path = f"{field.name}.{inner.name}"
                if path in ID_KINDS and inner_value:
                    _require_kind(path, inner_value)


def require_request_id(value: str) -> str:
    """A request id (AIP-155): at most 100 printable characters (PostgreSQL refuses NUL)."""
    if len(value) > 100:
        raise InvalidArgument("request_id", "must be at most 100 characters")
    if any(not char.isprintable() for char in value):
        raise InvalidArgument("request_id", "must contain only printable characters")
    return value


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: object) -> bool:
    """Whether `value` is a string no database column can hold: a NUL (PostgreSQL refuses
    it) or a lone surrogate (a string from JSON may hold one; it has no UTF-8 encoding)."""
    return isinstance(value, str) and _UNSTORABLE.search(value) is not None


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold_email(raw: str) -> str:
    """The email as Beacon compares it: trimmed, ASCII letters lowercased, every other
    character as given. Unicode case mappings would fold other letters into ASCII ones
    (KELVIN SIGN U+212A lowercases to "k"), making two different addresses one."""
    return raw.strip().translate(_ASCII_LOWER)


def normalize_email(raw: str, *, field: str = "email") -> str:
    """The email folded (`fold_email`); InvalidArgument(field) unless it looks like one."""
    email = fold_email(raw)
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
