"""Answer analysis: mentions, ranks and brand citations on tricky texts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.builders import BRAND, COMPETITORS
from workers.analysis import (
    MAX_ANSWER_CHARS,
    Analysis,
    AnalysisFailed,
    CompetitorMention,
    analyse,
    normalize_domain,
)
from workers.providers import Citation


def mentions(text: str) -> list[tuple[str, int]]:
    """Who the text mentions, as (name, rank), brand included, in rank order."""
    result = analyse(text, (), BRAND, COMPETITORS)
    named = [(mention.name, mention.rank) for mention in result.competitors]
    if result.brand_rank is not None:
        named.append((BRAND.name, result.brand_rank))
    assert result.brand_mentioned == (result.brand_rank is not None)
    return sorted(named, key=lambda item: item[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Names stand only as whole words, in any case, Unicode-aware.
        ("Acmeville sells CRMs.", []),
        ("Try café-acmes today.", []),
        ("acme_corp and Acme2 are other things.", []),
        ("ACME is the best.", [("Acme", 1)]),
        ("We like acme's pricing.", [("Acme", 1)]),
        ("#Acme and @acme trend.", [("Acme", 1)]),
        ("Acme Corp leads.", [("Acme", 1)]),
        ("アクメは日本で人気です。", [("Acme", 1)]),  # no spaces in Japanese
        ("Acmeは最高です。", [("Acme", 1)]),
        ("Le CAFÉ SOLO bat Acme.", [("Café Solo", 1), ("Acme", 2)]),
        ("Cafe\u0301 Solo, decomposed.", [("Café Solo", 1)]),
        # Names with punctuation.
        ("Written in C++.", [("C++", 1)]),
        ("C++17 only.", []),
        ("monday.com's boards beat HubSpot.", [("Monday.com", 1), ("HubSpot", 2)]),
        # Domains match as whole hosts only.
        ("Visit www.acme.com.", [("Acme", 1)]),
        ("Docs live on blog.Acme.com now.", [("Acme", 1)]),
        ("Email sales@acme.com.", [("Acme", 1)]),
        ("See <https://acme.com>.", [("Acme", 1)]),
        ("notacme.com and acme.com.evil.io are scams.", []),
        ("acme@gmail.com wrote in.", []),
        ("Acme.io is a different company.", []),
        # Names inside other sites' URLs do not count; markdown link text does.
        ("See https://competitor.io/acme-review for details.", []),
        ("Compare at https://www.g2.com/compare/acme-vs-hubspot.", []),
        ("(https://hubspot.com/acme)", [("HubSpot", 1)]),
        (
            "[Acme](https://acme.com) beats [HubSpot](https://hubspot.com).",
            [("Acme", 1), ("HubSpot", 2)],
        ),
        ("[the leader](https://acme.com/pricing) and HubSpot", [("Acme", 1), ("HubSpot", 2)]),
        ("[HubSpot](https://www.acme.com/vs/hubspot)", [("HubSpot", 1), ("Acme", 2)]),
        # Rank is the order of first mention; a longer name owns its words.
        ("HubSpot, then Monday.com, then Acme.", [("HubSpot", 1), ("Monday.com", 2), ("Acme", 3)]),
        ("Acme first, HubSpot second, Acme again.", [("Acme", 1), ("HubSpot", 2)]),
        ("Acme Cloud is new.", [("Acme Cloud", 1)]),
        ("Acme Cloud rivals Acme.", [("Acme Cloud", 1), ("Acme", 2)]),
        # Addresses, hosts and URLs glued together, and brackets after URLs.
        ("Mail a@x.io,sales@acme.com,hubspot.com", [("Acme", 1), ("HubSpot", 2)]),
        ("Write to a@b.com.x@acme.com.", [("Acme", 1)]),
        ("See https://hubspot.com/(acme))) today.", [("HubSpot", 1)]),
        ("(https://hubspot.com/x)),acme.com", [("HubSpot", 1)]),  # all one URL
        ("", []),
    ],
)
def test_mentions_and_ranks(text: str, expected: list[tuple[str, int]]) -> None:
    assert mentions(text) == expected


def test_analysis_of_an_answer_with_citations() -> None:
    citations = [
        Citation.from_url("https://www.acme.com/crm?utm_source=openai", "Acme CRM"),
        Citation.from_url("https://blog.acme.com/post", "Acme blog"),
        Citation.from_url("https://notacme.com/", "Not Acme"),
        Citation.from_url("https://acme.com.evil.io/", "Phish"),
        # A Gemini grounding redirect: the domain comes from the chunk title.
        Citation.from_url("https://vertexaisearch.cloud.google.com/r/1", "acme.com", "acme.com"),
        Citation.from_url("https://hubspot.com/", "HubSpot"),
    ]

    result = analyse("HubSpot is fine, but Acme wins.", citations, BRAND, COMPETITORS)

    assert result == Analysis(
        brand_mentioned=True,
        brand_rank=2,
        competitors=(CompetitorMention("HubSpot", 1),),
        brand_citations=3,
        citation_count=6,
    )


def test_brand_cited_but_not_named() -> None:
    citations = [Citation.from_url("https://acme.com/pricing", "Pricing")]

    result = analyse("HubSpot is the pick.", citations, BRAND, COMPETITORS)

    assert (result.brand_mentioned, result.brand_citations) == (False, 1)


@pytest.mark.parametrize(
    ("given", "domain"),
    [
        ("https://WWW.Acme.com/x?y=1", "acme.com"),
        ("www.acme.com", "acme.com"),
        ("acme.com:8080", "acme.com"),
        ("ACME.COM.", "acme.com"),
        ("sales@acme.com", "acme.com"),
        ("blog.Acme.com", "blog.acme.com"),
        ("xn--bcher-kva.de", "bücher.de"),
        ("https://BÜCHER.de/", "bücher.de"),
        ("not a url", ""),
        ("", ""),
    ],
)
def test_normalize_domain(given: str, domain: str) -> None:
    assert normalize_domain(given) == domain


@given(st.text(max_size=300))
def test_ranks_are_consecutive_for_any_text(text: str) -> None:
    result = analyse(text, (), BRAND, COMPETITORS)

    ranks = [mention.rank for mention in result.competitors]
    if result.brand_rank is not None:
        ranks.append(result.brand_rank)
    assert sorted(ranks) == list(range(1, len(ranks) + 1))
    assert [mention.rank for mention in result.competitors] == sorted(
        mention.rank for mention in result.competitors
    )


@given(
    # Latin, Greek and Cyrillic letters and digits: scripts that separate words with spaces.
    st.text(alphabet=st.characters(categories=["L", "Nd"], max_codepoint=0x4FF), max_size=5),
    st.sampled_from(["s", "ville", "2", "é"]),
)
def test_name_glued_to_a_word_is_not_a_mention(prefix: str, suffix: str) -> None:
    assert not analyse(f"{prefix}acme{suffix}", (), BRAND, ()).brand_mentioned
    if prefix:
        assert not analyse(f"{prefix}acme", (), BRAND, ()).brand_mentioned


def test_an_answer_longer_than_any_provider_writes_is_not_analysed() -> None:
    longest = ("Acme " * (MAX_ANSWER_CHARS // 5 + 1))[:MAX_ANSWER_CHARS]

    assert analyse(longest, (), BRAND, COMPETITORS).brand_mentioned
    with pytest.raises(AnalysisFailed) as failure:
        analyse(longest + "!", (), BRAND, COMPETITORS)
    assert (
        failure.value.reason
        == "answer too long to analyse (1,000,001 characters; at most 1,000,000)"
    )


def test_an_analysis_stops_once_its_time_limit_is_spent() -> None:
    # Far more than a millisecond of work, past the first look at the clock.
    answer = "Acme and hubspot.com, " * (MAX_ANSWER_CHARS // 22)

    with pytest.raises(AnalysisFailed) as failure:
        analyse(answer, (), BRAND, COMPETITORS, time_limit=0.001)
    assert failure.value.reason == "answer analysis exceeded its time limit (0.001 s)"
    assert analyse(answer, (), BRAND, COMPETITORS, time_limit=60).brand_rank == 1
