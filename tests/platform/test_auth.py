"""The auth interceptor as a client meets it: bearer tokens (HS256 dev tokens, RS256/ES256
through a JWKS URL), users on first sight, service keys and acting as a user."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import Row, select

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import organization_service_pb2_grpc
from service.app import App
from service.auth import tokens
from service.auth.context import CallContext
from service.auth.tokens import mint_dev_token
from service.config import DEV_AUTH_SECRET, Settings
from service.db.models import User
from service.domain.errors import Unauthenticated
from service.server import start_server
from tests.support.app import NewUser, make_settings
from tests.support.assertions import expect_refusal
from tests.support.builders import seed_organization
from tests.support.probes import ProbeState, start_probe_server
from tests.support.processes import eventually, free_port

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
LIST_MINE = org_pb.ListMyOrganizationsRequest()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def unique_email() -> str:
    return f"auth-{uuid.uuid4().hex[:12]}@example.com"


async def users_with_email(app: App, email: str) -> Sequence[Row[str, str, str, str, str]]:
    """(id, issuer, subject, email, name) of the users with this email."""
    query = select(User.id, User.issuer, User.subject, User.email, User.name)
    async with app.db.transaction(write=False) as session:
        return (await session.execute(query.where(User.email == email))).all()


def caller(call: CallContext) -> tuple[str | None, str, str | None]:
    """(user id, email, service key id) of the principal a call ran as."""
    principal = call.require_principal()
    return principal.user_id, principal.email, principal.key_id


# --- HS256 development tokens ----------------------------------------------------------------


def dev_claims(settings: Settings, email: str, /, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.auth_dev_issuer,
        "aud": "beacon",
        "sub": f"dev|{email}",
        "email": email,
        "name": "Refused",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def hs256(settings: Settings, email: str, /, secret: str | None = None, **over: Any) -> str:
    return jwt.encode(dev_claims(settings, email, **over), secret or settings.auth_secret, "HS256")


RSA_FOR_MATRIX = rsa.generate_private_key(public_exponent=65537, key_size=2048)
Header = Callable[[Settings, str], str | None]

BAD_CREDENTIALS: dict[str, tuple[Header, str]] = {
    "no token": (lambda s, e: None, "NO_CREDENTIALS"),
    "basic scheme": (lambda s, e: "Basic dXNlcjpwYXNz", "NO_CREDENTIALS"),
    "bearer alone": (lambda s, e: "Bearer", "NO_CREDENTIALS"),
    "garbage jwt": (lambda s, e: "Bearer not.a.jwt", "MALFORMED_TOKEN"),
    "expired": (
        lambda s, e: "Bearer " + mint_dev_token(s, email=e, ttl_seconds=60, now=time.time() - 3600),
        "TOKEN_EXPIRED",
    ),
    "other secret": (
        lambda s, e: "Bearer " + hs256(s, e, secret="another-secret-0123456789abcdef0123"),
        "BAD_SIGNATURE",
    ),
    "wrong issuer": (lambda s, e: "Bearer " + hs256(s, e, iss="https://evil.test"), "BAD_ISSUER"),
    "wrong audience": (lambda s, e: "Bearer " + hs256(s, e, aud="someone-else"), "BAD_AUDIENCE"),
    "no expiry": (lambda s, e: "Bearer " + hs256(s, e, exp=None), "INVALID_TOKEN"),
    "no email": (lambda s, e: "Bearer " + hs256(s, e, email=None), "NO_EMAIL"),
    "alg none": (
        lambda s, e: "Bearer " + jwt.encode(dev_claims(s, e), "", algorithm="none"),
        "BAD_ALGORITHM",
    ),
    "RS256 without a JWKS": (
        lambda s, e: (
            "Bearer " + jwt.encode(dev_claims(s, e), RSA_FOR_MATRIX, "RS256", headers={"kid": "k1"})
        ),
        "BAD_ALGORITHM",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
async def test_bad_credentials_are_unauthenticated_and_register_nobody(
    case: str, stubs: SimpleNamespace, settings: Settings, app: App
) -> None:
    make_header, reason = BAD_CREDENTIALS[case]
    email = unique_email()
    header = make_header(settings, email)
    metadata = (("authorization", header),) if header is not None else ()
    await expect_refusal(
        UNAUTHENTICATED,
        reason,
        stubs.organizations.ListMyOrganizations(LIST_MINE, metadata=metadata),
    )
    assert await users_with_email(app, email) == []


async def test_bad_token_with_act_as_header_is_still_unauthenticated(
    stubs: SimpleNamespace, settings: Settings, new_user: NewUser
) -> None:
    someone = await new_user()
    expired = mint_dev_token(settings, email=unique_email(), ttl_seconds=60, now=time.time() - 3600)
    await expect_refusal(
        UNAUTHENTICATED,
        "TOKEN_EXPIRED",
        stubs.organizations.ListMyOrganizations(
            LIST_MINE, metadata=(*bearer(expired), ("x-beacon-act-as", someone.user_id))
        ),
    )


async def test_user_token_cannot_act_as_another_user(
    probes: SimpleNamespace, new_user: NewUser
) -> None:
    me, other = await new_user(), await new_user()
    await expect_refusal(
        PERMISSION_DENIED,
        "ACT_AS",
        probes.organizations.ListMyOrganizations(
            LIST_MINE, metadata=(*me.metadata, ("x-beacon-act-as", other.user_id))
        ),
    )


async def test_valid_dev_token_is_accepted_as_its_user(
    probes: SimpleNamespace,
    probe_state: ProbeState,
    stubs: SimpleNamespace,
    app: App,
    new_user: NewUser,
) -> None:
    user = await new_user()
    call = await probe_state.traced(
        probes.organizations.ListMyOrganizations, LIST_MINE, user.metadata
    )
    assert caller(call) == (user.user_id, user.email, None)
    # The product server answers the same token with that user's organizations.
    org_id = await seed_organization(app, user.user_id)
    reply = await stubs.organizations.ListMyOrganizations(LIST_MINE, metadata=user.metadata)
    assert [o.id for o in reply.organizations] == [org_id]


async def test_user_is_created_on_first_sight_and_refreshed_when_the_name_changes(
    probes: SimpleNamespace, probe_state: ProbeState, settings: Settings, app: App
) -> None:
    email = unique_email()
    first = mint_dev_token(settings, email=email, name="First Name")
    assert await users_with_email(app, email) == []
    call = await probe_state.traced(
        probes.organizations.ListMyOrganizations, LIST_MINE, bearer(first)
    )
    [user] = await users_with_email(app, email)
    assert (user.issuer, user.subject, user.email, user.name) == (
        settings.auth_dev_issuer,
        f"dev|{email}",
        email,
        "First Name",
    )
    assert call.principal is not None and call.principal.user_id == user.id

    renamed = mint_dev_token(settings, email=email, name="Second Name")
    await probes.organizations.ListMyOrganizations(LIST_MINE, metadata=bearer(renamed))
    [refreshed] = await users_with_email(app, email)
    assert (refreshed.id, refreshed.name) == (user.id, "Second Name")


@pytest.mark.parametrize("beyond", [True, False], ids=["beyond_leeway", "within_leeway"])
async def test_expiry_is_enforced_to_the_configured_leeway(
    beyond: bool, stubs: SimpleNamespace, settings: Settings, app: App
) -> None:
    """A token expired a little more than the leeway ago is refused; a little less, accepted
    (a leeway much longer than configured would let the first one through)."""
    margin = 5
    assert settings.auth_leeway_seconds > margin, "the leeway is too short to test both sides"
    ago = settings.auth_leeway_seconds + (margin if beyond else -margin)
    email = unique_email()
    token = mint_dev_token(settings, email=email, ttl_seconds=60, now=time.time() - 60 - ago)
    call = stubs.organizations.ListMyOrganizations(LIST_MINE, metadata=bearer(token))
    if beyond:
        await expect_refusal(UNAUTHENTICATED, "TOKEN_EXPIRED", call)
        assert await users_with_email(app, email) == []
    else:
        assert list((await call).organizations) == []
        assert len(await users_with_email(app, email)) == 1


# --- Service keys ----------------------------------------------------------------------------


async def new_key(app: App, *scopes: str) -> tuple[str, str]:
    """A platform-internal key (bound to all organizations) with `scopes`."""
    secret, info = await app.services.service_keys.create(
        f"svc-{uuid.uuid4().hex[:8]}", [*scopes], all_organizations=True
    )
    return secret, info.id


async def test_service_key_without_act_as_cannot_call_a_user_rpc(
    probes: SimpleNamespace, app: App
) -> None:
    secret, _ = await new_key(app, "act_as")
    await expect_refusal(
        PERMISSION_DENIED,
        "USER_REQUIRED",
        probes.organizations.ListMyOrganizations(LIST_MINE, metadata=bearer(secret)),
    )


async def test_service_key_with_act_as_scope_acts_as_the_named_user(
    probes: SimpleNamespace,
    probe_state: ProbeState,
    stubs: SimpleNamespace,
    app: App,
    new_user: NewUser,
) -> None:
    user = await new_user()
    org_id = await seed_organization(app, user.user_id)
    secret, key_id = await new_key(app, "act_as")
    acting = (*bearer(secret), ("x-beacon-act-as", user.user_id))
    call = await probe_state.traced(probes.organizations.ListMyOrganizations, LIST_MINE, acting)
    assert caller(call) == (user.user_id, user.email, key_id)
    # Through the product servicer, the key sees the user's organizations (and only theirs).
    reply = await stubs.organizations.ListMyOrganizations(LIST_MINE, metadata=acting)
    assert [o.id for o in reply.organizations] == [org_id]


async def test_act_as_header_without_the_scope_is_refused(
    probes: SimpleNamespace, app: App, new_user: NewUser
) -> None:
    user = await new_user()
    secret, _ = await new_key(app, "workos")
    await expect_refusal(
        PERMISSION_DENIED,
        "ACT_AS",
        probes.organizations.ListMyOrganizations(
            LIST_MINE, metadata=(*bearer(secret), ("x-beacon-act-as", user.user_id))
        ),
    )


async def test_act_as_an_unknown_user_is_refused(probes: SimpleNamespace, app: App) -> None:
    secret, _ = await new_key(app, "act_as")
    await expect_refusal(
        PERMISSION_DENIED,
        "ACT_AS_UNKNOWN_USER",
        probes.organizations.ListMyOrganizations(
            LIST_MINE, metadata=(*bearer(secret), ("x-beacon-act-as", "user_doesnotexist"))
        ),
    )


async def test_revoked_and_unknown_keys_are_unauthenticated(
    probes: SimpleNamespace, app: App, new_user: NewUser
) -> None:
    user = await new_user()
    secret, key_id = await new_key(app, "act_as")
    acting = (*bearer(secret), ("x-beacon-act-as", user.user_id))
    await probes.organizations.ListMyOrganizations(LIST_MINE, metadata=acting)
    await app.services.service_keys.revoke(key_id)
    await expect_refusal(
        UNAUTHENTICATED,
        "BAD_SERVICE_KEY",
        probes.organizations.ListMyOrganizations(LIST_MINE, metadata=acting),
    )
    await expect_refusal(
        UNAUTHENTICATED,
        "BAD_SERVICE_KEY",
        probes.organizations.ListMyOrganizations(LIST_MINE, metadata=bearer(secret[:-4] + "abcd")),
    )


async def test_a_revoked_key_is_refused_within_the_default_cache_time(
    app: App, backend: str, new_user: NewUser, tmp_path: Path
) -> None:
    """With the default service-key cache (not the 0 the other tests use), a revoked key
    stops working within `service_key_cache_seconds` of its revocation, as documented."""
    bound = Settings.model_fields["service_key_cache_seconds"].default
    assert bound > 0
    settings = make_settings(
        backend,
        app.settings.database_url,
        tmp_path,
        f"{app.settings.rate_limit_key_prefix}-revoke-{uuid.uuid4().hex[:8]}",
        service_key_cache_seconds=bound,
        rate_limit_scale=100.0,
    )
    cached = App(settings=settings, db=app.db)
    server = await start_server(cached, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = organization_service_pb2_grpc.OrganizationServiceStub(channel)
            user = await new_user()
            secret, key_id = await new_key(app, "act_as")
            acting = (*bearer(secret), ("x-beacon-act-as", user.user_id))
            await stub.ListMyOrganizations(LIST_MINE, metadata=acting)  # now cached
            await app.services.service_keys.revoke(key_id)
            revoked = time.monotonic()

            async def refused() -> bool:
                try:
                    await stub.ListMyOrganizations(LIST_MINE, metadata=acting)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == UNAUTHENTICATED, error.details()
                    return True
                return False

            await eventually(refused, what="the revoked key to be refused", within=bound + 2)
            assert time.monotonic() - revoked <= bound + 1
    finally:
        await server.stop(grace=1.0)


async def test_workos_key_resolves_an_organization_without_acting(
    probes: SimpleNamespace, probe_state: ProbeState, app: App, new_user: NewUser
) -> None:
    owner = await new_user()
    org_id = await seed_organization(app, owner.user_id)
    secret, key_id = await new_key(app, "workos")
    call = await probe_state.traced(
        probes.organizations.ResolveWorkosOrganizationId,
        org_pb.ResolveWorkosOrganizationIdRequest(organization_id=org_id),
        bearer(secret),
    )
    assert call.principal is not None and call.access is not None
    assert (call.principal.user_id, call.principal.key_id) == (None, key_id)
    assert (call.access.organization_id, call.access.via_service_scope) == (org_id, True)

    # The scope opens only the RPCs that declare it, and only for organizations that exist.
    await expect_refusal(
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        probes.organizations.ResolveWorkosOrganizationId(
            org_pb.ResolveWorkosOrganizationIdRequest(organization_id="org_missing"),
            metadata=bearer(secret),
        ),
    )
    await expect_refusal(
        PERMISSION_DENIED,
        "USER_REQUIRED",
        probes.organizations.ListMyOrganizations(LIST_MINE, metadata=bearer(secret)),
    )
    act_as_only, _ = await new_key(app, "act_as")
    await expect_refusal(
        PERMISSION_DENIED,
        "USER_REQUIRED",
        probes.organizations.ResolveWorkosOrganizationId(
            org_pb.ResolveWorkosOrganizationIdRequest(organization_id=org_id),
            metadata=bearer(act_as_only),
        ),
    )


# --- RS256 / ES256 through a JWKS URL ---------------------------------------------------------

ISSUER = "https://idp.beacon.test/"
AUDIENCE = "beacon-api"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        public = codec.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, **over: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"idp|{uuid.uuid4().hex}",
            "email": unique_email(),
            "name": "Jwks User",
            "iat": now,
            "exp": now + 600,
            **over,
        }
        return jwt.encode(claims, self.private, self.alg, headers={"kid": self.kid})


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """A JWT signed by hand (PyJWT refuses to use a PEM key as an HMAC secret)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


