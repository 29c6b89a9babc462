"""Broker URLs as an operator writes them, and what RabbitMQ is given for them.

The end-to-end runs over each broker are in test_e2e_collection.py; here, the URL options,
the refusal of a URL that cannot work, and the queues and messages RabbitMQ ends up holding.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import dramatiq
import pika
import pika.exceptions
import pytest

from service.broker import (
    BeaconRabbitmqBroker,
    RabbitmqOptions,
    broker_of,
    encode_json,
    new_message_ids,
    rabbitmq_options,
    send_messages,
)
from service.config import Settings
from service.messages import PROBE_QUEUE, RUN_QUEUE, probe_message, run_message
from tests.support.app import TEST_SECRET, TEST_SIGNING_SECRET
from tests.support.brokers import rabbitmq_available, temporary_vhost
from tests.support.processes import run_beacon
from workers.actors import worker_broker

needs_rabbitmq = pytest.mark.skipif(
    not rabbitmq_available(), reason="RabbitMQ (BEACON_TEST_AMQP_URL) is not reachable"
)


def test_rabbitmq_url_options_are_read_and_the_rest_is_pikas() -> None:
    options = rabbitmq_options(
        "amqps://beacon:s3cret@mq.internal:5671/prod?heartbeat=30&prefetch=64"
        "&confirm_delivery=false&connection_attempts=3"
    )
    assert options == RabbitmqOptions(
        url="amqps://beacon:s3cret@mq.internal:5671/prod?heartbeat=30&connection_attempts=3",
        prefetch=64,
        confirm_delivery=False,
    )
    parameters = pika.URLParameters(options.url)
    assert (parameters.host, parameters.port, parameters.virtual_host) == (
        "mq.internal",
        5671,
        "prod",
    )
    assert (parameters.heartbeat, parameters.connection_attempts) == (30, 3)
    assert parameters.ssl_options is not None  # amqps: TLS, verified by default
    # Safe defaults: every send confirmed, Dramatiq's prefetch, the default virtual host.
    assert rabbitmq_options("amqp://mq") == RabbitmqOptions(url="amqp://mq")
    assert pika.URLParameters(rabbitmq_options("amqp://mq/%2F").url).virtual_host == "/"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("amqp://guest:hunter2@127.0.0.1:notaport/", "Port could not be cast"),
        ("amqp://guest:hunter2@127.0.0.1/?heartbeat=soon", "heartbeat"),
        ("amqp://guest:hunter2@127.0.0.1/?hearbeat=30", "Unknown URL parameter: 'hearbeat'"),
        ("amqp://guest:hunter2@127.0.0.1/?prefetch=0", "prefetch"),
        ("amqp://guest:hunter2@127.0.0.1/?confirm_delivery=maybe", "confirm_delivery"),
        ("amqp:///beacon", "needs a host"),
        ("kafka://guest:hunter2@127.0.0.1/", "unsupported scheme 'kafka'"),
    ],
)
def test_a_malformed_broker_url_is_refused_naming_the_variable(url: str, complaint: str) -> None:
    with pytest.raises(ValueError) as raised:
        broker_of(Settings(broker_url=url))
    message = str(raised.value)
    assert message.startswith("BEACON_BROKER_URL is not a usable broker URL")
    assert complaint in message
    assert "hunter2" not in message


@pytest.mark.parametrize("command", ["worker", "ticker", "serve"])
async def test_beacon_processes_exit_on_a_malformed_broker_url(command: str) -> None:
    code, _, err = await run_beacon(
        command,
        env={
            "BEACON_DATABASE_URL": "sqlite+aiosqlite:///:memory:",
            "BEACON_BROKER_URL": "amqp://beacon:hunter2@127.0.0.1:5672/?heartbeat=soon",
            "BEACON_GRPC_ADDR": "127.0.0.1:0",
            "BEACON_HTTP_ADDR": "127.0.0.1:0",
            "BEACON_METRICS_ENABLED": "false",
            # Valid secrets, so the broker URL is what it refuses.
            "BEACON_AUTH_SECRET": TEST_SECRET,
            "BEACON_SIGNING_SECRET": TEST_SIGNING_SECRET,
        },
    )
    assert code == 2, err
    assert "BEACON_BROKER_URL is not a usable broker URL" in err
    assert "heartbeat" in err and "hunter2" not in err


@pytest.fixture
async def rabbitmq_broker() -> AsyncIterator[BeaconRabbitmqBroker]:
    """Beacon's RabbitMQ broker on a virtual host of its own, prefetch 3."""
    async with temporary_vhost() as url:
        broker = worker_broker(Settings(broker_url=f"{url}?prefetch=3"))
        assert isinstance(broker, BeaconRabbitmqBroker)
        try:
            yield broker
        finally:
            broker.close()


