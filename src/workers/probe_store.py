"""The probe store: probe reads and result writes, batched across the probes in flight.

Moved out of `workers.probes` so that the worker context (which holds one store per event
loop) and the probe logic (which receives the context) do not import each other.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Update, bindparam, select, update

from service.clock import utcnow
from service.db.database import Database
from service.db.models import Organization, Probe, Prompt, Run, Workspace
from service.db.sql_dialects import id_in, table_of
from service.domain.collection import insight_rollups, rollups
from service.domain.collection.run_lifecycle import ProbeStatus, finish_runs
from service.domain.money import ledger
from service.domain.money.markets import Market, effective_market
from workers.analysis import BrandSpec, CompetitorSpec
from workers.batching import Batcher

# How stale a run's "canceled" flag may be when a probe is about to be asked.
ABANDON_CHECK_SECONDS = 1.0
ABANDON_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class ProbeTask:
    """What a worker needs to run one probe, read in one query."""

    id: str
    run_id: str
    workspace_id: str
    provider: str
    prompt_text: str
    status: str
    run_ended: bool
    # The run was canceled or its workspace deleted: the probe is skipped.
    abandoned: bool
    brand: BrandSpec
    competitors: tuple[CompetitorSpec, ...]
    # The market it is asked from (its prompt's, else its workspace's default; empty: none).
    market: Market = field(default_factory=Market)
    # Its workspace's organization and the monthly caps that apply (None: no cap).
    organization_id: str = ""
    workspace_cap: int | None = None
    organization_cap: int | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A probe's terminal outcome, written only if the probe is still pending."""

    probe_id: str
    run_id: str
    status: str
    attempts: int
    values: dict[str, Any] = field(default_factory=dict)


# What an answer records of its market, usage and cost (revision 0008).
MARKET_AND_MONEY_COLUMNS = (
    "market",
    "market_applied",
    "input_tokens",
    "output_tokens",
    "search_calls",
    "cost_micros",
    "usage",
)
RESULT_COLUMNS = (
    "model",
    "text",
    "citations",
    "brand_mentioned",
    "brand_rank",
    "competitors",
    "brand_citations",
    "citation_count",
    "latency_ms",
    "error",
    *MARKET_AND_MONEY_COLUMNS,
)
EMPTY_RESULT: dict[str, Any] = {
    "model": "",
    "text": "",
    "citations": [],
    "brand_mentioned": False,
    "brand_rank": 0,
    "competitors": [],
    "brand_citations": 0,
    "citation_count": 0,
    "latency_ms": 0,
    "error": "",
    "market": {},
    "market_applied": False,
    "input_tokens": 0,
    "output_tokens": 0,
    "search_calls": 0,
    "cost_micros": 0,
    "usage": {},
}


