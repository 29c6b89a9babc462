"""Insight reports: which sources the assistants cite (and which were won or lost), which
URLs of a source they cite, and how each prompt does; read from the insight rollups
(`insight_rollups`), planned like the visibility report (`reports.plan`), so that each costs
what its range holds in days, not in answers.

Sources are registrable domains (`blog.acme.co.uk` counts under `acme.co.uk`), classified
when the report is read, by the workspace's definition at that moment: the brand's (the
registrable domain of the brand's domain), a competitor's (that of `Competitor.domain`), or
other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

import idna
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import PROVIDERS
from service.db.models import AnsweredPrompt, CitedUrlRollup, Workspace
from service.domain import paging
from service.domain.collection import insight_rollups, reports, rollups
from service.domain.collection.reports import CompetitorShare, Granularity
from service.domain.errors import InvalidArgument
from service.domain.hostnames import normalize_hostname

SourceClass = Literal["brand", "competitor", "other"]
MAX_SOURCES = 1000
DEFAULT_SOURCES = 100
MAX_FILTER_VALUES = 100


@dataclass(frozen=True, slots=True)
class Definition:
    """What the workspace tracks, as the reports classify sources and names."""

    brand_source: str
    competitor_sources: dict[str, str]  # source -> competitor name
    competitor_names: list[str]


def unicode_domain(domain: str) -> str:
    """A stored (ASCII) domain as citations hold it (Unicode, as `bücher.de`)."""
    try:
        return str(idna.decode(domain))
    except (idna.IDNAError, UnicodeError):
        return domain


async def definition(session: AsyncSession, workspace_id: str) -> Definition:
    """The workspace's brand domain and competitors, as sources."""
    row = (
        await session.execute(
            select(Workspace.domain, Workspace.competitors).where(Workspace.id == workspace_id)
        )
    ).one()
    competitors: dict[str, str] = {}
    names: list[str] = []
    for item in row.competitors or []:
        name = str(item.get("name") or "")
        if name:
            names.append(name)
        if item.get("domain"):
            competitors.setdefault(insight_rollups.source_of(unicode_domain(item["domain"])), name)
    brand = insight_rollups.source_of(unicode_domain(row.domain)) if row.domain else ""
    return Definition(brand, competitors, names)


def classify(source: str, known: Definition) -> tuple[SourceClass, str]:
    """The class of a source, and the competitor's name when it is one's."""
    if source == known.brand_source:
        return "brand", ""
    if source in known.competitor_sources:
        return "competitor", known.competitor_sources[source]
    return "other", ""


@dataclass(frozen=True, slots=True)
class Source:
    """One cited source over a range: citations, answers citing it, and their share of all
    answers (of the provider, or of every provider)."""

    domain: str
    source_class: SourceClass
    competitor: str
    citations: int
    answers: int
    answer_share: float


@dataclass(frozen=True, slots=True)
class SourceList:
    """The sources of one provider ("" for every provider), most cited first."""

    provider: str
    answers: int
    sources: list[Source]


@dataclass(frozen=True, slots=True)
class SourcesReport:
    """Sources cited over a range, and those won and lost against the previous equal range."""

    previous_start: datetime
    lists: list[SourceList]
    new_sources: list[Source]
    lost_sources: list[Source]


def _source_list(
    provider: str,
    answers: int,
    counts: dict[str, list[int]],
    known: Definition,
    order: Literal["citations", "answers"],
    limit: int,
) -> SourceList:
    ranked = sorted(
        counts.items(),
        key=lambda item: (
            -(item[1][0] if order == "citations" else item[1][1]),
            -(item[1][1] if order == "citations" else item[1][0]),
            item[0],
        ),
    )
    return SourceList(
        provider,
        answers,
        [
            Source(domain, *classify(domain, known), c, a, a / answers if answers else 0.0)
            for domain, (c, a) in ranked[:limit]
        ],
    )


