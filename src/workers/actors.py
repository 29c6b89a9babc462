"""Dramatiq actors: thin entry points that hand each message to the collection logic.

Like the servicers, actors only translate: a message's arguments become a call into
`workers.runs` or `workers.probes`, run on the worker's event loop with the process's shared
resources (`workers.context`). Every actor tolerates duplicate delivery.
"""

from __future__ import annotations

import dramatiq

RUN_QUEUE = "beacon-runs"
PROBE_QUEUE = "beacon-probes"
PROCESS_RUN = "process_run"
PROCESS_PROBE = "process_probe"

# Unexpected failures (database down, a bug) are retried by Dramatiq's Retries middleware;
# provider failures are retried by the probe logic itself, which honours Retry-After.
MAX_RETRIES = 8
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 5 * 60_000


async def process_run(run_id: str) -> None:
    """Expands a run into probes and enqueues them."""
    from workers.context import worker_context
    from workers.runs import expand_run

    await expand_run(await worker_context(), run_id)


async def process_probe(probe_id: str, attempt: int = 1) -> None:
    """Asks one provider one prompt (attempt number `attempt`) and stores the analysed answer."""
    from workers.context import worker_context
    from workers.probes import run_probe

    await run_probe(await worker_context(), probe_id, attempt)


def declare_actors(broker: dramatiq.Broker) -> None:
    """Declares Beacon's actors on `broker` (once per broker)."""
    for name, queue, fn in (
        (PROCESS_RUN, RUN_QUEUE, process_run),
        (PROCESS_PROBE, PROBE_QUEUE, process_probe),
    ):
        if name in broker.actors:
            continue
        dramatiq.actor(
            actor_name=name,
            queue_name=queue,
            broker=broker,
            max_retries=MAX_RETRIES,
            min_backoff=MIN_BACKOFF_MS,
            max_backoff=MAX_BACKOFF_MS,
        )(fn)


def run_message(run_id: str) -> dramatiq.Message[None]:
    """The message asking a worker to expand `run_id`."""
    return dramatiq.Message(
        queue_name=RUN_QUEUE, actor_name=PROCESS_RUN, args=(run_id,), kwargs={}, options={}
    )


def probe_message(probe_id: str, attempt: int = 1) -> dramatiq.Message[None]:
    """The message asking a worker to make attempt number `attempt` of `probe_id`."""
    args: tuple[str] | tuple[str, int] = (probe_id,) if attempt == 1 else (probe_id, attempt)
    return dramatiq.Message(
        queue_name=PROBE_QUEUE, actor_name=PROCESS_PROBE, args=args, kwargs={}, options={}
    )
