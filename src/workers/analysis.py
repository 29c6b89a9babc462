"""Answer analysis: is the brand mentioned, where does it rank, who does the answer cite.

Pure functions over the answer text and citations. A name counts when it stands as a word
(case-insensitive, Unicode-aware); a domain counts only as a whole host (the domain itself or a
subdomain), in a URL, an e-mail address or bare text. Text inside URLs never counts as a name, so
``https://competitor.io/acme-review`` mentions competitor.io, not Acme.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from workers.providers.base import Citation
from workers.providers.urls import host_within, normalize_domain

__all__ = [
    "Analysis",
    "BrandSpec",
    "CompetitorMention",
    "CompetitorSpec",
    "analyse",
    "normalize_domain",
]


@dataclass(frozen=True, slots=True)
class BrandSpec:
    """The tracked brand: its name, its website's domain and other names it goes by."""

    name: str
    domain: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CompetitorSpec:
    """A competitor whose mentions are ranked against the brand."""

    name: str
    domain: str


@dataclass(frozen=True, slots=True)
class CompetitorMention:
    """A competitor the answer mentions and its rank among all mentioned names."""

    name: str
    rank: int


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one answer says about the brand.

    Ranks are 1-based positions among the brand and competitors, ordered by first mention.
    ``brand_citations`` counts citations on the brand's domain or its subdomains.
    """

    brand_mentioned: bool
    brand_rank: int | None
    competitors: tuple[CompetitorMention, ...]
    brand_citations: int
    citation_count: int


# Scripts written without spaces between words: no word boundary can be required next to them.
_UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u3040-\u30ff\u3130-\u318f"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002ffff"
)
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
_SPACED_WORD_CHAR = f"[^\\W{_UNSPACED}]"

_URL_CHARS = r"[^\s<>\[\]{}\"'`]"
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_HOST = rf"(?:{_LABEL}\.)+[^\W\d_]{{2,}}"
_SCHEME_URL = re.compile(rf"(?<![\w.+-])(?:https?|ftp)://{_URL_CHARS}+", re.IGNORECASE)
_EMAIL = re.compile(rf"[\w.+-]+@({_HOST})(?![\w-])")
_BARE_HOST = re.compile(rf"(?<![\w@.-])({_HOST})(?![\w-])(?:/{_URL_CHARS}*)?")
_HOST_ONLY = re.compile(_HOST)
_TRAILING = ".,;:!?*_~'\""
_CLOSERS = {")": "(", "]": "[", ">": "<"}


@dataclass(frozen=True, slots=True)
class _Entity:
    names: tuple[str, ...]
    domains: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    host: str


def analyse(
    text: str,
    citations: Sequence[Citation],
    brand: BrandSpec,
    competitors: Sequence[CompetitorSpec],
) -> Analysis:
    """Analyse one answer for ``brand`` against ``competitors``."""
    entities = [_entity((brand.name, *brand.aliases), brand.domain)]
    entities += [_entity((competitor.name,), competitor.domain) for competitor in competitors]
    positions = _first_mentions(unicodedata.normalize("NFC", text), entities)
    mentioned = sorted(
        (position, index) for index, position in enumerate(positions) if position is not None
    )
    ranks = {index: rank for rank, (_, index) in enumerate(mentioned, start=1)}
    brand_domain = normalize_domain(brand.domain)
    return Analysis(
        brand_mentioned=0 in ranks,
        brand_rank=ranks.get(0),
        competitors=tuple(
            CompetitorMention(competitors[index - 1].name, rank)
            for index, rank in ranks.items()
            if index != 0
        ),
        brand_citations=sum(
            host_within(normalize_domain(citation.domain or citation.url), brand_domain)
            for citation in citations
        ),
        citation_count=len(citations),
    )


def _entity(names: Sequence[str], domain: str) -> _Entity:
    clean = tuple(
        unicodedata.normalize("NFC", name.strip()) for name in names if name and name.strip()
    )
    # A name such as "Monday.com" is written like a host, so it is matched like one.
    domains = {normalize_domain(domain)} | {
        normalize_domain(name) for name in clean if _HOST_ONLY.fullmatch(name)
    }
    return _Entity(names=clean, domains=tuple(sorted(domain for domain in domains if domain)))


def _first_mentions(text: str, entities: Sequence[_Entity]) -> list[int | None]:
    """Position of each entity's first mention, or None.

    Where mentions overlap ("Acme" inside "Acme Cloud", a host on two entities' domains) the
    longest name or most specific domain wins, so each stretch of text names one entity.
    """
    spans, masked = _host_spans(text)
    candidates: list[tuple[int, int, int, int]] = []  # (weight, start, end, entity)
    for index, entity in enumerate(entities):
        for name in entity.names:
            for match in _name_pattern(name).finditer(masked):
                candidates.append((match.end() - match.start(), match.start(), match.end(), index))
        for span in spans:
            for domain in entity.domains:
                if host_within(span.host, domain):
                    candidates.append((len(domain), span.start, span.end, index))
    candidates.sort(key=lambda candidate: (-candidate[0], candidate[1], candidate[3]))
    taken: list[tuple[int, int]] = []
    first: list[int | None] = [None] * len(entities)
    for _, start, end, index in candidates:
        if any(start < other_end and other_start < end for other_start, other_end in taken):
            continue
        taken.append((start, end))
        position = first[index]
        first[index] = start if position is None else min(position, start)
    return first


def _host_spans(text: str) -> tuple[list[_Span], str]:
    """The hosts written in ``text`` and the text with every URL, address and host blanked."""
    spans: list[_Span] = []
    masked = text
    for pattern in (_SCHEME_URL, _EMAIL, _BARE_HOST):
        found = list(_host_matches(pattern, masked))
        for span in found:
            masked = masked[: span.start] + " " * (span.end - span.start) + masked[span.end :]
        spans += found
    return spans, masked


def _host_matches(pattern: re.Pattern[str], text: str) -> Iterator[_Span]:
    for match in pattern.finditer(text):
        end = match.start() + len(_trim_url(match.group(0)))
        host = match.group(1) if pattern.groups else match.group(0)[: end - match.start()]
        domain = normalize_domain(host)
        if domain:
            yield _Span(match.start(), end, domain)


def _trim_url(url: str) -> str:
    """Drop sentence punctuation and unbalanced closing brackets that follow a URL."""
    while url:
        last = url[-1]
        if last in _TRAILING or (last in _CLOSERS and url.count(last) > url.count(_CLOSERS[last])):
            url = url[:-1]
        else:
            break
    return url


@lru_cache(maxsize=1024)
def _name_pattern(name: str) -> re.Pattern[str]:
    body = r"\s+".join(re.escape(part) for part in name.split())
    before = "" if _UNSPACED_CHAR.match(name[0]) else f"(?<!{_SPACED_WORD_CHAR})"
    after = "" if _UNSPACED_CHAR.match(name[-1]) else f"(?!{_SPACED_WORD_CHAR})"
    return re.compile(before + body + after, re.IGNORECASE)
