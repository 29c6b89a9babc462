"""Dramatiq actors: thin entry points that hand each message to the collection logic.

Like the servicers, actors only translate: a message's arguments become a call into
`workers.runs` or `workers.probes`, run on the worker's event loop with the process's shared
resources (`workers.context`). Every actor tolerates duplicate delivery.

A probe message carries up to `PROBES_PER_MESSAGE` probes of one run, asked concurrently on the
worker's event loop: with Dramatiq's AsyncIO middleware each message holds a worker thread until
its coroutine ends, so batching keeps hundreds of provider calls in flight with a few dozen
threads, and spreads Dramatiq's per-message cost (fetch, decode, ack) over many probes. Each
probe is still done at most once, whichever message (or redelivery) carries it.

`configure_broker` builds the process's broker (`workers.broker`) with the worker middleware
(`workers.context.WorkerResources`) and declares the actors on it: it lives here, above the
broker, the context and the run and probe logic, so that none of those import each other in a
circle. The message schema is `workers.messages`.
"""

from __future__ import annotations

import threading

import dramatiq

from service import tracing
from service.config import Settings
from workers.broker import build_broker
from workers.context import WorkerResources
from workers.messages import (
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
from workers.tracing import MessageTrace


async def process_run(run_id: str) -> None:
    """Expands a run into probes and enqueues them."""
    from workers.context import worker_context
    from workers.runs import expand_run
    from workers.tracing import consuming

    with consuming(PROCESS_RUN, **{tracing.RUN: run_id}):
        await expand_run(await worker_context(), run_id)


async def process_probes(probe_ids: list[str], attempt: int = 1) -> None:
    """Makes attempt number `attempt` of each probe: asks, analyses and stores the answers."""
    from workers.context import worker_context
    from workers.probes import run_probes
    from workers.tracing import consuming

    with consuming(PROCESS_PROBES, **{tracing.PROBES: len(probe_ids), tracing.ATTEMPT: attempt}):
        await run_probes(await worker_context(), probe_ids, attempt)


async def deliver_webhooks(claims: list[list[str]]) -> None:
    """Makes one attempt of each claimed webhook delivery ([delivery id, lease token] each)."""
    from workers.context import worker_context
    from workers.webhooks import deliver_batch

    context = await worker_context()
    await deliver_batch(context.db, context.settings, claims)


def declare_actors(broker: dramatiq.Broker) -> None:
    """Declares Beacon's actors on `broker` (once per broker)."""
    for name, queue, fn in (
        (PROCESS_RUN, RUN_QUEUE, process_run),
        (PROCESS_PROBES, PROBE_QUEUE, process_probes),
        (DELIVER_WEBHOOKS, WEBHOOK_QUEUE, deliver_webhooks),
    ):
        if name in broker.actors:
            continue
        dramatiq.actor(
            actor_name=name,
            queue_name=queue,
            broker=broker,
            priority=PRIORITIES[name],
            max_retries=MAX_RETRIES,
            min_backoff=MIN_BACKOFF_MS,
            max_backoff=MAX_BACKOFF_MS,
        )(fn)


_lock = threading.Lock()
_brokers: dict[str, dramatiq.Broker] = {}
_current: dramatiq.Broker | None = None


def configure_broker(settings: Settings) -> dramatiq.Broker:
    """The broker for `settings.effective_broker_url`, with Beacon's actors declared on it.

    Idempotent: the same URL returns the same broker. The broker also becomes Dramatiq's global
    broker and the one `current_broker` returns.
    """
    global _current
    url = settings.effective_broker_url
    with _lock:
        broker = _brokers.get(url)
        if broker is None:
            try:
                broker = build_broker(url, [WorkerResources(), MessageTrace()])
            except ValueError as exc:
                # The URL may hold a password: name the variable, never echo the value.
                variable = "BEACON_BROKER_URL" if settings.broker_url else "BEACON_REDIS_URL"
                raise ValueError(f"{variable} is not a usable broker URL: {exc}") from None
            declare_actors(broker)
            _brokers[url] = broker
        dramatiq.set_broker(broker)
        _current = broker
        return broker


def current_broker() -> dramatiq.Broker:
    """The broker `configure_broker` set up last; RuntimeError when there is none."""
    if _current is None:
        raise RuntimeError("no broker configured: call workers.actors.configure_broker first")
    return _current


def reset_brokers() -> None:
    """Forgets every configured broker (tests that switch backends call this)."""
    global _current
    with _lock:
        for broker in _brokers.values():
            broker.close()
        _brokers.clear()
        _current = None
