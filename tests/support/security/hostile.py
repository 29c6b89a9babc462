"""Hypothesis strategies for hostile requests, generated from the message descriptors.

A strategy draws a *spec*: field name → value, where a value is a scalar, a list, a nested
spec, or a `Ref` to an id of one of the fuzzing tenants. Refs are resolved when the request is
built, against the tenants of that moment (they are rebuilt after a call that changed them).
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from tests.support.security.world import World

Spec = dict[str, Any]
Strategy = st.SearchStrategy[Spec]
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 .. 9999-12-31
MAX_DEPTH = 2

HOSTILE_LITERALS = [
    "\x00",
    "a\x00b",
    "\x1b[31m",  # an ANSI escape: control characters other than NUL reach later checks
    "a\x07b",
    "\x7f",
    "\x85",  # a C1 control
    "\u2028",
    "' OR 1=1 --",
    "'; DROP TABLE users; --",
    "%",
    "_",
    "%_%",
    "\\",
    "\\%",
    '"',
    "*",
    " ",
    "\t\n\r",
    "\u202e\u200b\ufeff",
    "\u202eAcme",  # a bidi override before a name
    "\u200b\u200b",  # only zero-width spaces
    "Ac\u00adme",  # a soft hyphen
    "\u2066x\u2069",  # a bidi isolate
    "../../etc/passwd",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "\uff21\uff22\uff23",  # full-width letters
    "ws_",
    "org_",
    "WS_ABC",
    "ws_" + "a" * 41,
    "ws_abc def",
    "null",
    "-1",
    "9" * 40,
    "eyJ9",  # base64 of "{}": a page token's shape
]


def _huge(unit: str, length: int) -> str:
    """`unit` repeated to `length` characters, at most 150 kB of UTF-8 (so that a request
    of many such fields stays under the 4 MiB message cap)."""
    widest = max(len(char.encode()) for char in unit)
    return (unit * length)[: min(length, 150_000 // widest)]


HUGE = st.builds(
    _huge, st.sampled_from(["x", "é", "%", "\x00", "😀", "ws_"]), st.integers(10_000, 100_000)
)
SHORT_TEXT = st.one_of(
    st.sampled_from(HOSTILE_LITERALS),
    st.text(st.characters(codec="utf-8"), max_size=40),  # any code point but surrogates
    st.text(
        st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF, codec="utf-8"), max_size=8
    ),
    st.text(st.characters(max_codepoint=0x1F), max_size=8),  # control characters, NUL
    # Control characters without NUL (refused first), so the other checks see them too.
    st.text(st.characters(min_codepoint=0x01, max_codepoint=0x1F), min_size=1, max_size=8),
)
HOSTILE_TEXT = st.one_of(st.just(""), SHORT_TEXT, HUGE)
BENIGN = string.ascii_letters + string.digits + " -"

# Values that get past the first checks of a field, so that calls reach deeper code.
PLAUSIBLE: dict[str, list[str]] = {
    "name": ["Acme Tracking", "Ab", "  Padded Name  ", "A" * 80, "A" * 81],
    "organization_name": ["Acme Corp", "Zz"],
    "slug": ["acme", "a-b", "-bad-", "UPPER", "a" * 50, "a" * 51],
    "domain": [
        "acme.com",
        "https://Acme.COM/path?q=1",
        "localhost",
        "xn--bcher-kva.example",
        "a..b",
    ],
    "cron": ["0 9 * * 1", "*/5 * * * *", "0 0 31 2 *", "* * * * * *", "@hourly", "60 * * * *"],
    "time_zone": [
        "UTC",
        "Europe/Paris",
        "Mars/Olympus",
        "America/Argentina/ComodRivadavia",
        "localtime",
        "Factory",
    ],
    "workos_organization_id": ["org_01ABC", "org_", "org_" + "a" * 65],
    "action": ["beacon.v1.WorkspaceService/CreateWorkspace", "CreateWorkspace"],
    "prompts": ["What is the best CRM?", "  padded prompt  ", "p" * 2000, "p" * 2001],
    "brand_aliases": ["Acme", "ACME Inc."],
    "request_id": ["req-1", "00000000-0000-0000-0000-000000000000"],
    "etag": ["", "", "1", "2", "0", "-1", 'W/"1"'],
    "page_token": ["", "eyJ9", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not-a-token"],
    "email": ["new-person@example.com", "UPPER@EXAMPLE.COM", "no-at-sign", "a@b", "@example.com"],
    "code": ["ABCD-EFGH-JKMN", "abcd efgh jkmn", "0000-0000-0000"],
}
MASK_PATHS = [
    "name",
    "domain",
    "slug",
    "brand_aliases",
    "competitors",
    "icon_file_id",
    "enabled_providers",
    "id",
    "etag",
    "organization_id",
    "schedule",
    "schedule.cron",
    "workspace.name",
    "name.first",
    "*",
    "NAME",
    "",
    "a" * 1000,
]


@dataclass(frozen=True, slots=True)
class Ref:
    """An id (or email, or join code) of one of the tenants, maybe twisted."""

    tenant: str  # "own" | "other"
    kind: str
    twist: str = ""  # "" | "prefix" | "upper" | "padded" | "longer"


# Which ids each field may hold, by field name (and for `id`, by its message).
FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "organization_id": ("organization",),
    "workspace_id": ("workspace",),
    "prompt_id": ("prompt",),
    "prompt_ids": ("prompt",),
    "run_id": ("run", "ended_run"),
    "user_id": ("member", "org_member", "caller", "founder"),
    "actor_id": ("caller", "founder"),
    "code": ("join_code",),
    "invitation_id": ("invitation",),
    "email": ("member_email", "org_member_email", "caller_email"),
    "beacon.v1.Organization.id": ("organization",),
    "beacon.v1.Workspace.id": ("workspace",),
}
ANY_ID_KINDS = ("organization", "workspace", "prompt", "run", "member")


def resolve_ref(ref: Ref, own: World, other: World) -> str:
    world = own if ref.tenant == "own" else other
    assert world.caller is not None
    value = {
        "organization": world.organization_id,
        "workspace": world.workspace_id,
        "prompt": world.prompt_id,
        "run": world.run_id,
        "ended_run": world.ended_run_id,
        "member": world.member.user_id,
        "org_member": world.org_member.user_id,
        "caller": world.caller.user_id,
        "founder": world.founder.user_id,
        "join_code": world.join_code,
        "invitation": world.invitation_id,
        "member_email": world.member.email,
        "org_member_email": world.org_member.email,
        "caller_email": world.caller.email,
    }[ref.kind]
    if ref.twist == "prefix" and "_" in value:
        prefix, rest = value.split("_", 1)
        return ("org" if prefix != "org" else "ws") + "_" + rest
    if ref.twist == "upper":
        return value.upper()
    if ref.twist == "padded":
        return f" {value} "
    if ref.twist == "longer":
        return value + "0"
    return value


def _refs(kinds: tuple[str, ...]) -> st.SearchStrategy[Ref]:
    return st.builds(
        Ref,
        st.sampled_from(["own", "own", "own", "other"]),
        st.sampled_from(kinds),
        st.sampled_from(["", "", "", "", "prefix", "upper", "padded", "longer"]),
    )


def _string(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kinds = FIELD_KINDS.get(field.full_name) or FIELD_KINDS.get(field.name)
    options: list[st.SearchStrategy[Any]] = [HOSTILE_TEXT, _refs(kinds or ANY_ID_KINDS)]
    if kinds:
        options.append(_refs(kinds))  # twice: a fitting id is the way into deep code
    if field.name in PLAUSIBLE:
        options.append(st.sampled_from(PLAUSIBLE[field.name]))
    return st.one_of(*options)


def _integer(field: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = {
        FieldDescriptor.CPPTYPE_INT32: INT32,
        FieldDescriptor.CPPTYPE_INT64: INT64,
        FieldDescriptor.CPPTYPE_UINT32: UINT32,
        FieldDescriptor.CPPTYPE_UINT64: UINT64,
    }[field.cpp_type]
    edges = [v for v in (0, 1, -1, 10, 100, 1000, 1001, low, high) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _enum(field: FieldDescriptor) -> st.SearchStrategy[int]:
    assert field.enum_type is not None
    numbers = [value.number for value in field.enum_type.values]
    return st.one_of(
        st.sampled_from(numbers),
        st.integers(min(numbers) - 3, max(numbers) + 3),
        st.sampled_from(list(INT32)),
    )


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string(field)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum(field)
    if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    return _integer(field)


def _long_list(field: FieldDescriptor) -> st.SearchStrategy[list[Any]]:
    """Hundreds to thousands of items (past every cap), cheap to draw."""
    if field.type == FieldDescriptor.TYPE_STRING:
        item: st.SearchStrategy[Any] = st.one_of(
            _refs(FIELD_KINDS.get(field.name, ANY_ID_KINDS)),
            st.sampled_from(PLAUSIBLE.get(field.name, ["item"])),
        )
        # Items of at most ~50 characters: 2,100 of them stay far below the 4 MiB cap.
        return st.builds(
            lambda first, n: [
                first if isinstance(first, Ref) else f"{first[:40]} {i}" for i in range(n)
            ],
            item,
            st.integers(100, 2100),
        )
    return st.builds(lambda first, n: [first] * n, _scalar(field), st.integers(100, 2100))


def _timestamp() -> st.SearchStrategy[Spec]:
    return st.fixed_dictionaries(
        {
            "seconds": st.one_of(
                st.integers(*TIMESTAMP_SECONDS),
                st.sampled_from(
                    [0, -1, *INT64, TIMESTAMP_SECONDS[0] - 1, TIMESTAMP_SECONDS[1] + 1]
                ),
            ),
            "nanos": st.one_of(
                st.just(0), st.integers(0, 999_999_999), st.sampled_from([-1, 10**9, *INT32])
            ),
        }
    )


def _duration() -> st.SearchStrategy[Spec]:
    return st.fixed_dictionaries(
        {
            "seconds": st.one_of(
                st.sampled_from([0, 1, -1, 3599, 3600, 86_400, 90 * 86_400, 90 * 86_400 + 1]),
                st.integers(*INT64),
            ),
            "nanos": st.one_of(st.just(0), st.sampled_from([-1, 999_999_999, 10**9, *INT32])),
        }
    )


def _field_mask() -> st.SearchStrategy[Spec]:
    paths = st.one_of(st.sampled_from(MASK_PATHS), SHORT_TEXT)
    return st.fixed_dictionaries({"paths": st.lists(paths, max_size=5)})


def _mild_scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """A value likely to pass the field's checks."""
    if field.type == FieldDescriptor.TYPE_STRING:
        kinds = FIELD_KINDS.get(field.full_name) or FIELD_KINDS.get(field.name)
        if kinds:
            return st.builds(Ref, st.just("own"), st.sampled_from(kinds))
        if field.name in PLAUSIBLE:
            return st.sampled_from(PLAUSIBLE[field.name])
        return st.just("")  # ids of files, slugs of responses...: unset is the valid value
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([value.number for value in field.enum_type.values])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.just(b"")
    if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return st.floats(0, 1)
    return st.integers(0, 50)


