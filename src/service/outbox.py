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

A Redis that restarts without its data is noticed rather than waited out: `BrokerEpoch` keeps a
mark in Redis that the ticker sets again on every tick (`SET ... NX`); finding gone a mark it
has seen means every message went with it, and `redispatch_open_runs` sends every open run
again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from sqlalchemy import ColumnElement, String, and_, any_, bindparam, select, update
from sqlalchemy.dialects import postgresql

from service import tracing
from service.broker import new_message_ids, ready_backlog, send_messages
from service.clock import utcnow
from service.db.database import Database
from service.db.models import Run
from service.db.sql_dialects import table_of, tune_batch_transaction
from service.db.types import UTCDateTime
from service.domain.collection.run_lifecycle import sent_before, stalled
from service.messages import run_message

log = logging.getLogger(__name__)

RUNS_DISPATCHED = Counter("beacon_runs_dispatched_total", "Run messages handed to the broker.")
RUNS_REDISPATCHED = Counter(
    "beacon_runs_redispatched_total", "Stalled runs sent to the broker again (lost messages)."
)
DISPATCH_ERRORS = Counter("beacon_dispatch_errors_total", "Failed attempts to send run messages.")

# Ids per IN (...) list: well under SQLite's and asyncpg's bind-parameter limits.
ID_CHUNK = 1000
# Ready messages in the broker above which a quiet run is explained by the backlog.
STALL_BACKLOG_LIMIT = 1000


async def dispatch_pending_runs(
    db: Database,
    broker: dramatiq.Broker,
    *,
    run_ids: Sequence[str] | None = None,
    limit: int = 1000,
) -> int:
    """Sends a `process_run` message for each run not yet enqueued; returns how many were sent.

    `run_ids` restricts the sweep to those runs, otherwise up to `limit` pending runs are
    sent. Rows are locked while they are sent (`FOR UPDATE SKIP LOCKED` on PostgreSQL) so
    concurrent dispatchers do not send the same run twice; broker errors are logged and
    swallowed, leaving the runs for the ticker's next sweep.
    """
    if run_ids is not None and not run_ids:
        return 0
    sent = 0
    try:
        if run_ids is None:
            sent = await _dispatch_chunk(db, broker, Run.enqueue_time.is_(None), limit)
        else:
            # `limit` caps the runs looked at.
            ids = list(run_ids[:limit])
            for start in range(0, len(ids), ID_CHUNK):
                sent += await _dispatch_runs(db, broker, ids[start : start + ID_CHUNK])
    except Exception:
        DISPATCH_ERRORS.inc()
        log.exception("dispatching runs failed; the ticker will send them later")
    return sent


@dataclass(slots=True)
class RunDispatcher:
    """What the API sends the runs it wrote with (`service.app.App.dispatcher`): the outbox
    sweep restricted to those runs, on `broker`; without a broker (None) the runs wait in the
    outbox for the ticker."""

    db: Database
    broker: dramatiq.Broker | None

    async def dispatch_runs(self, run_ids: Sequence[str]) -> int:
        if self.broker is None:
            return 0
        return await dispatch_pending_runs(self.db, self.broker, run_ids=run_ids)


async def redispatch_stalled_runs(
    db: Database,
    broker: dramatiq.Broker,
    stall_seconds: float,
    *,
    now: datetime | None = None,
    limit: int = 1000,
) -> int:
    """Sends again up to `limit` open runs idle for `stall_seconds` (see the module docstring);
    returns how many. Broker errors are logged and swallowed, like `dispatch_pending_runs`."""
    if stall_seconds <= 0:
        return 0
    try:
        backlog = await asyncio.to_thread(ready_backlog, broker)
        if backlog is not None and backlog > STALL_BACKLOG_LIMIT:
            return 0
        at = now or utcnow()
        sent = await _dispatch_chunk(db, broker, stalled(at, stall_seconds), limit, at, resent=True)
    except Exception:
        DISPATCH_ERRORS.inc()
        log.exception("re-sending stalled runs failed; trying again at the next sweep")
        return 0
    if sent:
        RUNS_REDISPATCHED.inc(sent)
        log.warning("re-sent %d runs idle for %gs or more", sent, stall_seconds)
    return sent


async def redispatch_open_runs(
    db: Database, broker: dramatiq.Broker, *, now: datetime | None = None, limit: int = 1000
) -> int:
    """Sends again every open run sent before `now` (its messages are gone: the broker lost
    its data), `limit` to a transaction; returns how many. Broker errors are logged and
    swallowed: the stalled-run sweep sends them later."""
    at = now or utcnow()
    sent = 0
    try:
        while True:
            # Re-stamped runs (enqueue_time = at) no longer match: each pass takes new ones.
            chunk = await _dispatch_chunk(db, broker, sent_before(at), limit, at, resent=True)
            sent += chunk
            if chunk < limit:
                break
    except Exception:
        DISPATCH_ERRORS.inc()
        log.exception("re-sending the open runs failed; the stalled-run sweep will send them")
    if sent:
        RUNS_REDISPATCHED.inc(sent)
    return sent


