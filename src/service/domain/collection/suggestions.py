"""Competitor suggestions: the sources and listed names the answers bring up that the
workspace tracks neither as its brand nor as a competitor (evidence kept with each answer by
`insight_rollups.add_answers`), and an owner's decision on each.

Which names count is the rule of `list_names`; what the brand and competitors are is read
when the suggestions are listed, so a competitor added by hand stops being suggested at once.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, not_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import SuggestionDecision, SuggestionEvidence, Workspace
from service.domain import audit, paging
from service.domain.actor import Actor
from service.domain.collection import insight_rollups
from service.domain.collection.insight_reports import unicode_domain
from service.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from service.domain.tenancy.workspace_fields import (
    Competitor,
    clean_competitors,
    competitors_from_json,
    competitors_json,
)
from service.domain.tenancy.workspace_locks import lock_live_workspace

Kind = Literal["domain", "name"]
Decision = Literal["accepted", "dismissed"]
MAX_ID_CHARS = 400


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A name or domain to consider tracking, with its evidence over every answer."""

    id: str
    kind: Kind
    label: str
    answers: int
    providers: list[str]
    last_time: datetime
    example_response_id: str


def suggestion_id(kind: str, key: str) -> str:
    """The opaque id of a suggestion."""
    raw = f"{kind}\n{key}".encode()
    return "sug_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_suggestion_id(value: str) -> tuple[Kind, str]:
    """(kind, key) of a suggestion id; InvalidArgument("suggestion_id") otherwise."""
    invalid = InvalidArgument("suggestion_id", "is not a suggestion id")
    if not value.startswith("sug_") or len(value) > MAX_ID_CHARS:
        raise invalid
    body = value[4:]
    try:
        kind, _, key = (
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().partition("\n")
        )
    except (binascii.Error, ValueError):
        raise invalid from None
    if kind == "domain" and key:
        return "domain", key
    if kind == "name" and key:
        return "name", key
    raise invalid


async def _tracked(session: AsyncSession, workspace_id: str) -> tuple[set[str], set[str]]:
    """(sources, case-folded names) the workspace tracks: its brand's and competitors'."""
    row = (
        await session.execute(
            select(
                Workspace.name, Workspace.domain, Workspace.brand_aliases, Workspace.competitors
            ).where(Workspace.id == workspace_id)
        )
    ).one()
    sources = {insight_rollups.source_of(unicode_domain(row.domain))} if row.domain else set()
    names = {row.name.casefold(), *(alias.casefold() for alias in row.brand_aliases or [])}
    for competitor in competitors_from_json(row.competitors or []):
        names.add(competitor.name.casefold())
        if competitor.domain:
            sources.add(insight_rollups.source_of(unicode_domain(competitor.domain)))
    return sources, names


def _untracked(sources: set[str], names: set[str]) -> ColumnElement[bool]:
    e = SuggestionEvidence
    return not_(
        or_(
            and_(e.kind == "domain", e.key.in_(sorted(sources) or [""])),
            and_(e.kind == "name", e.key.in_(sorted(names) or [""])),
        )
    )


async def list_suggestions(
    session: AsyncSession, workspace_id: str, page: paging.Page
) -> tuple[list[Suggestion], str]:
    """One page of the workspace's undecided, untracked suggestions, newest evidence first
    (then by kind and key, descending), and the next page's token."""
    e = SuggestionEvidence
    sources, names = await _tracked(session, workspace_id)
    newest = func.max(e.last_time)
    decided = select(SuggestionDecision.key).where(
        SuggestionDecision.workspace_id == workspace_id,
        SuggestionDecision.kind == e.kind,
        SuggestionDecision.key == e.key,
    )
    query = (
        select(e.kind, e.key, func.sum(e.answers).label("answers"), newest.label("last_time"))
        .where(e.workspace_id == workspace_id, _untracked(sources, names), ~decided.exists())
        .group_by(e.kind, e.key)
        .order_by(newest.desc(), e.kind.desc(), e.key.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        at, after_id = page.after
        kind, key = parse_suggestion_id(after_id)
        query = query.having(
            or_(newest < at, and_(newest == at, tuple_(e.kind, e.key) < tuple_(kind, key)))
        )
    groups = (await session.execute(query)).all()
    shown = groups[: page.size]
    details: dict[tuple[str, str], list[Any]] = {}
    if shown:
        rows = await session.execute(
            select(e).where(
                e.workspace_id == workspace_id,
                tuple_(e.kind, e.key).in_([(g.kind, g.key) for g in shown]),
            )
        )
        for row in rows.scalars():
            details.setdefault((row.kind, row.key), []).append(row)
    result = []
    for group in shown:
        evidence = sorted(details.get((group.kind, group.key), []), key=lambda r: r.last_time)
        latest = evidence[-1]
        result.append(
            Suggestion(
                suggestion_id(group.kind, group.key),
                group.kind,
                latest.label,
                int(group.answers),
                sorted({r.provider for r in evidence}),
                latest.last_time,
                latest.example_response_id,
            )
        )
    token = ""
    if len(groups) > page.size:
        token = paging.encode_token(page.key, page.scope, result[-1].last_time, result[-1].id)
    return result, token


async def decide(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    suggestion: str,
    decision: Decision,
    *,
    now: datetime,
) -> Suggestion:
    """Records the owner's decision; an accepted suggestion becomes a competitor (a name: by
    that name; a domain: named and matched by it). Audited with the workspace's change."""
    kind, key = parse_suggestion_id(suggestion)
    workspace = await lock_live_workspace(session, workspace_id)
    e = SuggestionEvidence
    evidence = (
        await session.scalars(
            select(e)
            .where(e.workspace_id == workspace_id, e.kind == kind, e.key == key)
            .order_by(e.last_time)
        )
    ).all()
    if not evidence:
        raise NotFound("suggestion", suggestion)
    existing = await session.get(SuggestionDecision, (workspace_id, kind, key))
    if existing is not None:
        raise FailedPrecondition(
            f"suggestion {suggestion} was already {existing.decision}", reason="ALREADY_DECIDED"
        )
    latest = evidence[-1]
    if decision == "accepted":
        added = Competitor(latest.label, key) if kind == "domain" else Competitor(latest.label, "")
        current = competitors_from_json(workspace.competitors or [])
        try:
            cleaned = clean_competitors("competitors", [*current, added])
        except InvalidArgument as exc:
            raise FailedPrecondition(
                f"the suggestion cannot become a competitor: {exc.message}",
                reason="COMPETITORS_INVALID",
            ) from None
        workspace.competitors = competitors_json(cleaned)
        workspace.version += 1
        workspace.update_time = now
    session.add(
        SuggestionDecision(
            workspace_id=workspace_id, kind=kind, key=key, decision=decision, decide_time=now
        )
    )
    audit.record_workspace(session, call, workspace, now, target_ids=[workspace_id, suggestion])
    await session.flush()
    return Suggestion(
        suggestion,
        kind,
        latest.label,
        sum(r.answers for r in evidence),
        sorted({r.provider for r in evidence}),
        latest.last_time,
        latest.example_response_id,
    )
