"""Users on first sight, and turning credentials into a Principal."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.auth import service_keys
from service.auth.cache import TtlCache
from service.auth.context import Principal
from service.auth.tokens import Claims, TokenVerifier
from service.clock import new_id
from service.config import Settings
from service.db.database import Database
from service.db.models import User
from service.domain.errors import PermissionDenied, Unauthenticated
from service.domain.tenancy import access as acl

ACT_AS_SCOPE = "act_as"
USER_CACHE_SECONDS = 5.0


def identity_key(issuer: str, subject: str) -> str:
    """A short name of the person whose tokens carry (issuer, subject): the same for every
    user row they ever had (a deleted account signs in again under a new user id)."""
    whole = f"{len(issuer)}:{issuer}{subject}".encode("utf-8", "surrogatepass")
    return "idn_" + hashlib.sha256(whole).hexdigest()[:32]


async def ensure_user(db: Database, claims: Claims) -> str:
    """The user id of the token's (issuer, subject), creating or refreshing the row.

    Signing in never joins anything: pending invitations to the email wait until the user
    accepts them (AcceptInvitation).
    """
    for _ in range(2):
        try:
            async with db.transaction() as session:
                user = await session.scalar(
                    select(User).where(User.issuer == claims.issuer, User.subject == claims.subject)
                )
                if user is None:
                    user = User(
                        id=new_id("user"),
                        issuer=claims.issuer,
                        subject=claims.subject,
                        email=claims.email,
                        email_verified=claims.email_verified,
                        name=claims.name,
                    )
                    session.add(user)
                    await session.flush()
                elif (user.email, user.name, user.email_verified) != (
                    claims.email,
                    claims.name,
                    claims.email_verified,
                ):
                    user.email, user.name = claims.email, claims.name
                    user.email_verified = claims.email_verified
                    await session.flush()
                return user.id
        except IntegrityError:
            continue  # a concurrent first call created the user: read it again
    raise Unauthenticated("could not register the user", reason="USER_RACE")


class Authenticator:
    """Credentials → Principal, with short-lived caches so hot paths skip the database."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.db = db
        self.verifier = verifier or TokenVerifier(settings)
        # Short: a deleted account's token must map to a fresh user soon after.
        self._users: TtlCache[Claims, tuple[str, str]] = TtlCache(USER_CACHE_SECONDS)
        # Revoking a key, deleting a user or removing them from the key's organizations
        # takes effect within `service_key_cache_seconds` (both caches share it).
        self._keys: TtlCache[str, service_keys.KeyInfo] = TtlCache(
            settings.service_key_cache_seconds
        )
        self._acted: TtlCache[tuple[str, str], tuple[str, bool, str]] = TtlCache(
            settings.service_key_cache_seconds
        )

    async def authenticate(self, authorization: str | None, act_as: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing bearer token", reason="NO_CREDENTIALS")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be 'Bearer <token>'", reason="NO_CREDENTIALS")
        if service_keys.looks_like_key(token):
            return await self._service_principal(token, act_as)
        claims = await self.verifier.verify(token)  # bad credentials are UNAUTHENTICATED first
        if act_as:
            raise PermissionDenied("only service keys may act as another user", reason="ACT_AS")
        known = self._users.get(claims)
        if known is None:
            user_id = await ensure_user(self.db, claims)
            known = (user_id, identity_key(claims.issuer, claims.subject))
            self._users.put(claims, known)
        user_id, identity = known
        return Principal(
            user_id=user_id,
            email=claims.email,
            email_verified=claims.email_verified,
            identity=identity,
        )

    async def _service_principal(self, secret: str, act_as: str | None) -> Principal:
        key = self._keys.get(secret)
        if key is None:
            key = await service_keys.find_active_key(self.db, secret)
            if key is None:
                raise Unauthenticated("unknown or revoked service key", reason="BAD_SERVICE_KEY")
            self._keys.put(secret, key)
        scopes = frozenset(key.scopes)
        bound = key.organizations
        if not act_as:
            return Principal(user_id=None, key_id=key.id, scopes=scopes, key_organizations=bound)
        if ACT_AS_SCOPE not in scopes:
            raise PermissionDenied("the service key lacks the act_as scope", reason="ACT_AS")
        acted = self._acted.get((key.id, act_as))
        if acted is None:
            acted = await self._acted_user(act_as, bound)
            self._acted.put((key.id, act_as), acted)
        email, verified, identity = acted
        return Principal(
            user_id=act_as,
            email=email,
            email_verified=verified,
            identity=identity,
            key_id=key.id,
            scopes=scopes,
            key_organizations=bound,
        )

    async def _acted_user(
        self, user_id: str, bound: frozenset[str] | None
    ) -> tuple[str, bool, str]:
        """The email (whether it is verified, and the identity key) of the user a key acts
        as; PERMISSION_DENIED when there is no such user or they belong to none of the key's
        organizations."""
        async with self.db.transaction(write=False) as session:
            row = (
                await session.execute(
                    select(User.email, User.email_verified, User.issuer, User.subject).where(
                        User.id == user_id
                    )
                )
            ).first()
            outside = (
                row is not None
                and bound is not None
                and not await acl.belongs_to_any(session, user_id, bound)
            )
        if row is None:
            raise PermissionDenied("x-beacon-act-as names no user", reason="ACT_AS_UNKNOWN_USER")
        if outside:
            raise PermissionDenied(
                "x-beacon-act-as names a user outside the service key's organizations",
                reason="ACT_AS_OUTSIDE_KEY_ORGANIZATIONS",
            )
        return str(row[0]), bool(row[1]), identity_key(row[2], row[3])
