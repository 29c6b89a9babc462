"""Provider adapters: one module per AI provider behind the `ProviderAdapter` protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import httpx

from workers.providers.anthropic import AnthropicAdapter
from workers.providers.base import (
    DEFAULT_BASE_URLS,
    DEFAULT_MODELS,
    PROVIDER_NAMES,
    Answer,
    Citation,
    HttpAdapter,
    ProviderAdapter,
    ProviderConfig,
    ProviderError,
)
from workers.providers.cohere import CohereAdapter
from workers.providers.google import GoogleAdapter
from workers.providers.mistral import MistralAdapter
from workers.providers.openai import OpenAIAdapter
from workers.providers.perplexity import PerplexityAdapter

ADAPTERS: Final[Mapping[str, type[HttpAdapter]]] = {
    adapter.name: adapter
    for adapter in (
        OpenAIAdapter,
        AnthropicAdapter,
        GoogleAdapter,
        PerplexityAdapter,
        MistralAdapter,
        CohereAdapter,
    )
}


def build_adapter(config: ProviderConfig, client: httpx.AsyncClient) -> ProviderAdapter:
    """The adapter for ``config.name``, sending its requests through ``client``.

    Raises ValueError for an unknown provider name or API variant.
    """
    adapter = ADAPTERS.get(config.name)
    if adapter is None:
        raise ValueError(f"unknown provider {config.name!r}; expected one of {PROVIDER_NAMES}")
    return adapter(config, client)


__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_MODELS",
    "PROVIDER_NAMES",
    "Answer",
    "Citation",
    "ProviderAdapter",
    "ProviderConfig",
    "ProviderError",
    "build_adapter",
]
