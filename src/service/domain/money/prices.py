"""The price table: what each provider charges per million input and output tokens and per
web search, per model, and what an answer's usage costs at those prices.

Money is counted in integer micro-units of USD (1 USD = 1,000,000) everywhere it is stored or
compared; prices are parsed from decimal strings (`Decimal`), never binary floats. The shipped
defaults (`DEFAULT_PRICES`, dated `PRICES_DATE`, sources in `PRICE_SOURCES` and docs/money.md)
are overridden by the operator with a JSON file (`BEACON_PRICES_FILE`) and/or a JSON value in
the environment (`BEACON_PRICES`, applied last), shaped::

    {"openai": {"gpt-5": {"input_per_mtok": "1.25", "output_per_mtok": "10",
                          "per_search": "0.01"}}}

A model is priced by its exact name, else by the longest price-table name it starts with
(dated snapshots: "gpt-5-2025-08-07" takes "gpt-5"), else by its provider's "*" entry.
When the provider reports its own cost (Perplexity), that figure is the answer's cost.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Final

MICROS_PER_DOLLAR: Final = 1_000_000
TOKENS_PER_MTOK: Final = 1_000_000
PRICES_DATE: Final = "2025-11-15"
PRICE_SOURCES: Final[Mapping[str, str]] = {
    "openai": "https://openai.com/api/pricing/ (models; web search tool calls)",
    "anthropic": "https://docs.anthropic.com/en/docs/about-claude/pricing (models; web search)",
    "google": "https://ai.google.dev/gemini-api/docs/pricing (models; grounding with Google Search)",
    "perplexity": "https://docs.perplexity.ai/getting-started/pricing (tokens; request fees)",
    "mistral": "https://mistral.ai/pricing#api-pricing (models; web search connector)",
    "cohere": "https://cohere.com/pricing (Command A)",
}


@dataclass(frozen=True, slots=True)
class Price:
    """USD micro-units per million input tokens, per million output tokens, per search."""

    input_per_mtok: int
    output_per_mtok: int
    per_search: int

    @classmethod
    def of_dollars(cls, input_per_mtok: str, output_per_mtok: str, per_search: str) -> Price:
        return cls(_micros(input_per_mtok), _micros(output_per_mtok), _micros(per_search))


def _micros(dollars: object) -> int:
    """Dollars given as a decimal string or JSON number, in micro-units; ValueError otherwise."""
    if isinstance(dollars, bool) or not isinstance(dollars, (str, int, float)):
        raise ValueError(f"a price must be a decimal string or number, not {dollars!r}")
    try:
        value = Decimal(str(dollars))
    except InvalidOperation as exc:
        raise ValueError(f"a price must be a decimal number, not {dollars!r}") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"a price must be a non-negative number, not {dollars!r}")
    return int((value * MICROS_PER_DOLLAR).to_integral_value(rounding=ROUND_CEILING))


# Per provider, per model (longest prefix wins; "*" for any other model). Dollars per million
# tokens in and out, and per web search (the providers quote per 1,000 searches or requests).
DEFAULT_PRICES: Final[Mapping[str, Mapping[str, Price]]] = {
    "openai": {
        "gpt-5": Price.of_dollars("1.25", "10", "0.01"),
        "gpt-5-mini": Price.of_dollars("0.25", "2", "0.01"),
        "gpt-5-nano": Price.of_dollars("0.05", "0.4", "0.01"),
        "gpt-5-search-api": Price.of_dollars("1.25", "10", "0.01"),
        "gpt-4o-search-preview": Price.of_dollars("2.5", "10", "0.025"),
        "gpt-4o-mini-search-preview": Price.of_dollars("0.15", "0.6", "0.025"),
        "*": Price.of_dollars("1.25", "10", "0.01"),
    },
    "anthropic": {
        "claude-haiku-4-5": Price.of_dollars("1", "5", "0.01"),
        "claude-sonnet-4-5": Price.of_dollars("3", "15", "0.01"),
        "claude-opus-4-5": Price.of_dollars("5", "25", "0.01"),
        "*": Price.of_dollars("3", "15", "0.01"),
    },
    "google": {
        "gemini-2.5-flash": Price.of_dollars("0.3", "2.5", "0.035"),
        "gemini-2.5-flash-lite": Price.of_dollars("0.1", "0.4", "0.035"),
        "gemini-2.5-pro": Price.of_dollars("1.25", "10", "0.035"),
        "*": Price.of_dollars("0.3", "2.5", "0.035"),
    },
    "perplexity": {
        # The request fee at medium search context; answers carry Perplexity's own cost.
        "sonar": Price.of_dollars("1", "1", "0.008"),
        "sonar-pro": Price.of_dollars("3", "15", "0.01"),
        "*": Price.of_dollars("3", "15", "0.01"),
    },
    "mistral": {
        "mistral-medium-latest": Price.of_dollars("0.4", "2", "0.03"),
        "mistral-large-latest": Price.of_dollars("2", "6", "0.03"),
        "*": Price.of_dollars("0.4", "2", "0.03"),
    },
    "cohere": {
        "command-a-03-2025": Price.of_dollars("2.5", "10", "0"),
        "*": Price.of_dollars("2.5", "10", "0"),
    },
}

# The usage assumed for an answer when a workspace has none of a provider yet: web search
# results count as input tokens, and they dominate it.
DEFAULT_INPUT_TOKENS: Final = 5_000
DEFAULT_OUTPUT_TOKENS: Final = 600
DEFAULT_SEARCHES: Final = 1


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices per provider and model; see the module docstring."""

    prices: Mapping[str, Mapping[str, Price]]

    def price(self, provider: str, model: str) -> Price:
        """The price of `model` of `provider` (exact, longest prefix, "*", else free)."""
        models = self.prices.get(provider, {})
        if model in models:
            return models[model]
        prefixes = [name for name in models if name != "*" and model.startswith(name)]
        if prefixes:
            return models[max(prefixes, key=len)]
        return models.get("*", Price(0, 0, 0))

    def cost(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        searches: int,
        reported_micros: int | None = None,
    ) -> int:
        """An answer's cost in micro-units: the provider's own figure when it reported one,
        otherwise the usage at the table's prices (token costs rounded up to a micro-unit)."""
        if reported_micros is not None:
            return reported_micros
        price = self.price(provider, model)
        tokens = input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok
        return -(-tokens // TOKENS_PER_MTOK) + searches * price.per_search

    def default_answer_cost(self, provider: str, model: str) -> int:
        """The cost of an answer of the assumed default usage (no history)."""
        return self.cost(
            provider,
            model,
            input_tokens=DEFAULT_INPUT_TOKENS,
            output_tokens=DEFAULT_OUTPUT_TOKENS,
            searches=DEFAULT_SEARCHES,
        )

    @classmethod
    def load(cls, file: str = "", override: str = "") -> PriceTable:
        """The defaults overridden by the JSON file at `file`, then by the JSON `override`
        (either may be empty). ValueError naming the bad entry when one is not valid."""
        prices = {provider: dict(models) for provider, models in DEFAULT_PRICES.items()}
        for source, text in (
            (file, Path(file).read_text(encoding="utf-8") if file else ""),
            ("BEACON_PRICES", override),
        ):
            if text.strip():
                _merge(prices, json.loads(text), source)
        return cls(prices)


def _merge(prices: dict[str, dict[str, Price]], given: object, source: str) -> None:
    if not isinstance(given, dict):
        raise ValueError(f"{source}: the price table must be a JSON object of providers")
    for provider, models in given.items():
        if not isinstance(models, dict):
            raise ValueError(f"{source}: {provider} must map model names to prices")
        for model, price in models.items():
            where = f"{source}: {provider}.{model}"
            if not isinstance(price, dict):
                raise ValueError(f"{where} must be an object of prices")
            try:
                prices.setdefault(provider, {})[model] = Price(
                    _micros(price.get("input_per_mtok", "0")),
                    _micros(price.get("output_per_mtok", "0")),
                    _micros(price.get("per_search", "0")),
                )
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc


@functools.cache
def price_table(file: str = "", override: str = "") -> PriceTable:
    """`PriceTable.load`, once per process for the settings' `prices_file` and `prices`."""
    return PriceTable.load(file, override)
