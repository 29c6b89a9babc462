"""Safe defaults: what a new deployment gets when it sets nothing but its secrets.

Other tests run with settings of their own, so a security-relevant default could drift (a
30-minute token leeway, a day-long key cache) with every test green. Here the defaults are
read from a `Settings()` built with no `BEACON_*` variable in the environment and checked
against the bound docs/configuration.md documents for each (its table is generated from the
settings, so it states the default: the bound here keeps that default from drifting).
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from beacon.v1 import organization_service_pb2 as org_pb
from service import access_cache
from service.access_cache import AccessCache
from service.auth import identity
from service.auth.tokens import mint_dev_token
from service.config import ProviderSettings, Settings
from tests.support.assertions import expect_refusal

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONFIGURATION = DOCS / "configuration.md"
DESIGN = DOCS / "design.md"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Bound:
    """The most a default may be (`at_least`: the least), as configuration.md documents it."""

    field: str
    limit: float
    at_least: bool = False

    @property
    def variable(self) -> str:
        return f"BEACON_{self.field.upper()}"


BOUNDS = [
    Bound("auth_leeway_seconds", 30),  # an expired token is refused this soon
    Bound("auth_jwks_cache_seconds", 300),
    Bound("service_key_cache_seconds", 5),  # revoked keys and deleted users
    Bound("invitation_ttl_hours", 168),
    Bound("join_code_ttl_hours", 168),
    Bound("upload_url_ttl_seconds", 600),
    Bound("icon_url_ttl_seconds", 3600),
    Bound("icon_max_bytes", MIB),
    Bound("max_message_bytes", 4 * MIB),
    Bound("max_concurrent_rpcs", 1000),
    Bound("peer_rate_limit_per_minute", 6000),
    Bound("peer_rate_limit_per_minute", 1, at_least=True),  # 0 would disable it
    Bound("rate_limit_scale", 1),  # load tests only
]


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings of a deployment that sets no BEACON_* variable."""
    for name in os.environ:
        if name.startswith("BEACON_"):
            monkeypatch.delenv(name)
    return Settings()


def documented(variable: str) -> float:
    """The default configuration.md's table gives for `variable` (a number, or N MiB)."""
    row = re.search(rf"^\| `{variable}` \| ([^|]+) \|", CONFIGURATION.read_text(), re.MULTILINE)
    assert row, f"configuration.md's table does not document {variable}"
    value = row.group(1).strip()
    number, _, unit = value.partition(" ")
    assert unit in ("", "MiB"), f"{variable}: cannot read {value!r}"
    return float(number) * (MIB if unit == "MiB" else 1)


@pytest.mark.parametrize(
    "bound", BOUNDS, ids=lambda b: f"{b.field}-{'min' if b.at_least else 'max'}"
)
def test_each_security_relevant_default_is_within_its_documented_bound(
    bound: Bound, defaults: Settings
) -> None:
    value = float(getattr(defaults, bound.field))
    if bound.at_least:
        assert value >= bound.limit, f"{bound.variable} defaults to {value}"
        return
    assert documented(bound.variable) == bound.limit, f"docs and this test disagree: {bound}"
    assert value <= bound.limit, f"{bound.variable} defaults to {value}, above {bound.limit}"


def test_a_new_deployment_has_no_usable_secret_and_listens_on_loopback_only(
    defaults: Settings,
) -> None:
    assert defaults.auth_secret == defaults.signing_secret == ""
    assert defaults.auth_jwks_url == ""
    for address in (defaults.grpc_addr, defaults.http_addr, defaults.metrics_addr):
        host = address.rsplit(":", 1)[0]
        assert ipaddress.ip_address(host).is_loopback, address


def test_caches_of_access_and_identity_stay_within_their_documented_bounds() -> None:
    # design.md, "Read path and access cache": access decisions are cached for at most 1 s.
    assert "for at most 1 s" in DESIGN.read_text()
    assert access_cache.TTL_SECONDS <= 1.0
    assert 0 < AccessCache(shared=False).ttl <= 1.0
    # A deleted user's token maps to them no longer than BEACON_SERVICE_KEY_CACHE_SECONDS.
    assert documented("BEACON_SERVICE_KEY_CACHE_SECONDS") >= identity.USER_CACHE_SECONDS


async def test_a_server_on_the_default_leeway_refuses_a_token_expired_five_minutes_ago(
    stubs: SimpleNamespace, settings: Settings
) -> None:
    """The shared test server keeps the default leeway; a token that expired 5 minutes ago
    is UNAUTHENTICATED there (a leeway of half an hour would let it in)."""
    assert "auth_leeway_seconds" not in settings.model_fields_set
    assert settings.auth_leeway_seconds == Settings.model_fields["auth_leeway_seconds"].default
    email = f"expired-{uuid.uuid4().hex[:12]}@example.com"
    expired = mint_dev_token(settings, email=email, ttl_seconds=60, now=time.time() - 60 - 300)
    await expect_refusal(
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_EXPIRED",
        stubs.organizations.ListMyOrganizations(
            org_pb.ListMyOrganizationsRequest(),
            metadata=(("authorization", f"Bearer {expired}"),),
        ),
    )


def test_provider_variables_keep_their_documented_names_and_empty_is_the_default(
    defaults: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEACON_<PROVIDER>_<FIELD> are an operator contract: they fill `Settings.providers`;
    a variable left empty (a template) is the default, never an empty URL or no budget."""
    assert defaults.configured_providers() == frozenset()
    assert {p.rpm for p in defaults.providers.values()} == {60}
    monkeypatch.setenv("BEACON_OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("BEACON_OPENAI_API", "chat")
    monkeypatch.setenv("BEACON_OPENAI_TPM", "90000")
    monkeypatch.setenv("beacon_cohere_model", "command-r")  # any case, like the others
    monkeypatch.setenv("BEACON_MISTRAL_BASE_URL", "https://eu.example/v1")
    for empty in ("BEACON_ANTHROPIC_RPM", "BEACON_GOOGLE_BASE_URL", "BEACON_PERPLEXITY_MODEL"):
        monkeypatch.setenv(empty, " ")
    settings = Settings()
    openai = settings.provider("openai")
    assert (openai.api_key, openai.api, openai.tpm, openai.rpm) == ("sk-test", "chat", 90000, 60)
    assert settings.configured_providers() == {"openai"}
    assert settings.provider("cohere").model == "command-r"
    assert settings.provider("mistral").base_url == "https://eu.example/v1"
    assert settings.provider("anthropic").rpm == defaults.provider("anthropic").rpm == 60
    assert settings.provider("google").base_url == defaults.provider("google").base_url
    assert settings.provider("perplexity").model == defaults.provider("perplexity").model
    # Arguments may use the variables' names too, and win over the environment.
    arguments: dict[str, Any] = {"openai_api_key": "other"}
    assert Settings(**arguments).provider("openai").api_key == "other"


def test_every_setting_says_what_it_does() -> None:
    # Descriptions become docs/configuration.md, the providers' nested model's too.
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    missing += [
        f"providers.{name}"
        for name, field in ProviderSettings.model_fields.items()
        if not field.description
    ]
    assert not missing, f"give these a Field(description=...): {missing}"
