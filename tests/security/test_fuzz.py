"""Hostile requests to every RPC, generated from the descriptors with hypothesis.

Properties, for every call: the status is never INTERNAL, UNKNOWN or DATA_LOSS (nor a
timeout or an unavailable server); every error carries an ErrorInfo and a message; and a call
that fails writes nothing (row counts of every table, and every row of the two tenants the
requests aim at, are the same before and after); and a call that succeeds leaves the other
tenant as it was (but for joining it with its join code). The caller co-owns one tenant's
organization; requests mix hostile values with that tenant's ids, the other tenant's ids and
twisted ids.

The module runs its own server on its own database with scaled-up rate limits, so its
snapshots see only its own writes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from beacon.v1.membership_service_pb2_grpc import MembershipServiceStub
from service.app import App
from service.auth.tokens import mint_dev_token
from service.db.models import WorkspaceMember
from service.domain.inputs import ID_KINDS
from service.domain.paging import encode_token
from service.rpc_options import method_rules
from tests.support import failure
from tests.support.security import world as w
from tests.support.security.access_matrix import TABLE
from tests.support.security.calls import (
    Metadata,
    Outcome,
    bearer,
    invoke,
    methods_by_path,
    request_class,
    rpc_path,
)
from tests.support.security.hostile import (
    REPORT_RANGES,
    build_request,
    claim_specs,
    request_specs,
    undecodable,
)
from tests.support.security.servers import private_server
from tests.support.security.snapshots import snapshots
from tests.support.security.world import World, build_world

# Examples per RPC: bounded so the module runs in about a minute per backend; raise it with
# BEACON_FUZZ_EXAMPLES for a longer hunt.
EXAMPLES_PER_RPC = int(os.environ.get("BEACON_FUZZ_EXAMPLES", "30"))
BROKEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNAUTHENTICATED,  # the caller's token is valid
}
PATHS = sorted(methods_by_path())
JOIN_BY_CODE = "/beacon.v1.MembershipService/JoinWorkspaceByCode"


async def fresh_world(app: App, memberships: MembershipServiceStub) -> World:
    """A tenant whose organization the fuzzing caller co-owns (with its founder)."""
    return await build_world(app, app.settings, memberships, w.ORG_OWNER, {})


@dataclass
class Target:
    """The server under fuzzing and the two tenants requests aim at: `own` (the caller's)
    and `other`. Both are rebuilt when a successful call changed them, so that later calls
    still reach deep code."""

    app: App
    channel: grpc.aio.Channel
    memberships: MembershipServiceStub
    own: World
    other: World

    async def rebuild(self) -> None:
        self.own = await fresh_world(self.app, self.memberships)
        self.other = await fresh_world(self.app, self.memberships)

    def __repr__(self) -> str:
        return f"Target(own={self.own.workspace_id}, other={self.other.workspace_id})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints falsifying examples with this: the tenants, not their tokens."""
        printer.text(repr(self))

    @property
    def metadata(self) -> Metadata:
        assert self.own.caller is not None
        return bearer(self.own.caller.token)


@pytest.fixture(scope="module")
async def target(backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    tmp = tmp_path_factory.mktemp(f"fuzz-{backend}")
    async with private_server(backend, tmp, "fuzz") as server:
        yield Target(
            server.app,
            server.channel,
            server.memberships,
            await fresh_world(server.app, server.memberships),
            await fresh_world(server.app, server.memberships),
        )


async def test_snapshots_see_a_write_in_its_tenant_only(target: Target) -> None:
    """The instrument works: a changed role shows in its tenant's snapshot, not the other's."""
    mine = await fresh_world(target.app, target.memberships)
    theirs = await fresh_world(target.app, target.memberships)
    before = await snapshots(target.app, mine, theirs, counts=True)
    async with target.app.db.transaction() as session:
        await session.execute(
            update(WorkspaceMember)
            .where(WorkspaceMember.user_id == theirs.member.user_id)
            .values(role="owner")
        )
    after = await snapshots(target.app, mine, theirs, counts=True)
    assert before[0].changes(after[0]) == []
    assert before[1].changes(after[1]) == ["workspace_members"]


async def assert_sound(target: Target, method: MethodDescriptor, request: Message) -> Outcome:
    """Calls the RPC and checks the properties; rebuilds the tenants after a call that
    changed them."""
    before, theirs = await snapshots(target.app, target.own, target.other, counts=True)

    outcome = await invoke(target.channel, method, request, target.metadata, stream_limit=1)

    after, theirs_after = await snapshots(target.app, target.own, target.other, counts=True)
    changed_theirs = theirs.changes(theirs_after)
    assert outcome.code not in BROKEN, outcome.describe()
    if outcome.failure is None:
        # A join code is a credential; nothing else lets the caller touch the other tenant.
        if rpc_path(method) != JOIN_BY_CODE:
            assert changed_theirs == [], f"{outcome.describe()} changed the other tenant"
        if changed_theirs or before.changes(after):
            await target.rebuild()
        return outcome
    info = outcome.failure.details.get("ErrorInfo")
    assert info is not None and info.reason and info.domain == "beacon", outcome.describe()
    assert outcome.failure.message.strip(), outcome.describe()
    assert before.changes(after) == changed_theirs == [], f"{outcome.describe()} yet wrote"
    return outcome


@pytest.mark.parametrize("path", PATHS, ids=[p.rsplit("/", 1)[1] for p in PATHS])
@settings(
    max_examples=EXAMPLES_PER_RPC,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_hostile_requests(path: str, data: st.DataObject, target: Target) -> None:
    method = methods_by_path()[path]
    spec = data.draw(request_specs(method.input_type), label="request")
    request = build_request(method.input_type, spec, target.own, target.other)
    outcome = await assert_sound(target, method, request)
    event(outcome.code.name)  # --hypothesis-show-statistics: how deep the calls went


def string_fields(descriptor: Descriptor, prefix: str = "") -> list[str]:
    """Dotted paths of the string fields of a request and of the messages it holds."""
    paths: list[str] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            paths.append(prefix + field.name)
        elif field.message_type is not None and not prefix:
            paths.extend(string_fields(field.message_type, f"{field.name}."))
    return paths


def with_nul(request: Message, path: str) -> Message:
    """A copy of `request` whose field at `path` holds a NUL (appended to a repeated one)."""
    copy = type(request)()
    copy.CopyFrom(request)
    holder: Any = copy
    *parents, name = path.split(".")
    for parent in parents:
        field = holder.DESCRIPTOR.fields_by_name[parent]
        holder = getattr(holder, parent).add() if field.is_repeated else getattr(holder, parent)
    if holder.DESCRIPTOR.fields_by_name[name].is_repeated:
        getattr(holder, name).append("a\x00b")
    else:
        setattr(holder, name, "a\x00b")
    return copy


NUL_CASES = [
    (path, field) for path in PATHS for field in string_fields(methods_by_path()[path].input_type)
]


@pytest.mark.parametrize(
    "case", NUL_CASES, ids=[f"{p.rsplit('/', 1)[1]}-{f}" for p, f in NUL_CASES]
)
async def test_nul_in_any_string_field_of_a_valid_request(
    case: tuple[str, str], target: Target
) -> None:
    """PostgreSQL refuses NUL in text, SQLite stores it: on both, every string field of a
    request that would otherwise succeed is refused with INVALID_ARGUMENT naming the field
    before it reaches a query (and nothing is written)."""
    path, field = case
    method = methods_by_path()[path]
    outcome = await assert_sound(target, method, with_nul(TABLE[path].request(target.own), field))
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    assert outcome.failure is not None
    named = [
        re.sub(r"\[\d+\]", "", v.field)  # "prompts[0]" names the field "prompts"
        for v in outcome.failure.details["BadRequest"].field_violations
    ]
    assert field in named or field.rsplit(".", 1)[-1] in named, (named, outcome.describe())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_CURSOR = json.dumps(["2026-01-01T00:00:00+00:00", "ws_aaaaaaaaaaaaaaaa"]).encode()
# Page tokens no server issued: garbage, truncated or edited shapes, and tokens signed with
# other keys (including the public constant earlier versions used, for the guessable
# scopes of those versions) over valid-looking and broken payloads.
BAD_PAGE_TOKENS: dict[str, str] = {
    "garbage": "not a page token",
    "non-ascii": "t\u00f6k\u00e9n",
    "bad padding": "abcde",
    "mac only": _b64(b"\x00" * 16),
    "noise": _b64(bytes(range(200))),
    "huge": "A" * 5000,
    "json without a mac": _b64(_CURSOR),
    "another key": encode_token(b"k" * 32, "any|scope", datetime.now(UTC), "ws_aaaaaaaaaaaaaaaa"),
    "old public key, broken payload": _b64(
        hmac.new(b"beacon-page-token", b"orgs|x|garbage", hashlib.sha256).digest()[:12] + b"garbage"
    ),
    "truncated": encode_token(b"k" * 32, "s", datetime.now(UTC), "ws_a")[:-7],
}
LIST_PATHS = [p for p in PATHS if "page_token" in methods_by_path()[p].input_type.fields_by_name]
PAGE_TOKEN_CASES = [(path, kind) for path in LIST_PATHS for kind in BAD_PAGE_TOKENS]


def test_every_list_rpc_takes_a_page_token() -> None:
    """The forged-token case below covers every List RPC."""
    lists = [p for p in PATHS if p.rsplit("/", 1)[1].startswith("List")]
    assert lists and set(lists) <= set(LIST_PATHS)


@pytest.mark.parametrize(
    "case", PAGE_TOKEN_CASES, ids=[f"{p.rsplit('/', 1)[1]}-{k}" for p, k in PAGE_TOKEN_CASES]
)
async def test_forged_or_garbage_page_token_is_invalid_argument_on_page_token(
    case: tuple[str, str], target: Target
) -> None:
    """In a request that would otherwise succeed, a page token the server did not issue to
    this caller for this list is INVALID_ARGUMENT naming `page_token`, never INTERNAL."""
    path, kind = case
    method = methods_by_path()[path]
    request = TABLE[path].request(target.own)
    request.page_token = BAD_PAGE_TOKENS[kind]  # type: ignore[attr-defined]
    outcome = await assert_sound(target, method, request)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    assert outcome.failure is not None
    violations = outcome.failure.details["BadRequest"].field_violations
    assert [v.field for v in violations] == ["page_token"], outcome.describe()


async def assert_raw_refused(target: Target, method: MethodDescriptor, raw: bytes) -> Outcome:
    """Sends `raw` as the request's bytes: INVALID_ARGUMENT with ErrorInfo naming
    `request`, nothing written."""
    before, theirs = await snapshots(target.app, target.own, target.other, counts=True)
    path = rpc_path(method)
    try:
        if method.server_streaming:
            async for _ in target.channel.unary_stream(path)(raw, metadata=target.metadata):
                pass
        else:
            await target.channel.unary_unary(path)(raw, metadata=target.metadata)
        outcome = Outcome(grpc.StatusCode.OK)
    except grpc.aio.AioRpcError as error:
        outcome = Outcome(error.code(), failure(error))
    after, theirs_after = await snapshots(target.app, target.own, target.other, counts=True)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    assert outcome.failure is not None
    info = outcome.failure.details.get("ErrorInfo")
    assert info is not None and info.domain == "beacon", outcome.describe()
    violations = outcome.failure.details["BadRequest"].field_violations
    assert [v.field for v in violations] == ["request"], outcome.describe()
    assert before.changes(after) == theirs.changes(theirs_after) == [], outcome.describe()
    return outcome


@pytest.mark.parametrize("path", PATHS, ids=[p.rsplit("/", 1)[1] for p in PATHS])
@settings(max_examples=max(3, EXAMPLES_PER_RPC // 5), deadline=None)
@given(prefix=st.binary(max_size=48))
async def test_undecodable_bytes(path: str, prefix: bytes, target: Target) -> None:
    """Bytes that parse as no request: INVALID_ARGUMENT (UNDECODABLE_REQUEST), where grpc
    would answer UNKNOWN with protobuf's error text."""
    method = methods_by_path()[path]
    raw = undecodable(prefix)
    try:
        request_class(method).FromString(raw)
    except Exception:
        pass
    else:
        assume(False)
    outcome = await assert_raw_refused(target, method, raw)
    assert outcome.failure is not None
    assert outcome.failure.details["ErrorInfo"].reason == "UNDECODABLE_REQUEST"


@pytest.mark.parametrize("path", PATHS, ids=[p.rsplit("/", 1)[1] for p in PATHS])
async def test_request_one_byte_over_its_rpc_limit(path: str, target: Target) -> None:
    """Each RPC's `(beacon.v1.max_request_bytes)` holds: one byte more is refused unread
    (REQUEST_TOO_LARGE), however valid the bytes would be."""
    method = methods_by_path()[path]
    limit = method_rules()[path].max_request_bytes
    # A valid encoding: one unknown bytes field (number 1000) filling the request.
    header = b"\xc2\x3e"  # field 1000, wire type 2
    length = limit + 1 - len(header)
    length -= len(_varint(length))
    raw = header + _varint(length) + b"x" * length
    assert len(raw) == limit + 1
    outcome = await assert_raw_refused(target, method, raw)
    assert outcome.failure is not None
    assert outcome.failure.details["ErrorInfo"].reason == "REQUEST_TOO_LARGE"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@settings(max_examples=EXAMPLES_PER_RPC * 2, deadline=None)
@given(claims=claim_specs())
async def test_hostile_token_claims(claims: dict[str, str], target: Target) -> None:
    """A validly signed token whose email or name holds anything (NUL, lone surrogates,
    control and format characters, a Kelvin sign): the call succeeds or is UNAUTHENTICATED
    with ErrorInfo, never INTERNAL."""
    token = mint_dev_token(target.app.settings, email=claims["email"], name=claims["name"])
    method = methods_by_path()["/beacon.v1.OrganizationService/ListMyOrganizations"]
    outcome = await invoke(target.channel, method, request_class(method)(), bearer(token))
    assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED), outcome.describe()
    if outcome.failure is not None:
        info = outcome.failure.details.get("ErrorInfo")
        assert info is not None and info.reason, outcome.describe()


REPORT = "/beacon.v1.RunService/GetVisibilityReport"


@settings(max_examples=EXAMPLES_PER_RPC * 2, deadline=None)
@given(
    bounds=REPORT_RANGES,
    granularity=st.sampled_from([1, 2]),
    zone=st.sampled_from(["", "Pacific/Kiritimati", "Etc/GMT+12", "America/New_York"]),
)
async def test_report_ranges_anywhere_in_the_calendar(
    bounds: tuple[int, int], granularity: int, zone: str, target: Target
) -> None:
    """Ranges of up to 366 days anywhere from year 1 to 9999 (whose local midnights and
    week starts overflowed datetime): answered or INVALID_ARGUMENT, never INTERNAL."""
    method = methods_by_path()[REPORT]
    request: Any = TABLE[REPORT].request(target.own)
    request.start_time.seconds, request.end_time.seconds = bounds
    request.granularity, request.time_zone = granularity, zone
    outcome = await assert_sound(target, method, request)
    assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)


def id_fields(descriptor: Descriptor) -> list[str]:
    """Paths of the request's fields named for one kind of id (`ID_KINDS`)."""
    paths = [f.name for f in descriptor.fields if f.name in ID_KINDS]
    for field in descriptor.fields:
        if field.message_type is not None and not field.is_repeated:
            nested = (f"{field.name}.{f.name}" for f in field.message_type.fields)
            paths.extend(path for path in nested if path in ID_KINDS)
    return paths


ID_CASES = [
    (path, field) for path in PATHS for field in id_fields(methods_by_path()[path].input_type)
]


@pytest.mark.parametrize("case", ID_CASES, ids=[f"{p.rsplit('/', 1)[1]}-{f}" for p, f in ID_CASES])
async def test_id_of_another_kind_in_any_id_field_of_a_valid_request(
    case: tuple[str, str], target: Target
) -> None:
    """An `organization_id` holding the caller's own workspace id (and so on for every
    field named for a kind of id) in a request that would otherwise succeed: INVALID_ARGUMENT
    naming the field, never resolved to the resource it belongs to."""
    path, field = case
    method = methods_by_path()[path]
    request: Any = TABLE[path].request(target.own)
    holder = request
    *parents, name = field.split(".")
    for parent in parents:
        holder = getattr(holder, parent)
    prefix = ID_KINDS[field][0]
    wrong = target.own.organization_id if prefix != "org_" else target.own.workspace_id
    setattr(holder, name, wrong)
    outcome = await assert_sound(target, method, request)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    assert outcome.failure is not None
    named = [v.field for v in outcome.failure.details["BadRequest"].field_violations]
    assert named == [field], (named, outcome.describe())
