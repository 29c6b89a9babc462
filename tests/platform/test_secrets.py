"""Secrets at start-up, as an operator meets them: `serve`, `worker` and `ticker` refuse the
public development secret, short or missing secrets and a JWKS URL without issuer and
audience; only `beacon dev` runs on the development secret, says so, and accepts the
tokens `beacon token` mints with no configuration."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import grpc
import pytest

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import organization_service_pb2_grpc
from service.config import DEV_AUTH_SECRET
from tests.support.processes import BEACON, eventually, free_port, run_beacon

STRONG = "s" * 40
SIGNING = "t" * 40
GENERATE = "secrets.token_urlsafe(48)"

# (environment, variable the refusal must name)
REFUSED: dict[str, tuple[dict[str, str], str]] = {
    "development auth secret": (
        {"BEACON_AUTH_SECRET": DEV_AUTH_SECRET, "BEACON_SIGNING_SECRET": SIGNING},
        "BEACON_AUTH_SECRET",
    ),
    "short auth secret": (
        {"BEACON_AUTH_SECRET": "x" * 31, "BEACON_SIGNING_SECRET": SIGNING},
        "BEACON_AUTH_SECRET",
    ),
    "no auth secret and no JWKS": ({"BEACON_SIGNING_SECRET": SIGNING}, "BEACON_AUTH_SECRET"),
    "no signing secret": ({"BEACON_AUTH_SECRET": STRONG}, "BEACON_SIGNING_SECRET"),
    "short signing secret": (
        {"BEACON_AUTH_SECRET": STRONG, "BEACON_SIGNING_SECRET": "y" * 31},
        "BEACON_SIGNING_SECRET",
    ),
    "signing secret equal to the auth secret": (
        {"BEACON_AUTH_SECRET": STRONG, "BEACON_SIGNING_SECRET": STRONG},
        "BEACON_SIGNING_SECRET",
    ),
    "JWKS without issuer and audience": (
        {
            "BEACON_AUTH_JWKS_URL": "https://idp.example.com/.well-known/jwks.json",
            "BEACON_SIGNING_SECRET": SIGNING,
        },
        "BEACON_AUTH_ISSUER",
    ),
}


@pytest.mark.parametrize("command", ["serve", "worker", "ticker"])
async def test_production_commands_refuse_weak_or_missing_secrets(
    command: str, tmp_path: Path
) -> None:
    database = {"BEACON_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'never.db'}"}
    results = await asyncio.gather(
        *(run_beacon(command, env={**database, **env}) for env, _ in REFUSED.values())
    )
    for (case, (_, variable)), (code, _, err) in zip(REFUSED.items(), results, strict=True):
        assert code == 2, f"{command} started with {case}: {err}"
        assert variable in err, f"{case}: {err}"
        assert "Traceback" not in err, err
        if variable != "BEACON_AUTH_ISSUER":
            assert GENERATE in err, f"{case}: the error says how to make a secret: {err}"
    assert not (tmp_path / "never.db").exists(), "nothing started"


async def test_jwks_without_issuer_is_refused_by_dev_too(tmp_path: Path) -> None:
    code, _, err = await run_beacon(
        "dev",
        env={
            "BEACON_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}",
            "BEACON_AUTH_JWKS_URL": "https://idp.example.com/jwks.json",
            "BEACON_AUTH_AUDIENCE": "beacon-api",
        },
    )
    assert code == 2 and "BEACON_AUTH_ISSUER" in err, err


async def test_dev_runs_on_the_development_secret_says_so_and_accepts_beacon_token(
    tmp_path: Path,
) -> None:
    """`make run` with zero configuration: `beacon dev` starts, its banner warns that the
    auth secret is the public development one, and a `beacon token` minted with no
    environment at all authenticates against it."""
    log = tmp_path / "dev.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    env |= {
        "BEACON_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}",
        "BEACON_DATA_DIR": str(tmp_path / "var"),
        "BEACON_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "BEACON_HTTP_ADDR": "127.0.0.1:0",
        "BEACON_METRICS_ADDR": "127.0.0.1:0",
        "BEACON_LOG_LEVEL": "WARNING",
        "BEACON_UVLOOP": "false",
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(BEACON), "dev", env=env, stdout=out, stderr=out
        )
    try:

        async def started() -> str | None:
            text = log.read_text(errors="replace")
            assert process.returncode is None, text
            return text if re.search(r"gRPC on [\d.]+:\d+", text) else None

        banner = await eventually(started, what="beacon dev to start", within=60)
        assert "PUBLIC development secret" in banner
        assert "BEACON_AUTH_SECRET" in banner
        code, token, err = await run_beacon("token", "--email", "dev@example.com", env={})
        assert code == 0, err
        async with grpc.aio.insecure_channel(env["BEACON_GRPC_ADDR"]) as channel:
            stub = organization_service_pb2_grpc.OrganizationServiceStub(channel)
            reply = await stub.ListMyOrganizations(
                org_pb.ListMyOrganizationsRequest(),
                metadata=(("authorization", f"Bearer {token.strip()}"),),
                timeout=30,
                wait_for_ready=True,  # the banner may be printed as the port opens
            )
        assert list(reply.organizations) == []
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
