"""Request ids for servicers: the caller's retry of a call returns its first result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.context import current_call
from service.db.database import Database
from service.domain import idempotency

M = TypeVar("M", bound=Message)


async def run_once(
    db: Database,
    request_id: str,
    response_type: type[M],
    create: Callable[[AsyncSession], Awaitable[M]],
    *,
    scope: str = "",
) -> M:
    """Runs `create` in a transaction once per (caller, RPC, `scope`, request id).

    The key is the caller's actor id, so another user (or a service key acting for them)
    sending the same request id runs their own call. `scope` names the resource the call
    changes (a workspace or organization id): the same id sent for another resource is a
    different request, never a replay of this one.
    """
    call = current_call()
    return await idempotency.run_once(
        db,
        principal_id=call.require_principal().actor_id,
        method=f"{call.method}|{scope}" if scope else call.method,
        request_id=request_id,
        response_type=response_type,
        create=create,
    )
