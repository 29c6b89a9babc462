"""One probe: ask one provider one prompt, analyse the answer, store it exactly once.

A probe may be delivered twice (at-least-once delivery, in the same or another message): the
result is written only while the probe is still pending, and a finished probe makes no provider
call. Retryable
provider failures (timeouts, 429, 5xx) are retried by a delayed message carrying the next attempt
number, after the provider's Retry-After or an exponential backoff, up to
`probe_max_attempts`; other failures are stored as a category and HTTP status
("provider error (500)"), the provider's message going to the log only. A 429 also stops
the whole fleet calling that provider for the Retry-After period. Each call first takes the
provider's budget (`workers.budgets`); a probe that would wait long for it, or whose workspace is
over its fair share, is handed back to the queue with a delay (the same attempt, no provider
call made). Reads and writes go through `ProbeStore`, which batches them across the probes in
flight.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, SpanKind
from sqlalchemy import Select, Update, bindparam, select, update

from service import tracing
from service.config import Settings
from service.db.database import Database
from service.db.models import Probe, Run, Workspace
from service.domain import rollups
from service.domain.clock import utcnow
from workers import metrics
from workers.actors import probe_message
from workers.analysis import BrandSpec, CompetitorSpec, analyse
from workers.batching import Batcher
from workers.budgets import MAX_WAIT_SECONDS, defer_seconds
from workers.providers import Answer, ProviderAdapter, ProviderError
from workers.providers.urls import host_within, normalize_domain
from workers.runs import (
    CANCELED_REASON,
    PENDING,
    PROBE_FAILED,
    PROBE_SUCCEEDED,
    SKIPPED,
    finish_runs,
    skip_remaining_probes,
)
from workers.statements import id_in, table_of

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)

# How stale a run's "canceled" flag may be when a probe is about to be asked.
ABANDON_CHECK_SECONDS = 1.0
ABANDON_CACHE_SIZE = 10_000
# Dramatiq refuses delays of 7 days or more; no provider asks for anything close.
MAX_RETRY_DELAY_SECONDS = 24 * 3600.0


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


@dataclass(frozen=True, slots=True)
class Deferred:
    """The probe did not get its provider budget: try it again in `seconds`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A probe's terminal outcome, written only if the probe is still pending."""

    probe_id: str
    run_id: str
    status: str
    attempts: int
    values: dict[str, Any] = field(default_factory=dict)


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
                    if result.status == PROBE_SUCCEEDED
                ),
            )
        return [None] * len(results)


PROBES = table_of(Probe)
RUNS = table_of(Run)
WORKSPACES = table_of(Workspace)


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
    ).select_from(
        PROBES.join(RUNS, RUNS.c.id == PROBES.c.run_id).join(
            WORKSPACES, WORKSPACES.c.id == PROBES.c.workspace_id
        )
    )


@functools.cache
def _pending_query() -> Select[Any]:
    """The pending probes among some (filtered by the caller), locked until the transaction
    ends (PostgreSQL; SQLite's write transactions are serial anyway)."""
    return (
        select(PROBES.c.id, PROBES.c.workspace_id, PROBES.c.provider)
        .where(PROBES.c.status == PENDING)
        .order_by(PROBES.c.id)
        .with_for_update()
    )


@functools.cache
def _save_statement() -> Update:
    """Writes one result (executed with a list of them) while the probe is still pending."""
    return (
        update(PROBES)
        .where(PROBES.c.id == bindparam("b_id"), PROBES.c.status == PENDING)
        .values(
            status=bindparam("b_status"),
            attempts=bindparam("b_attempts"),
            complete_time=bindparam("b_complete_time"),
            **{column: bindparam(f"b_{column}") for column in RESULT_COLUMNS},
        )
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
    )


