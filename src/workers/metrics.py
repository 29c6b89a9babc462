"""Prometheus metrics of the ticker and the workers (one registry per process)."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from service.config import Settings

log = logging.getLogger(__name__)

TICKS = Counter("beacon_ticker_ticks_total", "Ticks completed.")
TICK_SECONDS = Histogram(
    "beacon_ticker_tick_seconds",
    "Duration of one tick: claim due schedules, create runs, dispatch.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCHEDULES_CLAIMED = Counter("beacon_ticker_schedules_claimed_total", "Due schedules advanced.")
RUNS_CREATED = Counter("beacon_ticker_runs_created_total", "Scheduled runs created.")
RUNS_DISPATCHED = Counter("beacon_runs_dispatched_total", "Run messages handed to the broker.")
RUNS_REDISPATCHED = Counter(
    "beacon_runs_redispatched_total", "Stalled runs sent to the broker again (lost messages)."
)
DISPATCH_ERRORS = Counter("beacon_dispatch_errors_total", "Failed attempts to send run messages.")

PROBES_CREATED = Counter("beacon_probes_created_total", "Probes created by run expansion.")
PROBES_FINISHED = Counter(
    "beacon_probes_finished_total", "Probes that reached a terminal status.", ["provider", "status"]
)
PROBE_RETRIES = Counter(
    "beacon_probe_retries_total", "Provider calls scheduled for another attempt.", ["provider"]
)
PROBES_DEFERRED = Counter(
    "beacon_probes_deferred_total",
    "Probes handed back to the queue by a provider budget or a workspace's fair share.",
    ["provider"],
)
PROVIDER_COOLDOWNS = Counter(
    "beacon_provider_cooldowns_total",
    "429s that paused the fleet's calls to a provider for their Retry-After.",
    ["provider"],
)
PROVIDER_SECONDS = Histogram(
    "beacon_provider_call_seconds",
    "Duration of provider calls.",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PROBES_IN_FLIGHT = Gauge("beacon_probes_in_flight", "Provider calls in progress.")
RUNS_ENDED = Counter("beacon_runs_ended_total", "Runs that ended, by final status.", ["status"])


def serve_metrics(settings: Settings, process: str) -> None:
    """Serves /metrics for the `process` ("worker" or "ticker") in a background thread.

    The address comes from `settings.<process>_metrics_addr` (`host:port`); without one, or
    with `metrics_enabled` off, nothing is served.
    """
    address = str(getattr(settings, f"{process}_metrics_addr", ""))
    if not address or not settings.metrics_enabled:
        return
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
    log.info("metrics on http://%s/metrics", address)
