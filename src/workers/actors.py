"""Dramatiq actors: thin entry points that hand each message to the collection logic.

Like the servicers, actors only translate: a message's arguments become a call into
`workers.runs` or `workers.probes`, run on the worker's event loop with the process's shared
resources (`workers.context`). Every actor tolerates duplicate delivery.

A probe message carries up to `PROBES_PER_MESSAGE` probes of one run, asked concurrently on the
worker's event loop: with Dramatiq's AsyncIO middleware each message holds a worker thread until
its coroutine ends, so batching keeps hundreds of provider calls in flight with a few dozen
threads, and spreads Dramatiq's per-message cost (fetch, decode, ack) over many probes. Each
probe is still done at most once, whichever message (or redelivery) carries it.

`worker_broker` builds a worker's broker (`service.broker`) with the worker middleware, and
the one `workers.context.WorkerResources` its actors reach their resources through, and
declares the actors on it: it lives here, above the context and the run and probe logic, so
that none of those import each other in a circle. The broker is passed on explicitly (to the
worker, the ticker, the API of `beacon dev`); nothing is registered globally. The message
schema is `service.messages`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
from dramatiq.middleware import AsyncIO

from service import tracing
from service.broker import broker_of
from service.config import Settings
from service.messages import (
    DELIVER_WEBHOOKS,
    MAX_BACKOFF_MS,
    MAX_RETRIES,
    MIN_BACKOFF_MS,
    PRIORITIES,
    PROBE_QUEUE,
    PROCESS_PROBES,
    PROCESS_RUN,
    RUN_QUEUE,
    WEBHOOK_QUEUE,
)
from workers.context import WorkerHooks, WorkerResources
from workers.probes import run_probes
from workers.runs import expand_run
from workers.tracing import MessageTrace, consuming
from workers.webhooks import deliver_batch


def actors_of(resources: WorkerResources) -> dict[str, Callable[..., Awaitable[None]]]:
    """The actor functions, by actor name, bound to `resources`."""

    async def process_run(run_id: str) -> None:
        """Expands a run into probes and enqueues them."""
        with consuming(PROCESS_RUN, **{tracing.RUN: run_id}):
            await expand_run(await resources.context(), run_id)

    async def process_probes(probe_ids: list[str], attempt: int = 1) -> None:
        """Makes attempt number `attempt` of each probe: asks, analyses and stores the answers."""
        attributes: dict[str, Any] = {tracing.PROBES: len(probe_ids), tracing.ATTEMPT: attempt}
        with consuming(PROCESS_PROBES, **attributes):
            await run_probes(await resources.context(), probe_ids, attempt)

    async def deliver_webhooks(claims: list[list[str]]) -> None:
        """Makes one attempt of each claimed webhook delivery ([delivery id, lease token]
        each)."""
        context = await resources.context()
        await deliver_batch(context.db, context.settings, claims)

    return {
        PROCESS_RUN: process_run,
        PROCESS_PROBES: process_probes,
        DELIVER_WEBHOOKS: deliver_webhooks,
    }


def declare_actors(broker: dramatiq.Broker, resources: WorkerResources) -> None:
    """Declares Beacon's actors on `broker`, bound to `resources`."""
    queues = {PROCESS_RUN: RUN_QUEUE, PROCESS_PROBES: PROBE_QUEUE, DELIVER_WEBHOOKS: WEBHOOK_QUEUE}
    for name, fn in actors_of(resources).items():
        dramatiq.actor(
            actor_name=name,
            queue_name=queues[name],
            broker=broker,
            priority=PRIORITIES[name],
            max_retries=MAX_RETRIES,
            min_backoff=MIN_BACKOFF_MS,
            max_backoff=MAX_BACKOFF_MS,
        )(fn)


def worker_broker(settings: Settings) -> dramatiq.Broker:
    """A new broker for `settings.effective_broker_url` with Beacon's actors declared on it,
    bound to a new `WorkerResources` of `settings` (ValueError naming the variable for an
    unusable URL). Each call builds a new one: share it by passing it on."""
    broker = broker_of(settings, [MessageTrace()])
    resources = WorkerResources(settings, broker)
    # After AsyncIO: it must see the event loop thread started, and stop before it.
    broker.add_middleware(WorkerHooks(resources), after=AsyncIO)
    declare_actors(broker, resources)
    return broker