async def run_probes(context: WorkerContext, probe_ids: Sequence[str], attempt: int = 1) -> None:
    """Runs attempt number `attempt` of each probe, concurrently.

    Every probe is tried even when another fails; the first failure (the database is down,
    say) is then raised so that the message is delivered again: finished probes skip. Probes
    that did not get their provider budget go back to the queue together, in one message.
    """
    outcomes = await asyncio.gather(
        *(run_probe(context, probe_id, attempt) for probe_id in probe_ids),
        return_exceptions=True,
    )
    deferred = [
        (probe_id, outcome)
        for probe_id, outcome in zip(probe_ids, outcomes, strict=True)
        if isinstance(outcome, Deferred)
    ]
    if deferred:
        message = probe_message([probe_id for probe_id, _ in deferred], attempt)
        delay = max(outcome.seconds for _, outcome in deferred)
        await asyncio.to_thread(context.broker.enqueue, message, delay=round(delay * 1000))
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def run_probe(context: WorkerContext, probe_id: str, attempt: int = 1) -> Deferred | None:
    """Runs attempt number `attempt` of one probe (see the module docstring); a `Deferred`
    when it is to be tried again later without having been asked."""
    task = await context.store.load(probe_id)
    if task is None:
        log.info("probe %s no longer exists", probe_id)
        return None
    if task.status != PENDING:
        if not task.run_ended:
            # A crash between storing the result and ending the run: finish the job.
            await finish_runs(context.db, [task.run_id])
        return None
    if task.abandoned:
        await skip_remaining_probes(context.db, task.run_id)
        await finish_runs(context.db, [task.run_id])
        return None
    result = await _ask(context, task, attempt)
    if isinstance(result, Deferred):
        metrics.PROBES_DEFERRED.labels(task.provider).inc()
        return result
    if result is not None:
        await context.store.save(result)
        metrics.PROBES_FINISHED.labels(task.provider, result.status).inc()
    return None


async def _ask(
    context: WorkerContext, task: ProbeTask, attempt: int
) -> ProbeResult | Deferred | None:
    """The probe's result; None when another attempt has been scheduled, `Deferred` when the
    provider's budget sends it back to the queue."""
    adapter = context.adapters.get(task.provider)
    if adapter is None:
        message = (
            f"no API key configured for {task.provider} "
            f"(BEACON_{task.provider.upper()}_API_KEY on the workers)"
        )
        return _failed(task, attempt, message)
    slot = context.limits[task.provider]
    if context.budgets.fair(task.provider):
        # A budgeted provider's probes do not hold their thread long, waiting for a slot
        # either (see workers.budgets).
        try:
            await asyncio.wait_for(slot.acquire(), MAX_WAIT_SECONDS)
        except TimeoutError:
            return Deferred(defer_seconds())
    else:
        await slot.acquire()
    try:
        return await _ask_in_slot(context, task, attempt, adapter)
    finally:
        slot.release()


async def _ask_in_slot(
    context: WorkerContext, task: ProbeTask, attempt: int, adapter: ProviderAdapter
) -> ProbeResult | Deferred | None:
    async with context.in_flight:
        wait = await context.budgets.acquire(task.provider, task.workspace_id, task.prompt_text)
        if wait is not None:
            return Deferred(wait)
        # The wait for a slot may have been long: do not ask for a run canceled meanwhile.
        if await context.store.abandoned(task.run_id):
            return ProbeResult(
                task.id, task.run_id, SKIPPED, attempt - 1, {"error": CANCELED_REASON}
            )
        metrics.PROBES_IN_FLIGHT.inc()
        started = time.perf_counter()
        try:
            with provider_span(task, attempt) as call:
                try:
                    answer = await adapter.ask(task.prompt_text)
                except ProviderError as exc:
                    _failed_call(call, exc)
                    raise
        except ProviderError as exc:
            if exc.status == 429 and exc.retryable:
                seconds = retry_delay(context.settings, attempt, exc.retry_after)
                await context.budgets.throttled(task.provider, seconds)
                metrics.PROVIDER_COOLDOWNS.labels(task.provider).inc()
            if exc.retryable and attempt < context.settings.probe_max_attempts:
                await _retry_later(context, task, attempt, exc)
                return None
            # The provider's own words (and our base URL's host) stay in the log: tenants
            # see the category and status only.
            log.warning("probe %s failed after %d attempt(s): %s", task.id, attempt, _describe(exc))
            return _failed(task, attempt, exc.summary)
        except Exception as exc:
            # A defect, not the provider: record it so that the run still ends.
            log.exception("probe %s: unexpected error from the %s adapter", task.id, task.provider)
            return _failed(task, attempt, f"internal error: {type(exc).__name__}")
        finally:
            metrics.PROBES_IN_FLIGHT.dec()
            metrics.PROVIDER_SECONDS.labels(task.provider).observe(time.perf_counter() - started)
    context.budgets.spent(task.provider, answer.text)
    return _succeeded(task, attempt, answer)


