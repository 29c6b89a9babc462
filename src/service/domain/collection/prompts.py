"""A workspace's prompts: the questions its runs ask every enabled provider.

Texts are normalized (line breaks unified to "\\n", surrounding whitespace trimmed) and
deduplicated by exact text; each must be 1-2000 characters without control characters other
than newline and tab, and a workspace holds at most 500. Prompt mutations of one workspace are
serialized by locking the workspace row, so concurrent replacements cannot interleave.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.db.database import Reader
from service.db.models import Prompt
from service.domain import audit, idempotency
from service.domain.actor import Actor
from service.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from service.domain.money.markets import Market
from service.domain.tenancy.workspace_locks import lock_live_workspace

MAX_PROMPTS = 500
MAX_PROMPT_LENGTH = 2000
# Control characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F) but newline and
# tab, found by one regex scan rather than a Python loop over every character.
_FORBIDDEN_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Violations reported in one error; the rest are summarized.
MAX_VIOLATIONS = 20


@dataclass(frozen=True, slots=True)
class NormalizedPrompts:
    """Valid, distinct prompt texts in request order and how many duplicates were dropped;
    `markets[i]` is the market of `texts[i]` (the same text in two markets is two prompts)."""

    texts: list[str]
    duplicates_dropped: int
    markets: list[Market]

    def keyed(self) -> dict[str, tuple[str, Market]]:
        """The prompts by their identity (`text_hash`), in request order."""
        return {
            text_hash(text, market): (text, market)
            for text, market in zip(self.texts, self.markets, strict=True)
        }


@dataclass(frozen=True, slots=True)
class PromptView:
    """A stored prompt."""

    id: str
    workspace_id: str
    text: str
    create_time: datetime
    market: dict[str, str]

    @classmethod
    def of(cls, row: Prompt) -> PromptView:
        return cls(row.id, row.workspace_id, row.text, row.create_time, dict(row.market or {}))


@dataclass(frozen=True, slots=True)
class StoredPrompts:
    """Prompts written by a store or add, and how many request entries were duplicates."""

    prompts: list[PromptView]
    duplicates_dropped: int


def text_hash(text: str, market: Market | None = None) -> str:
    """The sha256 hex digest of a prompt's text and market (its identity within a workspace;
    a prompt without a market hashes its text alone)."""
    key = text if market is None or not market else f"{text}\x00{market.key}"
    return hashlib.sha256(key.encode()).hexdigest()


def normalize_prompts(
    texts: Sequence[str],
    *,
    field: str = "prompts",
    markets: Sequence[Market] = (),
    entries_field: str = "entries",
) -> NormalizedPrompts:
    """Trims and validates each text and drops exact duplicates (same text, same market),
    keeping the first. `markets[i]` (validated by the caller) is the market of `texts[i]`
    for the last `len(markets)` texts, which come from the request's `entries`.

    Raises InvalidArgument naming each bad entry as `prompts[i]` (its index in the request)
    or `entries[i].text`, or `prompts` when more than 500 distinct prompts remain.
    """
    violations: list[FieldViolation] = []
    seen: set[tuple[str, str]] = set()
    kept: list[str] = []
    kept_markets: list[Market] = []
    plain = len(texts) - len(markets)
    for index, raw in enumerate(texts):
        market = markets[index - plain] if index >= plain else Market()
        text = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
        problem = _problem(text)
        if problem:
            name = (
                f"{field}[{index}]" if index < plain else f"{entries_field}[{index - plain}].text"
            )
            violations.append(FieldViolation(name, problem))
        elif (text, market.key) not in seen:
            seen.add((text, market.key))
            kept.append(text)
            kept_markets.append(market)
    if violations:
        shown = violations[:MAX_VIOLATIONS]
        if len(violations) > MAX_VIOLATIONS:
            shown.append(
                FieldViolation(field, f"{len(violations) - MAX_VIOLATIONS} more entries are bad")
            )
        raise InvalidArgument(shown[0].field, shown[0].description, more=shown[1:])
    if len(kept) > MAX_PROMPTS:
        raise InvalidArgument(
            field,
            f"a workspace holds at most {MAX_PROMPTS} prompts; got {len(kept)} distinct ones",
        )
    return NormalizedPrompts(kept, len(texts) - len(kept), kept_markets)


def _problem(text: str) -> str:
    if not text:
        return "must not be empty or only whitespace"
    if len(text) > MAX_PROMPT_LENGTH:
        return f"must be at most {MAX_PROMPT_LENGTH} characters (got {len(text)})"
    control = _FORBIDDEN_CONTROL.search(text)
    if control is not None:
        return (
            f"must not contain control characters other than newline and tab "
            f"(U+{ord(control.group()):04X} at position {control.start()})"
        )
    return ""


async def _existing(session: AsyncSession, workspace_id: str) -> dict[str, Prompt]:
    rows = await session.scalars(select(Prompt).where(Prompt.workspace_id == workspace_id))
    return {row.text_hash: row for row in rows}


def _new_prompt(workspace_id: str, text: str, market: Market, create_time: datetime) -> Prompt:
    return Prompt(
        id=new_id("prm"),
        workspace_id=workspace_id,
        text=text,
        text_hash=text_hash(text, market),
        create_time=create_time,
        market=market.stored(),
    )


def _step(now: datetime, index: int) -> datetime:
    # Microsecond steps keep the request order in "oldest first" listings.
    return now + timedelta(microseconds=index)


async def store_prompts(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    texts: Sequence[str],
    *,
    markets: Sequence[Market] = (),
    request_id: str = "",
    now: datetime,
) -> StoredPrompts:
    """Replaces the workspace's prompts with `texts` (normalized); returns them in order.
    The last `len(markets)` texts are asked from those markets (see `normalize_prompts`).

    Prompts whose text is kept retain their ids and creation times; the rest are deleted
    (their past responses stay). A retry with the same `request_id` returns the first result
    and changes nothing.
    """

    async def store() -> StoredPrompts:
        normalized = normalize_prompts(texts, markets=markets)
        await lock_live_workspace(session, workspace_id)
        existing = await _existing(session, workspace_id)
        wanted = normalized.keyed()
        stale = [row.id for key, row in existing.items() if key not in wanted]
        if stale:
            await session.execute(delete(Prompt).where(Prompt.id.in_(stale)))
        result: list[Prompt] = []
        for index, (key, (text, market)) in enumerate(wanted.items()):
            row = existing.get(key)
            if row is None:
                row = _new_prompt(workspace_id, text, market, _step(now, index))
                session.add(row)
            result.append(row)
        await session.flush()
        await audit.record_workspace_change(
            session, actor, workspace_id, target_ids=[workspace_id], now=now
        )
        return StoredPrompts([PromptView.of(row) for row in result], normalized.duplicates_dropped)

    return await idempotency.once(
        session,
        actor,
        request_id,
        scope=workspace_id,
        result_type=StoredPrompts,
        now=now,
        run=store,
    )


async def add_prompts(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    texts: Sequence[str],
    *,
    markets: Sequence[Market] = (),
    request_id: str = "",
    now: datetime,
) -> StoredPrompts:
    """Adds the texts not stored yet (in their markets, as `store_prompts`); returns the
    added prompts.

    Raises FailedPrecondition when the workspace would hold more than 500 prompts. A retry
    with the same `request_id` returns the first result and changes nothing.
    """

    async def add() -> StoredPrompts:
        normalized = normalize_prompts(texts, markets=markets)
        await lock_live_workspace(session, workspace_id)
        existing = await _existing(session, workspace_id)
        fresh = [prompt for key, prompt in normalized.keyed().items() if key not in existing]
        total = len(existing) + len(fresh)
        if total > MAX_PROMPTS:
            raise FailedPrecondition(
                f"a workspace holds at most {MAX_PROMPTS} prompts: it has {len(existing)} and "
                f"{len(fresh)} would be added",
                [
                    PreconditionViolation(
                        "PROMPT_LIMIT", workspace_id, f"at most {MAX_PROMPTS} prompts per workspace"
                    )
                ],
            )
        added = [
            _new_prompt(workspace_id, text, market, _step(now, i))
            for i, (text, market) in enumerate(fresh)
        ]
        session.add_all(added)
        await session.flush()
        await audit.record_workspace_change(
            session, actor, workspace_id, target_ids=[row.id for row in added], now=now
        )
        return StoredPrompts([PromptView.of(row) for row in added], len(texts) - len(fresh))

    return await idempotency.once(
        session,
        actor,
        request_id,
        scope=workspace_id,
        result_type=StoredPrompts,
        now=now,
        run=add,
    )


async def delete_prompt(
    session: AsyncSession, actor: Actor, workspace_id: str, prompt_id: str, *, now: datetime
) -> None:
    """Deletes one prompt of the workspace; NotFound when there is none by that id."""
    await lock_live_workspace(session, workspace_id)
    result = await session.execute(
        delete(Prompt).where(Prompt.id == prompt_id, Prompt.workspace_id == workspace_id)
    )
    if cast(CursorResult[Any], result).rowcount == 0:
        raise NotFound("prompt", prompt_id)
    await audit.record_workspace_change(
        session, actor, workspace_id, target_ids=[prompt_id], now=now
    )


async def count_prompts(session: Reader, workspace_id: str) -> int:
    """How many prompts the workspace holds."""
    total = await session.scalar(
        select(func.count()).select_from(Prompt).where(Prompt.workspace_id == workspace_id)
    )
    return int(total or 0)