@needs_rabbitmq
def test_rabbitmq_queues_are_durable_and_messages_persistent(
    rabbitmq_broker: BeaconRabbitmqBroker,
) -> None:
    send_messages(rabbitmq_broker, [probe_message([f"prb-{n}"]) for n in range(2500)])
    rabbitmq_broker.enqueue(run_message("run-1"))
    rabbitmq_broker.enqueue(run_message("run-2"), delay=60_000)  # a retry, later
    connection = pika.BlockingConnection(rabbitmq_broker.parameters)
    try:
        channel = connection.channel()
        for queue, count in ((PROBE_QUEUE, 2500), (RUN_QUEUE, 1), (f"{RUN_QUEUE}.DQ", 1)):
            declared = channel.queue_declare(queue, passive=True)
            assert declared.method.message_count == count, queue
            method, properties, _ = channel.basic_get(queue)
            assert method is not None
            assert properties.delivery_mode == pika.DeliveryMode.Persistent.value, queue
        # A durable queue refuses to be declared transient: it survives a RabbitMQ restart.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="durable"):
            channel.queue_declare(RUN_QUEUE, durable=False)
    finally:
        connection.close()


@needs_rabbitmq
def test_a_rabbitmq_consumer_holds_at_most_the_urls_prefetch(
    rabbitmq_broker: BeaconRabbitmqBroker,
) -> None:
    send_messages(rabbitmq_broker, [probe_message([f"prb-{n}"]) for n in range(10)])
    # Dramatiq would ask for its default (two per worker thread); the URL says 3.
    consumer = rabbitmq_broker.consume(PROBE_QUEUE, prefetch=80, timeout=500)
    try:
        held = [next(consumer) for _ in range(4)]
    finally:
        consumer.close()
    assert [message is not None for message in held] == [True, True, True, False]


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(run_message("run_abc"), id="run message"),
        pytest.param(run_message('run_\u00e9"\n'), id="string argument to escape"),
        pytest.param(run_message("run_abc", {"traceparent": "00-ab-cd-01"}), id="with options"),
        pytest.param(probe_message(["prb_1", "prb_2"], attempt=3), id="list and int arguments"),
        pytest.param(
            dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={"k": 1}, options={}),
            id="keyword arguments",
        ),
    ],
)
def test_the_redis_bulk_send_stores_what_dramatiqs_encoder_makes(
    message: dramatiq.Message[None],
) -> None:
    # What Dramatiq's own Redis enqueue stores: the message's dict with its redis_message_id.
    expected = dramatiq.JSONEncoder().encode(
        {**message.asdict(), "options": {**message.options, "redis_message_id": message.message_id}}
    )
    assert encode_json(message) == expected
    assert dramatiq.Message.decode(encode_json(message)).args == message.args


def test_message_ids_drawn_together_are_distinct_uuid4s() -> None:
    ids = new_message_ids(1000)
    assert len(set(ids)) == 1000
    assert all(str(uuid.UUID(message_id)) == message_id for message_id in ids)
    assert {uuid.UUID(message_id).version for message_id in ids} == {4}
    assert {uuid.UUID(message_id).variant for message_id in ids} == {uuid.RFC_4122}
