"""One probe: ask one provider one prompt, analyse the answer, store it exactly once.

A probe may be delivered twice (at-least-once delivery, in the same or another message): the
result is written only while the probe is still pending, and a finished probe makes no provider
call.

Retry policy of provider calls (the one policy; `service.messages` holds Dramatiq's side):
- A provider failure is retried here and only here. A retryable one (timeout, 429, 5xx) is
  asked again by a delayed probe message carrying the next attempt number (stored in
  `probes.attempts`, so that a re-sent run goes on with it), after the provider's Retry-After
  or an exponential backoff with jitter (`probe_backoff_seconds`, doubling, at most
  `probe_backoff_max_seconds`), until attempt `probe_max_attempts`; then, like any failure
  that is not retryable, it is stored FAILED with a category and HTTP status ("provider error
  (500)"), the provider's message going to the log only. A 429 also stops the whole fleet
  calling that provider for the Retry-After period. An unexpected error around the call is
  stored FAILED ("internal error"): it is never retried.
- Dramatiq's Retries (`MAX_RETRIES`, 1-15 s backoff) retry a message whose handling raised:
  the database was unreachable to load or store the probes. They re-run the same attempt
  number; a probe whose answer was stored meanwhile is not asked again, one whose answer could
  not be stored is (the answer was lost with the failed write). A message out of Dramatiq's
  retries is covered by the stalled-run sweep (`service.outbox`).
- Handing a probe back for the provider budget (below) is not an attempt: no call was made.
 Each call first takes the
provider's budget (`workers.budgets`); a probe that would wait long for it, or whose workspace is
over its fair share, is handed back to the queue with a delay (the same attempt, no provider
call made). Answers are analysed on the worker's analysis thread (`WorkerContext.analysis`), after
the provider's slot is released, so that the event loop keeps serving every other probe; an
answer the analysis refuses (too long, or over `analysis_time_limit_seconds` of CPU) is stored
FAILED with the reason, keeping its text and citations, and counts in no report. Reads and
writes go through `ProbeStore`, which batches them across the probes in flight.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.trace import Span, SpanKind
from sqlalchemy import update

from service import tracing
from service.config import Settings
from service.db.models import Probe
from service.domain.collection.run_lifecycle import (
    CANCELED_REASON,
    ProbeStatus,
    cancel_and_finish,
    finish_runs,
)
from service.messages import probe_message
from workers import metrics
from workers.analysis import AnalysisFailed, analyse
from workers.budgets import MAX_WAIT_SECONDS, defer_seconds
from workers.probe_store import ProbeResult, ProbeTask
from workers.providers import Answer, ProviderAdapter, ProviderError
from workers.providers.base import Location
from workers.providers.urls import host_within, normalize_domain
from workers.spending import Refusal, record_stop

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)

# Dramatiq refuses delays of 7 days or more; no provider asks for anything close.
MAX_RETRY_DELAY_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Deferred:
    """The probe did not get its provider budget: try it again in `seconds`."""

    seconds: float


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
    if task.status != ProbeStatus.PENDING:
        if not task.run_ended:
            # A crash between storing the result and ending the run: finish the job.
            await finish_runs(context.db, [task.run_id])
        return None
    if task.abandoned:
        await cancel_and_finish(context.db, task.run_id)
        return None
    result = await _ask(context, task, attempt)
    if isinstance(result, Deferred):
        metrics.PROBES_DEFERRED.labels(task.provider).inc()
        return result
    if isinstance(result, Answer):
        result = await _analysed(context, task, attempt, result)
    if result is not None:
        result.values.setdefault("market", task.market.stored())
        await context.store.save(result)
        metrics.PROBES_FINISHED.labels(task.provider, result.status).inc()
    return None


async def _ask(
    context: WorkerContext, task: ProbeTask, attempt: int
) -> Answer | ProbeResult | Deferred | None:
    """The provider's answer, or the probe's result when there is none; None when another
    attempt has been scheduled, `Deferred` when the provider's budget sends it back to the
    queue."""
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
) -> Answer | ProbeResult | Deferred | None:
    async with context.in_flight:
        wait = await context.budgets.acquire(task.provider, task.workspace_id, task.prompt_text)
        if wait is not None:
            return Deferred(wait)
        # The wait for a slot may have been long: do not ask for a run canceled meanwhile.
        if await context.store.abandoned(task.run_id):
            return ProbeResult(
                task.id, task.run_id, ProbeStatus.SKIPPED, attempt - 1, {"error": CANCELED_REASON}
            )
        held = await context.spending.hold(task, _reservation(context, task))
        if isinstance(held, Refusal):
            await record_stop(context.db, task.run_id, held.reason)
            return _failed(task, attempt - 1, held.reason)
        metrics.PROBES_IN_FLIGHT.inc()
        started = time.perf_counter()
        answer: Answer | None = None
        try:
            with provider_span(task, attempt) as call:
                try:
                    answer = await adapter.ask(task.prompt_text, _location(task))
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
            cost = answer_cost(context, task, answer) if answer is not None else 0
            await context.spending.settle(held, cost)
    context.budgets.spent(task.provider, answer.text)
    return answer


def _location(task: ProbeTask) -> Location | None:
    """The market the probe is asked from, as adapters take it (None: no market)."""
    market = task.market
    if not market:
        return None
    return Location(market.country, market.region, market.city, market.language)


def _reservation(context: WorkerContext, task: ProbeTask) -> int:
    """What a call is held to before it is made: an answer of the default usage."""
    pricing = context.pricing
    return pricing.table.default_answer_cost(task.provider, pricing.model(task.provider))


def answer_cost(context: WorkerContext, task: ProbeTask, answer: Answer) -> int:
    """An answer's cost in micro-units (the provider's own figure when it gave one)."""
    usage = answer.usage
    return context.pricing.table.cost(
        task.provider,
        answer.model or context.pricing.model(task.provider),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        searches=usage.search_calls,
        reported_micros=usage.cost_micros,
    )


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
    return ProbeResult(task.id, task.run_id, ProbeStatus.FAILED, attempt, {"error": message})


async def _analysed(
    context: WorkerContext, task: ProbeTask, attempt: int, answer: Answer
) -> ProbeResult:
    """The probe's result: the answer and its analysis, made on the analysis thread."""
    job = functools.partial(
        analyse,
        answer.text,
        answer.citations,
        task.brand,
        task.competitors,
        time_limit=context.settings.analysis_time_limit_seconds,
    )
    try:
        analysis = await asyncio.get_running_loop().run_in_executor(context.analysis, job)
    except AnalysisFailed as exc:
        log.warning("probe %s: %s", task.id, exc.reason)
        values = {
            **_answer_values(context, task, answer),
            "error": f"answer not analysed: {exc.reason}",
        }
        return ProbeResult(task.id, task.run_id, ProbeStatus.FAILED, attempt, values)
    values = {
        **_answer_values(context, task, answer),
        "brand_mentioned": analysis.brand_mentioned,
        "brand_rank": analysis.brand_rank or 0,
        "competitors": [{"name": c.name, "rank": c.rank} for c in analysis.competitors],
        "brand_citations": analysis.brand_citations,
        "citation_count": analysis.citation_count,
    }
    return ProbeResult(task.id, task.run_id, ProbeStatus.SUCCEEDED, attempt, values)