class ProbeStore:
    """Probe reads and result writes, batched across the probes in flight on one event loop.

    Runs are checked for completion after the results that may complete them have committed.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._loads: Batcher[str, ProbeTask | None] = Batcher(self._load_many)
        self._saves: Batcher[ProbeResult, None] = Batcher(self._save_many)
        self._abandon_checks: Batcher[str, bool] = Batcher(self._abandoned_many)
        # Its own batcher, so that the next results are written while runs are checked.
        self._completion_checks: Batcher[str, None] = Batcher(self._finish_many)
        self._abandoned: dict[str, tuple[float, bool]] = {}

    async def abandoned(self, run_id: str) -> bool:
        """Whether the run was canceled or its workspace deleted, as of a second ago at most."""
        now = time.monotonic()
        cached = self._abandoned.get(run_id)
        if cached is not None and now - cached[0] < ABANDON_CHECK_SECONDS:
            return cached[1]
        answer = await self._abandon_checks.submit(run_id)
        if len(self._abandoned) > ABANDON_CACHE_SIZE:
            self._abandoned.clear()
        self._abandoned[run_id] = (now, answer)
        return answer

    async def _abandoned_many(self, run_ids: Sequence[str]) -> list[bool]:
        query = (
            select(RUNS.c.id, RUNS.c.cancel_requested, WORKSPACES.c.delete_time)
            .select_from(RUNS.join(WORKSPACES, WORKSPACES.c.id == RUNS.c.workspace_id))
            .where(id_in(self.db, RUNS.c.id, set(run_ids)))
        )
        async with self.db.transaction(write=False) as session:
            rows = await (await session.connection()).execute(query)
            found = {
                run_id: bool(canceled) or deleted is not None for run_id, canceled, deleted in rows
            }
        return [found.get(run_id, True) for run_id in run_ids]

    async def load(self, probe_id: str) -> ProbeTask | None:
        """The probe with its run's state and its workspace's brand; None if it is gone."""
        return await self._loads.submit(probe_id)

    async def save(self, result: ProbeResult) -> None:
        """Stores a terminal result (no-op if the probe already ended), then ends its run if
        that was the run's last pending probe."""
        await self._saves.submit(result)
        await self._completion_checks.submit(result.run_id)

    async def _finish_many(self, run_ids: Sequence[str]) -> list[None]:
        await finish_runs(self.db, run_ids)
        return [None] * len(run_ids)

    async def _load_many(self, probe_ids: Sequence[str]) -> list[ProbeTask | None]:
        query = _load_query().where(id_in(self.db, PROBES.c.id, set(probe_ids)))
        async with self.db.transaction(write=False) as session:
            rows = (await (await session.connection()).execute(query)).all()
        tasks = {row.id: _task(row) for row in rows}
        return [tasks.get(probe_id) for probe_id in probe_ids]

    async def _save_many(self, results: Sequence[ProbeResult]) -> list[None]:
        """Writes the results of the probes still pending, and adds the answers among them to
        the visibility rollups, in one transaction.

        The pending probes are locked first (in id order): a duplicate delivery saving the same
        probe concurrently waits, then finds it no longer pending, so an answer is rolled up
        exactly once. Within a batch, the first result of a probe is the one kept.
        """
        now = utcnow()
        first: dict[str, ProbeResult] = {}
        for result in results:
            first.setdefault(result.probe_id, result)
        async with self.db.transaction() as session:
            connection = await session.connection()
            pending = {
                row.id: row
                for row in await connection.execute(
                    _pending_query().where(id_in(self.db, PROBES.c.id, set(first)))
                )
            }
            saved = [result for probe_id, result in first.items() if probe_id in pending]
            if not saved:
                return [None] * len(results)
            params = [
                {
                    "b_id": result.probe_id,
                    "b_status": result.status,
                    "b_attempts": result.attempts,
                    "b_complete_time": now,
                    **{f"b_{k}": v for k, v in (EMPTY_RESULT | result.values).items()},
                }
                for result in saved
            ]
            await connection.execute(_save_statement(), params)
            await rollups.add_answers(
                connection,
                (
                    rollups.answer(
                        pending[result.probe_id].workspace_id,
                        pending[result.probe_id].provider,
                        now,
                        result.values,
                    )
                    for result in saved
                    if result.status == ProbeStatus.SUCCEEDED
                ),
            )
            # Every answer the provider billed, analysed or not.
            await ledger.add_usage(
                connection,
                (
                    ledger.UsageEntry(
                        pending[result.probe_id].workspace_id,
                        pending[result.probe_id].provider,
                        now,
                        int(result.values.get("input_tokens", 0)),
                        int(result.values.get("output_tokens", 0)),
                        int(result.values.get("search_calls", 0)),
                        int(result.values["cost_micros"]),
                    )
                    for result in saved
                    if "cost_micros" in result.values
                ),
            )
            await insight_rollups.add_answers(
                connection,
                (
                    _stored_answer(pending[result.probe_id], now, result)
                    for result in saved
                    if result.status == ProbeStatus.SUCCEEDED
                ),
            )
        return [None] * len(results)


