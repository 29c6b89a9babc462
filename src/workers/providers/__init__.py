"""Provider adapters: one module per AI provider behind the `ProviderAdapter` protocol.

Each provider's name, enum value and defaults are the registry's to say (`service.providers`);
which adapter asks it is said here (`ADAPTERS`, keyed by the registry's names), so that the API,
which reads the registry, never loads an adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import httpx

from service import providers
from workers.providers.anthropic import AnthropicAdapter
from workers.providers.base import (
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
    providers.spec(config.name)  # ValueError naming the known providers
    return ADAPTERS[config.name](config, client)


__all__ = [
    "ADAPTERS",
    "Answer",
    "Citation",
    "HttpAdapter",
    "ProviderAdapter",
    "ProviderConfig",
    "ProviderError",
    "build_adapter",
]
