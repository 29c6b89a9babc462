"""Join codes: their format, and joining, rotating and expiring them through the server.

JoinWorkspaceByCode allows 5 calls per 15 minutes per user, so every test joins with fresh
users and stays under that.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import func, select, update

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.config import Settings
from service.db.models import AuditEvent, Workspace
from service.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from service.domain.tenancy import join_codes
from service.domain.tenancy.join_codes import ALPHABET, display_code, generate_code, normalize_code
from tests.support import actor_of, expect_error
from tests.support.builders import add_and_accept, create_workspace

CODE_SHAPE = re.compile(rf"[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}")


# --- Format ------------------------------------------------------------------------------


def test_alphabet_has_no_lookalikes_and_codes_carry_59_bits() -> None:
    assert not set("01ILO") & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET) == 31
    codes = {generate_code() for _ in range(2000)}
    assert len(codes) == 2000  # no repeats: the codes are random
    assert all(len(c) == 12 and set(c) <= set(ALPHABET) for c in codes)
    assert set("".join(codes)) == set(ALPHABET)  # every symbol is used


def test_codes_are_shown_grouped() -> None:
    assert display_code("ABCD2345EFGH") == "ABCD-2345-EFGH"
    assert CODE_SHAPE.fullmatch(display_code(generate_code()))


@pytest.mark.parametrize(
    "typed",
    [
        "ABCD-2345-EFGH",
        "abcd-2345-efgh",
        "abcd 2345 efgh",
        " AbCd2345eFgH ",
        "ABCD\u20132345\u2014EFGH",
    ],
)
def test_typed_codes_are_normalized(typed: str) -> None:
    assert normalize_code(typed) == "ABCD2345EFGH"


@pytest.mark.parametrize(
    "typed",
    ["", "   ", "ABC123XYZ", "ABCD-2345-EFG", "ABCD-2345-EFGHJ", "ABCD-2345-EFG0", "O" * 12],
)
def test_malformed_codes_are_invalid_argument(typed: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        normalize_code(typed)
    assert raised.value.violations[0].field == "code"


# --- Through the server ------------------------------------------------------------------


async def _join(stubs: SimpleNamespace, user: Any, code: str) -> pb.JoinWorkspaceByCodeResponse:
    reply: pb.JoinWorkspaceByCodeResponse = await stubs.memberships.JoinWorkspaceByCode(
        pb.JoinWorkspaceByCodeRequest(code=code), metadata=user.metadata
    )
    return reply


async def _join_info(stubs: SimpleNamespace, workspace_id: str, user: Any) -> pb.JoinInfo:
    info: pb.JoinInfo = await stubs.memberships.GetJoinInfo(
        pb.GetJoinInfoRequest(workspace_id=workspace_id), metadata=user.metadata
    )
    return info


async def test_join_info_gives_a_lasting_grouped_code(
    stubs: SimpleNamespace, new_user: Any, settings: Settings
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    member = await new_user()
    await add_and_accept(stubs, workspace.id, owner, member)
    first = await _join_info(stubs, workspace.id, owner)
    assert CODE_SHAPE.fullmatch(first.code)
    expected = datetime.now(UTC) + timedelta(hours=settings.join_code_ttl_hours)
    assert abs(first.expire_time.ToDatetime(UTC) - expected) < timedelta(minutes=1)
    again = await _join_info(stubs, workspace.id, member)  # any member sees the same code
    assert (again.code, again.expire_time) == (first.code, first.expire_time)


async def test_joining_makes_a_member_and_joining_twice_is_harmless(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    code = (await _join_info(stubs, workspace.id, owner)).code
    joiner = await new_user()
    joined = await _join(stubs, joiner, code)
    assert joined.workspace.id == workspace.id
    assert joined.workspace.name == workspace.name
    assert joined.membership.user_id == joiner.user_id
    assert joined.membership.role == pb.WORKSPACE_ROLE_MEMBER
    assert joined.membership.state == pb.MEMBER_STATE_ACTIVE
    # Case, dashes and spaces do not matter, and a second join changes nothing.
    again = await _join(stubs, joiner, " " + code.lower().replace("-", " ") + " ")
    assert again.membership == joined.membership
    listed = await stubs.memberships.ListMembers(
        pb.ListMembersRequest(workspace_id=workspace.id), metadata=joiner.metadata
    )
    assert [m.user_id for m in listed.members].count(joiner.user_id) == 1


async def test_an_existing_member_gets_their_membership_back(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    code = (await _join_info(stubs, workspace.id, owner)).code
    joined = await _join(stubs, owner, code)
    assert joined.membership.role == pb.WORKSPACE_ROLE_OWNER  # not demoted to member


async def test_rotating_invalidates_the_old_code(stubs: SimpleNamespace, new_user: Any) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    old = (await _join_info(stubs, workspace.id, owner)).code
    rotated = await stubs.memberships.RotateJoinCode(
        pb.RotateJoinCodeRequest(workspace_id=workspace.id, ttl=Duration(seconds=3600)),
        metadata=owner.metadata,
    )
    assert rotated.code != old and CODE_SHAPE.fullmatch(rotated.code)
    expected = datetime.now(UTC) + timedelta(hours=1)
    assert abs(rotated.expire_time.ToDatetime(UTC) - expected) < timedelta(minutes=1)
    assert (await _join_info(stubs, workspace.id, owner)).code == rotated.code
    joiner = await new_user()
    stale = await expect_error(grpc.StatusCode.NOT_FOUND, _join(stubs, joiner, old))
    assert "join code" in stale.message
    assert (await _join(stubs, joiner, rotated.code)).workspace.id == workspace.id


async def test_rotation_rules(stubs: SimpleNamespace, new_user: Any) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    member = await new_user()
    await add_and_accept(stubs, workspace.id, owner, member)
    default = await stubs.memberships.RotateJoinCode(
        pb.RotateJoinCodeRequest(workspace_id=workspace.id), metadata=owner.metadata
    )
    expected = datetime.now(UTC) + timedelta(days=7)
    assert abs(default.expire_time.ToDatetime(UTC) - expected) < timedelta(minutes=1)
    for seconds in (3599, 90 * 86400 + 1, -3600, 2**62):
        bad = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            stubs.memberships.RotateJoinCode(
                pb.RotateJoinCodeRequest(workspace_id=workspace.id, ttl=Duration(seconds=seconds)),
                metadata=owner.metadata,
            ),
        )
        assert bad.details["BadRequest"].field_violations[0].field == "ttl"
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stubs.memberships.RotateJoinCode(
            pb.RotateJoinCodeRequest(workspace_id=workspace.id), metadata=member.metadata
        ),
    )
    assert (await _join_info(stubs, workspace.id, owner)).code == default.code  # unchanged


async def test_expired_unknown_and_deleted_codes_are_not_found_alike(
    stubs: SimpleNamespace, new_user: Any, app: App
) -> None:
    owner = await new_user()
    expiring = await create_workspace(stubs, owner)
    deleted = await create_workspace(stubs, owner)
    expired_code = (await _join_info(stubs, expiring.id, owner)).code
    deleted_code = (await _join_info(stubs, deleted.id, owner)).code
    async with app.db.transaction() as session:
        await session.execute(
            update(Workspace)
            .where(Workspace.id == expiring.id)
            .values(join_code_expire_time=datetime.now(UTC) - timedelta(seconds=1))
        )
    await stubs.workspaces.DeleteWorkspace(
        ws_pb.DeleteWorkspaceRequest(workspace_id=deleted.id), metadata=owner.metadata
    )
    joiner = await new_user()
    unknown_code = generate_code()
    messages = set()
    for code in (expired_code, deleted_code, unknown_code):
        missing = await expect_error(grpc.StatusCode.NOT_FOUND, _join(stubs, joiner, code))
        messages.add(missing.message)
    assert len(messages) == 1  # nothing tells the three apart
    # Rotating issues a fresh code for the expired code's workspace.
    fresh = await stubs.memberships.RotateJoinCode(
        pb.RotateJoinCodeRequest(workspace_id=expiring.id), metadata=owner.metadata
    )
    assert fresh.code != expired_code
    assert (await _join(stubs, joiner, fresh.code)).workspace.id == expiring.id


async def _workspace_row(app: App, workspace_id: str) -> tuple[object, ...]:
    async with app.db.transaction(write=False) as session:
        row = await session.get(Workspace, workspace_id)
        assert row is not None
        return (row.join_code, row.join_code_expire_time, row.version, row.update_time)


async def _audit_count(app: App, workspace_id: str) -> int:
    async with app.db.transaction(write=False) as session:
        count = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.workspace_id == workspace_id)
        )
    return int(count or 0)


async def test_a_workspace_has_a_code_from_its_creation(
    stubs: SimpleNamespace, new_user: Any, app: App, settings: Settings
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    before = await _workspace_row(app, workspace.id)
    code, expire_time = before[0], before[1]
    assert isinstance(code, str) and isinstance(expire_time, datetime)
    expected = datetime.now(UTC) + timedelta(hours=settings.join_code_ttl_hours)
    assert abs(expire_time - expected) < timedelta(minutes=1)
    # The code is joinable before anyone asked for the join info.
    joiner = await new_user()
    assert (await _join(stubs, joiner, display_code(code))).workspace.id == workspace.id


async def test_join_info_writes_nothing(stubs: SimpleNamespace, new_user: Any, app: App) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    before = await _workspace_row(app, workspace.id)
    events = await _audit_count(app, workspace.id)
    info = await _join_info(stubs, workspace.id, owner)
    assert info.code == display_code(str(before[0]))
    assert await _workspace_row(app, workspace.id) == before
    assert await _audit_count(app, workspace.id) == events


@pytest.mark.parametrize("state", ["expired", "never made"])
async def test_join_info_without_a_live_code_is_failed_precondition(
    stubs: SimpleNamespace, new_user: Any, app: App, state: str
) -> None:
    """No code is made by reading: the answer names the way to get one (RotateJoinCode)."""
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    if state == "expired":
        values: dict[str, Any] = {"join_code_expire_time": datetime.now(UTC) - timedelta(seconds=1)}
    else:  # a workspace made before codes were made at creation
        values = {"join_code": None, "join_code_expire_time": None}
    async with app.db.transaction() as session:
        await session.execute(update(Workspace).where(Workspace.id == workspace.id).values(values))
    before = await _workspace_row(app, workspace.id)
    events = await _audit_count(app, workspace.id)
    refused = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, _join_info(stubs, workspace.id, owner)
    )
    assert "RotateJoinCode" in refused.message
    [violation] = refused.details["PreconditionFailure"].violations
    assert (violation.type, violation.subject) == ("JOIN_CODE_UNAVAILABLE", workspace.id)
    assert await _workspace_row(app, workspace.id) == before
    assert await _audit_count(app, workspace.id) == events
    rotated = await stubs.memberships.RotateJoinCode(
        pb.RotateJoinCodeRequest(workspace_id=workspace.id), metadata=owner.metadata
    )
    assert (await _join_info(stubs, workspace.id, owner)).code == rotated.code


async def test_malformed_code_is_invalid_argument(stubs: SimpleNamespace, new_user: Any) -> None:
    joiner = await new_user()
    bad = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, _join(stubs, joiner, "ABC123XYZ"))
    assert bad.details["BadRequest"].field_violations[0].field == "code"


async def test_join_code_commands_run_at_the_time_they_are_given(
    stubs: SimpleNamespace, new_user: Any, app: App
) -> None:
    owner, joiner = await new_user(), await new_user()
    workspace = await create_workspace(stubs, owner)
    rotation = actor_of(owner.user_id, "beacon.v1.MembershipService/RotateJoinCode")
    now = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    async with app.db.transaction() as session:
        info = await join_codes.rotate_join_code(
            session,
            rotation,
            workspace.id,
            ttl_seconds=3600,
            default_ttl=timedelta(days=7),
            now=now,
        )
    assert info.expire_time == now + timedelta(hours=1)
    async with app.db.transaction(write=False) as session:
        event_time = await session.scalar(
            select(AuditEvent.create_time).where(AuditEvent.request_id == rotation.request_id)
        )
    assert event_time == now
    later = now + timedelta(hours=1, seconds=1)
    async with app.db.transaction(write=False) as session:
        live = await join_codes.get_join_info(session, workspace.id, now=now)
        assert live.code == info.code
        with pytest.raises(FailedPrecondition):
            await join_codes.get_join_info(session, workspace.id, now=later)
    joining = actor_of(joiner.user_id, "beacon.v1.MembershipService/JoinWorkspaceByCode")
    with pytest.raises(NotFound):
        async with app.db.transaction() as session:
            await join_codes.join_by_code(session, joining, info.code, now=later)
    async with app.db.transaction() as session:
        member = await join_codes.join_by_code(session, joining, info.code, now=now)
    assert member.scope_id == workspace.id