def _answer_values(context: WorkerContext, task: ProbeTask, answer: Answer) -> dict[str, object]:
    """What the provider said, and what it cost, as stored whether or not it could be
    analysed."""
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
    return {
        "model": answer.model,
        "text": answer.text,
        "citations": citations,
        "latency_ms": answer.latency_ms,
        "market": task.market.stored(),
        "market_applied": answer.market_applied,
        "input_tokens": answer.usage.input_tokens,
        "output_tokens": answer.usage.output_tokens,
        "search_calls": answer.usage.search_calls,
        "cost_micros": answer_cost(context, task, answer),
        "usage": _reported(answer),
    }


def _reported(answer: Answer) -> dict[str, object]:
    """The provider's own figures beyond tokens and searches, as stored on the answer."""
    reported: dict[str, object] = {}
    if answer.usage.cost_micros is not None:
        reported["provider_cost_micros"] = answer.usage.cost_micros
    if answer.usage.billed:
        reported["billed_units"] = dict(answer.usage.billed)
    return reported


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
            .where(Probe.id == task.id, Probe.status == ProbeStatus.PENDING)
            .values(attempts=attempt, error=exc.summary)
        )
    message = probe_message([task.id], attempt + 1)
    await asyncio.to_thread(context.broker.enqueue, message, delay=round(delay * 1000))
    metrics.PROBE_RETRIES.labels(task.provider).inc()
    log.info("probe %s: %s; attempt %d in %.1fs", task.id, _describe(exc), attempt + 1, delay)
