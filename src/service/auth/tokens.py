"""Bearer token verification: HS256 development tokens and RS256/ES256 tokens from a JWKS URL."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from service.auth.cache import TtlCache
from service.config import Settings
from service.domain.errors import Unauthenticated
from service.domain.inputs import fold_email, unstorable

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
DEV_AUDIENCE = "beacon"
# An unknown key id triggers at most one JWKS refetch per this many seconds.
JWKS_MIN_REFETCH_SECONDS = 30.0
# Verified tokens are remembered (never past their expiry) so hot paths skip the crypto.
VERIFIED_CACHE_SECONDS = 300.0
# The longest `iss` and `sub` accepted: the users table stores them whole (String(255)).
MAX_IDENTITY_CLAIM_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Claims:
    """The identity a valid token asserts."""

    issuer: str
    subject: str
    email: str
    email_verified: bool
    name: str


class JwksCache:
    """The key set of a JWKS URL, fetched asynchronously and cached (no blocking I/O)."""

    def __init__(self, url: str, ttl_seconds: float, client: httpx.AsyncClient | None = None):
        self.url = url
        self.ttl = ttl_seconds
        self._client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf  # never: the first call fetches
        # After a failed refresh the cached keys serve until then, so that an outage of the
        # identity provider does not send every call to it (one after another, under the lock).
        self._retry_at = -math.inf
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        now = time.monotonic()
        stale = now - self._fetched_at > self.ttl or (
            kid not in self._keys and now - self._fetched_at > JWKS_MIN_REFETCH_SECONDS
        )
        if stale and now >= self._retry_at:
            await self._refresh(stale_before=now)
        found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated("token signed with an unknown key", reason="UNKNOWN_KEY_ID")
        return found

    async def _refresh(self, stale_before: float) -> None:
        async with self._lock:
            if self._fetched_at >= stale_before or self._retry_at > stale_before:
                return  # another call refreshed (or failed to) while we waited
            try:
                client = self._client or httpx.AsyncClient(timeout=5.0)
                try:
                    response = await client.get(self.url)
                finally:
                    if self._client is None:
                        await client.aclose()
                response.raise_for_status()
                jwk_set = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, json.JSONDecodeError, jwt.PyJWKSetError) as exc:
                log.warning("jwks fetch failed", extra={"url": self.url, "error": str(exc)})
                if not self._keys:
                    raise Unauthenticated(
                        "cannot verify the token: key set unavailable", reason="JWKS_UNAVAILABLE"
                    ) from exc
                self._retry_at = time.monotonic() + JWKS_MIN_REFETCH_SECONDS
                return
            self._keys = {k.key_id: k for k in jwk_set.keys if k.key_id}
            self._fetched_at = time.monotonic()


class TokenVerifier:
    """Verifies bearer JWTs as the settings allow."""

    def __init__(self, settings: Settings, jwks_client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._secret = settings.auth_secret
        self._jwks = (
            JwksCache(settings.auth_jwks_url, settings.auth_jwks_cache_seconds, jwks_client)
            if settings.auth_jwks_url
            else None
        )
        self._verified: TtlCache[str, Claims] = TtlCache(VERIFIED_CACHE_SECONDS)

    async def verify(self, token: str) -> Claims:
        """The claims of a valid token; cached until the token expires (verification is pure)."""
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        claims, expires = await self._verify(token)
        self._verified.put(token, claims, ttl=expires - time.time())
        return claims

    async def _verify(self, token: str) -> tuple[Claims, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed bearer token", reason="MALFORMED_TOKEN") from None
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            claims = self._decode(
                token,
                self._secret,
                "HS256",
                issuer=self.settings.auth_dev_issuer,
                audience=self.settings.auth_audience or DEV_AUDIENCE,
            )
        elif alg in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise Unauthenticated("token has no key id", reason="UNKNOWN_KEY_ID")
            key = await self._jwks.key(kid)
            claims = self._decode(
                token,
                key,
                str(alg),
                issuer=self.settings.auth_issuer or None,
                audience=self.settings.auth_audience or None,
            )
        else:
            raise Unauthenticated(f"unsupported token algorithm {alg!r}", reason="BAD_ALGORITHM")
        return _claims(claims), float(claims["exp"])

    def _decode(
        self, token: str, key: Any, alg: str, *, issuer: str | None, audience: str | None
    ) -> dict[str, Any]:
        required = ["exp", "sub", "iss"] + (["aud"] if audience else [])
        try:
            decoded: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=issuer,
                audience=audience,
                leeway=self.settings.auth_leeway_seconds,
                options={"require": required, "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid", reason="BAD_SIGNATURE") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is not accepted", reason="BAD_ISSUER") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is not accepted", reason="BAD_AUDIENCE") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}", reason="INVALID_TOKEN") from None
        return decoded


# The claims a user row stores: a NUL (PostgreSQL refuses it) or a lone surrogate (no UTF-8
# encoding) in one would fail every call of the token with INTERNAL.
STORED_CLAIMS = ("iss", "sub", "email", "name")


def _claims(decoded: dict[str, Any]) -> Claims:
    issuer, subject = _identity_claim(decoded, "iss"), _identity_claim(decoded, "sub")
    email = decoded.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > 254:
        raise Unauthenticated("token has no valid email claim", reason="NO_EMAIL")
    for claim in STORED_CLAIMS:
        if unstorable(decoded.get(claim)):
            raise Unauthenticated(
                f"token claim {claim!r} holds a NUL or a lone surrogate", reason="BAD_CLAIM"
            )
    name = decoded.get("name")
    return Claims(
        issuer=issuer,
        subject=subject,
        email=fold_email(email),
        email_verified=_is_true(decoded.get("email_verified")),
        name=name[:200] if isinstance(name, str) else "",
    )


def _identity_claim(decoded: dict[str, Any], claim: str) -> str:
    """The `iss` or `sub` claim, whole: a user is their (issuer, subject), so a value too
    long to store is refused, never cut (two subjects sharing a prefix would be one user)."""
    value = str(decoded[claim])
    if len(value) > MAX_IDENTITY_CLAIM_LENGTH:
        raise Unauthenticated(
            f"token claim {claim!r} is longer than {MAX_IDENTITY_CLAIM_LENGTH} characters",
            reason="CLAIM_TOO_LONG",
            metadata={"claim": claim},
        )
    return value


def _is_true(value: Any) -> bool:
    """A claim that is JSON true (or the string "true", as some providers send it); the
    string "false" and anything else are not."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def mint_dev_token(
    settings: Settings,
    *,
    email: str,
    name: str = "",
    subject: str | None = None,
    ttl_seconds: int = 12 * 3600,
    now: float | None = None,
    email_verified: bool = True,
) -> str:
    """An HS256 token for the development secret (`beacon token`).

    The email is marked verified unless `email_verified` is False (`beacon token
    --unverified`), to try what an identity provider that does not vouch for it gives.
    """
    if not settings.auth_secret:
        raise ValueError("BEACON_AUTH_SECRET is empty: development tokens are disabled")
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": settings.auth_dev_issuer,
        "aud": settings.auth_audience or DEV_AUDIENCE,
        "sub": subject or f"dev|{fold_email(email)}",
        "email": email,
        "email_verified": email_verified,
        "name": name,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, settings.auth_secret, algorithm="HS256")
