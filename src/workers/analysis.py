"""Answer analysis: is the brand mentioned, where does it rank, who does the answer cite.

Pure functions over the answer text and citations. A name counts when it stands as a word
(case-insensitive, Unicode-aware); a domain counts only as a whole host (the domain itself or a
subdomain), in a URL, an e-mail address or bare text. Text inside URLs never counts as a name, so
``https://competitor.io/acme-review`` mentions competitor.io, not Acme.

The cost is linear in the answer's length whatever it holds (one unbroken token of digits, dots,
hosts or closing brackets included): no pattern restarts a scan inside a run of characters it
has read already, and no step revisits a token or host once per match. Two limits bound what
one answer may cost: at most `MAX_ANSWER_CHARS` characters, and at most ``time_limit`` seconds
of the analysing thread's CPU time; beyond either, `analyse` raises `AnalysisFailed`.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from workers.providers.base import Citation
from workers.providers.urls import host_within, normalize_domain

__all__ = [
    "MAX_ANSWER_CHARS",
    "Analysis",
    "AnalysisFailed",
    "BrandSpec",
    "CompetitorMention",
    "CompetitorSpec",
    "analyse",
    "normalize_domain",
]

# Longer than any provider's longest answer (128k output tokens, about 500k characters).
MAX_ANSWER_CHARS = 1_000_000
# DNS names are at most 253 characters: a longer "host" (or URL authority) is not one.
MAX_HOST_CHARS = 253
# Characters of work between two looks at the CPU clock (each look costs a system call).
_CHECK_EVERY_CHARS = 1 << 16


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


class AnalysisFailed(Exception):
    """The answer was not analysed: too long, or over the time limit. ``reason`` says which,
    in words fit for the tenant who asked."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Scripts written without spaces between words: no word boundary can be required next to them.
_UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u3040-\u30ff\u3130-\u318f"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002ffff"
)
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
_SPACED_WORD_CHAR = re.compile(f"[^\\W{_UNSPACED}]")

# Every pattern that scans a token starts only where a run of the characters it reads begins
# (a look-behind), so no character is read by two failed attempts: linear, not quadratic.
_URL_CHARS = r"[^\s<>\[\]{}\"'`]"
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_HOST = rf"(?:{_LABEL}\.)+[^\W\d_]{{2,}}"
_SCHEME_URL = re.compile(rf"(?<![\w.+-])(?:https?|ftp)://{_URL_CHARS}+", re.IGNORECASE)
_AUTHORITY = re.compile(r"[^/]*//([^/?#]*)")  # what `urlsplit` takes for the network location
# An e-mail address is a run of these characters, "@" and a host (see `_emails`).
_LOCAL_PART = re.compile(r"[\w.+-]+")
_EMAIL_HOST = re.compile(rf"({_HOST})(?![\w-])")
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


class _Budget:
    """The CPU time an analysis may still spend (of the thread it runs on, so a busy machine
    does not fail answers that an idle one analyses), looked at every few thousand characters
    of work: every step between two looks costs time linear in the characters it reads."""

    __slots__ = ("_deadline", "_limit", "_unchecked")

    def __init__(self, seconds: float | None) -> None:
        self._limit = seconds
        self._deadline = math.inf if seconds is None else time.thread_time() + seconds
        self._unchecked = 0

    def spend(self, chars: int) -> None:
        """Counts `chars` characters of work; looks at the clock every `_CHECK_EVERY_CHARS`."""
        self._unchecked += chars
        if self._unchecked >= _CHECK_EVERY_CHARS:
            self.check()

    def check(self) -> None:
        """Raises `AnalysisFailed` once the time is spent."""
        self._unchecked = 0
        if time.thread_time() >= self._deadline:
            raise AnalysisFailed(f"answer analysis exceeded its time limit ({self._limit:g} s)")