async def sources_report(
    session: AsyncSession,
    workspace_id: str,
    *,
    start: datetime,
    end: datetime,
    order: Literal["citations", "answers"] = "citations",
    limit: int = DEFAULT_SOURCES,
) -> SourcesReport:
    """The sources cited by answers in [start, end), per provider and overall (at most
    `limit` per list, ranked by `order`), and the sources cited in the previous range of the
    same length but not in this one (lost), or the reverse (new)."""
    if not 0 <= limit <= MAX_SOURCES:
        raise InvalidArgument("max_sources", f"must be between 0 and {MAX_SOURCES}")
    limit = limit or DEFAULT_SOURCES
    previous = start - (end - start)
    plan = reports.plan([previous, start, end])
    known = await definition(session, workspace_id)
    found = await insight_rollups.read(session, insight_rollups.SOURCES, workspace_id, plan)
    responses: dict[tuple[int, str], int] = defaultdict(int)
    for i, provider, sums, _ in await rollups.read_periods(session, workspace_id, plan):
        responses[(i, provider)] += sums[0]
        responses[(i, "")] += sums[0]
    counts: dict[tuple[int, str], dict[str, list[int]]] = defaultdict(dict)
    for (i, provider, domain), (citations, answers) in found.items():
        for key in ((i, provider), (i, "")):
            total = counts[key].setdefault(domain, [0, 0])
            total[0] += citations
            total[1] += answers
    order_of = {name: index for index, name in enumerate(PROVIDERS)}
    providers = sorted(
        {p for i, p in counts if i == 1 and p} | {p for i, p in responses if i == 1 and p},
        key=lambda p: (order_of.get(p, len(order_of)), p),
    )
    lists = [
        _source_list(p, responses[(1, p)], counts[(1, p)], known, order, limit)
        for p in ["", *providers]
    ]
    now, before = counts[(1, "")], counts[(0, "")]
    new = {d: v for d, v in now.items() if d not in before}
    lost = {d: v for d, v in before.items() if d not in now}
    return SourcesReport(
        previous,
        lists,
        _source_list("", responses[(1, "")], new, known, order, limit).sources,
        _source_list("", responses[(0, "")], lost, known, order, limit).sources,
    )


@dataclass(frozen=True, slots=True)
class CitedUrl:
    """A URL of a source, its citations over the range, and the prompts whose answers cite
    it (prompt id -> citations)."""

    url: str
    citations: int
    prompts: dict[str, int] = field(default_factory=dict)


def source_domain(field_name: str, value: str) -> str:
    """The source named by a request (a domain or URL), as the reports key it."""
    host = normalize_hostname(field_name, value) if value.strip() else ""
    if not host:
        raise InvalidArgument(field_name, "is required")
    return insight_rollups.source_of(unicode_domain(host))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def cited_urls(
    session: AsyncSession,
    workspace_id: str,
    domain: str,
    *,
    start: datetime,
    end: datetime,
    page: paging.Page,
) -> tuple[list[CitedUrl], str]:
    """The URLs of `domain` cited by answers in [start, end), most cited first (then by
    URL), one page of them, and the next page's token ("" at the end)."""
    found = await insight_rollups.read(
        session,
        insight_rollups.URLS,
        workspace_id,
        reports.plan([start, end]),
        {"domain": [domain]},
    )
    by_url: dict[str, dict[str, int]] = defaultdict(dict)
    for (_, _, hashed, prompt_id), (citations,) in found.items():
        by_url[hashed][prompt_id] = by_url[hashed].get(prompt_id, 0) + citations
    urls: dict[str, str] = {}
    if by_url:
        rows = await session.execute(
            select(CitedUrlRollup.url_hash, CitedUrlRollup.url)
            .where(
                CitedUrlRollup.workspace_id == workspace_id,
                CitedUrlRollup.domain == domain,
                CitedUrlRollup.url_hash.in_(list(by_url)),
            )
            .distinct()
        )
        urls = {hashed: url for hashed, url in rows.all()}
    ranked = sorted(
        (CitedUrl(urls.get(h, ""), sum(p.values()), p) for h, p in by_url.items()),
        key=lambda item: (-item.citations, item.url),
    )
    offset = _offset(page)
    chunk = ranked[offset : offset + page.size]
    more = offset + page.size < len(ranked)
    token = (
        paging.encode_token(page.key, page.scope, EPOCH, str(offset + page.size)) if more else ""
    )
    return chunk, token