PROBES = table_of(Probe)
RUNS = table_of(Run)
WORKSPACES = table_of(Workspace)
ORGANIZATIONS = table_of(Organization)
PROMPTS = table_of(Prompt)


@functools.cache
def _load_query() -> Select[Any]:
    """A probe with its run's state and its workspace's brand (filtered by the caller)."""
    return select(
        PROBES.c.id,
        PROBES.c.run_id,
        PROBES.c.workspace_id,
        PROBES.c.provider,
        PROBES.c.prompt_text,
        PROBES.c.status,
        RUNS.c.end_time,
        RUNS.c.cancel_requested,
        WORKSPACES.c.delete_time,
        WORKSPACES.c.name,
        WORKSPACES.c.domain,
        WORKSPACES.c.brand_aliases,
        WORKSPACES.c.competitors,
        WORKSPACES.c.default_market,
        WORKSPACES.c.organization_id,
        WORKSPACES.c.monthly_cap_micros.label("workspace_cap"),
        ORGANIZATIONS.c.monthly_cap_micros.label("organization_cap"),
        PROMPTS.c.market,
    ).select_from(
        PROBES.join(RUNS, RUNS.c.id == PROBES.c.run_id)
        .join(WORKSPACES, WORKSPACES.c.id == PROBES.c.workspace_id)
        .join(ORGANIZATIONS, ORGANIZATIONS.c.id == WORKSPACES.c.organization_id)
        # A prompt deleted during its run leaves its probes without a market of their own.
        .outerjoin(PROMPTS, PROMPTS.c.id == PROBES.c.prompt_id)
    )


@functools.cache
def _pending_query() -> Select[Any]:
    """The pending probes among some (filtered by the caller), locked until the transaction
    ends (PostgreSQL; SQLite's write transactions are serial anyway)."""
    return (
        select(
            PROBES.c.id,
            PROBES.c.workspace_id,
            PROBES.c.provider,
            PROBES.c.prompt_id,
            PROBES.c.prompt_text,
        )
        .where(PROBES.c.status == ProbeStatus.PENDING)
        .order_by(PROBES.c.id)
        .with_for_update()
    )


@functools.cache
def _save_statement() -> Update:
    """Writes one result (executed with a list of them) while the probe is still pending."""
    return (
        update(PROBES)
        .where(PROBES.c.id == bindparam("b_id"), PROBES.c.status == ProbeStatus.PENDING)
        .values(
            status=bindparam("b_status"),
            attempts=bindparam("b_attempts"),
            complete_time=bindparam("b_complete_time"),
            **{column: bindparam(f"b_{column}") for column in RESULT_COLUMNS},
        )
    )


def _stored_answer(row: Any, now: datetime, result: ProbeResult) -> insight_rollups.StoredAnswer:
    """The answer a result stores, for the insight rollups (`row`: its pending probe)."""
    return insight_rollups.StoredAnswer(
        id=row.id,
        workspace_id=row.workspace_id,
        provider=row.provider,
        prompt_id=row.prompt_id,
        prompt_text=row.prompt_text,
        complete_time=now,
        values=result.values,
    )


def _task(row: Any) -> ProbeTask:
    competitors = tuple(
        CompetitorSpec(name=str(item.get("name", "")), domain=str(item.get("domain") or ""))
        for item in row.competitors or ()
        if isinstance(item, dict) and item.get("name")
    )
    return ProbeTask(
        id=row.id,
        run_id=row.run_id,
        workspace_id=row.workspace_id,
        provider=row.provider,
        prompt_text=row.prompt_text,
        status=row.status,
        run_ended=row.end_time is not None,
        abandoned=bool(row.cancel_requested) or row.delete_time is not None,
        brand=BrandSpec(
            name=row.name, domain=row.domain or "", aliases=tuple(row.brand_aliases or ())
        ),
        competitors=competitors,
        market=effective_market(row.market or {}, row.default_market or {}),
        organization_id=row.organization_id,
        workspace_cap=row.workspace_cap,
        organization_cap=row.organization_cap,
    )
