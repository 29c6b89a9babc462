"""The Dramatiq broker of this process, chosen from the settings.

`redis://` (or `rediss://`) selects Redis, `amqp://` (or `amqps://`) RabbitMQ, and an empty URL
an in-process broker for `beacon dev` and the tests. On a Redis URL, a `namespace` query
parameter prefixes every key, so several deployments (or test sessions) can share one Redis
database, and `heartbeat_timeout` (milliseconds, default 60000) sets how long a silent worker is
given before its unacknowledged messages go back to the queue; `maintenance_chance` (per million
broker commands, default 10000) how often commands look for such messages.

On a RabbitMQ URL the path is the virtual host (`amqp://user:pass@host:5672/beacon`; `%2F` or
none for `/`), and the query takes pika's connection parameters (`heartbeat` in seconds,
`connection_attempts`, `retry_delay`, `socket_timeout`, `blocked_connection_timeout`, ...)
plus Beacon's `prefetch` (messages each consumer holds unacknowledged, default two per worker
thread) and `confirm_delivery` (default true: a send returns once RabbitMQ has the message on
disk). Queues are durable and messages persistent, so a RabbitMQ restart loses none that was
confirmed. A URL that cannot be used is refused at start-up with an error naming its variable.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika
import pika.exceptions
import redis
from dramatiq.brokers.rabbitmq import MAX_ENQUEUE_ATTEMPTS, RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.encoder import Encoder, JSONEncoder
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import AsyncIO, Middleware

from service.config import Settings
from service.messages import PROBE_QUEUE, RUN_QUEUE

DEFAULT_NAMESPACE = "beacon"
DEFAULT_HEARTBEAT_TIMEOUT_MS = 60_000
REDIS_CONNECTIONS = 512
# Per million broker commands, how many also requeue the messages of workers that died
# (no heartbeat for a minute). Dramatiq's 0.1% can leave them for minutes on a quiet queue;
# 1% finds them within seconds, for a scan of the heartbeat set.
MAINTENANCE_CHANCE = 10_000
# Messages per Redis pipeline round trip (or RabbitMQ transaction) when sending in bulk.
PIPELINE_CHUNK = 2000
MAX_PREFETCH = 65_535  # AMQP's prefetch count is 16 bits; 0 (unlimited) is not offered
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def broker_of(settings: Settings, extra_middleware: Sequence[Middleware] = ()) -> dramatiq.Broker:
    """A new broker for `settings.effective_broker_url` (see `build_broker`) with Beacon's
    queues declared, for a process that sends runs (the API, the ticker); ValueError naming
    the variable for an unusable URL. Workers build theirs with `workers.actors.worker_broker`.
    """
    try:
        broker = build_broker(settings.effective_broker_url, extra_middleware)
    except ValueError as exc:
        # The URL may hold a password: name the variable, never echo the value.
        variable = "BEACON_BROKER_URL" if settings.broker_url else "BEACON_REDIS_URL"
        raise ValueError(f"{variable} is not a usable broker URL: {exc}") from None
    for queue in (RUN_QUEUE, PROBE_QUEUE):
        broker.declare_queue(queue)
    return broker


def build_broker(url: str, extra_middleware: Sequence[Middleware] = ()) -> dramatiq.Broker:
    """A new broker for `url` with Dramatiq's default middleware, AsyncIO, then
    `extra_middleware` (ValueError naming what is wrong with an unusable URL)."""
    middleware = [m() for m in dramatiq.middleware.default_middleware]
    middleware += [AsyncIO(), *extra_middleware]
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
        # pika logs each connection at INFO and each failed attempt with a traceback: while
        # RabbitMQ restarts, hundreds. Dramatiq's consumers and the dispatcher report outages.
        logging.getLogger("pika").setLevel(logging.WARNING)
        logging.getLogger("pika.adapters").setLevel(logging.CRITICAL)
        return BeaconRabbitmqBroker(rabbitmq_options(url), middleware)
    raise ValueError(
        f"unsupported scheme {scheme!r}: use redis://, rediss://, amqp://, amqps:// or empty"
    )


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


@dataclass(frozen=True, slots=True)
class RabbitmqOptions:
    """A RabbitMQ broker URL's Beacon parameters, taken out of the URL given to pika."""

    url: str
    # Messages each consumer may hold unacknowledged; None: Dramatiq's two per worker thread.
    prefetch: int | None = None
    # Wait for RabbitMQ to confirm (persist) every message sent.
    confirm_delivery: bool = True


