"""Prometheus metrics of the ticker and the workers (one registry per process), served with
the process's `/healthz` (`workers.health`)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

from service.config import Settings

if TYPE_CHECKING:
    from workers.health import Health

log = logging.getLogger(__name__)

TICKS = Counter("beacon_ticker_ticks_total", "Ticks completed.")
TICK_SECONDS = Histogram(
    "beacon_ticker_tick_seconds",
    "Duration of one tick: claim due schedules, create runs, dispatch.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCHEDULES_CLAIMED = Counter("beacon_ticker_schedules_claimed_total", "Due schedules advanced.")
RUNS_CREATED = Counter("beacon_ticker_runs_created_total", "Scheduled runs created.")
SLOTS_SKIPPED = Counter(
    "beacon_ticker_slots_skipped_total",
    "Due schedule slots that created no run: the workspace had its maximum of runs open (or,"
    " rarely, the slot had its run already).",
)
# The outbox's counters (runs dispatched, re-sent, failed sends) are `service.outbox`'s.

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


def serve_metrics(
    settings: Settings, process: str, health: Health | None = None
) -> WSGIServer | None:
    """Serves /metrics and /healthz for the `process` ("worker" or "ticker") in a background
    thread; returns the server.

    The address comes from `settings.<process>_metrics_addr` (`host:port`); without one nothing
    is served. `/healthz` answers 200 or 503 naming what `health` (`workers.health`) could not
    reach (always 200 without one); `/metrics` is 404 while `metrics_enabled` is off.
    """
    address = str(getattr(settings, f"{process}_metrics_addr", ""))
    if not address:
        return None
    host, _, port = address.rpartition(":")
    metrics_app = make_wsgi_app() if settings.metrics_enabled else None

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            failed = health.failures() if health is not None else {}
            body = {"status": "failing", "failed": failed} if failed else {"status": "ok"}
            status = "503 Service Unavailable" if failed else "200 OK"
            payload = json.dumps(body).encode()
            start_response(status, [("Content-Type", "application/json")])
            return [payload]
        if metrics_app is not None and path in ("/metrics", "/"):
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    server = make_server(
        host or "0.0.0.0", int(port), app, _ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name=f"{process}-metrics", daemon=True).start()
    log.info("metrics and health on http://%s (/metrics, /healthz)", address)
    return server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow health check never blocks a metrics scrape."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Orchestrators poll every few seconds: no access log."""
