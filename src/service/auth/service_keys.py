"""Service keys: `bk_...` bearer credentials of internal services, stored hashed, with scopes.

Every key is bound at creation to what it may touch: a list of organizations, or, for
platform-internal keys and only when asked for explicitly, all of them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.db.database import Database
from service.db.models import Organization, ServiceKey
from service.domain.errors import InvalidArgument, NotFound
from service.domain.inputs import require_id

PREFIX = "bk_"
KNOWN_SCOPES = frozenset({"act_as", "workos"})


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    name: str
    scopes: tuple[str, ...]
    create_time: datetime
    revoke_time: datetime | None
    organization_ids: tuple[str, ...] = ()
    all_organizations: bool = False

    @property
    def organizations(self) -> frozenset[str] | None:
        """The organizations the key may touch; None for all of them."""
        return None if self.all_organizations else frozenset(self.organization_ids)

    def describe_organizations(self) -> str:
        return "*" if self.all_organizations else ",".join(self.organization_ids)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(PREFIX)


async def create_key(
    session: AsyncSession,
    name: str,
    scopes: list[str],
    *,
    organization_ids: list[str] | None = None,
    all_organizations: bool = False,
    now: datetime,
) -> tuple[str, KeyInfo]:
    """Creates a key bound to `organization_ids` (existing organizations) or, explicitly,
    to all organizations — exactly one of the two; returns the secret (shown once) and
    its record."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidArgument("name", "must be 1-100 characters")
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown:
        raise InvalidArgument("scopes", f"unknown scopes {unknown}; known: {sorted(KNOWN_SCOPES)}")
    bound = sorted(set(organization_ids or ()))
    if bool(bound) == all_organizations:
        raise InvalidArgument(
            "organization_ids",
            "give the organizations the key may touch, or all organizations (not both)",
        )
    for organization_id in bound:
        if not require_id("organization_ids", organization_id).startswith("org_"):
            raise InvalidArgument(
                "organization_ids", f"{organization_id} is not an organization id"
            )
    secret = PREFIX + secrets.token_urlsafe(32)
    key = ServiceKey(
        id=new_id("key"),
        name=name,
        secret_hash=hash_secret(secret),
        scopes=sorted(set(scopes)),
        organization_ids=bound,
        all_organizations=all_organizations,
        create_time=now,
    )
    if bound:
        found = await session.scalar(
            select(func.count()).select_from(Organization).where(Organization.id.in_(bound))
        )
        if found != len(bound):
            raise InvalidArgument("organization_ids", "names an organization that does not exist")
    session.add(key)
    return secret, _info(key)


async def list_keys(session: AsyncSession) -> list[KeyInfo]:
    """Every key, oldest first, revoked ones too."""
    keys = (await session.scalars(select(ServiceKey).order_by(ServiceKey.create_time))).all()
    return [_info(k) for k in keys]


async def revoke_key(session: AsyncSession, key_id: str, *, now: datetime) -> None:
    """Revokes an active key; NotFound when there is no such active key."""
    result = await session.execute(
        update(ServiceKey)
        .where(ServiceKey.id == key_id, ServiceKey.revoke_time.is_(None))
        .values(revoke_time=now)
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
    return KeyInfo(
        key.id,
        key.name,
        tuple(key.scopes),
        key.create_time,
        key.revoke_time,
        tuple(key.organization_ids),
        key.all_organizations,
    )
