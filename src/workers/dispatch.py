"""The run outbox: runs are written first, then handed to the broker and stamped.

A run whose `enqueue_time` is NULL has not been handed to the broker yet. Whoever wrote it (the
API after StartRun/SetSchedule, the ticker after a tick) dispatches it right after committing;
if that process dies in between, the ticker's next sweep sends it. Sending is at least once: a
run may be sent twice (a crash after the send, before the stamp), which the run actor tolerates.

A message can also vanish after it was sent: a Redis that restarts without its data, a message
that ran out of retries during a long database outage. `redispatch_stalled_runs` covers that
from the database: an open run on which nothing happened for `run_stall_seconds` (no probe
finished, not expanded or re-sent meanwhile) is sent again and re-stamped; the run actor then
re-sends the run's pending probes (see `workers.runs.expand_run`). While the broker holds a
backlog of ready messages the wait is explained and nothing is re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dramatiq
from opentelemetry.trace import SpanKind
from sqlalchemy import ColumnElement, and_, exists, or_, select, update

from service import tracing
from service.clock import utcnow
from service.db.database import Database
from service.db.models import Probe, Run
from workers import metrics
from workers.actors import current_broker
from workers.broker import ready_backlog, send_messages
from workers.messages import run_message
from workers.statements import commit_without_waiting_for_disk, id_in

log = logging.getLogger(__name__)

# Ids per IN (...) list: well under SQLite's and asyncpg's bind-parameter limits.
ID_CHUNK = 1000
# Ready messages in the broker above which a quiet run is explained by the backlog.
STALL_BACKLOG_LIMIT = 1000
# Runs sent longer ago than this are not looked at (bounds the scan of the enqueue_time index;
# a stalled run is re-stamped on each re-send, so it stays inside).
STALL_HORIZON = timedelta(days=2)


async def dispatch_pending_runs(
    db: Database,
    *,
    run_ids: Sequence[str] | None = None,
    limit: int = 1000,
    broker: dramatiq.Broker | None = None,
) -> int:
    """Sends a `process_run` message for each run not yet enqueued; returns how many were sent.

    `run_ids` restricts the sweep to those runs, otherwise up to `limit` pending runs are sent. Rows are locked while they are sent (`FOR UPDATE SKIP LOCKED` on PostgreSQL)
    so concurrent dispatchers do not send the same run twice; broker errors are logged and
    swallowed, leaving the runs for the ticker's next sweep. `broker` defaults to the configured
    one.
    """
    if run_ids is not None and not run_ids:
        return 0
    try:
        target = broker or current_broker()
    except RuntimeError:
        log.warning("no broker configured: runs stay in the outbox for the ticker")
        return 0
    sent = 0
    chunks = (
        [run_ids[i : i + ID_CHUNK] for i in range(0, len(run_ids), ID_CHUNK)] if run_ids else []
    )
    unsent = Run.enqueue_time.is_(None)
    try:
        if run_ids is None:
            sent = await _dispatch_chunk(db, target, unsent, limit)
        else:
            for chunk in chunks:
                if sent >= limit:
                    break
                sent += await _dispatch_chunk(
                    db, target, and_(unsent, id_in(db, Run.id, chunk)), limit - sent
                )
    except Exception:
        metrics.DISPATCH_ERRORS.inc()
        log.exception("dispatching runs failed; the ticker will send them later")
    return sent


@dataclass(slots=True)
class RunDispatcher:
    """What the API sends the runs it wrote with (`service.app.App.dispatcher`): the outbox
    sweep restricted to those runs, on `broker` (default: the broker configured last, if any;
    without one the runs wait in the outbox for the ticker)."""

    db: Database
    broker: dramatiq.Broker | None = None

    async def dispatch_runs(self, run_ids: Sequence[str]) -> int:
        return await dispatch_pending_runs(self.db, run_ids=run_ids, broker=self.broker)


async def redispatch_stalled_runs(
    db: Database,
    stall_seconds: float,
    *,
    now: datetime | None = None,
    limit: int = 1000,
    broker: dramatiq.Broker | None = None,
) -> int:
    """Sends again up to `limit` open runs idle for `stall_seconds` (see the module docstring);
    returns how many. Broker errors are logged and swallowed, like `dispatch_pending_runs`."""
    if stall_seconds <= 0:
        return 0
    try:
        target = broker or current_broker()
        backlog = await asyncio.to_thread(ready_backlog, target)
        if backlog is not None and backlog > STALL_BACKLOG_LIMIT:
            return 0
        at = now or utcnow()
        sent = await _dispatch_chunk(db, target, stalled(at, stall_seconds), limit, at, resent=True)
    except Exception:
        metrics.DISPATCH_ERRORS.inc()
        log.exception("re-sending stalled runs failed; trying again at the next sweep")
        return 0
    if sent:
        metrics.RUNS_REDISPATCHED.inc(sent)
        log.warning("re-sent %d runs idle for %gs or more", sent, stall_seconds)
    return sent


def stalled(now: datetime, stall_seconds: float) -> ColumnElement[bool]:
    """Open runs sent, started and last answered (any probe) before `now - stall_seconds`."""
    cutoff = now - timedelta(seconds=stall_seconds)
    answered = exists().where(Probe.run_id == Run.id, Probe.complete_time >= cutoff)
    return and_(
        Run.enqueue_time < cutoff,
        Run.enqueue_time >= now - STALL_HORIZON,
        Run.end_time.is_(None),
        or_(Run.start_time.is_(None), Run.start_time < cutoff),
        ~answered,
    )


async def _dispatch_chunk(
    db: Database,
    broker: dramatiq.Broker,
    condition: ColumnElement[bool],
    limit: int,
    now: datetime | None = None,
    *,
    resent: bool = False,
) -> int:
    """Stamps (with `now`, default the current time) and sends up to `limit` runs matching
    `condition`; `resent`: they were sent before (stalled runs)."""
    candidates = select(Run.id).where(condition).limit(limit)
    if not db.is_sqlite:
        # Another dispatcher holding a run is already sending it: skip it rather than wait.
        candidates = candidates.with_for_update(skip_locked=True, of=Run)
    # Stamp first, send, then commit: the rows stay locked while they are sent, and a failed
    # send rolls the stamps back.
    stamp = (
        update(Run)
        .where(Run.id.in_(candidates.scalar_subquery()))
        .values(enqueue_time=now or utcnow())
        .returning(Run.id, Run.workspace_id)
        .execution_options(synchronize_session=False)
    )
    async with db.transaction() as session:
        await commit_without_waiting_for_disk(db, session)
        runs = [(run_id, workspace_id) for run_id, workspace_id in await session.execute(stamp)]
        if not runs:
            return 0
        with traced_run_messages(runs, resent=resent) as messages:
            # The send blocks on the network: keep it off the event loop.
            await asyncio.to_thread(send_messages, broker, messages)
    metrics.RUNS_DISPATCHED.inc(len(runs))
    return len(runs)


@contextlib.contextmanager
def traced_run_messages(
    runs: Sequence[tuple[str, str]], *, resent: bool = False
) -> Iterator[list[dramatiq.Message[None]]]:
    """The run messages of (run id, workspace id) pairs. With tracing on, each run gets a
    PRODUCER span (a child of the current one: the RPC that started the run; a new trace in
    the ticker) covering the send, whose context its message carries."""
    if not tracing.enabled():
        yield [run_message(run_id) for run_id, _ in runs]
        return
    spans = [
        tracing.start_span(
            "beacon.run dispatch",
            kind=SpanKind.PRODUCER,
            attributes={
                tracing.RUN: run_id,
                tracing.WORKSPACE: workspace_id,
                "messaging.system": "dramatiq",
                "beacon.run.resent": resent,
            },
        )
        for run_id, workspace_id in runs
    ]
    try:
        yield [
            run_message(run_id, tracing.message_options(span))
            for (run_id, _), span in zip(runs, spans, strict=True)
        ]
    except BaseException as exc:
        for span in spans:
            tracing.mark_failed(span, type(exc).__name__)
        raise
    finally:
        for span in spans:
            if span is not None:
                span.end()
