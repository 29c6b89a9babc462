"""Traces: the spans of one run form one trace, from the RPC that starts it (StartRun,
SetSchedule) through the outbox's dispatch and the Dramatiq messages to every provider call.

A server, an in-process worker and the fake providers run in this process with the SDK's
in-memory exporter installed (`service.tracing.install`); OTLP export itself is checked with a
`beacon`-free subprocess against a local collector that records what it receives.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import dramatiq
import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import prompt_service_pb2_grpc, run_service_pb2_grpc, schedule_service_pb2_grpc
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service import tracing
from service.app import App
from service.config import Settings
from service.db.database import Database
from service.messages import RUN_QUEUE
from service.outbox import RunDispatcher, dispatch_pending_runs
from service.server import start_server
from tests.support import pipeline as fixtures
from tests.support import unique
from tests.support.app import NewUser
from tests.support.fakes.provider_server import FAKE_API_KEY, FakeProviderServer
from tests.support.pipeline import (
    derive_settings,
    insert_run,
    make_workspace,
    pipeline_settings,
    wait_for_end,
)
from workers.runtime import start_embedded

fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
collection_db = fixtures.collection_db
stub_broker = fixtures.stub_broker

# Prompt texts that must never reach a span.
SECRET_PROMPTS = ("which crm keeps the acme launch plan private", "acme pricing leak test")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, into an in-memory exporter; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


@pytest.fixture
async def traced(
    app: App, settings: Settings, fake_provider: FakeProviderServer, spans: InMemorySpanExporter
) -> AsyncIterator[SimpleNamespace]:
    """A server built while tracing is on (so its chain has the tracing step) and an
    in-process worker, both with keys for every fake provider."""
    # No Redis URL either: the in-process broker on both backends.
    keyed_settings = derive_settings(
        pipeline_settings(settings, fake_provider, ""),
        redis_url="",
        rate_limit_key_prefix=f"{settings.rate_limit_key_prefix}-traces",
    )
    keyed = App(settings=keyed_settings, db=app.db)
    server = await start_server(keyed, "127.0.0.1:0")
    worker = start_embedded(keyed.settings, ticker=False, worker_threads=8)
    keyed.db.run_sender = RunDispatcher(keyed.db, worker.broker).dispatch_runs
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield SimpleNamespace(
                worker=worker,
                prompts=prompt_service_pb2_grpc.PromptServiceStub(channel),
                runs=run_service_pb2_grpc.RunServiceStub(channel),
                schedules=schedule_service_pb2_grpc.ScheduleServiceStub(channel),
            )
    finally:
        await asyncio.to_thread(worker.stop)
        keyed.db.run_sender = app.db.run_sender = app.dispatcher.dispatch_runs
        await server.stop(grace=1.0)


def attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def assert_one_trace(finished: list[ReadableSpan], rpc: str, run_id: str, ws: str) -> None:
    """The run's spans: RPC -> dispatch -> run message -> probe messages -> provider calls,
    all in the RPC's trace, with ids as attributes."""
    (root,) = [s for s in finished if s.name == rpc]
    assert root.kind is SpanKind.SERVER and root.parent is None
    assert attribute(root, "rpc.grpc.status_code") == 0
    assert attribute(root, tracing.WORKSPACE) == ws
    trace_id = root.context.trace_id
    # Every span that names the run is in the RPC's trace.
    assert {s.context.trace_id for s in finished if attribute(s, tracing.RUN) == run_id} == {
        trace_id
    }
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in in_trace:
        by_name.setdefault(s.name, []).append(s)
    (dispatch,) = by_name["beacon.run dispatch"]
    assert dispatch.kind is SpanKind.PRODUCER and parent_id(dispatch) == root.context.span_id
    assert (attribute(dispatch, tracing.RUN), attribute(dispatch, tracing.WORKSPACE)) == (
        run_id,
        ws,
    )
    (expand,) = by_name["beacon.worker process_run"]
    assert expand.kind is SpanKind.CONSUMER and parent_id(expand) == dispatch.context.span_id
    assert attribute(expand, tracing.WORKSPACE) == ws
    probe_messages = by_name["beacon.worker process_probes"]
    assert {parent_id(s) for s in probe_messages} == {expand.context.span_id}
    calls = [s for s in in_trace if s.name.startswith("beacon.provider ")]
    assert {parent_id(s) for s in calls} <= {s.context.span_id for s in probe_messages}
    # One call per (prompt, provider): two prompts, two providers.
    assert sorted(attribute(s, tracing.PROVIDER) for s in calls) == [
        "anthropic",
        "anthropic",
        "openai",
        "openai",
    ]
    for call in calls:
        assert call.kind is SpanKind.CLIENT
        assert (attribute(call, tracing.RUN), attribute(call, tracing.WORKSPACE)) == (run_id, ws)
        assert attribute(call, tracing.PROBE)
    assert len({attribute(s, tracing.PROBE) for s in calls}) == 4


def assert_nothing_secret(finished: list[ReadableSpan], token: str) -> None:
    for s in finished:
        values = [str(v) for v in (s.attributes or {}).values()]
        values += [s.name, s.status.description or ""]
        values += [str(v) for event in s.events for v in (event.attributes or {}).values()]
        for value in values:
            for secret in (*SECRET_PROMPTS, FAKE_API_KEY, token):
                assert secret not in value, (s.name, value)