class BrokerEpoch:
    """Notices that the broker lost its data: a mark kept in Redis (`<namespace>:beacon.epoch`)
    that `lost` sets again whenever it is missing. Missing after this ticker has seen it means
    the messages went with it (a Redis restarted without persistence, flushed, or failed over
    to an empty replica). Missing at a ticker's first look says nothing (a new deployment, a
    new namespace): it is only set, and a loss from before is left to the stalled-run sweep.
    Of several tickers, the one whose `SET NX` wins answers True. Other brokers (RabbitMQ keeps
    its messages, the in-process one dies with its process) never lose data this way."""

    KEY = "beacon.epoch"

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self._seen = False

    def lost(self) -> bool:
        """Whether the mark this ticker saw is gone (it is set again); redis errors propagate."""
        if not isinstance(self.broker, RedisBroker):
            return False
        key = f"{self.broker.namespace}:{self.KEY}"
        created = bool(self.broker.client.set(key, utcnow().isoformat(), nx=True))
        seen, self._seen = self._seen, True
        return created and seen


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
    runs = table_of(Run)
    candidates = select(runs.c.id).where(condition).limit(limit)
    if not db.is_sqlite:
        # Another dispatcher holding a run is already sending it: skip it rather than wait.
        candidates = candidates.with_for_update(skip_locked=True, of=runs)
    stamp = (
        update(runs)
        .where(runs.c.id.in_(candidates.scalar_subquery()))
        .values(enqueue_time=now or utcnow())
        .returning(runs.c.id, runs.c.workspace_id)
    )
    return await _stamp_and_send(db, broker, stamp, {}, resent=resent)


async def _dispatch_runs(db: Database, broker: dramatiq.Broker, run_ids: list[str]) -> int:
    """Stamps and sends those of `run_ids` not yet sent (and not being sent by another)."""
    if db.is_sqlite:
        return await _dispatch_chunk(
            db, broker, and_(Run.enqueue_time.is_(None), Run.id.in_(run_ids)), len(run_ids)
        )
    return await _stamp_and_send(db, broker, _stamp_runs(), {"ids": run_ids, "now": utcnow()})


@functools.cache
def _stamp_runs() -> Any:
    """WITH locked AS MATERIALIZED (SELECT id, enqueue_time FROM runs WHERE id = ANY(:ids)
    FOR UPDATE SKIP LOCKED) UPDATE runs ... FROM locked WHERE locked.enqueue_time IS NULL
    (PostgreSQL).

    The runs are found by key, and whether they were sent is looked at once they are locked:
    with `enqueue_time IS NULL` in the scan, the planner may read every unsent run through the
    index on `enqueue_time` (all of them while the broker is down) for each chunk.
    """
    runs = table_of(Run)
    locked = (
        select(runs.c.id, runs.c.enqueue_time)
        .where(runs.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(String))))
        .with_for_update(skip_locked=True)
        .cte("locked")
        .prefix_with("MATERIALIZED")
    )
    return (
        update(runs)
        .where(runs.c.id == locked.c.id, locked.c.enqueue_time.is_(None))
        .values(enqueue_time=bindparam("now", type_=UTCDateTime()))
        .returning(runs.c.id, runs.c.workspace_id)
    )


async def _stamp_and_send(
    db: Database,
    broker: dramatiq.Broker,
    stamp: Any,
    parameters: dict[str, Any],
    *,
    resent: bool = False,
) -> int:
    """Runs `stamp` (an UPDATE of runs returning their id and workspace id), sends the runs it
    stamped, then commits: the rows stay locked while they are sent, and a failed send rolls
    the stamps back."""
    async with db.transaction() as session:
        await tune_batch_transaction(db, session)
        conn = await session.connection()
        runs: Sequence[tuple[str, str]] = (await conn.execute(stamp, parameters)).all()
        if not runs:
            return 0
        with traced_run_messages(runs, resent=resent) as messages:
            # The send blocks on the network: keep it off the event loop.
            await asyncio.to_thread(send_messages, broker, messages)
    RUNS_DISPATCHED.inc(len(runs))
    return len(runs)


@contextlib.contextmanager
def traced_run_messages(
    runs: Sequence[tuple[str, str]], *, resent: bool = False
) -> Iterator[list[dramatiq.Message[None]]]:
    """The run messages of (run id, workspace id) pairs. With tracing on, each run gets a
    PRODUCER span (a child of the current one: the RPC that started the run; a new trace in
    the ticker) covering the send, whose context its message carries."""
    message_ids = new_message_ids(len(runs))
    if not tracing.enabled():
        yield [
            run_message(run_id, message_id=message_id)
            for (run_id, _), message_id in zip(runs, message_ids, strict=True)
        ]
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
            run_message(run_id, tracing.message_options(span), message_id=message_id)
            for (run_id, _), span, message_id in zip(runs, spans, message_ids, strict=True)
        ]
    except BaseException as exc:
        for span in spans:
            tracing.mark_failed(span, type(exc).__name__)
        raise
    finally:
        for span in spans:
            if span is not None:
                span.end()
