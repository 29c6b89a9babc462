"""Error mapping as a client sees it: every domain error kind, infrastructure exceptions and
unexpected ones reach the client as google.rpc.Status with the right code and details, on
unary calls and inside server streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import run_service_pb2 as run_pb
from service.app import App
from service.clock import new_id
from service.db.database import Database
from service.db.models import User
from service.domain import errors as e
from tests.support import RpcFailure, failure
from tests.support.app import NewUser
from tests.support.assertions import expect_refusal, rpc_log_record
from tests.support.builders import seed_organization, seed_run
from tests.support.probes import RAISE_HEADER, STREAM_ITEMS_HEADER, Failure, ProbeState

SECRET_TEXT = "password=hunter2 at db.internal:5432"
Code = grpc.StatusCode


@dataclass
class Case:
    """An exception a handler raises, and what the client must receive."""

    make: Callable[[], BaseException]
    code: grpc.StatusCode
    reason: str
    details: set[str] = field(default_factory=lambda: {"ErrorInfo"})


CASES: dict[str, Case] = {
    "invalid_argument": Case(
        lambda: e.InvalidArgument(
            "workspace.name",
            "must be 2-80 characters",
            more=[e.FieldViolation("prompts[3]", "must not be empty")],
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        {"ErrorInfo", "BadRequest"},
    ),
    "not_found": Case(lambda: e.NotFound("workspace", "ws_missing"), Code.NOT_FOUND, "NOT_FOUND"),
    "permission_denied": Case(
        lambda: e.PermissionDenied("only owners may grant owner", reason="OWNER_REQUIRED"),
        Code.PERMISSION_DENIED,
        "OWNER_REQUIRED",
    ),
    "already_exists": Case(
        lambda: e.AlreadyExists("slug 'acme' is taken", reason="SLUG_TAKEN"),
        Code.ALREADY_EXISTS,
        "SLUG_TAKEN",
    ),
    "aborted": Case(
        lambda: e.Aborted("the etag does not match", reason="ETAG_MISMATCH"),
        Code.ABORTED,
        "ETAG_MISMATCH",
    ),
    "failed_precondition": Case(
        lambda: e.FailedPrecondition(
            "an organization keeps at least one owner",
            [e.PreconditionViolation("LAST_OWNER", "org_abc", "the only owner cannot leave")],
            reason="LAST_OWNER",
        ),
        Code.FAILED_PRECONDITION,
        "LAST_OWNER",
        {"ErrorInfo", "PreconditionFailure"},
    ),
    "resource_exhausted": Case(
        lambda: e.ResourceExhausted(
            "slow down", retry_after=12.2, subject="user:user_x", quota="5 per 900s per user"
        ),
        Code.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        {"ErrorInfo", "RetryInfo", "QuotaFailure"},
    ),
    "unavailable": Case(
        lambda: e.Unavailable("try again", reason="BUSY"),
        Code.UNAVAILABLE,
        "BUSY",
        {"ErrorInfo", "RetryInfo"},
    ),
    "unimplemented": Case(lambda: e.Unimplemented("not yet"), Code.UNIMPLEMENTED, "UNIMPLEMENTED"),
    "unauthenticated": Case(
        lambda: e.Unauthenticated("session ended", reason="SESSION_ENDED"),
        Code.UNAUTHENTICATED,
        "SESSION_ENDED",
    ),
    "unexpected": Case(lambda: RuntimeError(SECRET_TEXT), Code.INTERNAL, "INTERNAL"),
    "not_implemented": Case(
        lambda: NotImplementedError(SECRET_TEXT), Code.UNIMPLEMENTED, "NOT_IMPLEMENTED"
    ),
}


def raising(make: Callable[[], BaseException]) -> Failure:
    async def fail() -> None:
        raise make()

    return fail


def duplicate_row(app: App) -> Failure:
    """A real IntegrityError: the same primary key written twice."""

    async def fail() -> None:
        user_id = new_id("user")
        for _ in range(2):
            async with app.db.transaction() as session:
                session.add(User(id=user_id, issuer="dup", subject=user_id, email="d@example.com"))

    return fail


async def select_one(url: str) -> None:
    """`SELECT 1` on a fresh connection to `url`, raising whatever the driver raises."""
    db = Database(url)
    try:
        async with db.transaction(write=False) as session:
            await session.execute(text("SELECT 1"))
    finally:
        await db.dispose()


def unreachable_database(tmp: str) -> Failure:
    """A real OperationalError: SQLite in a directory that does not exist."""

    async def fail() -> None:
        await select_one(f"sqlite+aiosqlite:///{tmp}/missing-dir/beacon.db")

    return fail


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


@contextlib.asynccontextmanager
async def shutting_down_postgres() -> AsyncIterator[int]:
    """A PostgreSQL look-alike on a free port that refuses every connection the way a server
    in a fast shutdown does: FATAL 57P03 "the database system is shutting down"."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                (code,) = struct.unpack("!I", (await reader.readexactly(length - 4))[:4])
                if code == 80877103:  # SSLRequest: no TLS here
                    writer.write(b"N")
                    continue
                writer.write(_error_response("57P03", "the database system is shutting down"))
                await writer.drain()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def shutting_down_database() -> Failure:
    """A real driver error (asyncpg CannotConnectNowError, which SQLAlchemy wraps as a plain
    DBAPIError) from a database in the middle of a shutdown."""

    async def fail() -> None:
        async with shutting_down_postgres() as port:
            await select_one(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/beacon")

    return fail


@pytest.fixture(autouse=True)
def failures(probe_state: ProbeState, app: App, tmp_path: Any) -> None:
    probe_state.failures.update({name: raising(case.make) for name, case in CASES.items()})
    probe_state.failures["integrity"] = duplicate_row(app)
    probe_state.failures["operational"] = unreachable_database(str(tmp_path))
    probe_state.failures["shutting_down"] = shutting_down_database()


async def create_failing(probes: SimpleNamespace, user: Any, name: str, request_id: str) -> Any:
    return await probes.organizations.CreateOrganization(
        org_pb.CreateOrganizationRequest(name="Acme"),
        metadata=(*user.metadata, (RAISE_HEADER, name), ("x-request-id", request_id)),
    )


@pytest.mark.parametrize("name", list(CASES))
async def test_each_error_kind_reaches_the_client_with_its_code_and_details(
    name: str, probes: SimpleNamespace, new_user: NewUser
) -> None:
    case = CASES[name]
    user, request_id = await new_user(), f"req-{uuid.uuid4().hex}"
    got = await expect_refusal(
        case.code, case.reason, create_failing(probes, user, name, request_id)
    )
    assert set(got.details) == case.details
    ids = got.details["ErrorInfo"].metadata
    # The server names the call; the client's x-request-id is echoed as the correlation id.
    assert ids["correlation_id"] == request_id != ids["request_id"]
    assert ids["request_id"].startswith("req_")
    assert SECRET_TEXT not in got.message
    made = case.make()
    if isinstance(made, e.DomainError):
        assert got.message == made.message


async def test_bad_request_lists_every_field_violation(
    probes: SimpleNamespace, new_user: NewUser
) -> None:
    got = await expect_refusal(
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        create_failing(probes, await new_user(), "invalid_argument", "req-fields"),
    )
    violations = [(v.field, v.description) for v in got.details["BadRequest"].field_violations]
    assert violations == [
        ("workspace.name", "must be 2-80 characters"),
        ("prompts[3]", "must not be empty"),
    ]
    assert "workspace.name" in got.message and "prompts[3]" in got.message
    assert got.details["ErrorInfo"].metadata["field"] == "workspace.name"


async def test_not_found_names_the_resource(probes: SimpleNamespace, new_user: NewUser) -> None:
    got = await expect_refusal(
        Code.NOT_FOUND, "NOT_FOUND", create_failing(probes, await new_user(), "not_found", "r1")
    )
    assert got.message == "workspace 'ws_missing' not found"
    assert got.details["ErrorInfo"].metadata["resource"] == "workspace"


async def test_precondition_failure_lists_the_violated_rules(
    probes: SimpleNamespace, new_user: NewUser
) -> None:
    got = await expect_refusal(
        Code.FAILED_PRECONDITION,
        "LAST_OWNER",
        create_failing(probes, await new_user(), "failed_precondition", "r2"),
    )
    [violation] = got.details["PreconditionFailure"].violations
    assert (violation.type, violation.subject, violation.description) == (
        "LAST_OWNER",
        "org_abc",
        "the only owner cannot leave",
    )


async def test_resource_exhausted_says_when_to_retry(
    probes: SimpleNamespace, new_user: NewUser
) -> None:
    got = await expect_refusal(
        Code.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        create_failing(probes, await new_user(), "resource_exhausted", "r3"),
    )
    assert got.details["RetryInfo"].retry_delay.seconds == math.ceil(12.2)
    [violation] = got.details["QuotaFailure"].violations
    assert (violation.subject, violation.description) == ("user:user_x", "5 per 900s per user")
    assert got.trailers["retry-after"] == "13"
    assert got.details["ErrorInfo"].metadata["quota"] == "5 per 900s per user"


async def test_unexpected_exception_is_internal_with_only_the_request_id(
    probes: SimpleNamespace, new_user: NewUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request_id = f"req-{uuid.uuid4().hex}"
    got = await expect_refusal(
        Code.INTERNAL,
        "INTERNAL",
        create_failing(probes, await new_user(), "unexpected", request_id),
    )
    server_id = got.details["ErrorInfo"].metadata["request_id"]
    assert got.message == f"internal error (request id {server_id})"
    assert got.details["ErrorInfo"].metadata["correlation_id"] == request_id
    assert all(SECRET_TEXT not in str(detail) for detail in got.details.values())
    assert all(SECRET_TEXT not in value for value in map(str, got.trailers.values()))
    [logged] = [r for r in caplog.records if r.name == "beacon.errors"]
    assert logged.exc_info is not None and SECRET_TEXT in str(logged.exc_info[1])
    assert getattr(logged, "request_id", None) == server_id
    assert getattr(logged, "correlation_id", None) == request_id
    line = await rpc_log_record(caplog, request_id)
    assert getattr(line, "code", None) == "INTERNAL"


async def test_integrity_error_is_aborted(probes: SimpleNamespace, new_user: NewUser) -> None:
    got = await expect_refusal(
        Code.ABORTED,
        "CONCURRENT_MODIFICATION",
        create_failing(probes, await new_user(), "integrity", "r4"),
    )
    assert "retry" in got.message and "users" not in got.message.lower()


async def test_unreachable_database_is_unavailable(
    probes: SimpleNamespace, new_user: NewUser
) -> None:
    await expect_refusal(
        Code.UNAVAILABLE,
        "DATABASE_UNAVAILABLE",
        create_failing(probes, await new_user(), "operational", "r5"),
    )


async def test_a_database_shutting_down_is_unavailable(
    probes: SimpleNamespace, new_user: NewUser
) -> None:
    """Connecting while PostgreSQL shuts down (57P03) is a retryable outage, not INTERNAL."""
    got = await expect_refusal(
        Code.UNAVAILABLE,
        "DATABASE_UNAVAILABLE",
        create_failing(probes, await new_user(), "shutting_down", "r5b"),
    )
    assert got.details["RetryInfo"].retry_delay.seconds >= 1


async def test_not_implemented_names_the_method(
    probes: SimpleNamespace, new_user: NewUser, app: App
) -> None:
    user = await new_user()
    got = await expect_refusal(
        Code.UNIMPLEMENTED,
        "NOT_IMPLEMENTED",
        create_failing(probes, user, "not_implemented", "r6"),
    )
    assert "beacon.v1.OrganizationService/CreateOrganization" in got.message
    # A method the servicer does not define at all answers the same way.
    org_id = await seed_organization(app, user.user_id)
    got = await expect_refusal(
        Code.UNIMPLEMENTED,
        "NOT_IMPLEMENTED",
        probes.organizations.GetOrganization(
            org_pb.GetOrganizationRequest(organization_id=org_id), metadata=user.metadata
        ),
    )
    assert "beacon.v1.OrganizationService/GetOrganization" in got.message


# --- Server streaming ---------------------------------------------------------------------------


async def watch(
    probes: SimpleNamespace, run_id: str, metadata: tuple[tuple[str, str], ...]
) -> tuple[list[Any], RpcFailure | None]:
    """The messages of a WatchRun stream and how it ended (None: OK)."""
    received: list[Any] = []
    try:
        async for item in probes.runs.WatchRun(
            run_pb.WatchRunRequest(run_id=run_id), metadata=metadata
        ):
            received.append(item)
    except grpc.aio.AioRpcError as error:
        return received, failure(error)
    return received, None


async def test_stream_error_after_messages_reaches_the_client_with_details(
    probes: SimpleNamespace, new_user: NewUser, app: App
) -> None:
    user = await new_user()
    run_id = await seed_run(app, user.user_id)
    received, ended = await watch(probes, run_id, (*user.metadata, (STREAM_ITEMS_HEADER, "2")))
    assert [r.id for r in received] == [run_id, run_id] and ended is None

    received, ended = await watch(
        probes,
        run_id,
        (*user.metadata, (STREAM_ITEMS_HEADER, "2"), (RAISE_HEADER, "failed_precondition")),
    )
    assert [r.id for r in received] == [run_id, run_id]
    assert ended is not None and ended.code == Code.FAILED_PRECONDITION
    assert ended.details["ErrorInfo"].reason == "LAST_OWNER"
    assert ended.details["PreconditionFailure"].violations[0].type == "LAST_OWNER"


async def test_unexpected_exception_in_a_stream_is_internal(
    probes: SimpleNamespace, new_user: NewUser, app: App
) -> None:
    user = await new_user()
    run_id = await seed_run(app, user.user_id)
    received, ended = await watch(
        probes, run_id, (*user.metadata, (STREAM_ITEMS_HEADER, "0"), (RAISE_HEADER, "unexpected"))
    )
    assert received == []
    assert ended is not None and ended.code == Code.INTERNAL
    assert SECRET_TEXT not in ended.message and "internal error (request id" in ended.message


async def test_stream_refused_by_the_interceptors(
    probes: SimpleNamespace, new_user: NewUser, app: App
) -> None:
    owner, stranger = await new_user(), await new_user()
    run_id = await seed_run(app, owner.user_id)
    expected = {
        (): (Code.UNAUTHENTICATED, "NO_CREDENTIALS"),
        stranger.metadata: (Code.NOT_FOUND, "NOT_FOUND"),
    }
    for metadata, (code, reason) in expected.items():
        received, ended = await watch(probes, run_id, metadata)
        assert received == [] and ended is not None
        assert (ended.code, ended.details["ErrorInfo"].reason) == (code, reason)
    for bad_id, description in (("", "is required"), ("run id; DROP", "is not a valid id")):
        received, ended = await watch(probes, bad_id, owner.metadata)
        assert ended is not None and ended.code == Code.INVALID_ARGUMENT
        [violation] = ended.details["BadRequest"].field_violations
        assert (violation.field, violation.description) == ("run_id", description)
