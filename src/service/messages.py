"""The message schema shared by the API's dispatcher, the ticker and the workers.

Queue and actor names, the retry and priority settings the actors are declared with, and the
builders of the two messages (`process_run`, `process_probes`). A leaf: of Beacon it imports
only `service.tracing` (a message carries its trace context; tracing is a leaf too), so the
actors, the run and probe logic, the broker and the dispatcher all depend on it and not on
each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import dramatiq
from dramatiq.message import generate_unique_id

from service import tracing

RUN_QUEUE = "beacon-runs"
PROBE_QUEUE = "beacon-probes"
PROCESS_RUN = "process_run"
PROCESS_PROBES = "process_probes"
PROBES_PER_MESSAGE = 10
WEBHOOK_QUEUE = "beacon-webhooks"
DELIVER_WEBHOOKS = "deliver_webhooks"
# Claimed deliveries per message, attempted concurrently by one worker thread's coroutine.
DELIVERIES_PER_MESSAGE = 20

# Dramatiq's Retries middleware retries a message whose handling raised (the database down);
# provider failures are never retried by it but by the probe logic, with its own attempt
# counter (the retry policy: `workers.probes`). The backoff (2 s, 4 s, ... at most 15 s)
# rides out a database outage of about four minutes and resumes within 15 s of its end; a
# message that runs out of retries is sent again by the stalled-run sweep
# (`service.outbox.redispatch_stalled_runs`).
MAX_RETRIES = 20
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 15_000
# Within a worker, messages already fetched run lowest priority first: a run's expansion goes
# ahead of the probe messages waiting for a thread, so that a new run (and its workspace's
# claim on a fair share of the provider budgets) does not wait behind another run's backlog.
PRIORITIES = {PROCESS_RUN: 0, PROCESS_PROBES: 10, DELIVER_WEBHOOKS: 5}


def run_message(
    run_id: str, options: dict[str, object] | None = None, *, message_id: str | None = None
) -> dramatiq.Message[None]:
    """The message asking a worker to expand `run_id`; `options` may carry its trace context
    (`service.tracing.message_options`); `message_id` defaults to a new random one."""
    return dramatiq.Message(
        queue_name=RUN_QUEUE,
        actor_name=PROCESS_RUN,
        args=(run_id,),
        kwargs={},
        options=options or {},
        message_id=message_id or generate_unique_id(),
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


def webhook_messages(claims: Sequence[tuple[str, str]]) -> list[dramatiq.Message[None]]:
    """Messages asking a worker to attempt these claimed deliveries ((id, lease token) each),
    `DELIVERIES_PER_MESSAGE` to a message. A lost message loses nothing: the claim's lease
    runs out and the next sweep claims the delivery again."""
    return [
        dramatiq.Message(
            queue_name=WEBHOOK_QUEUE,
            actor_name=DELIVER_WEBHOOKS,
            args=([list(claim) for claim in claims[start : start + DELIVERIES_PER_MESSAGE]],),
            kwargs={},
            options={},
        )
        for start in range(0, len(claims), DELIVERIES_PER_MESSAGE)
    ]