def rabbitmq_options(url: str) -> RabbitmqOptions:
    """Reads `prefetch` and `confirm_delivery` from an amqp(s):// URL's query and checks the
    rest with pika (host, port, virtual host, `heartbeat` and pika's other parameters)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = ("prefetch", "confirm_delivery")
    ours = {k: v for k, v in query if k in names}
    rest = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k not in names])))
    if not parts.hostname:
        raise ValueError("a RabbitMQ URL needs a host: amqp://user:password@host:5672/vhost")
    pika.URLParameters(rest)  # ValueError naming a bad port or parameter
    prefetch: int | None = None
    if "prefetch" in ours:
        prefetch = _whole(ours, "prefetch", 0)
        if not 1 <= prefetch <= MAX_PREFETCH:
            raise ValueError(f"prefetch in the broker URL must be between 1 and {MAX_PREFETCH}")
    return RabbitmqOptions(
        url=rest,
        prefetch=prefetch,
        confirm_delivery=_flag(ours, "confirm_delivery", default=True),
    )


def _flag(options: dict[str, str], name: str, *, default: bool) -> bool:
    value = options.get(name, "").lower()
    if not value:
        return default
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} in the broker URL must be true or false, not {options[name]!r}")


class BeaconRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker (durable queues, persistent messages) with the URL's
    prefetch and confirmed bulk sends."""

    def __init__(self, options: RabbitmqOptions, middleware: list[Middleware]) -> None:
        super().__init__(
            url=options.url, confirm_delivery=options.confirm_delivery, middleware=middleware
        )
        self.prefetch = options.prefetch

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        # Delay queues keep Dramatiq's large prefetch: their messages wait in the worker.
        if self.prefetch is not None and queue_name != dq_name(queue_name):
            prefetch = self.prefetch
        return super().consume(queue_name, prefetch, timeout)

    def publish_many(self, messages: Sequence[dramatiq.Message[None]]) -> None:
        """Sends `messages`, `PIPELINE_CHUNK` to one transaction: with `confirm_delivery`
        each chunk costs one round trip (its commit returns once RabbitMQ has it) rather than
        one per message. A chunk that fails with the connection is sent again on a new one."""
        if not self.confirm_delivery:
            for message in messages:
                self.enqueue(message)
            return
        for queue_name in {message.queue_name for message in messages}:
            self.declare_queue(queue_name, ensure=True)
        for chunk in _chunks(messages, PIPELINE_CHUNK):
            attempts = 0
            while True:
                try:
                    channel = self._transaction_channel()
                    for message in chunk:
                        channel.basic_publish(
                            exchange="",
                            routing_key=message.queue_name,
                            body=message.encode(),
                            properties=PERSISTENT,
                        )
                    channel.tx_commit()
                    break
                except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
                    self.state.transaction_channel = None
                    del self.connection
                    attempts += 1
                    if attempts >= MAX_ENQUEUE_ATTEMPTS:
                        raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _transaction_channel(self) -> Any:
        """This thread's channel in transaction mode (a channel in confirm mode cannot be)."""
        channel = getattr(self.state, "transaction_channel", None)
        if channel is None or not channel.is_open:
            channel = self.connection.channel()
            channel.tx_select()
            self.state.transaction_channel = channel
        return channel


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
    Dramatiq's own enqueue script uses (the namespace's queue list and message hash); on
    RabbitMQ a chunk is one transaction; the in-process broker enqueues one by one. Enqueue
    middleware hooks are not run on the bulk paths: none of Beacon's middleware acts on enqueue.
    """
    if not messages:
        return
    if isinstance(broker, RedisBroker):
        _send_redis(broker, messages)
        return
    if isinstance(broker, BeaconRabbitmqBroker):
        broker.publish_many(messages)
        return
    for message in messages:
        broker.enqueue(message)


def _send_redis(broker: RedisBroker, messages: Sequence[dramatiq.Message[None]]) -> None:
    # What Dramatiq's enqueue script does per message (message data into the queue's hash, id
    # onto the queue's list), done for a whole chunk in two commands inside MULTI/EXEC, so a
    # consumer never sees an id without its data. Per-message EVALSHA calls cost ~60 us each
    # in redis-py alone, which dominated a tick of 100,000 runs.
    encode = _redis_encoder(dramatiq.get_encoder())
    for chunk in _chunks(messages, PIPELINE_CHUNK):
        by_queue: dict[str, dict[str, bytes]] = defaultdict(dict)
        for message in chunk:
            by_queue[message.queue_name][message.message_id] = encode(message)
        pipe = broker.client.pipeline(transaction=True)
        for queue_name, encoded in by_queue.items():
            queue = f"{broker.namespace}:{queue_name}"
            pipe.hset(f"{queue}.msgs", mapping=encoded)  # type: ignore[arg-type]
            pipe.rpush(queue, *encoded)
        pipe.execute()


def _redis_encoder(encoder: Encoder) -> Callable[[dramatiq.Message[None]], bytes]:
    """What the Redis broker stores for a message: its data with the `redis_message_id`
    option, encoded by `encoder`."""
    if type(encoder) is JSONEncoder:
        return encode_json
    return lambda message: encoder.encode(_redis_data(message))


def _redis_data(message: dramatiq.Message[None]) -> dict[str, Any]:
    # Message.asdict without its per-field dataclass walk (a tick encodes 100,000).
    return {
        "queue_name": message.queue_name,
        "actor_name": message.actor_name,
        "args": message.args,
        "kwargs": message.kwargs,
        "options": {**message.options, "redis_message_id": message.message_id},
        "message_id": message.message_id,
        "message_timestamp": message.message_timestamp,
    }


# Dramatiq's JSONEncoder output (json.dumps with these separators), without building an encoder
# per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def encode_json(message: dramatiq.Message[None]) -> bytes:
    """The bytes Dramatiq's JSONEncoder makes of `_redis_data(message)`; a message without
    options or keyword arguments (a run message when tracing is off) is put together from its
    encoded parts."""
    if message.options or message.kwargs:
        return _COMPACT_JSON.encode(_redis_data(message)).encode()
    message_id = encode_basestring_ascii(message.message_id)
    args = message.args
    if all(type(arg) is str for arg in args):  # run ids
        encoded_args = f"[{','.join(map(encode_basestring_ascii, args))}]"
    else:
        encoded_args = _COMPACT_JSON.encode(args)
    timestamp = message.message_timestamp
    return (
        f'{{"queue_name":{encode_basestring_ascii(message.queue_name)},'
        f'"actor_name":{encode_basestring_ascii(message.actor_name)},'
        f'"args":{encoded_args},"kwargs":{{}},'
        f'"options":{{"redis_message_id":{message_id}}},"message_id":{message_id},'
        f'"message_timestamp":{timestamp if type(timestamp) is int else _COMPACT_JSON.encode(timestamp)}}}'
    ).encode()


def new_message_ids(count: int) -> list[str]:
    """`count` message ids of the form Dramatiq gives (random UUID4 strings), from one draw of
    random bytes rather than one `uuid.uuid4()` (a system call) each."""
    raw = bytearray(secrets.token_bytes(16 * count))
    raw[6::16] = bytes(0x40 | (byte & 0x0F) for byte in raw[6::16])  # version 4
    raw[8::16] = bytes(0x80 | (byte & 0x3F) for byte in raw[8::16])  # RFC 4122 variant
    digits = raw.hex()
    return [
        f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-{digits[i + 12 : i + 16]}-"
        f"{digits[i + 16 : i + 20]}-{digits[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def _chunks(
    items: Sequence[dramatiq.Message[None]], size: int
) -> Iterable[Sequence[dramatiq.Message[None]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
