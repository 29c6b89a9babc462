"""OpenTelemetry traces: one trace per run, from the RPC that starts it to every provider call.

The RPC's span (`service.pipeline.tracing`) is the parent of the run's dispatch span
(`service.outbox`), whose context travels in the Dramatiq message's options (`trace`, W3C
`traceparent`); the worker's span for the run message continues it, passes it on in the probe
messages, and each provider call gets a span of its own. A run the ticker sends (a scheduled
run, or one whose message was lost) starts its trace at the ticker's dispatch span.

Spans carry ids only (run, workspace, probe, provider, attempt, status codes): never prompt
text, answers, provider error messages or credentials. Exceptions are not recorded on spans
(their messages may quote a provider), only their type.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set:
then no tracer provider is installed, every helper here returns at once (no span objects, no
context changes) and messages carry no trace option. When set, spans go to an OTLP exporter
configured by the standard variables (`OTEL_EXPORTER_OTLP_PROTOCOL` grpc or http/protobuf,
headers, timeout, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
`OTEL_SDK_DISABLED`); tests install a provider of their own with `install`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACER_NAME = "beacon"
# Span attributes (ids only).
RUN = "beacon.run.id"
RUNS = "beacon.run.count"
WORKSPACE = "beacon.workspace.id"
PROVIDER = "beacon.provider"
PROBE = "beacon.probe.id"
PROBES = "beacon.probe.count"
ATTEMPT = "beacon.probe.attempt"
# The key of a Dramatiq message's options that carries the trace context.
MESSAGE_OPTION = "trace"

_tracer: Tracer | None = None
_propagator = TraceContextTextMapPropagator()


def enabled() -> bool:
    """Whether spans are recorded (a tracer provider is installed)."""
    return _tracer is not None


def install(provider: TracerProvider | None) -> None:
    """Makes `provider` the source of Beacon's spans; None turns tracing off again."""
    global _tracer
    _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None


def otlp_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard variables ask for OTLP trace export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure_from_env(process: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Installs an SDK tracer provider exporting over OTLP when the standard variables ask for
    it (see the module docstring); returns whether tracing is on. `process` ("serve",
    "worker", "ticker", "dev") names the service unless `OTEL_SERVICE_NAME` does."""
    if not otlp_configured(environ):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, str] = {"beacon.process": process}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = f"beacon-{process}"
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(environ)))
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing: OTLP export on (%s)", _protocol(environ))
    return True


def _protocol(environ: Mapping[str, str]) -> str:
    return (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    """The OTLP span exporter for the configured protocol; it reads its endpoint, headers,
    timeout and TLS settings from the standard variables itself."""
    protocol = _protocol(environ)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, not {protocol!r}")


class _Span:
    """A span made current for a `with` block; see `span`."""

    __slots__ = ("_errors", "_scope", "span")

    def __init__(self, span: Span, errors: bool) -> None:
        self.span = span
        self._errors = errors
        self._scope: contextlib.AbstractContextManager[Span] | None = None

    def __enter__(self) -> Span:
        self._scope = trace.use_span(
            self.span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        )
        self._scope.__enter__()
        return self.span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None and self._errors and _unset(self.span):
            mark_failed(self.span, kind.__name__)
        assert self._scope is not None
        self._scope.__exit__(kind, error, traceback)


def _unset(target: Span) -> bool:
    """Whether the span's status is still unset (the SDK's spans tell; others count as so)."""
    status = getattr(target, "status", None)
    return status is None or status.status_code is StatusCode.UNSET


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | bool] | None = None,
    parent: Context | None = None,
    errors: bool = True,
) -> contextlib.AbstractContextManager[Span | None]:
    """A `with` block in a new current span (a child of `parent`, by default of the current
    span); yields None, at no cost, while tracing is off. An exception leaving the block marks
    the span failed with the exception's type (never its message) unless `errors` is False."""
    if _tracer is None:
        return _OFF
    started = _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
    return _Span(started, errors)


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | bool] | None = None,
) -> Span | None:
    """A started span that is not made current (end it yourself); None while tracing is off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, kind=kind, attributes=attributes)


def mark_failed(target: Span | None, reason: str) -> None:
    """Sets the span's status to ERROR with `reason` (a type or category, never a message)."""
    if target is not None and target.is_recording():
        target.set_attribute("error.type", reason)
        target.set_status(Status(StatusCode.ERROR, reason))


def annotate(**attributes: str | int | bool) -> None:
    """Sets attributes on the current span (`annotate(**{WORKSPACE: id})`); no-op when off."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(attributes)


def message_options(of: Span | None = None) -> dict[str, Any]:
    """The options that carry the trace context of `of` (default: the current span) in a
    Dramatiq message; empty while tracing is off or no span is active."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    context = trace.set_span_in_context(of) if of is not None else None
    _propagator.inject(carrier, context=context)
    return {MESSAGE_OPTION: carrier} if carrier else {}


def context_of(options: Mapping[str, Any] | None) -> Context | None:
    """The trace context a message's options carry; None when they carry none (a malformed
    one is ignored: the span starts a new trace)."""
    if _tracer is None or not options:
        return None
    carrier = options.get(MESSAGE_OPTION)
    if not isinstance(carrier, dict):
        return None
    clean = {str(k): v for k, v in carrier.items() if isinstance(v, str) and len(v) <= 512}
    return _propagator.extract(clean)