def analyse(
    text: str,
    citations: Sequence[Citation],
    brand: BrandSpec,
    competitors: Sequence[CompetitorSpec],
    *,
    time_limit: float | None = None,
) -> Analysis:
    """Analyse one answer for ``brand`` against ``competitors``.

    Raises `AnalysisFailed` for an answer over `MAX_ANSWER_CHARS` characters, or when the
    analysis has spent ``time_limit`` seconds of CPU (None: no limit).
    """
    if len(text) > MAX_ANSWER_CHARS:
        raise AnalysisFailed(
            f"answer too long to analyse ({len(text):,} characters; at most {MAX_ANSWER_CHARS:,})"
        )
    budget = _Budget(time_limit)
    budget.check()
    entities = [_entity((brand.name, *brand.aliases), brand.domain)]
    entities += [_entity((competitor.name,), competitor.domain) for competitor in competitors]
    positions = _first_mentions(unicodedata.normalize("NFC", text), entities, budget)
    mentioned = sorted(
        (position, index) for index, position in enumerate(positions) if position is not None
    )
    ranks = {index: rank for rank, (_, index) in enumerate(mentioned, start=1)}
    brand_domain = normalize_domain(brand.domain)
    brand_citations = 0
    for citation in citations:
        budget.spend(len(citation.domain or citation.url))
        brand_citations += host_within(
            normalize_domain(citation.domain or citation.url), brand_domain
        )
    return Analysis(
        brand_mentioned=0 in ranks,
        brand_rank=ranks.get(0),
        competitors=tuple(
            CompetitorMention(competitors[index - 1].name, rank)
            for index, rank in ranks.items()
            if index != 0
        ),
        brand_citations=brand_citations,
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


def _first_mentions(text: str, entities: Sequence[_Entity], budget: _Budget) -> list[int | None]:
    """Position of each entity's first mention, or None.

    Where mentions overlap ("Acme" inside "Acme Cloud", a host on two entities' domains) the
    longest name or most specific domain wins, so each stretch of text names one entity.
    """
    spans, masked = _host_spans(text, budget)
    candidates: list[tuple[int, int, int, int]] = []  # (weight, start, end, entity)
    for index, entity in enumerate(entities):
        for name in entity.names:
            budget.check()  # each name is one pass over the text
            candidates.extend(
                (end - start, start, end, index) for start, end in _words(name, masked)
            )
    owners: dict[str, list[int]] = {}
    for index, entity in enumerate(entities):
        for domain in entity.domains:
            owners.setdefault(domain, []).append(index)
    # Only the last few labels of a host can be an entity's domain.
    most_labels = max((domain.count(".") + 1 for domain in owners), default=0)
    for span in spans:
        budget.spend(len(span.host))
        labels = span.host.split(".")
        # The host itself (when short enough to be a domain), then each parent domain.
        for cut in range(max(0, len(labels) - most_labels), len(labels)):
            domain = ".".join(labels[cut:])
            for index in owners.get(domain, ()):
                candidates.append((len(domain), span.start, span.end, index))
    candidates.sort(key=lambda candidate: (-candidate[0], candidate[1], candidate[3]))
    taken = bytearray(len(text))  # 1 where an accepted mention stands
    first: list[int | None] = [None] * len(entities)
    for _, start, end, index in candidates:
        budget.spend(end - start)
        if taken.find(1, start, end) != -1:
            continue
        taken[start:end] = b"\x01" * (end - start)
        position = first[index]
        first[index] = start if position is None else min(position, start)
    return first


def _host_spans(text: str, budget: _Budget) -> tuple[list[_Span], str]:
    """The hosts written in ``text`` and the text with every URL, address and host blanked."""
    spans: list[_Span] = []
    for token in _TOKEN.finditer(text):
        word = token.group()
        # Hosts hold no whitespace and at least one dot: scanning only such tokens is much faster
        # than running the patterns over the whole text.
        if "." in word:
            budget.spend(len(word))
            spans += _token_hosts(word, token.start())
    budget.check()
    if not spans:
        return spans, text
    return spans, _blank(text, spans)


def _blank(text: str, spans: Sequence[_Span]) -> str:
    """``text`` with each span (none overlapping) replaced by spaces."""
    pieces: list[str] = []
    done = 0
    for span in sorted(spans, key=lambda span: span.start):
        pieces += [text[done : span.start], " " * (span.end - span.start)]
        done = span.end
    pieces.append(text[done:])
    return "".join(pieces)


def _token_hosts(token: str, offset: int) -> list[_Span]:
    """The URLs, then the e-mail addresses, then the bare hosts of one token; each kind is
    looked for in the token with the kinds before it blanked."""
    spans: list[_Span] = []
    for find, needle in _FINDERS:
        if needle not in token:  # cheaper than the pattern, which needs it
            continue
        found = [span for span in find(token) if span.host]
        if found:
            token = _blank(token, found)
            spans += [_Span(span.start + offset, span.end + offset, span.host) for span in found]
    return spans


def _scheme_urls(token: str) -> Iterator[_Span]:
    for match in _SCHEME_URL.finditer(token):
        url = _trim_url(match.group())
        authority = _AUTHORITY.match(url)
        yield _Span(
            match.start(), match.start() + len(url), _domain(authority[1] if authority else "")
        )


def _emails(token: str) -> Iterator[_Span]:
    """What ``[\\w.+-]+@(host)`` finds, scanning ``token`` left to right.

    That pattern would try every position of a long run of those characters (a number with
    thousands of digits) and read the rest of the run from each: quadratic. Each run is read
    once here instead, and a host looked for only after an "@" that ends one.
    """
    done = 0  # where the previous address ends: the next one starts at or after it
    for run in _LOCAL_PART.finditer(token):
        start, at = max(run.start(), done), run.end()
        if start >= at or not token.startswith("@", at):
            continue
        host = _EMAIL_HOST.match(token, at + 1)
        if host is not None:
            done = host.end()
            yield _Span(start, start + len(_trim_url(token[start:done])), _domain(host.group(1)))


def _bare_hosts(token: str) -> Iterator[_Span]:
    for match in _BARE_HOST.finditer(token):
        end = match.start() + len(_trim_url(match.group()))
        yield _Span(match.start(), end, _domain(match.group(1)))


# Each finder, and a string that every match of it holds.
_FINDERS: tuple[tuple[Callable[[str], Iterator[_Span]], str], ...] = (
    (_scheme_urls, "//"),
    (_emails, "@"),
    (_bare_hosts, "."),
)


def _domain(host: str) -> str:
    """The normalised domain of a host, a URL's authority or an address's host; empty when
    there is none or it is too long to be one."""
    if len(host) > MAX_HOST_CHARS:
        return ""
    domain = normalize_domain(host)
    return domain if len(domain) <= MAX_HOST_CHARS else ""


def _trim_url(url: str) -> str:
    """Drop sentence punctuation and unbalanced closing brackets that follow a URL."""
    end = len(url)
    excess: dict[str, int] = {}  # closing minus opening brackets of each kind in url[:end]
    while end:
        last = url[end - 1]
        if last in _TRAILING:
            end -= 1
            continue
        opener = _CLOSERS.get(last)
        if opener is None:
            break
        if last not in excess:
            excess[last] = url.count(last, 0, end) - url.count(opener, 0, end)
        if excess[last] <= 0:
            break
        excess[last] -= 1
        end -= 1
    return url[:end]


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
