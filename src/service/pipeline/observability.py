"""Request logging and metrics: one structured JSON line (`beacon.rpc`, written in batches
by `service.logs.access_log`) and one metric sample per call.

Creates the call context (request id, peer, metadata) that the inner steps fill in.
Never logs tokens or request bodies.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from service.auth.context import CallContext, set_current_call
from service.clock import new_id
from service.logs import access_log
from service.pipeline.base import Around, Stream, Unary
from service.rpc_options import MethodRules

RPCS = Counter("beacon_rpc_total", "RPCs served", ["method", "code"])
LATENCY = Histogram(
    "beacon_rpc_seconds",
    "RPC latency",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MAX_REQUEST_ID = 100
# Label values are bounded: a child per (method, code) lives as long as the process. Methods
# are the rule table's (every Beacon RPC); past MAX_METHODS distinct ones (never, unless a
# caller can name methods) the rest are counted as OTHER_METHOD, and codes are grpc's.
MAX_METHODS = 256
OTHER_METHOD = "other"
CODES = frozenset(code.name for code in grpc.StatusCode)
_METHODS: dict[str, str] = {}
# Pre-bound metric children: `labels()` hashes and locks on every call; a dict lookup does not.
_COUNTERS: dict[tuple[str, str], Any] = {}
_TIMERS: dict[str, Any] = {}


def _method_label(method: str) -> str:
    label = _METHODS.get(method)
    if label is None:
        if len(_METHODS) >= MAX_METHODS:
            return OTHER_METHOD
        label = _METHODS[method] = method
    return label


def _counter(method: str, code: str) -> Any:
    child = _COUNTERS.get((method, code))
    if child is None:
        key = (_method_label(method), code if code in CODES else "UNKNOWN")
        child = _COUNTERS.get(key)
        if child is None:
            child = _COUNTERS[key] = RPCS.labels(*key)
    return child


def _timer(method: str) -> Any:
    child = _TIMERS.get(method)
    if child is None:
        label = _method_label(method)
        child = _TIMERS.get(label)
        if child is None:
            child = _TIMERS[label] = LATENCY.labels(label)
    return child


def _start(rules: MethodRules, context: Any, page_key: bytes) -> CallContext:
    metadata = dict(context.invocation_metadata() or ())
    supplied = metadata.get("x-request-id", "")
    # The server names every call itself: a client-chosen id could collide with (or mimic)
    # another call's. The client's id is kept apart, for correlation only.
    call = CallContext(
        method=rules.name,
        request_id=new_id("req"),
        correlation_id=supplied if _printable(supplied) else "",
        peer=context.peer(),
        metadata=metadata,
        page_key=page_key,
    )
    set_current_call(call)
    return call


def _printable(value: str) -> bool:
    return 0 < len(value) <= MAX_REQUEST_ID and value.isprintable()


def _finish(call: CallContext, context: Any, started: float, failed: bool) -> None:
    elapsed = time.perf_counter() - started
    code = context.code()
    if code is None:
        code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    _counter(call.method, code_name).inc()
    _timer(call.method).observe(elapsed)
    if access_log.enabled():
        principal = call.principal
        access_log.record(
            time.time(),
            call.method,
            code_name,
            round(elapsed * 1000, 3),
            call.request_id,
            call.correlation_id,
            principal.actor_id if principal else None,
            principal.key_id if principal else None,
            call.peer,
        )
    set_current_call(None)


class ObservabilityAround(Around):
    """Starts the call context; `page_key` is the page-token key the context carries."""

    def __init__(self, page_key: bytes) -> None:
        self.page_key = page_key

    async def call(self, rules: MethodRules, request: Any, context: Any, inner: Unary) -> Any:
        call, started, failed = _start(rules, context, self.page_key), time.perf_counter(), True
        try:
            result = await inner(request, context)
            failed = False
            return result
        finally:
            _finish(call, context, started, failed)

    async def stream(
        self, rules: MethodRules, request: Any, context: Any, inner: Stream
    ) -> AsyncIterator[Any]:
        call, started, failed = _start(rules, context, self.page_key), time.perf_counter(), True
        try:
            async for item in inner(request, context):
                yield item
            failed = False
        finally:
            _finish(call, context, started, failed)
