"""Running the workers: the `beacon worker` process, and everything in-process for `beacon dev`.

A worker is Dramatiq's own `Worker` with the AsyncIO middleware: every actor is a coroutine on
one event loop, and each worker thread waits for one message's coroutine. A probe message
carries several probes (`service.messages.PROBES_PER_MESSAGE`), so `worker_concurrency` provider
calls in flight need only a few dozen threads. There are `THREADS_PER_MESSAGE_SLOT` times as
many as the calls strictly need: a probe leaves its provider slot when the answer arrives but
its message holds the thread until every probe in it is stored, and the spare messages keep
the slots busy meanwhile (a semaphore of `worker_concurrency` caps the calls). The database
reads and writes of the probes are batched (`workers.probe_store.ProbeStore`), which keeps one
process's CPU for the provider calls.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

import dramatiq
from dramatiq import Worker

from service.config import Settings
from service.db.database import Database
from service.messages import PROBES_PER_MESSAGE
from workers import metrics
from workers.actors import worker_broker
from workers.health import Health
from workers.ticker import Ticker

log = logging.getLogger(__name__)

MIN_THREADS = 4
THREADS_PER_MESSAGE_SLOT = 4
# How often an idle consumer polls its queue (ms): also bounds how late a stop is noticed.
WORKER_TIMEOUT_MS = 250
# Consecutive idle observations `drain` requires, against a message between two queues.
QUIET_CHECKS = 3
POLL_SECONDS = 0.005


def build_worker(settings: Settings, broker: dramatiq.Broker, threads: int | None = None) -> Worker:
    """A Dramatiq worker over Beacon's queues of `broker` (a `workers.actors.worker_broker`;
    not started)."""
    # httpx logs every request at INFO: hundreds of lines a second, with URLs that may carry
    # provider parameters. Probe outcomes are counted in the workers' metrics instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return Worker(
        broker,
        worker_threads=threads or worker_threads(settings.worker_concurrency),
        worker_timeout=WORKER_TIMEOUT_MS,
    )


def worker_threads(concurrency: int) -> int:
    """Threads for `concurrency` provider calls in flight (see the module docstring)."""
    return max(MIN_THREADS, THREADS_PER_MESSAGE_SLOT * math.ceil(concurrency / PROBES_PER_MESSAGE))


def run_worker(settings: Settings) -> None:
    """The `beacon worker` process: consumes until SIGTERM/SIGINT, then finishes in-flight
    messages (up to `shutdown_grace_seconds`; the rest go back to the queue) and exits."""
    broker = worker_broker(settings)
    metrics.serve_metrics(settings, "worker", Health(settings, broker))
    if settings.uvloop:
        _use_uvloop()
    worker = build_worker(settings, broker)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker: signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Everything imported so far lives as long as the process: keep the collector from walking
    # it on every full collection (pauses the event loop, delaying every provider call).
    gc.freeze()
    worker.start()
    log.info("worker started: %d threads", worker.worker_threads)
    while not stop.wait(timeout=1.0):
        pass
    worker.stop(timeout=round(settings.shutdown_grace_seconds * 1000))
    broker.close()
    log.info("worker stopped")


def _use_uvloop() -> None:
    """Runs the worker's event loop (created by Dramatiq's AsyncIO middleware) on uvloop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@dataclass
class Embedded:
    """A worker (and optionally a ticker loop) running in background threads of this process."""

    broker: dramatiq.Broker
    worker: Worker
    ticker: Ticker | None = None
    _ticker_thread: threading.Thread | None = None
    _ticker_loop: asyncio.AbstractEventLoop | None = None
    _stopped: bool = field(default=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the ticker, then the worker (finishing in-flight messages within `timeout`)."""
        if self._stopped:
            return
        self._stopped = True
        if self.ticker is not None and self._ticker_loop is not None:
            self._ticker_loop.call_soon_threadsafe(self.ticker.stop)
        if self._ticker_thread is not None:
            self._ticker_thread.join(timeout)
        self.worker.stop(timeout=round(timeout * 1000))

    def drain(self, timeout: float = 30.0) -> None:
        """Blocks until no message is queued, delayed or being processed (in-process broker).

        Raises TimeoutError after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < QUIET_CHECKS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"messages still pending after {timeout:g}s")
            quiet = 0 if self._busy() else quiet + 1
            time.sleep(POLL_SECONDS)

    def _busy(self) -> bool:
        queues = getattr(self.broker, "queues", {})
        if not isinstance(queues, dict):
            raise TypeError("drain needs the in-process broker; poll the database instead")
        if any(queue.unfinished_tasks for queue in queues.values()):
            return True
        if self.worker.work_queue.unfinished_tasks:
            return True
        return any(
            consumer.delay_queue.unfinished_tasks for consumer in self.worker.consumers.values()
        )


def start_embedded(
    settings: Settings,
    *,
    broker: dramatiq.Broker | None = None,
    ticker: bool = True,
    worker_threads: int | None = None,
) -> Embedded:
    """Starts a worker, and a ticker loop unless `ticker=False`, in background threads.

    Used by `beacon dev` and the tests; call `.stop()` when done. `broker` (a
    `workers.actors.worker_broker`, which the caller's API may send to) defaults to a new one
    for `settings` (the in-process one when no broker URL is set): `.broker` is it.
    """
    broker = broker or worker_broker(settings)
    worker = build_worker(settings, broker, worker_threads)
    worker.start()
    embedded = Embedded(broker=broker, worker=worker)
    if ticker:
        started = threading.Event()
        embedded._ticker_thread = threading.Thread(
            target=_ticker_thread, args=(settings, broker, embedded, started), daemon=True
        )
        embedded._ticker_thread.start()
        started.wait(10.0)
    return embedded


def _ticker_thread(
    settings: Settings, broker: dramatiq.Broker, embedded: Embedded, started: threading.Event
) -> None:
    async def main() -> None:
        db = Database(settings.database_url)
        embedded.ticker = Ticker(settings, db, broker)
        embedded._ticker_loop = asyncio.get_running_loop()
        started.set()
        try:
            await embedded.ticker.run()
        finally:
            await db.dispose()

    asyncio.run(main())
