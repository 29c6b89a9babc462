"""Request ids (AIP-155): a retried create with the same request_id returns the first result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import utcnow
from service.db.database import Database
from service.db.models import IdempotencyKey
from service.domain.inputs import require_request_id

M = TypeVar("M", bound=Message)


async def run_once(
    db: Database,
    *,
    principal_id: str,
    method: str,
    request_id: str,
    response_type: type[M],
    create: Callable[[AsyncSession], Awaitable[M]],
) -> M:
    """Runs `create` in a transaction and remembers its response under the request id.

    Without a request id it simply runs. With one, a stored response is replayed; two
    concurrent calls with the same id both run, but only one commits (the key is unique)
    and the other replays the winner's response.
    """
    require_request_id(request_id)
    if not request_id:
        async with db.transaction() as session:
            return await create(session)
    key = (principal_id, method, request_id)
    stored = await _load(db, key, response_type)
    if stored is not None:
        return stored
    try:
        async with db.transaction() as session:
            response = await create(session)
            session.add(
                IdempotencyKey(
                    principal_id=principal_id,
                    method=method,
                    request_id=request_id,
                    response=response.SerializeToString(),
                    create_time=utcnow(),
                )
            )
            await session.flush()
        return response
    except IntegrityError:
        stored = await _load(db, key, response_type)
        if stored is None:
            raise
        return stored


async def _load(db: Database, key: tuple[str, str, str], response_type: type[M]) -> M | None:
    async with db.transaction(write=False) as session:
        raw = await session.scalar(
            select(IdempotencyKey.response).where(
                IdempotencyKey.principal_id == key[0],
                IdempotencyKey.method == key[1],
                IdempotencyKey.request_id == key[2],
            )
        )
    if raw is None:
        return None
    message = response_type()
    message.ParseFromString(raw)
    return message