def _mild_timestamp(name: str) -> st.SearchStrategy[Spec]:
    """Within the last 60 days; a start_time in the first half, so it precedes end_time."""
    now = int(time.time())
    low, high = (
        (now - 60 * 86_400, now - 31 * 86_400)
        if name.startswith("start")
        else (
            now - 30 * 86_400,
            now,
        )
    )
    return st.fixed_dictionaries({"seconds": st.integers(low, high)})


def _mild_duration(name: str) -> st.SearchStrategy[Spec]:
    return st.fixed_dictionaries({"seconds": st.integers(3600, 60 * 86_400)})


def _mild_field_mask(name: str) -> st.SearchStrategy[Spec]:
    paths = st.sampled_from(MASK_PATHS[:6])
    return st.fixed_dictionaries({"paths": st.lists(paths, min_size=1, max_size=3, unique=True)})


# Values of token claims: hostile text, and what only JSON can carry into a string (lone
# surrogates), which no request field can.
CLAIM_TEXT = st.one_of(
    SHORT_TEXT,
    st.sampled_from(["\ud800", "a\udfffb", "\ud83d@example.com", "x\x00@example.com"]),
    st.text(st.characters(exclude_categories=()), max_size=20),  # surrogates included
)


def claim_specs() -> st.SearchStrategy[dict[str, str]]:
    """Email and name claims of a token: hostile, or a plausible email with hostile text."""
    email = st.one_of(
        CLAIM_TEXT,
        st.builds(lambda local: f"{local}@example.com", CLAIM_TEXT),
        st.sampled_from(["\u212aate@example.com", "IVAN@EXAMPLE.COM"]),
    )
    return st.fixed_dictionaries({"email": email, "name": CLAIM_TEXT})


