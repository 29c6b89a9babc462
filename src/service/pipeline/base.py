"""Shared mechanics of Beacon's pipeline steps.

A grpc.aio interceptor sees the method name and metadata but not the request, and runs on
every call of every service (health too): so ours are not grpc.aio interceptors but steps
(`Around`) wrapped around each Beacon handler's behaviour when it is registered
(`Pipeline`). RPCs outside beacon.v1 (health, reflection) are served untouched. Only
unary-unary and unary-stream handlers can be wrapped: registering a Beacon method served by
any other kind fails at start-up, and a call reaching one anyway fails instead of passing
unchecked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from service.auth.context import current_call
from service.domain.actor import Access
from service.rpc_options import MethodRules, method_rules

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Result = TypeVar("Result")


def takes_access(
    handler: Callable[[Servicer, Request, Any, Access], Result],
) -> Callable[[Servicer, Request, Any], Result]:
    """Marks a servicer method that receives the authorization step's decision (`Access`:
    the resource's organization and workspace, and the workspace view the check read) as a
    third argument, `(request, context, access)`, instead of looking it up in the call.

    The pipeline calls it with the access of the call it serves (`Pipeline.wrap`); to grpc
    and to the generated base class it is a `(request, context)` method, as typed here.
    """
    handler.takes_access = True  # type: ignore[attr-defined]
    return handler  # type: ignore[return-value]


def _given_access(handler: Any) -> Any:
    """The behaviour grpc calls, `(request, context)`, for a `takes_access` servicer
    method: the pipeline hands it the access decision of the call it is serving."""
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_with_access(request: Any, context: Any) -> Any:
            return await unary(request, context, current_call().require_access())

        return handler._replace(unary_unary=unary_with_access)
    stream = handler.unary_stream

    async def stream_with_access(request: Any, context: Any) -> AsyncIterator[Any]:
        async for item in stream(request, context, current_call().require_access()):
            yield item

    return handler._replace(unary_stream=stream_with_access)


class Around:
    """What a step does around one call: `before` may raise; `after` always runs.

    An around that `parses_request` receives the request's bytes and hands the parsed
    message inward: a pipeline holding one registers its handlers without grpc's request
    deserializer, so that the outer steps can answer for bytes that do not parse.
    """

    parses_request = False

    async def before(self, rules: MethodRules, request: Any, context: Any) -> None:
        """Runs before the handler."""

    async def call(self, rules: MethodRules, request: Any, context: Any, inner: Unary) -> Any:
        await self.before(rules, request, context)
        return await inner(request, context)

    async def stream(
        self, rules: MethodRules, request: Any, context: Any, inner: Stream
    ) -> AsyncIterator[Any]:
        await self.before(rules, request, context)
        async for item in inner(request, context):
            yield item


def _before_only(around: Around) -> bool:
    return type(around).call is Around.call and type(around).stream is Around.stream


def _streams_only(around: Around) -> bool:
    """An around that does nothing around unary calls (it only wraps streams)."""
    return type(around).call is Around.call and type(around).before is Around.before


def _stages(arounds: Sequence[Around]) -> list[Around | tuple[Around, ...]]:
    """The arounds, outermost first, with each run of consecutive `before`-only ones grouped:
    a group runs as one step (a loop over its checks), not one coroutine frame each."""
    stages: list[Around | tuple[Around, ...]] = []
    for around in arounds:
        if _before_only(around) and stages and isinstance(stages[-1], tuple):
            stages[-1] = (*stages[-1], around)
        elif _before_only(around):
            stages.append((around,))
        else:
            stages.append(around)
    return stages


def _unary_step(stage: Around | tuple[Around, ...], rules: MethodRules, inner: Unary) -> Unary:
    if isinstance(stage, tuple):
        checks = tuple(around.before for around in stage)

        async def checks_then(request: Any, context: Any) -> Any:
            for check in checks:
                await check(rules, request, context)
            return await inner(request, context)

        return checks_then
    around = stage

    async def step(request: Any, context: Any) -> Any:
        return await around.call(rules, request, context, inner)

    return step


def _stream_step(stage: Around | tuple[Around, ...], rules: MethodRules, inner: Stream) -> Stream:
    if isinstance(stage, tuple):
        checks = tuple(around.before for around in stage)

        async def checks_then(request: Any, context: Any) -> AsyncIterator[Any]:
            for check in checks:
                await check(rules, request, context)
            async for item in inner(request, context):
                yield item

        return checks_then
    around = stage

    async def step(request: Any, context: Any) -> AsyncIterator[Any]:
        async for item in around.stream(rules, request, context, inner):
            yield item

    return step


class Pipeline:
    """Wraps the unary-unary and unary-stream behaviours of Beacon RPCs with `Around`s, at
    registration: the server runs no grpc.aio interceptor at all.

    The first `Around` is outermost. The chain of each method is composed once, when its
    handler is registered (`wrap_registered`, `wrap_generic`), so a call pays for no
    interceptor plumbing (no `intercept_service` per call, no handler lookup beyond the
    server's own) and for one coroutine frame per step, checks grouped (`_stages`). Handlers
    of other services (health, reflection) are never touched.
    """

    def __init__(self, *arounds: Around) -> None:
        self.arounds = arounds
        self._stages = _stages(arounds)
        # Unary calls skip the arounds that only wrap streams (their checks stay grouped).
        self._unary_stages = _stages([a for a in arounds if not _streams_only(a)])
        self._rules = method_rules()
        self._parsed_by_step = any(around.parses_request for around in arounds)

    def wrap(self, handler: Any, rules: MethodRules) -> Any:
        """`handler` with every step around it; RuntimeError for a kind that cannot be."""
        if self._parsed_by_step:
            handler = handler._replace(request_deserializer=None)  # grpc hands over the bytes
        if getattr(handler.unary_unary or handler.unary_stream, "takes_access", False):
            handler = _given_access(handler)
        if handler.unary_unary is not None:
            unary: Unary = handler.unary_unary
            for stage in reversed(self._unary_stages):
                unary = _unary_step(stage, rules, unary)
            return handler._replace(unary_unary=unary)
        if handler.unary_stream is not None:
            stream: Stream = handler.unary_stream
            for stage in reversed(self._stages):
                stream = _stream_step(stage, rules, stream)
            return handler._replace(unary_stream=stream)
        raise RuntimeError(f"{rules.name}: {handler_kind(handler)} handlers cannot be wrapped")

    def wrap_registered(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> dict[str, grpc.RpcMethodHandler]:
        """The handlers of a service's registered methods, Beacon ones wrapped (refused, with
        RuntimeError, when of a kind that cannot be)."""
        wrapped = {}
        for name, handler in handlers.items():
            rules = self._rules.get(f"/{service}/{name}")
            if rules is not None:
                _refuse_kind(rules, handler)
                handler = self.wrap(handler, rules)
            wrapped[name] = handler
        return wrapped

    def wrap_generic(self, generic: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        """`generic` with the Beacon methods it serves wrapped (refused, with RuntimeError,
        when of a kind that cannot be); their chains are built now."""
        wrapping = _WrappedGeneric(generic, self)
        for path, rules in self._rules.items():
            handler = generic.service(_Details(path))
            if handler is not None:
                _refuse_kind(rules, handler)
                wrapping.wrapped(path, rules, handler)
        return wrapping


def _refuse_kind(rules: MethodRules, handler: Any) -> None:
    if handler.unary_unary is None and handler.unary_stream is None:
        raise RuntimeError(
            f"{rules.name} has a {handler_kind(handler)} handler, which the "
            "pipeline's steps cannot wrap (no authentication would run): refused"
        )


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose Beacon methods come back wrapped, each chain built once per
    handler it returns (a generic handler may build a new one per lookup: that one is
    wrapped then, and a call reaching a kind that cannot be fails instead of passing)."""

    def __init__(self, generic: grpc.GenericRpcHandler, pipeline: Pipeline) -> None:
        self.generic = generic
        self.pipeline = pipeline
        self._rules = pipeline._rules
        self._cache: dict[str, tuple[Any, Any]] = {}

    def wrapped(self, path: str, rules: MethodRules, handler: Any) -> Any:
        cached = self._cache.get(path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.pipeline.wrap(handler, rules)
        self._cache[path] = (handler, wrapped)
        return wrapped

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        handler = self.generic.service(details)
        rules = self._rules.get(details.method)
        if handler is None or rules is None:
            return handler
        return self.wrapped(details.method, rules, handler)


@dataclass(frozen=True)
class _Details(grpc.HandlerCallDetails):  # type: ignore[misc]
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


def handler_kind(handler: Any) -> str:
    """The kind of a method handler: unary-unary, unary-stream, stream-unary, stream-stream."""
    request = "stream" if handler.request_streaming else "unary"
    response = "stream" if handler.response_streaming else "unary"
    return f"{request}-{response}"
