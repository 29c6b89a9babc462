"""Dramatiq actors: thin entry points that hand each message to the collection logic.

Like the servicers, actors only translate: a message's arguments become a call into
`workers.runs` or `workers.probes`, run on the worker's event loop with the process's shared
resources (`workers.context`). Every actor tolerates duplicate delivery.

A probe message carries up to `PROBES_PER_MESSAGE` probes of one run, asked concurrently on the
worker's event loop: with Dramatiq's AsyncIO middleware each message holds a worker thread until
its coroutine ends, so batching keeps hundreds of provider calls in flight with a few dozen
threads, and spreads Dramatiq's per-message cost (fetch, decode, ack) over many probes. Each
probe is still done at most once, whichever message (or redelivery) carries it.
"""

from __future__ import annotations

from collections.abc import Sequence

import dramatiq

from service import tracing

RUN_QUEUE = "beacon-runs"
PROBE_QUEUE = "beacon-probes"
PROCESS_RUN = "process_run"
PROCESS_PROBES = "process_probes"
PROBES_PER_MESSAGE = 10

# Unexpected failures (database down, a bug) are retried by Dramatiq's Retries middleware;
# provider failures are retried by the probe logic itself, which honours Retry-After. The
# backoff (2 s, 4 s, ... at most 15 s) rides out a database outage of about four minutes and
# resumes within 15 s of its end; a message that runs out of retries is sent again by the
# stalled-run sweep (`workers.dispatch.redispatch_stalled_runs`).
MAX_RETRIES = 20
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 15_000
# Within a worker, messages already fetched run lowest priority first: a run's expansion goes
# ahead of the probe messages waiting for a thread, so that a new run (and its workspace's
# claim on a fair share of the provider budgets) does not wait behind another run's backlog.
PRIORITIES = {PROCESS_RUN: 0, PROCESS_PROBES: 10}


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


def declare_actors(broker: dramatiq.Broker) -> None:
    """Declares Beacon's actors on `broker` (once per broker)."""
    for name, queue, fn in (
        (PROCESS_RUN, RUN_QUEUE, process_run),
        (PROCESS_PROBES, PROBE_QUEUE, process_probes),
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


def run_message(run_id: str, options: dict[str, object] | None = None) -> dramatiq.Message[None]:
    """The message asking a worker to expand `run_id`; `options` may carry its trace context
    (`service.tracing.message_options`)."""
    return dramatiq.Message(
        queue_name=RUN_QUEUE,
        actor_name=PROCESS_RUN,
        args=(run_id,),
        kwargs={},
        options=options or {},
    )


def probe_message(probe_ids: Sequence[str], attempt: int = 1) -> dramatiq.Message[None]:
    """The message asking a worker to make attempt number `attempt` of these probes; it
    carries the current trace context (the run's trace) when tracing is on."""
    ids = list(probe_ids)
    args: tuple[list[str]] | tuple[list[str], int] = (ids,) if attempt == 1 else (ids, attempt)
    return dramatiq.Message(
        queue_name=PROBE_QUEUE,
        actor_name=PROCESS_PROBES,
        args=args,
        kwargs={},
        options=tracing.message_options(),
    )


def probe_messages(probe_ids: Sequence[str], attempt: int = 1) -> list[dramatiq.Message[None]]:
    """Messages making attempt `attempt` of these probes, `PROBES_PER_MESSAGE` to a message."""
    return [
        probe_message(probe_ids[start : start + PROBES_PER_MESSAGE], attempt)
        for start in range(0, len(probe_ids), PROBES_PER_MESSAGE)
    ]
