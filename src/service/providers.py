"""The provider registry: the one place that says, for each AI provider, its name, its value
of the `beacon.v1.Provider` enum and its default base URL and model.

`Settings`' defaults (`BEACON_<PROVIDER>_BASE_URL` / `_MODEL`), `service.config.PROVIDERS`,
the servicers' enum conversion and the workers' adapters (`workers.providers.ADAPTERS`, keyed
by these names) all read it. The order is the providers' display order (progress, reports).
Names, defaults and enum values only: the API never loads an adapter (or httpx).

The default models are the ones `Settings` has always run with (gpt-5, sonar-pro, ...): the
adapters' own table used to say gpt-5-mini and sonar, but only tests built configs from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from beacon.v1 import workspace_service_pb2 as ws_pb


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider: what the API calls it and where it lives by default."""

    name: str
    proto: ws_pb.Provider.ValueType
    base_url: str
    model: str


OPENAI: Final = ProviderSpec("openai", ws_pb.PROVIDER_OPENAI, "https://api.openai.com/v1", "gpt-5")
ANTHROPIC: Final = ProviderSpec(
    "anthropic",
    ws_pb.PROVIDER_ANTHROPIC,
    "https://api.anthropic.com/v1",
    "claude-haiku-4-5",
)
GOOGLE: Final = ProviderSpec(
    "google",
    ws_pb.PROVIDER_GOOGLE,
    "https://generativelanguage.googleapis.com/v1beta",
    "gemini-2.5-flash",
)
PERPLEXITY: Final = ProviderSpec(
    "perplexity",
    ws_pb.PROVIDER_PERPLEXITY,
    "https://api.perplexity.ai",
    "sonar-pro",
)
MISTRAL: Final = ProviderSpec(
    "mistral",
    ws_pb.PROVIDER_MISTRAL,
    "https://api.mistral.ai/v1",
    "mistral-medium-latest",
)
COHERE: Final = ProviderSpec(
    "cohere", ws_pb.PROVIDER_COHERE, "https://api.cohere.com/v2", "command-a-03-2025"
)

REGISTRY: Final[tuple[ProviderSpec, ...]] = (OPENAI, ANTHROPIC, GOOGLE, PERPLEXITY, MISTRAL, COHERE)
BY_NAME: Final[Mapping[str, ProviderSpec]] = {spec.name: spec for spec in REGISTRY}
NAMES: Final[tuple[str, ...]] = tuple(BY_NAME)
TO_PROTO: Final[Mapping[str, ws_pb.Provider.ValueType]] = {s.name: s.proto for s in REGISTRY}
FROM_PROTO: Final[Mapping[ws_pb.Provider.ValueType, str]] = {s.proto: s.name for s in REGISTRY}


def spec(name: str) -> ProviderSpec:
    """The provider called `name`; ValueError for an unknown one."""
    found = BY_NAME.get(name)
    if found is None:
        raise ValueError(f"unknown provider {name!r}; expected one of {NAMES}")
    return found
