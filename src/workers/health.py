"""The health of a worker or ticker process: can it reach its broker and its database?

`/healthz` on the process's metrics address (BEACON_WORKER_METRICS_ADDR,
BEACON_TICKER_METRICS_ADDR; `workers.metrics.serve_metrics`) answers 200 `{"status": "ok"}`, or
503 `{"status": "failing", "failed": {"broker": "...", "database": "..."}}` naming what it could
not reach. Checks are cheap and cached: at most one round of them per `CACHE_SECONDS` whatever
the orchestrator's polling rate, each bounded by `CHECK_TIMEOUT_SECONDS` (a broker or database
that hangs fails the check rather than the probe). The broker is pinged on a connection of its
own (Redis PING; a RabbitMQ connection opened and closed), the database with `SELECT 1` on an
engine of its own, on an event loop thread of its own: the worker's pools are left to the work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable

import dramatiq
import pika
import redis
from dramatiq.brokers.redis import RedisBroker

from service.broker import BeaconRabbitmqBroker, rabbitmq_options, redis_options
from service.config import Settings
from service.db.database import Database

log = logging.getLogger(__name__)

CACHE_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 2.0


class Health:
    """Cached reachability checks of the broker and the database (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        broker: dramatiq.Broker,
        *,
        cache_seconds: float = CACHE_SECONDS,
        timeout: float = CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self.settings = settings
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._broker_check = self._broker_checker(broker)
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._failed: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: Database | None = None

    def failures(self) -> dict[str, str]:
        """What is unreachable ("broker", "database") and why; empty when all is well."""
        with self._lock:
            now = time.monotonic()
            if self._checked_at is None or now - self._checked_at >= self.cache_seconds:
                self._failed = self._check()
                self._checked_at = time.monotonic()
            return dict(self._failed)

    def _check(self) -> dict[str, str]:
        failed: dict[str, str] = {}
        for name, check in (("broker", self._broker_check), ("database", self._database)):
            try:
                problem = check()
            except Exception as exc:  # a check that cannot even run counts as failing
                problem = f"unreachable ({type(exc).__name__})"
            if problem:
                failed[name] = problem
        if failed:
            log.warning("health: failing: %s", failed)
        return failed

    def _broker_checker(self, broker: dramatiq.Broker) -> Callable[[], str]:
        url = self.settings.effective_broker_url
        if isinstance(broker, RedisBroker):
            client = redis.Redis.from_url(
                redis_options(url).url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                max_connections=2,
            )

            def ping_redis() -> str:
                try:
                    client.ping()
                except (redis.RedisError, OSError) as exc:
                    return f"unreachable ({type(exc).__name__})"
                return ""

            return ping_redis
        if isinstance(broker, BeaconRabbitmqBroker):
            parameters = pika.URLParameters(rabbitmq_options(url).url)
            parameters.socket_timeout = self.timeout
            parameters.blocked_connection_timeout = self.timeout
            parameters.connection_attempts = 1
            parameters.retry_delay = 0

            def connect_rabbitmq() -> str:
                try:
                    pika.BlockingConnection(parameters).close()
                except (pika.exceptions.AMQPError, OSError) as exc:
                    return f"unreachable ({type(exc).__name__})"
                return ""

            return connect_rabbitmq
        return lambda: ""  # the in-process broker is always there

    def _database(self) -> str:
        loop = self._event_loop()
        future = asyncio.run_coroutine_threadsafe(self._ping(), loop)
        try:
            ok = future.result(self.timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            ok = False
        return "" if ok else "unreachable"

    async def _ping(self) -> bool:
        if self._db is None:
            self._db = Database(self.settings.database_url, pool_size=1)
        try:
            return await asyncio.wait_for(self._db.ping(), self.timeout)
        except TimeoutError:
            return False

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="beacon-health", daemon=True).start()
            self._loop = loop
        return self._loop