def _offset(page: paging.Page) -> int:
    """Where a page of a ranked list starts (its token holds the offset)."""
    if page.after is None:
        return 0
    try:
        return max(0, int(page.after[1]))
    except ValueError:
        raise InvalidArgument("page_token", "is not a token of this list") from None


# Visibility per prompt -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One prompt (and provider, when split by provider; "" otherwise) in one period."""

    prompt_id: str
    prompt_text: str
    provider: str
    period_start: datetime
    responses: int
    mention_rate: float
    average_rank: float
    brand_citation_share: float
    competitors: list[CompetitorShare]


def check_filter(field_name: str, values: Sequence[str]) -> list[str]:
    """Distinct filter values, at most MAX_FILTER_VALUES."""
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidArgument(field_name, f"at most {MAX_FILTER_VALUES} values")
    for index, value in enumerate(values):
        if not value or len(value) > 40:
            raise InvalidArgument(f"{field_name}[{index}]", "is not a valid id")
    return sorted(set(values))


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


async def prompt_report(
    session: AsyncSession,
    workspace_id: str,
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    time_zone: str = "UTC",
    prompt_ids: Sequence[str] = (),
    providers: Sequence[str] = (),
    by_provider: bool = False,
) -> list[PromptRow]:
    """Visibility per prompt (and per provider when `by_provider`) and period, over the
    answers in [start, end), only of `prompt_ids` and `providers` when given; the same
    figures as the visibility report (see `reports.visibility_report`), by period, then
    prompt text, then provider. A deleted prompt shows under the text it was asked with."""
    bounds, labels = reports.periods(start, end, granularity, ZoneInfo(time_zone))
    plan = reports.plan(bounds)
    where: dict[str, Sequence[str]] = {}
    if prompt_ids:
        where["prompt_id"] = prompt_ids
    if providers:
        where["provider"] = providers
    group = ("prompt_id", "provider") if by_provider else ("prompt_id",)
    sums = await insight_rollups.read(
        session, insight_rollups.PROMPTS, workspace_id, plan, where, group
    )
    mentions = await insight_rollups.read(
        session, insight_rollups.PROMPT_MENTIONS, workspace_id, plan, where, (*group, "name")
    )
    # (period, prompt, provider or "") -> sums; -> competitor -> answers naming it.
    totals = {(k[0], k[1], k[2] if by_provider else ""): v for k, v in sums.items()}
    names: dict[tuple[int, str, str], dict[str, int]] = defaultdict(dict)
    for key, (count,) in mentions.items():
        names[(key[0], key[1], key[2] if by_provider else "")][key[-1]] = count
    texts = await _prompt_texts(session, workspace_id, {key[1] for key in totals})
    configured = (await definition(session, workspace_id)).competitor_names
    order_of = {name: index for index, name in enumerate(PROVIDERS)}
    rows: list[PromptRow] = []
    for key in sorted(
        totals,
        key=lambda k: (k[0], texts.get(k[1], ""), k[1], order_of.get(k[2], -1), k[2]),
    ):
        i, prompt_id, provider = key
        count, brand, rank_sum, ranked, brand_cites, cites = totals[key]
        if count <= 0:
            continue
        by_name = names.get(key, {})
        extra = sorted(by_name.keys() - set(configured))
        rows.append(
            PromptRow(
                prompt_id,
                texts.get(prompt_id, ""),
                provider,
                labels[i],
                count,
                _ratio(brand, count),
                _ratio(rank_sum, ranked),
                _ratio(brand_cites, cites),
                [
                    CompetitorShare(n, m := by_name.get(n, 0), _ratio(brand, brand + m))
                    for n in configured + extra
                ],
            )
        )
    return rows


async def _prompt_texts(
    session: AsyncSession, workspace_id: str, prompt_ids: set[str]
) -> dict[str, str]:
    if not prompt_ids:
        return {}
    rows = await session.execute(
        select(AnsweredPrompt.prompt_id, AnsweredPrompt.text).where(
            AnsweredPrompt.workspace_id == workspace_id,
            AnsweredPrompt.prompt_id.in_(sorted(prompt_ids)),
        )
    )
    return {prompt_id: text for prompt_id, text in rows.all()}
