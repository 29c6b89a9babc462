"""Service keys: `bk_...` bearer credentials of internal services, stored hashed, with scopes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from service.db.database import Database
from service.db.models import ServiceKey
from service.domain.clock import new_id, utcnow
from service.domain.errors import InvalidArgument, NotFound

PREFIX = "bk_"
KNOWN_SCOPES = frozenset({"act_as", "workos"})


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    name: str
    scopes: tuple[str, ...]
    create_time: datetime
    revoke_time: datetime | None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(PREFIX)


async def create_key(db: Database, name: str, scopes: list[str]) -> tuple[str, KeyInfo]:
    """Creates a key; returns the secret (shown once) and its record."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidArgument("name", "must be 1-100 characters")
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown:
        raise InvalidArgument("scopes", f"unknown scopes {unknown}; known: {sorted(KNOWN_SCOPES)}")
    secret = PREFIX + secrets.token_urlsafe(32)
    key = ServiceKey(
        id=new_id("key"),
        name=name,
        secret_hash=hash_secret(secret),
        scopes=sorted(set(scopes)),
        create_time=utcnow(),
    )
    async with db.transaction() as session:
        session.add(key)
    return secret, _info(key)


async def list_keys(db: Database) -> list[KeyInfo]:
    async with db.transaction(write=False) as session:
        keys = (await session.scalars(select(ServiceKey).order_by(ServiceKey.create_time))).all()
        # Read inside the transaction: ending a read-only one expires the loaded rows.
        return [_info(k) for k in keys]


async def revoke_key(db: Database, key_id: str) -> None:
    async with db.transaction() as session:
        result = await session.execute(
            update(ServiceKey)
            .where(ServiceKey.id == key_id, ServiceKey.revoke_time.is_(None))
            .values(revoke_time=utcnow())
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound("service key", key_id)


async def find_active_key(db: Database, secret: str) -> KeyInfo | None:
    """The unrevoked key with this secret, if any."""
    async with db.transaction(write=False) as session:
        key = await session.scalar(
            select(ServiceKey).where(
                ServiceKey.secret_hash == hash_secret(secret), ServiceKey.revoke_time.is_(None)
            )
        )
        return _info(key) if key else None


def _info(key: ServiceKey) -> KeyInfo:
    return KeyInfo(key.id, key.name, tuple(key.scopes), key.create_time, key.revoke_time)
