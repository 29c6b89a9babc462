"""The price table and market validation, without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.config import PROVIDERS
from service.domain.collection.prompts import normalize_prompts
from service.domain.errors import InvalidArgument
from service.domain.money.estimates import runs_per_month
from service.domain.money.markets import COUNTRIES, Market, validate_market
from service.domain.money.prices import (
    DEFAULT_PRICES,
    PRICE_SOURCES,
    PRICES_DATE,
    Price,
    PriceTable,
)
from workers.providers.base import Usage, dollars_to_micros


def test_every_officially_assigned_country_code_is_known() -> None:
    assert len(COUNTRIES) == 249
    assert {"US", "DE", "GB", "FR", "JP", "BR", "SS", "XK"} & COUNTRIES == {
        "US",
        "DE",
        "GB",
        "FR",
        "JP",
        "BR",
        "SS",
    }


@pytest.mark.parametrize(
    ("market", "field"),
    [
        (Market("ZZ"), "m.country"),
        (Market("USA"), "m.country"),
        (Market("", city="Munich"), "m.country"),
        (Market("DE", language="german language"), "m.language"),
        (Market("DE", language="d"), "m.language"),
        (Market("DE", city="x" * 101), "m.city"),
        (Market("DE", region="Bay\x1b[31mern"), "m.region"),
    ],
)
def test_a_bad_market_names_its_field(market: Market, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_market(market, "m")
    assert raised.value.violations[0].field == field


def test_a_market_is_normalized() -> None:
    checked = validate_market(Market(" de ", " Bavaria ", "Munich", "de-DE"), "m")
    assert checked == Market("DE", "Bavaria", "Munich", "de-DE")
    assert validate_market(Market("us", language="zh-Hant-TW"), "m").language == "zh-Hant-TW"
    assert not validate_market(Market(), "m")


def test_costs_are_integer_micro_units_rounded_up() -> None:
    table = PriceTable({"openai": {"gpt-5": Price.of_dollars("1.25", "10", "0.01")}})
    # 10 x 1.25 + 50 x 10 = 512.5 micro-dollars of tokens, rounded up, plus one search.
    cost = table.cost("openai", "gpt-5-2025-08-07", input_tokens=10, output_tokens=50, searches=1)
    assert cost == 513 + 10_000
    assert isinstance(cost, int)
    # The provider's own figure wins.
    assert (
        table.cost(
            "openai", "gpt-5", input_tokens=10, output_tokens=50, searches=1, reported_micros=7
        )
        == 7
    )


def test_the_longest_model_prefix_prices_a_snapshot() -> None:
    table = PriceTable.load()
    assert table.price("openai", "gpt-5-mini-2025-08-07") == table.price("openai", "gpt-5-mini")
    assert table.price("openai", "gpt-5-2025-08-07") == table.price("openai", "gpt-5")
    assert table.price("openai", "o9-unknown") == table.price("openai", "*")
    assert table.price("nobody", "x") == Price(0, 0, 0)


def test_the_operator_overrides_prices_from_a_file_then_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "openai": {"gpt-5": {"input_per_mtok": "2", "output_per_mtok": "20"}},
                "cohere": {"*": {"input_per_mtok": 1, "output_per_mtok": "1", "per_search": 0}},
            }
        )
    )
    override = json.dumps({"openai": {"gpt-5": {"input_per_mtok": "3", "per_search": "0.02"}}})
    table = PriceTable.load(str(path), override)
    assert table.price("openai", "gpt-5") == Price(3_000_000, 0, 20_000)
    assert table.price("cohere", "command-a-03-2025") == PriceTable.load().price(
        "cohere", "command-a-03-2025"
    )
    assert table.price("cohere", "command-r") == Price(1_000_000, 1_000_000, 0)
    with pytest.raises(ValueError, match=r"openai.gpt-5"):
        PriceTable.load("", json.dumps({"openai": {"gpt-5": {"input_per_mtok": "-1"}}}))
    with pytest.raises(ValueError, match=r"openai.gpt-5"):
        PriceTable.load("", json.dumps({"openai": {"gpt-5": {"input_per_mtok": "NaN"}}}))


def test_dollar_figures_become_micro_units_without_binary_floats() -> None:
    assert dollars_to_micros(0.00678) == 6780
    assert dollars_to_micros(0.1 + 0.2) == 300_000
    assert dollars_to_micros(1) == 1_000_000
    assert dollars_to_micros(-1) is None
    assert dollars_to_micros("0.1") is None
    assert (Usage(1, 2, 1, None) + Usage(3, 4, 0, 5)).cost_micros == 5


def test_the_shipped_prices_are_dated_sourced_and_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "money.md").read_text()
    assert PRICES_DATE in docs
    assert set(PRICE_SOURCES) == set(PROVIDERS) == set(DEFAULT_PRICES)
    for provider, models in DEFAULT_PRICES.items():
        assert PRICE_SOURCES[provider].split()[0] in docs
        assert "*" in models, provider
        for model in models:
            assert model == "*" or model in docs, (provider, model)


def test_the_same_text_in_two_markets_counts_twice_towards_the_limit() -> None:
    # The last two are entries with markets: "same" without one repeats the plain "same".
    texts = [f"p{i}" for i in range(498)] + ["same", "same", "same"]
    markets = [Market(), Market("DE")]
    kept = normalize_prompts(texts, markets=markets)
    assert len(kept.texts) == 500
    assert kept.texts[-2:] == ["same", "same"]
    assert kept.markets[-2:] == [Market(), Market("DE")]
    assert kept.duplicates_dropped == 1
    with pytest.raises(InvalidArgument) as raised:
        normalize_prompts([*texts, "another"], markets=[*markets, Market("FR")])
    assert raised.value.violations[0].field == "prompts"


@pytest.mark.parametrize(
    ("cron", "runs"),
    [
        ("*/15 * * * *", 2880),
        ("0 9 * * *", 30),
        ("0 9 * * 1", 4),  # Mondays from Tuesday 8 December 2026: 14, 21, 28, 4 January
        ("0 0 1,15 * *", 2),
        ("0 9 1 * 1-5", 22),  # weekdays, or the first (cron's either-day rule)
        ("30 8 * 2 *", 0),
        ("0 9 L * *", 1),
    ],
)
def test_runs_per_month_are_counted_from_the_cron_fields(cron: str, runs: int) -> None:
    assert runs_per_month(cron, "Europe/Paris", datetime(2026, 12, 8, 1, tzinfo=UTC)) == runs
    assert runs_per_month("", "UTC", datetime(2026, 12, 8, tzinfo=UTC)) == 0
