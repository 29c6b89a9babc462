"""Provider adapters: one module per AI provider behind the `ProviderAdapter` protocol.

Which adapter serves which provider, and each provider's defaults, is the registry's to say
(`service.providers`, with `build_adapter`).
"""

from __future__ import annotations

from workers.providers.base import (
    Answer,
    Citation,
    HttpAdapter,
    ProviderAdapter,
    ProviderConfig,
    ProviderError,
)

__all__ = [
    "Answer",
    "Citation",
    "HttpAdapter",
    "ProviderAdapter",
    "ProviderConfig",
    "ProviderError",
]
