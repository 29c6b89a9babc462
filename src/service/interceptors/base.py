"""Shared mechanics of Beacon's interceptors.

A grpc.aio interceptor sees the method name and metadata but not the request, so each of
ours wraps the handler's behaviour instead. The wrapped handler is built once per method
and cached; RPCs outside beacon.v1 (health, reflection) pass through untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.interceptors.rules import MethodRules, method_rules

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
        return handler
