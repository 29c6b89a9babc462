"""The price table: what each provider charges per million input and output tokens and per
web search, per model, and what an answer's usage costs at those prices.

Money is counted in integer micro-units of USD (1 USD = 1,000,000) everywhere it is stored or
compared; prices are parsed from decimal strings (`Decimal`), never binary floats. The shipped
defaults (default_prices.json beside this module: `DEFAULT_PRICES`, dated `PRICES_DATE`, with
their `PRICE_SOURCES`; docs/money.md) are overridden by the operator with a JSON file
(`BEACON_PRICES_FILE`) and/or a JSON value in the environment (`BEACON_PRICES`, applied last),
shaped::

    {"<provider>": {"<model>": {"input_per_mtok": "1.25", "output_per_mtok": "10",
                                "per_search": "0.01"}}}

A model is priced by its exact name, else by the longest price-table name it starts with
(dated snapshots: "<model>-2025-08-07" takes "<model>"), else by its provider's "*" entry.
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
DEFAULTS_FILE: Final = Path(__file__).with_name("default_prices.json")


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


def _shipped() -> tuple[str, Mapping[str, str], dict[str, dict[str, Price]]]:
    """The shipped defaults: their date, their sources, and the prices per provider and model
    (longest prefix wins; "*" for any other model)."""
    data = json.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))
    prices: dict[str, dict[str, Price]] = {}
    _merge(prices, data["prices"], DEFAULTS_FILE.name)
    return str(data["date"]), dict(data["sources"]), prices


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


PRICES_DATE, PRICE_SOURCES, DEFAULT_PRICES = _shipped()


@functools.cache
def price_table(file: str = "", override: str = "") -> PriceTable:
    """`PriceTable.load`, once per process for the settings' `prices_file` and `prices`."""
    return PriceTable.load(file, override)