def provider_span(task: ProbeTask, attempt: int) -> AbstractContextManager[Span | None]:
    """The span of one provider call: ids and the provider only, never the prompt."""
    return tracing.span(
        f"beacon.provider {task.provider}",
        kind=SpanKind.CLIENT,
        attributes={
            tracing.PROVIDER: task.provider,
            tracing.RUN: task.run_id,
            tracing.WORKSPACE: task.workspace_id,
            tracing.PROBE: task.id,
            tracing.ATTEMPT: attempt,
        },
    )


def _failed_call(call: Span | None, exc: ProviderError) -> None:
    """Marks a provider call's span failed with the failure's kind and HTTP status (the
    provider's message may quote the prompt: it is not recorded)."""
    if call is None:
        return
    if exc.status is not None:
        call.set_attribute("http.response.status_code", exc.status)
    call.set_attribute("beacon.provider.retryable", exc.retryable)
    tracing.mark_failed(call, exc.kind)


def _describe(exc: ProviderError) -> str:
    """The full text of a failure, for the worker log only."""
    return f"{exc} [{exc.kind}]"


def _failed(task: ProbeTask, attempt: int, message: str) -> ProbeResult:
    return ProbeResult(task.id, task.run_id, PROBE_FAILED, attempt, {"error": message})


def _succeeded(task: ProbeTask, attempt: int, answer: Answer) -> ProbeResult:
    analysis = analyse(answer.text, answer.citations, task.brand, task.competitors)
    brand_domain = normalize_domain(task.brand.domain)
    citations = [
        {
            "url": citation.url,
            "title": citation.title,
            "domain": citation.domain,
            "brand": host_within(citation.domain, brand_domain),
        }
        for citation in answer.citations
    ]
    values = {
        "model": answer.model,
        "text": answer.text,
        "citations": citations,
        "brand_mentioned": analysis.brand_mentioned,
        "brand_rank": analysis.brand_rank or 0,
        "competitors": [{"name": c.name, "rank": c.rank} for c in analysis.competitors],
        "brand_citations": analysis.brand_citations,
        "citation_count": analysis.citation_count,
        "latency_ms": answer.latency_ms,
    }
    return ProbeResult(task.id, task.run_id, PROBE_SUCCEEDED, attempt, values)


def retry_delay(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """Seconds before attempt `attempt + 1`: the provider's Retry-After when it gave one,
    otherwise exponential backoff with jitter, capped at `probe_backoff_max_seconds`."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_DELAY_SECONDS)
    backoff = settings.probe_backoff_seconds * 2.0 ** (attempt - 1)
    return min(backoff, settings.probe_backoff_max_seconds) * random.uniform(0.5, 1.0)


async def _retry_later(
    context: WorkerContext, task: ProbeTask, attempt: int, exc: ProviderError
) -> None:
    delay = retry_delay(context.settings, attempt, exc.retry_after)
    async with context.db.transaction() as session:
        # Shown on the pending response until it ends: how often it was tried, and why not yet.
        await session.execute(
            update(Probe)
            .where(Probe.id == task.id, Probe.status == PENDING)
            .values(attempts=attempt, error=exc.summary)
        )
    message = probe_message([task.id], attempt + 1)
    await asyncio.to_thread(context.broker.enqueue, message, delay=round(delay * 1000))
    metrics.PROBE_RETRIES.labels(task.provider).inc()
    log.info("probe %s: %s; attempt %d in %.1fs", task.id, _describe(exc), attempt + 1, delay)
