"""Workspace join codes: anyone holding a live code can join its workspace as a member.

A code is 12 symbols drawn with `secrets` from a 31-symbol alphabet without lookalikes (no
0/O, 1/I/L), shown grouped as `XXXX-XXXX-XXXX` and accepted in any case, with or without
dashes and spaces. It is stored normalized (12 upper-case symbols) in the unique
`workspaces.join_code` column, with its expiry.

Why it cannot be guessed: 31^12 ≈ 7.9e17 codes, about 59 bits. JoinWorkspaceByCode is
limited to 5 calls per 15 minutes per user (480 a day), refused when the limiter is down.
Even with a million live codes, one guess succeeds with probability ~1.3e-12, so a user
guessing without pause for a century (~1.8e7 tries) finds a code with probability ~2e-5 —
and a code lives at most 90 days. Unknown, expired and deleted workspaces' codes answer the
same NOT_FOUND, so a miss reveals nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Workspace
from service.domain import audit, idempotency
from service.domain.actor import Actor
from service.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from service.domain.tenancy.members import Member
from service.domain.tenancy.workspace_locks import live_workspace_for_update, lock_live_workspace
from service.domain.tenancy.workspace_members import add_workspace_member_if_absent

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 12
GROUP_LENGTH = 4
MIN_TTL = timedelta(hours=1)
MAX_TTL = timedelta(days=90)
_MAX_INPUT_LENGTH = 64  # generous room for separators and spaces around 12 symbols
_SEPARATORS = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2212")


@dataclass(frozen=True, slots=True)
class JoinInfo:
    """A workspace's join code (grouped for display) and when it stops working."""

    workspace_id: str
    code: str
    expire_time: datetime


def generate_code() -> str:
    """A new random code, normalized (12 symbols of ALPHABET, no separators)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def display_code(code: str) -> str:
    """A normalized code grouped for people: `XXXX-XXXX-XXXX`."""
    return "-".join(code[i : i + GROUP_LENGTH] for i in range(0, len(code), GROUP_LENGTH))


def normalize_code(raw: str) -> str:
    """The code as stored: upper case, without dashes or spaces; InvalidArgument("code")
    when what remains cannot be a code."""
    if len(raw) > _MAX_INPUT_LENGTH:
        raise InvalidArgument("code", f"must be at most {_MAX_INPUT_LENGTH} characters")
    code = "".join(ch for ch in raw.upper() if not ch.isspace() and ch not in _SEPARATORS)
    if not code:
        raise InvalidArgument("code", "is required")
    if len(code) != CODE_LENGTH or any(ch not in ALPHABET for ch in code):
        raise InvalidArgument(
            "code",
            f"must be {CODE_LENGTH} characters of {ALPHABET}, written like XXXX-XXXX-XXXX",
        )
    return code


async def get_join_info(session: AsyncSession, workspace_id: str, *, now: datetime) -> JoinInfo:
    """The workspace's join code live at `now`. Reading writes nothing: a workspace gets its
    code when it is created and a new one from `rotate_join_code`. FailedPrecondition (type
    JOIN_CODE_UNAVAILABLE) when it has no live code: it expired, or the workspace was made
    before codes were made at creation."""
    workspace = await _live_workspace(session, workspace_id)
    if not _is_live(workspace, now):
        raise FailedPrecondition(
            "the workspace has no live join code: a workspace owner makes one with RotateJoinCode",
            [
                PreconditionViolation(
                    type="JOIN_CODE_UNAVAILABLE",
                    subject=workspace_id,
                    description="the join code expired or was never made",
                )
            ],
        )
    return _info(workspace)


async def rotate_join_code(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    *,
    ttl_seconds: float | None,
    default_ttl: timedelta,
    request_id: str = "",
    now: datetime,
) -> JoinInfo:
    """Replaces the join code at `now`; the old one stops working at once.

    `ttl_seconds` None means `default_ttl`; otherwise it must be 1 hour to 90 days. A retry
    with the same `request_id` returns the first code and replaces nothing.
    """

    async def rotate() -> JoinInfo:
        ttl = default_ttl
        if ttl_seconds is not None:
            if not MIN_TTL.total_seconds() <= ttl_seconds <= MAX_TTL.total_seconds():
                raise InvalidArgument("ttl", "must be between 1 hour and 90 days")
            ttl = timedelta(seconds=ttl_seconds)
        workspace = await lock_live_workspace(session, workspace_id)
        return await _replace_code(session, actor, workspace, ttl, now)

    return await idempotency.once(
        session,
        actor,
        request_id,
        scope=workspace_id,
        result_type=JoinInfo,
        now=now,
        run=rotate,
    )


async def join_by_code(
    session: AsyncSession, actor: Actor, raw_code: str, *, now: datetime
) -> Member:
    """Makes the caller a member of the code's workspace (their existing membership, if any,
    is returned unchanged) when the code is live at `now`. Unknown and expired codes, and
    codes of deleted workspaces, are NOT_FOUND with the same message."""
    code = normalize_code(raw_code)
    user_id = actor.require_user_id()
    workspace = await session.scalar(live_workspace_for_update(Workspace.join_code == code))
    if workspace is None or not _is_live(workspace, now):
        raise NotFound("join code")
    return await add_workspace_member_if_absent(session, actor, workspace, user_id, now=now)


async def _live_workspace(session: AsyncSession, workspace_id: str) -> Workspace:
    workspace = await session.scalar(
        select(Workspace).where(Workspace.id == workspace_id, Workspace.delete_time.is_(None))
    )
    if workspace is None:
        raise NotFound("workspace", workspace_id)
    return workspace


def _is_live(workspace: Workspace, now: datetime) -> bool:
    expire_time = workspace.join_code_expire_time
    return bool(workspace.join_code) and expire_time is not None and expire_time > now


async def _replace_code(
    session: AsyncSession, actor: Actor, workspace: Workspace, ttl: timedelta, now: datetime
) -> JoinInfo:
    code = await unused_code(session)
    expire_time = now + ttl
    # A Core update, so that update_time (the workspace's content) is left as it is.
    await session.execute(
        update(Workspace)
        .where(Workspace.id == workspace.id)
        .values(
            join_code=code,
            join_code_expire_time=expire_time,
            update_time=Workspace.update_time,
        )
        .execution_options(synchronize_session=False)
    )
    audit.record_workspace(session, actor, workspace, now)
    return JoinInfo(workspace_id=workspace.id, code=display_code(code), expire_time=expire_time)


async def unused_code(session: AsyncSession) -> str:
    """A new normalized code no workspace holds."""
    while True:  # a collision is astronomically rare; the unique column is the real guard
        code = generate_code()
        taken = await session.scalar(select(Workspace.id).where(Workspace.join_code == code))
        if taken is None:
            return code


def _info(workspace: Workspace) -> JoinInfo:
    assert workspace.join_code is not None and workspace.join_code_expire_time is not None
    return JoinInfo(
        workspace_id=workspace.id,
        code=display_code(workspace.join_code),
        expire_time=workspace.join_code_expire_time,
    )