async def test_the_spans_of_a_run_form_one_trace_from_the_rpc_to_each_provider_call(
    stubs: SimpleNamespace,
    new_user: NewUser,
    traced: SimpleNamespace,
    spans: InMemorySpanExporter,
) -> None:
    user = await new_user()
    md = user.metadata
    created = await stubs.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(
            name="Acme", domain="acme.com", organization_name=unique("Org ")
        ),
        metadata=md,
    )
    ws = created.workspace.id
    await stubs.workspaces.SetEnabledProviders(
        ws_pb.SetEnabledProvidersRequest(
            workspace_id=ws, providers=[ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC]
        ),
        metadata=md,
    )
    await traced.prompts.StorePrompts(
        prompt_pb.StorePromptsRequest(workspace_id=ws, prompts=list(SECRET_PROMPTS)), metadata=md
    )

    started = await traced.runs.StartRun(run_pb.StartRunRequest(workspace_id=ws), metadata=md)
    assert started.status == run_pb.START_RUN_STATUS_QUEUED, started
    ended = await wait_for_end(traced, started.run.id, md)
    assert ended.status == run_pb.RUN_STATUS_SUCCEEDED
    await fixtures.drained(traced.worker)  # every message's span has ended
    assert_one_trace(
        list(spans.get_finished_spans()), "beacon.v1.RunService/StartRun", started.run.id, ws
    )

    spans.clear()
    scheduled = await traced.schedules.SetSchedule(
        schedule_pb.SetScheduleRequest(workspace_id=ws, cron="0 6 * * *"), metadata=md
    )
    run_id = scheduled.immediate_run.run_id
    assert scheduled.immediate_run.status == schedule_pb.IMMEDIATE_RUN_STATUS_QUEUED
    ended = await wait_for_end(traced, run_id, md)
    assert ended.status == run_pb.RUN_STATUS_SUCCEEDED
    await fixtures.drained(traced.worker)
    finished = list(spans.get_finished_spans())
    assert_one_trace(finished, "beacon.v1.ScheduleService/SetSchedule", run_id, ws)
    assert_nothing_secret(finished, user.token)


def queued_options(broker: dramatiq.Broker) -> list[dict[str, Any]]:
    queue = broker.queues[RUN_QUEUE]
    return [json.loads(raw)["options"] for raw in list(queue.queue)]


async def test_run_messages_carry_the_dispatching_trace_in_their_options(
    collection_db: Database, stub_broker: dramatiq.Broker, spans: InMemorySpanExporter
) -> None:
    ws = await make_workspace(collection_db)
    run_id = await insert_run(collection_db, ws)
    with tracing.span("caller") as caller:
        assert caller is not None
        sent = await dispatch_pending_runs(collection_db, stub_broker, run_ids=[run_id])
    assert sent == 1
    (options,) = queued_options(stub_broker)
    (dispatch,) = [s for s in spans.get_finished_spans() if s.name == "beacon.run dispatch"]
    context = caller.get_span_context()
    version, trace_id, span_id, _flags = options[tracing.MESSAGE_OPTION]["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{context.trace_id:032x}",
        f"{dispatch.context.span_id:016x}",
    )
    assert parent_id(dispatch) == context.span_id
    # The worker's side reads it back (a malformed one starts a new trace instead).
    parent = tracing.context_of(options)
    with tracing.span("consumer", parent=parent) as consumer:
        assert consumer is not None
        assert consumer.get_span_context().trace_id == context.trace_id
    with tracing.span("fresh", parent=tracing.context_of({"trace": {"traceparent": "x"}})) as s:
        assert s is not None and s.get_span_context().trace_id != context.trace_id


async def test_with_tracing_off_messages_carry_no_trace_and_nothing_is_recorded(
    collection_db: Database, stub_broker: dramatiq.Broker
) -> None:
    assert not tracing.enabled()
    ws = await make_workspace(collection_db)
    run_id = await insert_run(collection_db, ws)
    with tracing.span("ignored") as nothing:
        assert nothing is None
        assert await dispatch_pending_runs(collection_db, stub_broker, run_ids=[run_id])
    assert queued_options(stub_broker) == [{}]
    assert not tracing.configure_from_env("worker", environ={})
    assert not tracing.enabled()


# Ends without flushing by hand: the SDK's provider exports what is left at exit.
EXPORT = """
import sys
from service import tracing
assert tracing.configure_from_env("worker") is (sys.argv[1] == "on")
with tracing.span("exported", attributes={tracing.RUN: "run_otlp"}):
    pass
"""


async def test_spans_are_exported_over_otlp_only_when_the_endpoint_is_set() -> None:
    """A process with OTEL_EXPORTER_OTLP_ENDPOINT set posts its spans to the collector (OTLP
    over HTTP, protobuf); without it, it sends nothing."""
    received: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    web_app = web.Application()
    web_app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    try:
        for mode, env in (
            ("off", base),
            ("on", {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}),
        ):
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", EXPORT, mode],
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr.decode()
            assert len(received) == (1 if mode == "on" else 0)
    finally:
        await runner.cleanup()
    exported = ExportTraceServiceRequest.FromString(received[0])
    (resource,) = exported.resource_spans
    names = [span.name for scope in resource.scope_spans for span in scope.spans]
    assert names == ["exported"]
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "beacon-worker"
