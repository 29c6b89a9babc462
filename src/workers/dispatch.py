"""The run outbox: runs are written first, then handed to the broker and stamped.

A run whose `enqueue_time` is NULL has not been handed to the broker yet. Whoever wrote it (the
API after StartRun/SetSchedule, the ticker after a tick) dispatches it right after committing;
if that process dies in between, the ticker's next sweep sends it. Sending is at least once: a
run may be sent twice (a crash after the send, before the stamp), which the run actor tolerates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import dramatiq
from sqlalchemy import select, update

from service.db.database import Database
from service.db.models import Run
from service.domain.clock import utcnow
from workers import metrics
from workers.actors import run_message
from workers.broker import current_broker, send_messages
from workers.statements import commit_without_waiting_for_disk, id_in

log = logging.getLogger(__name__)

# Ids per IN (...) list: well under SQLite's and asyncpg's bind-parameter limits.
ID_CHUNK = 1000


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
    try:
        if run_ids is None:
            sent = await _dispatch_chunk(db, target, None, limit)
        else:
            for chunk in chunks:
                if sent >= limit:
                    break
                sent += await _dispatch_chunk(db, target, chunk, limit - sent)
    except Exception:
        metrics.DISPATCH_ERRORS.inc()
        log.exception("dispatching runs failed; the ticker will send them later")
    return sent


async def _dispatch_chunk(
    db: Database, broker: dramatiq.Broker, run_ids: Sequence[str] | None, limit: int
) -> int:
    candidates = select(Run.id).where(Run.enqueue_time.is_(None))
    if run_ids is not None:
        candidates = candidates.where(id_in(db, Run.id, run_ids))
    candidates = candidates.limit(limit)
    if not db.is_sqlite:
        # Another dispatcher holding a run is already sending it: skip it rather than wait.
        candidates = candidates.with_for_update(skip_locked=True)
    # Stamp first, send, then commit: the rows stay locked while they are sent, and a failed
    # send rolls the stamps back.
    stamp = (
        update(Run)
        .where(Run.id.in_(candidates.scalar_subquery()))
        .values(enqueue_time=utcnow())
        .returning(Run.id)
        .execution_options(synchronize_session=False)
    )
    async with db.transaction() as session:
        await commit_without_waiting_for_disk(db, session)
        ids = list(await session.scalars(stamp))
        if not ids:
            return 0
        # The send blocks on the network: keep it off the event loop.
        await asyncio.to_thread(send_messages, broker, [run_message(run_id) for run_id in ids])
    metrics.RUNS_DISPATCHED.inc(len(ids))
    return len(ids)
