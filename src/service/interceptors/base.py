"""Shared mechanics of Beacon's interceptors.

A grpc.aio interceptor sees the method name and metadata but not the request, so each of
ours wraps the handler's behaviour instead. The wrapped handler is built once per method
and cached; RPCs outside beacon.v1 (health, reflection) pass through untouched. Only
unary-unary and unary-stream handlers can be wrapped: `refuse_unwrappable` rejects, at start-up,
a Beacon method served by any other kind, and a call reaching one anyway fails instead of
passing unchecked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from service.rules import MethodRules, method_rules

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


class Around:
    """What an interceptor does around one call: `before` may raise; `after` always runs."""

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


def _unary_step(around: Around, rules: MethodRules, inner: Unary) -> Unary:
    if type(around).call is Around.call:  # only `before`: skip a frame per call

        async def before_then(request: Any, context: Any) -> Any:
            await around.before(rules, request, context)
            return await inner(request, context)

        return before_then

    async def step(request: Any, context: Any) -> Any:
        return await around.call(rules, request, context, inner)

    return step


def _stream_step(around: Around, rules: MethodRules, inner: Stream) -> Stream:
    async def step(request: Any, context: Any) -> AsyncIterator[Any]:
        async for item in around.stream(rules, request, context, inner):
            yield item

    return step


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps the unary-unary and unary-stream behaviours of Beacon RPCs with `Around`s.

    The first `Around` is outermost. One interceptor runs them all: the chain for a method is
    composed once and cached, so a call pays for no interceptor plumbing beyond the steps.
    """

    def __init__(self, *arounds: Around) -> None:
        self.arounds = arounds
        self._rules = method_rules()
        self._cache: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        rules = self._rules.get(details.method)
        if handler is None or rules is None:
            return handler
        cached = self._cache.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, rules)
        self._cache[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, rules: MethodRules) -> Any:
        if handler.unary_unary is not None:
            unary: Unary = handler.unary_unary
            for around in reversed(self.arounds):
                unary = _unary_step(around, rules, unary)
            return handler._replace(unary_unary=unary)
        if handler.unary_stream is not None:
            stream: Stream = handler.unary_stream
            for around in reversed(self.arounds):
                stream = _stream_step(around, rules, stream)
            return handler._replace(unary_stream=stream)
        raise RuntimeError(f"{rules.name}: {handler_kind(handler)} handlers cannot be wrapped")

    def refuse_unwrappable(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """Raises RuntimeError naming the first Beacon method that `handlers` serve with a
        handler kind these interceptors cannot wrap (client or bidirectional streaming), so
        that such a method can never be served without authentication."""
        for path, rules in self._rules.items():
            for generic in handlers:
                handler = generic.service(_Details(path))
                if handler is None:
                    continue
                if handler.unary_unary is None and handler.unary_stream is None:
                    raise RuntimeError(
                        f"{rules.name} has a {handler_kind(handler)} handler, which the "
                        "interceptors cannot wrap (no authentication would run): refused"
                    )


@dataclass(frozen=True)
class _Details(grpc.HandlerCallDetails):  # type: ignore[misc]
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


def handler_kind(handler: Any) -> str:
    """The kind of a method handler: unary-unary, unary-stream, stream-unary, stream-stream."""
    request = "stream" if handler.request_streaming else "unary"
    response = "stream" if handler.response_streaming else "unary"
    return f"{request}-{response}"