@dataclass
class JwksEndpoint:
    """The identity provider's key set, served over HTTP on 127.0.0.1."""

    keys: list[SigningKey]
    fetches: int = 0
    failing: bool = False
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    fetch_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, _request: web.Request) -> web.Response:
        self.fetches += 1
        self.fetch_started.set()
        await self.gate.wait()
        if self.failing:
            return web.Response(status=503, text="down")
        return web.json_response({"keys": [k.jwk() for k in self.keys]})


class ShiftedClock:
    """Monotonic time that tests move forward, so a cache window passes without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time()


@dataclass
class JwksServer:
    endpoint: JwksEndpoint
    clock: ShiftedClock
    settings: Settings
    organizations: organization_service_pb2_grpc.OrganizationServiceStub
    health: health_pb2_grpc.HealthStub
    state: ProbeState
    rsa: SigningKey
    ec: SigningKey

    def pass_cache_window(self) -> None:
        self.clock.offset += self.settings.auth_jwks_cache_seconds + 1

    async def call(self, token: str) -> CallContext:
        """ListMyOrganizations with the token; the context the servicer saw."""
        return await self.state.traced(
            self.organizations.ListMyOrganizations, LIST_MINE, bearer(token)
        )


@pytest.fixture(scope="module")
async def jwks(
    app: App, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JwksServer]:
    endpoint = JwksEndpoint(keys=[rsa_key("rsa-1"), ec_key("ec-1")])
    endpoint.gate.set()
    web_app = web.Application()
    web_app.router.add_get("/.well-known/jwks.json", endpoint.handle)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = make_settings(
        backend,
        app.settings.database_url,
        Path(tmp_path_factory.mktemp("jwks")),
        "unused",
        redis_url="",
        auth_jwks_url=f"http://127.0.0.1:{port}/.well-known/jwks.json",
        auth_issuer=ISSUER,
        auth_audience=AUDIENCE,
        auth_jwks_cache_seconds=300,
    )
    clock = ShiftedClock()
    state = ProbeState()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokens, "time", clock)
        server = await start_probe_server(App(settings=settings, db=app.db), state)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield JwksServer(
                endpoint,
                clock,
                settings,
                organization_service_pb2_grpc.OrganizationServiceStub(channel),
                health_pb2_grpc.HealthStub(channel),
                state,
                *endpoint.keys,
            )
        await server.stop(grace=1.0)
    await runner.cleanup()


async def test_rs256_and_es256_tokens_from_the_jwks_are_accepted(
    jwks: JwksServer, app: App
) -> None:
    for key in (jwks.rsa, jwks.ec):
        email, subject = unique_email(), f"idp|{uuid.uuid4().hex}"
        call = await jwks.call(key.sign(email=email, sub=subject, name="Idp User"))
        [user] = await users_with_email(app, email)
        assert (user.issuer, user.subject, user.name) == (ISSUER, subject, "Idp User"), key.alg
        assert call.principal is not None and call.principal.user_id == user.id


async def test_dev_tokens_still_work_beside_the_jwks(jwks: JwksServer, app: App) -> None:
    email = unique_email()
    call = await jwks.call(mint_dev_token(jwks.settings, email=email))
    [user] = await users_with_email(app, email)
    assert (user.issuer, user.subject) == (jwks.settings.auth_dev_issuer, f"dev|{email}")
    assert caller(call) == (user.id, email, None)


async def test_with_a_jwks_hs256_tokens_are_refused_unless_a_secret_is_set(
    jwks: JwksServer, app: App
) -> None:
    """No HS256 secret is configured (the default): HS256 tokens, even signed with the
    development secret, are refused, while JWKS tokens work."""
    fields = jwks.settings.model_dump(exclude={"auth_secret"})
    settings = Settings(**fields)
    assert settings.auth_secret == ""
    state = ProbeState()
    server = await start_probe_server(App(settings=settings, db=app.db), state)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = organization_service_pb2_grpc.OrganizationServiceStub(channel)
            for secret in (DEV_AUTH_SECRET, jwks.settings.auth_secret):
                token = mint_dev_token(
                    settings.model_copy(update={"auth_secret": secret}), email=unique_email()
                )
                await expect_refusal(
                    UNAUTHENTICATED,
                    "BAD_ALGORITHM",
                    stub.ListMyOrganizations(LIST_MINE, metadata=bearer(token)),
                )
            await state.traced(stub.ListMyOrganizations, LIST_MINE, bearer(jwks.rsa.sign()))
    finally:
        await server.stop(grace=1.0)


async def test_bad_jwks_tokens_are_unauthenticated(jwks: JwksServer, app: App) -> None:
    impostor = SigningKey("rsa-1", "RS256", RSA_FOR_MATRIX)  # a known kid, the wrong key
    public_pem = (
        jwks.rsa.private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    now = int(time.time())
    confused = hmac_signed(  # the classic confusion: the public key used as an HMAC secret
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "email": unique_email(), "exp": now + 60},
        public_pem.encode(),
    )
    no_kid = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "email": unique_email(), "exp": now + 60},
        jwks.rsa.private,
        "RS256",
    )
    cases = {
        "UNKNOWN_KEY_ID": [SigningKey("rsa-unknown", "RS256", jwks.rsa.private).sign(), no_kid],
        "BAD_SIGNATURE": [impostor.sign(), confused],
        "BAD_ISSUER": [jwks.rsa.sign(iss="https://other-idp.test/")],
        "BAD_AUDIENCE": [jwks.ec.sign(aud="another-api")],
        "TOKEN_EXPIRED": [jwks.rsa.sign(exp=now - 3600)],
    }
    for reason, bad_tokens in cases.items():
        for token in bad_tokens:
            await expect_refusal(UNAUTHENTICATED, reason, jwks.call(token))


async def test_unknown_key_ids_do_not_refetch_the_jwks_on_every_call(jwks: JwksServer) -> None:
    await jwks.call(jwks.rsa.sign())
    before = jwks.endpoint.fetches
    for _ in range(5):
        await expect_refusal(
            UNAUTHENTICATED,
            "UNKNOWN_KEY_ID",
            jwks.call(SigningKey(f"k-{uuid.uuid4().hex}", "RS256", RSA_FOR_MATRIX).sign()),
        )
    assert jwks.endpoint.fetches - before <= 1


async def test_rotated_key_is_accepted_after_the_cache_window(jwks: JwksServer) -> None:
    jwks.pass_cache_window()
    await jwks.call(jwks.rsa.sign())  # refetches: the cache is fresh from here on
    fetched = jwks.endpoint.fetches
    rotated = ec_key(f"ec-rotated-{uuid.uuid4().hex[:6]}")
    jwks.endpoint.keys.append(rotated)
    try:
        await expect_refusal(UNAUTHENTICATED, "UNKNOWN_KEY_ID", jwks.call(rotated.sign()))
        assert jwks.endpoint.fetches == fetched, "inside the window the cached set is used"
        jwks.pass_cache_window()
        await jwks.call(rotated.sign())
        assert jwks.endpoint.fetches == fetched + 1
    finally:
        jwks.endpoint.keys.remove(rotated)


async def test_jwks_fetch_does_not_block_the_event_loop(jwks: JwksServer) -> None:
    jwks.pass_cache_window()
    jwks.endpoint.gate.clear()
    jwks.endpoint.fetch_started.clear()
    try:
        pending = asyncio.create_task(jwks.call(jwks.rsa.sign()))
        await asyncio.wait_for(jwks.endpoint.fetch_started.wait(), 10)
        # While the key set is being fetched, the same server answers other calls.
        reply = await jwks.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await jwks.call(mint_dev_token(jwks.settings, email=unique_email()))
        assert not pending.done()
    finally:
        jwks.endpoint.gate.set()
    await asyncio.wait_for(pending, 10)


async def test_jwks_outage_keeps_the_cached_keys_without_refetching_every_call(
    jwks: JwksServer,
) -> None:
    await jwks.call(jwks.rsa.sign())
    jwks.endpoint.failing = True
    try:
        jwks.pass_cache_window()
        before = jwks.endpoint.fetches
        for _ in range(5):
            await jwks.call(jwks.ec.sign())
        assert jwks.endpoint.fetches - before == 1, "a failed refresh backs off"
    finally:
        jwks.endpoint.failing = False
    jwks.pass_cache_window()
    await jwks.call(jwks.rsa.sign())


async def test_unreachable_jwks_without_cached_keys_is_unauthenticated() -> None:
    cache = tokens.JwksCache(f"http://127.0.0.1:{free_port()}/jwks.json", ttl_seconds=300)
    for _ in range(2):  # without keys to fall back on, every call tries again
        with pytest.raises(Unauthenticated) as refused:
            await cache.key("rsa-1")
        assert refused.value.reason == "JWKS_UNAVAILABLE"
