"""The `beacon` command as an operator runs it: dev tokens and the service key life cycle."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from service.auth import service_keys
from service.auth.tokens import TokenVerifier
from service.clock import new_id
from service.config import DEV_AUTH_SECRET, Settings
from service.db.database import Database
from service.db.models import Organization, ServiceKey
from tests.support.processes import run_beacon


async def test_token_verifies_with_the_secret_and_only_with_it() -> None:
    secret = "cli-test-secret-0123456789abcdef0123"
    (code, out, err), (dev_code, dev_out, dev_err) = await asyncio.gather(
        run_beacon(
            "token",
            *("--email", "Someone@Example.com", "--name", "Some One", "--ttl", "600"),
            env={"BEACON_AUTH_SECRET": secret},
        ),
        run_beacon("token", "--email", "a@example.com", env={"BEACON_AUTH_SECRET": ""}),
    )
    assert code == 0, err
    token = out.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="beacon", issuer="beacon-dev")
    assert (claims["sub"], claims["name"], claims["exp"] - claims["iat"]) == (
        "dev|someone@example.com",
        "Some One",
        600,
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token, "another-secret-0123456789abcdef012", algorithms=["HS256"], audience="beacon"
        )
    verified = await TokenVerifier(Settings(auth_secret=secret)).verify(token)
    assert (verified.email, verified.name) == ("someone@example.com", "Some One")
    # Without a secret the token is for `beacon dev` (the only command that accepts the
    # development secret).
    assert dev_code == 0, dev_err
    claims = jwt.decode(dev_out.strip(), DEV_AUTH_SECRET, algorithms=["HS256"], audience="beacon")
    assert claims["email"] == "a@example.com"


async def test_dev_tokens_carry_the_email_verified_unless_asked_not_to() -> None:
    """Verified by default (the developer owns the address); `--unverified` mints what an
    identity provider that does not vouch for the email gives, to try invitations with."""
    secret = "cli-test-secret-0123456789abcdef0123"
    env = {"BEACON_AUTH_SECRET": secret}
    (code, out, err), (unverified_code, unverified_out, unverified_err) = await asyncio.gather(
        run_beacon("token", "--email", "v@example.com", env=env),
        run_beacon("token", "--email", "u@example.com", "--unverified", env=env),
    )
    assert code == 0 and unverified_code == 0, err + unverified_err
    verifier = TokenVerifier(Settings(auth_secret=secret))
    assert (await verifier.verify(out.strip())).email_verified is True
    assert (await verifier.verify(unverified_out.strip())).email_verified is False


async def test_service_key_create_list_revoke_round_trip(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    env = {"BEACON_DATABASE_URL": url}
    code, _, err = await run_beacon("migrate", env=env)
    assert code == 0, err

    created = await asyncio.gather(
        run_beacon("service-key", "create", "--name", "billing-sync", "--scope", "act_as",
                   "--scope", "workos", "--all-organizations", env=env),
        run_beacon("service-key", "create", "--name", "reporting", "--all-organizations",
                   env=env),
    )  # fmt: skip
    keys = []
    for code, out, err in created:
        assert code == 0, err
        match = re.search(r"created (key_[a-z0-9]+) scopes=(\S*) organizations=\*", err)
        assert match is not None, err
        keys.append((out.strip(), match.group(1), match.group(2)))
    (revoked_secret, revoked_id, scopes), (kept_secret, kept_id, _) = keys
    assert scopes == "act_as,workos" and revoked_secret.startswith("bk_")

    db = Database(url)
    try:
        found = await service_keys.find_active_key(db, revoked_secret)
        assert found is not None and (found.id, found.scopes) == (revoked_id, ("act_as", "workos"))
        async with db.transaction(write=False) as session:
            stored = await session.scalar(
                select(ServiceKey.secret_hash).where(ServiceKey.id == revoked_id)
            )
        assert stored == service_keys.hash_secret(revoked_secret) != revoked_secret

        code, _, err = await run_beacon("service-key", "revoke", revoked_id, env=env)
        assert code == 0 and f"revoked {revoked_id}" in err
        code, out, err = await run_beacon("service-key", "list", env=env)
        assert code == 0, err
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        assert sorted(out.strip().splitlines()) == sorted(
            [
                f"{revoked_id}\tbilling-sync\tact_as,workos\t*\trevoked {today}",
                f"{kept_id}\treporting\t\t*\tactive",
            ]
        )
        assert await service_keys.find_active_key(db, revoked_secret) is None
        assert await service_keys.find_active_key(db, kept_secret) is not None
    finally:
        await db.dispose()


async def test_service_key_create_is_bound_to_organizations(tmp_path: Path) -> None:
    """Exactly one of `--organization ORG` (repeatable, existing organizations) or
    `--all-organizations`; `list` shows what each key may touch."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'bound.db'}"
    env = {"BEACON_DATABASE_URL": url}
    code, _, err = await run_beacon("migrate", env=env)
    assert code == 0, err
    db = Database(url)
    try:
        org_ids = [new_id("org"), new_id("org")]
        async with db.transaction() as session:
            session.add_all(Organization(id=o, name=o, slug=o.replace("_", "-")) for o in org_ids)
    finally:
        await db.dispose()
    create = ("service-key", "create", "--name", "sync", "--scope", "act_as")
    neither, both, unknown, malformed = await asyncio.gather(
        run_beacon(*create, env=env),
        run_beacon(*create, "--organization", org_ids[0], "--all-organizations", env=env),
        run_beacon(*create, "--organization", new_id("org"), env=env),
        run_beacon(*create, "--organization", "ws_notanorganization", env=env),
    )
    for code, out, err in (neither, both, unknown, malformed):
        assert code == 2 and not out.strip(), err
    assert "--organization" in neither[2] and "--all-organizations" in neither[2]
    assert "organization_ids" in unknown[2] and "organization_ids" in malformed[2]
    code, out, err = await run_beacon(
        *create, "--organization", org_ids[0], "--organization", org_ids[1], env=env
    )
    assert code == 0 and out.startswith("bk_"), err
    bound = ",".join(sorted(org_ids))
    assert f"organizations={bound}" in err
    code, listed, err = await run_beacon("service-key", "list", env=env)
    assert code == 0, err
    [line] = listed.strip().splitlines()
    assert line.split("\t")[2:] == ["act_as", bound, "active"]