def undecodable(prefix: bytes) -> bytes:
    """Bytes no message parses: `prefix`, then a string field (number 1) whose length runs
    past the end."""
    return prefix + b"\x0a\x7fab"


# Report ranges anywhere in the Timestamp range (years 1 to 9999), at most 366 days long.
REPORT_RANGES = st.builds(
    lambda start, days: (start, min(start + days * 86_400, TIMESTAMP_SECONDS[1])),
    st.one_of(
        st.integers(*TIMESTAMP_SECONDS),
        st.sampled_from([TIMESTAMP_SECONDS[0], TIMESTAMP_SECONDS[1] - 8 * 86_400]),
    ),
    st.integers(1, 366),
)


WELL_KNOWN: dict[str, tuple[Callable[[], Strategy], Callable[[str], Strategy]]] = {
    "google.protobuf.Timestamp": (_timestamp, _mild_timestamp),
    "google.protobuf.Duration": (_duration, _mild_duration),
    "google.protobuf.FieldMask": (_field_mask, _mild_field_mask),
}


def _message(
    descriptor: Descriptor, depth: int, mild: bool, name: str = ""
) -> st.SearchStrategy[Spec]:
    """Specs of the message (in the field `name`): every field hostile or unset, or with
    `mild` most fields set and likely valid."""
    if descriptor.full_name in WELL_KNOWN:
        hostile, plausible = WELL_KNOWN[descriptor.full_name]
        return plausible(name) if mild else hostile()
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value: st.SearchStrategy[Any]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= MAX_DEPTH or field.message_type is None:
                continue
            value = _message(field.message_type, depth + 1, mild, field.name)
            if field.is_repeated:
                value = st.lists(value, max_size=3)
        elif field.is_repeated and mild:
            value = st.lists(_mild_scalar(field), max_size=3)
        elif field.is_repeated:
            value = st.one_of(st.lists(_scalar(field), max_size=4), _long_list(field))
        else:
            value = _mild_scalar(field) if mild else _scalar(field)
        fields[field.name] = _mostly(value) if mild else st.one_of(value, st.none())
    return st.fixed_dictionaries(fields)


