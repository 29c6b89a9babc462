"""The Dramatiq broker of this process, chosen from the settings.

`redis://` (or `rediss://`) selects Redis, `amqp://` RabbitMQ, and an empty URL an in-process
broker for `beacon dev` and the tests. On a Redis URL, a `namespace` query parameter prefixes
every key, so several deployments (or test sessions) can share one Redis database, and
`heartbeat_timeout` (milliseconds, default 60000) sets how long a silent worker is given before
its unacknowledged messages go back to the queue; `maintenance_chance` (per million broker
commands, default 10000) how often commands look for such messages.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO

from service.config import Settings

DEFAULT_NAMESPACE = "beacon"
DEFAULT_HEARTBEAT_TIMEOUT_MS = 60_000
REDIS_CONNECTIONS = 512
# Per million broker commands, how many also requeue the messages of workers that died
# (no heartbeat for a minute). Dramatiq's 0.1% can leave them for minutes on a quiet queue;
# 1% finds them within seconds, for a scan of the heartbeat set.
MAINTENANCE_CHANCE = 10_000
# Messages per Redis pipeline round trip when sending in bulk.
PIPELINE_CHUNK = 2000

_lock = threading.Lock()
_brokers: dict[str, dramatiq.Broker] = {}
_current: dramatiq.Broker | None = None


def configure_broker(settings: Settings) -> dramatiq.Broker:
    """The broker for `settings.effective_broker_url`, with Beacon's actors declared on it.

    Idempotent: the same URL returns the same broker. The broker also becomes Dramatiq's global
    broker and the one `current_broker` returns.
    """
    global _current
    from workers.actors import declare_actors

    url = settings.effective_broker_url
    with _lock:
        broker = _brokers.get(url)
        if broker is None:
            broker = _build(url)
            declare_actors(broker)
            _brokers[url] = broker
        dramatiq.set_broker(broker)
        _current = broker
        return broker


def current_broker() -> dramatiq.Broker:
    """The broker `configure_broker` set up last; RuntimeError when there is none."""
    if _current is None:
        raise RuntimeError("no broker configured: call workers.broker.configure_broker first")
    return _current


def reset_brokers() -> None:
    """Forgets every configured broker (tests that switch backends call this)."""
    global _current
    with _lock:
        for broker in _brokers.values():
            broker.close()
        _brokers.clear()
        _current = None


def _build(url: str) -> dramatiq.Broker:
    from workers.context import WorkerResources

    middleware = [m() for m in dramatiq.middleware.default_middleware]
    middleware += [AsyncIO(), WorkerResources()]
    if not url:
        return StubBroker(middleware=middleware)
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        options = redis_options(url)
        # Every worker thread may hold a connection (acks); wait for one rather than fail.
        pool = redis.BlockingConnectionPool.from_url(options.url, max_connections=REDIS_CONNECTIONS)
        return RedisBroker(  # type: ignore[no-untyped-call]
            client=redis.Redis(connection_pool=pool),
            namespace=options.namespace,
            heartbeat_timeout=options.heartbeat_timeout_ms,
            maintenance_chance=options.maintenance_chance,
            middleware=middleware,
        )
    if scheme in ("amqp", "amqps"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, middleware=middleware)
    raise ValueError(f"unsupported broker URL scheme {scheme!r}: use redis://, amqp:// or empty")


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """A Redis broker URL's Beacon parameters, taken out of the URL given to redis-py."""

    url: str
    namespace: str = DEFAULT_NAMESPACE
    # After this long without a heartbeat a worker counts as dead and its messages are requeued.
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    # Per million broker commands, how many also look for dead workers' messages.
    maintenance_chance: int = MAINTENANCE_CHANCE


def redis_options(url: str) -> RedisOptions:
    """Reads `namespace` (key prefix), `heartbeat_timeout` (ms) and `maintenance_chance` (per
    million commands) from a Redis URL's query; the rest of the URL is redis-py's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = ("namespace", "heartbeat_timeout", "maintenance_chance")
    ours = {k: v for k, v in query if k in names}
    rest = urlencode([(k, v) for k, v in query if k not in names])
    return RedisOptions(
        url=urlunsplit(parts._replace(query=rest)),
        namespace=ours.get("namespace") or DEFAULT_NAMESPACE,
        heartbeat_timeout_ms=_whole(ours, "heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT_MS),
        maintenance_chance=_whole(ours, "maintenance_chance", MAINTENANCE_CHANCE),
    )


def _whole(options: dict[str, str], name: str, default: int) -> int:
    try:
        value = int(options.get(name) or default)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} in the broker URL must be a whole number, not {options[name]!r}")
    return value


def ready_backlog(broker: dramatiq.Broker) -> int | None:
    """Messages waiting in Beacon's run and probe queues (not the delayed ones), or None when
    the broker cannot tell cheaply (RabbitMQ)."""
    from workers.actors import PROBE_QUEUE, RUN_QUEUE

    queues = (RUN_QUEUE, PROBE_QUEUE)
    if isinstance(broker, RedisBroker):
        pipe = broker.client.pipeline(transaction=False)
        for name in queues:
            pipe.llen(f"{broker.namespace}:{name}")
        return sum(int(length) for length in pipe.execute())
    if isinstance(broker, StubBroker):
        stub: dict[str, Any] = broker.queues
        return sum(int(stub[name].qsize()) for name in queues if name in stub)
    return None


def send_messages(broker: dramatiq.Broker, messages: Sequence[dramatiq.Message[None]]) -> None:
    """Enqueues many messages at once.

    On Redis a chunk of `PIPELINE_CHUNK` messages is written in one round trip, in the layout
    Dramatiq's own enqueue script uses (the namespace's queue list and message hash); other
    brokers enqueue one by one. Enqueue middleware hooks are not run on the Redis path: none of
    Beacon's middleware acts on enqueue.
    """
    if not messages:
        return
    if isinstance(broker, RedisBroker):
        _send_redis(broker, messages)
        return
    for message in messages:
        broker.enqueue(message)


def _send_redis(broker: RedisBroker, messages: Sequence[dramatiq.Message[None]]) -> None:
    # What Dramatiq's enqueue script does per message (message data into the queue's hash, id
    # onto the queue's list), done for a whole chunk in two commands inside MULTI/EXEC, so a
    # consumer never sees an id without its data. Per-message EVALSHA calls cost ~60 us each
    # in redis-py alone, which dominated a tick of 100,000 runs.
    encoder = dramatiq.get_encoder()
    for chunk in _chunks(messages, PIPELINE_CHUNK):
        by_queue: dict[str, dict[str, bytes]] = defaultdict(dict)
        for message in chunk:
            # Message.asdict without its per-field dataclass walk (a tick encodes 100,000).
            data: dict[str, Any] = {
                "queue_name": message.queue_name,
                "actor_name": message.actor_name,
                "args": message.args,
                "kwargs": message.kwargs,
                "options": {**message.options, "redis_message_id": message.message_id},
                "message_id": message.message_id,
                "message_timestamp": message.message_timestamp,
            }
            by_queue[message.queue_name][message.message_id] = encoder.encode(data)
        pipe = broker.client.pipeline(transaction=True)
        for queue_name, encoded in by_queue.items():
            queue = f"{broker.namespace}:{queue_name}"
            pipe.hset(f"{queue}.msgs", mapping=encoded)  # type: ignore[arg-type]
            pipe.rpush(queue, *encoded)
        pipe.execute()


def _chunks(
    items: Sequence[dramatiq.Message[None]], size: int
) -> Iterable[Sequence[dramatiq.Message[None]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
