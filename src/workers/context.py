"""What one worker process shares between its messages.

One database engine, one HTTP client (a keep-alive pool sized to the worker's concurrency), one
adapter and one concurrency limit per provider, the provider budgets the fleet shares
(`workers.budgets`), the batchers that coalesce probe reads and writes, and the one thread that
analyses answers (CPU work: a second thread would only take turns with it, and with the event
loop, for the GIL). They belong to the event loop that Dramatiq's AsyncIO middleware runs, so
they are built lazily on that loop by the first message and closed when the worker shuts down.

`WorkerResources` is the one object the actors reach them through: built with the worker's
broker (`workers.actors.worker_broker`), it hands each event loop its `WorkerContext`; its
`WorkerHooks` middleware closes them at worker shutdown. Nothing is configured globally.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dramatiq
import httpx
import redis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from service.config import PROVIDERS, Settings
from service.db.database import Database
from service.domain.money.estimates import Pricing
from workers.budgets import ProviderBudgets
from workers.http import build_client
from workers.probe_store import ProbeStore
from workers.providers import ProviderAdapter, ProviderConfig, build_adapter
from workers.spending import SpendingGuard

log = logging.getLogger(__name__)

# How often a worker thread waiting for its coroutine checks for interrupts (Dramatiq: 0.1 s).
INTERRUPT_CHECK_SECONDS = 1.0
# Connections kept beyond the worker's concurrency, for retries racing a closing connection.
POOL_HEADROOM = 8
# How long shutdown waits for each consumer thread to stop fetching.
CONSUMER_JOIN_SECONDS = 2.0


@dataclass(slots=True)
class WorkerContext:
    """The resources a worker's actors use; see the module docstring."""

    settings: Settings
    db: Database
    broker: dramatiq.Broker
    http: httpx.AsyncClient
    adapters: dict[str, ProviderAdapter]
    # Provider calls in flight: at most `worker_concurrency` in all, `provider_concurrency` each.
    in_flight: asyncio.Semaphore
    limits: dict[str, asyncio.Semaphore]
    budgets: ProviderBudgets
    store: ProbeStore
    # Answer analysis runs here, off the event loop (`workers.probes`).
    analysis: ThreadPoolExecutor
    # What answers cost, and the monthly caps held call by call (`workers.spending`).
    pricing: Pricing
    spending: SpendingGuard

    @classmethod
    def create(
        cls, settings: Settings, broker: dramatiq.Broker, *, db: Database | None = None
    ) -> WorkerContext:
        """Builds the context on the running event loop; `db` defaults to a new engine."""
        http = build_client(
            max_connections=settings.worker_concurrency + POOL_HEADROOM,
            timeout=settings.provider_timeout_seconds,
        )
        database = db or Database(settings.database_url)
        adapters = {
            name: build_adapter(config, http) for name, config in provider_configs(settings).items()
        }
        return cls(
            settings=settings,
            db=database,
            broker=broker,
            http=http,
            adapters=adapters,
            in_flight=asyncio.Semaphore(settings.worker_concurrency),
            limits={name: asyncio.Semaphore(settings.provider_concurrency) for name in PROVIDERS},
            budgets=ProviderBudgets.from_settings(settings),
            store=ProbeStore(database),
            analysis=ThreadPoolExecutor(max_workers=1, thread_name_prefix="beacon-analysis"),
            pricing=Pricing.from_settings(settings),
            spending=SpendingGuard.from_settings(settings, database),
        )

    async def close(self, *, dispose_db: bool = True) -> None:
        # An analysis under way ends within its time limit; none waiting will be needed.
        self.analysis.shutdown(wait=False, cancel_futures=True)
        await self.http.aclose()
        await self.budgets.close()
        await self.spending.close()
        if dispose_db:
            await self.db.dispose()


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    """How to reach each provider that has an API key configured."""
    return {
        name: ProviderConfig(
            name=name,
            api_key=provider.api_key,
            base_url=provider.base_url,
            model=provider.model,
            timeout=settings.provider_timeout_seconds,
            api=provider.api,
        )
        for name in sorted(settings.configured_providers())
        for provider in [settings.provider(name)]
    }


class WorkerResources:
    """What the actors of one broker use: the settings and broker they were built with, and
    the `WorkerContext` of each event loop, built on its first message."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker) -> None:
        self.settings = settings
        self.broker = broker
        self._contexts: dict[asyncio.AbstractEventLoop, WorkerContext] = {}

    async def context(self) -> WorkerContext:
        """The context of the running event loop, built on first use."""
        loop = asyncio.get_running_loop()
        context = self._contexts.get(loop)
        if context is None:
            context = WorkerContext.create(self.settings, self.broker)
            self._contexts[loop] = context
        return context

    async def close(self) -> None:
        """Closes the running loop's context, if it has one."""
        context = self._contexts.pop(asyncio.get_running_loop(), None)
        if context is not None:
            await context.close()


class WorkerHooks(Middleware):
    """Tunes the AsyncIO middleware's event loop thread once it has started. At worker
    shutdown: hands back the messages still held, then closes the worker's context
    on its event loop before the AsyncIO middleware stops it.

    Dramatiq's `Worker.stop` waits up to its timeout (the grace period) for the messages being
    processed; those still running afterwards, and those prefetched but never started, would
    otherwise wait for the broker to notice the dead worker (a minute on Redis). They go back to
    their queues at once instead, and the context stays open under them (the process is about
    to exit): closing it would fail their provider calls and store those failures.

    Declared after `AsyncIO`: `before_*` hooks run in order and `after_*` hooks in reverse
    order, so this one sees the loop thread started and stops first.
    """

    def __init__(self, resources: WorkerResources) -> None:
        self.resources = resources

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        thread = get_event_loop_thread()
        if thread is not None:
            # Each worker thread waits for its message's coroutine in a loop that wakes up this
            # often to notice interrupts. Dramatiq's 0.1 s cost 8,000 wake-ups (and GIL
            # handovers) a second with 800 threads holding 2,000 calls in flight.
            thread.interrupt_check_ival = INTERRUPT_CHECK_SECONDS

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        for consumer in getattr(worker, "consumers", {}).values():
            consumer.join(CONSUMER_JOIN_SECONDS)  # no fetch may race the hand-back
        handed_back = hand_back(broker)
        if handed_back:
            log.warning("worker: handed %d unfinished messages back to the broker", handed_back)
        if any(thread.is_alive() for thread in getattr(worker, "workers", ())):
            return  # messages still running past the grace period: leave their resources be
        thread = get_event_loop_thread()
        if thread is None:
            return
        try:
            thread.run_coroutine(self.resources.close())
        except Exception:
            log.exception("closing the worker's resources failed")


def hand_back(broker: dramatiq.Broker) -> int:
    """Puts every message this process fetched and has not acknowledged back on its queue
    (Redis; RabbitMQ does so itself when the channel closes); returns how many."""
    if not isinstance(broker, RedisBroker):
        return 0
    count = 0
    try:
        for queue in broker.get_declared_queues() | broker.get_declared_delay_queues():
            key = f"{broker.namespace}:__acks__.{broker.broker_id}.{queue}"
            members = broker.client.smembers(key)
            held = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
            if held:
                broker.do_requeue(queue, *held)
                count += len(held)
    except redis.RedisError:
        log.exception("handing messages back failed: the broker requeues them after the timeout")
    return count
