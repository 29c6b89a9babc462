"""The workers' side of `service.tracing`: the trace context of the message being processed.

`MessageTrace` (Dramatiq middleware) keeps the current message's options where the actor's
coroutine finds them: Dramatiq's AsyncIO middleware starts the coroutine from the worker thread,
so the task on the event loop inherits the thread's context variables. `consuming` opens the
actor's span as a child of the context the message carries.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from opentelemetry.trace import Span, SpanKind

from service import tracing

_options: ContextVar[dict[str, Any] | None] = ContextVar("beacon_message_options", default=None)


class MessageTrace(Middleware):
    """Exposes the options of the message being processed to `consuming`."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _options.set(message.options if tracing.enabled() else None)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        _options.set(None)

    after_skip_message = after_process_message


def consuming(
    actor: str, **attributes: str | int | bool
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of an actor processing the current message (a CONSUMER span continuing the
    message's trace); no-op while tracing is off."""
    if not tracing.enabled():
        return contextlib.nullcontext()
    return tracing.span(
        f"beacon.worker {actor}",
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "dramatiq", "messaging.operation": "process", **attributes},
        parent=tracing.context_of(_options.get()),
    )