def _mostly(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The value three times in four, else unset (some fields exclude each other, e.g.
    organization_id and organization_name)."""
    return st.builds(
        lambda keep, drawn: drawn if keep else None,
        st.sampled_from([True, True, True, False]),
        value,
    )


def _with_one_field_from(mild: Spec, wild: Spec, name: str) -> Spec:
    return {**mild, name: wild.get(name)}


@cache
def request_specs(descriptor: Descriptor) -> st.SearchStrategy[Spec]:
    """Specs of requests of this message type: every field hostile; every field likely
    valid (to reach deep code); or likely valid but for one hostile field."""
    wild, mild = _message(descriptor, 0, mild=False), _message(descriptor, 0, mild=True)
    if not descriptor.fields:
        return wild
    one_hostile = st.builds(
        _with_one_field_from, mild, wild, st.sampled_from([f.name for f in descriptor.fields])
    )
    return st.one_of(wild, mild, one_hostile)


def build_request(descriptor: Descriptor, spec: Spec, own: World, other: World) -> Message:
    """The message a spec describes, with its refs resolved against the tenants."""
    message = message_factory.GetMessageClass(descriptor)()
    _fill(message, spec, own, other)
    return message


def _fill(message: Message, spec: Spec, own: World, other: World) -> None:
    def value(item: Any) -> Any:
        return resolve_ref(item, own, other) if isinstance(item, Ref) else item

    for field in message.DESCRIPTOR.fields:
        given = spec.get(field.name)
        if given is None:
            continue
        target = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for item in given:
                    _fill(target.add(), item, own, other)
            else:
                target.SetInParent()  # present even when every field is left unset
                _fill(target, given, own, other)
        elif field.is_repeated:
            target.extend(value(item) for item in given)
        else:
            setattr(message, field.name, value(given))
