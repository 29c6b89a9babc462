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
_SPACED_WORD_CHAR = re.compile(f"[^\\W{_UNSPACED}]")

_URL_CHARS = r"[^\s<>\[\]{}\"'`]"
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_HOST = rf"(?:{_LABEL}\.)+[^\W\d_]{{2,}}"
_SCHEME_URL = re.compile(rf"(?<![\w.+-])(?:https?|ftp)://{_URL_CHARS}+", re.IGNORECASE)
_EMAIL = re.compile(rf"[\w.+-]+@({_HOST})(?![\w-])")
_BARE_HOST = re.compile(rf"(?<![\w@.-])({_HOST})(?![\w-])(?:/{_URL_CHARS}*)?")
_HOST_ONLY = re.compile(_HOST)
_TOKEN = re.compile(r"\S+")
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
            candidates.extend(
                (end - start, start, end, index) for start, end in _words(name, masked)
            )
    owners: dict[str, list[int]] = {}
    for index, entity in enumerate(entities):
        for domain in entity.domains:
            owners.setdefault(domain, []).append(index)
    for span in spans:
        labels = span.host.split(".")
        for cut in range(len(labels)):  # the host itself, then each parent domain
            domain = ".".join(labels[cut:])
            for index in owners.get(domain, ()):
                candidates.append((len(domain), span.start, span.end, index))
    candidates.sort(key=lambda candidate: (-candidate[0], candidate[1], candidate[3]))
    taken = bytearray(len(text))  # 1 where an accepted mention stands
    first: list[int | None] = [None] * len(entities)
    for _, start, end, index in candidates:
        if taken.find(1, start, end) != -1:
            continue
        taken[start:end] = b"\x01" * (end - start)
        position = first[index]
        first[index] = start if position is None else min(position, start)
    return first


def _host_spans(text: str) -> tuple[list[_Span], str]:
    """The hosts written in ``text`` and the text with every URL, address and host blanked."""
    spans: list[_Span] = []
    for token in _TOKEN.finditer(text):
        # Hosts hold no whitespace and at least one dot: scanning only such tokens is much faster
        # than running the patterns over the whole text.
        if "." in token.group():
            spans += _token_hosts(token.group(), token.start())
    if not spans:
        return spans, text
    pieces: list[str] = []
    done = 0
    for span in sorted(spans, key=lambda span: span.start):
        pieces += [text[done : span.start], " " * (span.end - span.start)]
        done = span.end
    pieces.append(text[done:])
    return spans, "".join(pieces)


def _token_hosts(token: str, offset: int) -> list[_Span]:
    spans: list[_Span] = []
    for pattern in (_SCHEME_URL, _EMAIL, _BARE_HOST):
        for span in _host_matches(pattern, token):
            token = token[: span.start] + " " * (span.end - span.start) + token[span.end :]
            spans.append(_Span(span.start + offset, span.end + offset, span.host))
    return spans


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


def _words(name: str, text: str) -> Iterator[tuple[int, int]]:
    """Spans where ``name`` stands in ``text`` as a word of its own."""
    pattern, bounded_before, bounded_after = _name_pattern(name)
    for match in pattern.finditer(text):
        start, end = match.span()
        if bounded_before and start > 0 and _SPACED_WORD_CHAR.match(text, start - 1):
            continue
        if bounded_after and end < len(text) and _SPACED_WORD_CHAR.match(text, end):
            continue
        yield start, end


@lru_cache(maxsize=1024)
def _name_pattern(name: str) -> tuple[re.Pattern[str], bool, bool]:
    """The name's pattern and whether each end needs a word boundary.

    Boundaries are checked at each hit rather than in the pattern: a leading look-behind would
    stop the regex engine from scanning for the name's first characters quickly.
    """
    body = r"\s+".join(re.escape(part) for part in name.split())
    return (
        re.compile(body, re.IGNORECASE),
        not _UNSPACED_CHAR.match(name[0]),
        not _UNSPACED_CHAR.match(name[-1]),
    )
