"""A fake of the six AI providers' HTTP APIs, for tests and benchmarks.

One aiohttp server on 127.0.0.1 answers at each provider's real API paths below a per-provider
prefix (``/openai/v1/responses``, ``/anthropic/v1/messages``, ``/google/v1beta/models/{model}:
generateContent``, ``/perplexity/chat/completions``, ``/mistral/v1/conversations``,
``/cohere/v2/chat``; `FakeProviderServer.base_url` gives the base URL an adapter needs). It checks
the API key and the request shape, answers with a deterministic text and citations, and can be
steered: latency, queued faults, scripted answers, request counters, and a provider-side rate
limit (429 with Retry-After above N requests in any second, as a real API key's limit would).

From tests::

    async with FakeProviderServer(latency=0.0) as server:
        server.script("best crm", "Acme beats HubSpot.", [("https://acme.com/", "Acme")])
        server.inject("openai", Fault("rate_limit", retry_after=2))
        adapter = build_adapter(server.config("openai"), client)

From another process: ``python -m tests.support.fakes.provider_server --port 0 --latency 0.2`` prints
the base URL as its first line; ``GET/POST {base}/_control`` reads and changes the same controls
(see `FakeProviderServer._control`).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, get_args
from urllib.parse import quote_plus

from aiohttp import web

from service.providers import spec
from tests.support.fakes.dialects import (
    API_ROOTS,
    DIALECTS,
    BadRequest,
    Call,
    Dialect,
    Reply,
    ScriptedAnswer,
    citation_pairs,
)
from workers.providers import ProviderConfig

FAKE_API_KEY = "fake-key"
MAX_BODIES = 1000

FaultKind = Literal[
    "rate_limit",  # 429 with the provider's retry hint (header or body)
    "quota_exhausted",  # 429 meaning a spent quota (OpenAI, Anthropic, Gemini per-day)
    "server_error",  # 500
    "overloaded",  # 529 for Anthropic, 503 elsewhere
    "malformed",  # 200 with JSON of the wrong shape
    "invalid_json",  # 200 with a truncated body
    "hang",  # no answer until release_hangs() or shutdown
    "pause_turn",  # Anthropic only: a paused turn the client must resume
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


def default_config(
    name: str,
    api_key: str,
    *,
    base_url: str | None = None,
    model: str | None = None,
    timeout: float = 60.0,
    api: str = "",
) -> ProviderConfig:
    """A config of provider `name` with its default base URL and model for what is not given."""
    provider = spec(name)
    return ProviderConfig(
        name=name,
        api_key=api_key,
        base_url=base_url or provider.base_url,
        model=model or provider.model,
        timeout=timeout,
        api=api,
    )


_HOST_IN_PROMPT = re.compile(r"\b(?:[a-z0-9-]+\.)+[a-z]{2,}\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure to serve instead of the next matching request's answer."""

    kind: FaultKind
    retry_after: float = 1.0
    prompt: str | None = None  # only requests with this prompt; None matches any

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        kind = data.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        return cls(kind, float(data.get("retry_after", 1.0)), data.get("prompt"))


def default_answer(prompt: str) -> ScriptedAnswer:
    """The answer to an unscripted prompt: it repeats the prompt, so its names appear in the text.

    Hosts written in the prompt (``acme.com``) become citations; otherwise one example.com page.
    """
    hosts = dict.fromkeys(host.lower() for host in _HOST_IN_PROMPT.findall(prompt))
    citations = tuple((f"https://www.{host}/", host) for host in hosts)
    if not citations:
        citations = ((f"https://example.com/search?q={quote_plus(prompt[:80])}", "Example"),)
    text = f"Here is what I found about {prompt.strip()}. Sources agree on the main points."
    return ScriptedAnswer(text, citations)


@dataclass(slots=True)
class RateLimit:
    """A provider's limit: more than `per_second` requests within one second get a 429."""

    per_second: int
    retry_after: float = 1.0


@dataclass(slots=True)
class Traffic:
    """What one provider received: arrival times (monotonic) of every authorized request, the
    times of the 429s the rate limit sent, and the most requests seen within any one second."""

    arrivals: list[float] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)
    peak_per_second: int = 0
    _window: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> int:
        """Counts an arrival; returns the requests of the last second, this one included."""
        self.arrivals.append(now)
        self._window.append(now)
        while self._window[0] <= now - 1.0:
            self._window.popleft()
        self.peak_per_second = max(self.peak_per_second, len(self._window))
        return len(self._window)


@dataclass(slots=True)
class _Waiter:
    predicate: Callable[[], bool]
    done: asyncio.Future[None]


class FakeProviderServer:
    """The fake server and its controls. Use as ``async with`` or `start`/`close`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        api_key: str = FAKE_API_KEY,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self._initial_latency = latency
        self._latency: dict[str | None, float] = {None: latency}
        self._faults: dict[str, deque[Fault]] = {name: deque() for name in DIALECTS}
        self._scripts: dict[tuple[str | None, str], ScriptedAnswer] = {}
        self._requests: Counter[str] = Counter()
        self._prompts: Counter[tuple[str, str]] = Counter()
        self._waiters: list[_Waiter] = []
        self._release = asyncio.Event()
        self._rate_limits: dict[str, RateLimit] = {}
        self._traffic: dict[str, Traffic] = {name: Traffic() for name in DIALECTS}
        # The last MAX_BODIES request bodies of each provider (`received`).
        self._bodies: dict[str, deque[dict[str, Any]]] = {
            name: deque(maxlen=MAX_BODIES) for name in DIALECTS
        }
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None

    # Life cycle

    async def start(self) -> FakeProviderServer:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        for name, dialect in DIALECTS.items():
            for route, path in dialect.routes.items():
                app.router.add_post(f"/{name}{path}", self._handler(dialect, route))
        app.router.add_get("/_control", self._control)
        app.router.add_post("/_control", self._control)
        # No access log: it would dominate the cost of thousands of requests per second.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self.release_hangs()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProviderServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # Addresses

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    def base_url(self, provider: str) -> str:
        """What to put in ``ProviderConfig.base_url`` to reach ``provider`` on this server."""
        return f"{self.url}/{provider}{API_ROOTS[provider]}"

    def config(
        self,
        provider: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 10.0,
        api: str = "",
    ) -> ProviderConfig:
        """A provider config pointing at this server, with its API key unless one is given."""
        return default_config(
            provider,
            self.api_key if api_key is None else api_key,
            base_url=self.base_url(provider),
            model=model,
            timeout=timeout,
            api=api,
        )

    # Controls

    def set_latency(self, seconds: float, provider: str | None = None) -> None:
        """Delay every answer (of ``provider``, or of all without their own) by ``seconds``."""
        self._check_provider(provider)
        self._latency[provider] = seconds

    def script(
        self,
        prompt: str,
        text: str,
        citations: Sequence[tuple[str, str]] = (),
        provider: str | None = None,
    ) -> None:
        """Answer ``prompt`` (from ``provider``, or any) with ``text`` citing ``(url, title)``s."""
        self._check_provider(provider)
        self._scripts[provider, prompt] = ScriptedAnswer(text, tuple(citations))

    def inject(self, provider: str, *faults: Fault) -> None:
        """Queue faults: each is served, in order, instead of one matching request's answer."""
        self._check_provider(provider)
        if provider != "anthropic" and any(fault.kind == "pause_turn" for fault in faults):
            raise ValueError("pause_turn exists only for anthropic")
        self._faults[provider].extend(faults)

    def set_rate_limit(self, provider: str, limit: RateLimit | None) -> None:
        """Answer ``provider``'s requests beyond ``limit.per_second`` in any one second (all
        requests counted, refused ones too) with a 429 carrying ``limit.retry_after``; None
        lifts the limit."""
        self._check_provider(provider)
        if limit is None:
            self._rate_limits.pop(provider, None)
        else:
            self._rate_limits[provider] = limit

    def traffic(self, provider: str) -> Traffic:
        """Arrivals, 429s and the peak requests per second of ``provider`` since the reset."""
        return self._traffic[provider]

    def received(self, provider: str) -> list[dict[str, Any]]:
        """The JSON bodies of ``provider``'s well-formed requests since the reset, in order."""
        return list(self._bodies[provider])

    def pending_faults(self, provider: str) -> int:
        return len(self._faults[provider])

    def release_hangs(self) -> None:
        """Let every hanging request finish (with a 500)."""
        self._release.set()
        self._release = asyncio.Event()

    def reset(self) -> None:
        """Release hanging requests; forget faults, scripts, latency overrides and counters."""
        self.release_hangs()
        self._latency = {None: self._initial_latency}
        for queue in self._faults.values():
            queue.clear()
        self._scripts.clear()
        self._rate_limits.clear()
        self._traffic = {name: Traffic() for name in DIALECTS}
        self._requests.clear()
        self._prompts.clear()
        for bodies in self._bodies.values():
            bodies.clear()
        self.max_in_flight = self.in_flight

    def requests(self, provider: str | None = None, prompt: str | None = None) -> int:
        """Requests received so far, for one provider and/or prompt.

        Requests rejected before their prompt was read count only without ``prompt``.
        """
        if prompt is None:
            return self._requests[provider] if provider else sum(self._requests.values())
        if provider:
            return self._prompts[provider, prompt]
        return sum(count for (_, said), count in self._prompts.items() if said == prompt)

    async def wait_for_requests(
        self,
        count: int,
        provider: str | None = None,
        prompt: str | None = None,
        *,
        prompts: Sequence[str] = (),
    ) -> None:
        """Return once ``requests(provider, prompt) >= count`` (with ``prompts``: once the
        requests for those prompts add up to ``count``).

        Bound the wait with ``asyncio.timeout`` so that a request that never comes fails the test.
        """

        def reached() -> bool:
            if prompts:
                return sum(self.requests(provider, p) for p in prompts) >= count
            return self.requests(provider, prompt) >= count

        if reached():
            return
        waiter = _Waiter(reached, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter.done
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _check_provider(self, provider: str | None) -> None:
        if provider is not None and provider not in DIALECTS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {tuple(DIALECTS)}")

    def _count(self, provider: str, prompt: str | None) -> None:
        self._requests[provider] += 1
        if prompt is not None:
            self._prompts[provider, prompt] += 1
        for waiter in list(self._waiters):
            if not waiter.done.done() and waiter.predicate():
                waiter.done.set_result(None)
                self._waiters.remove(waiter)

    def _next_fault(self, provider: str, prompt: str) -> Fault | None:
        queue = self._faults[provider]
        for index, fault in enumerate(queue):
            if fault.prompt is None or fault.prompt == prompt:
                del queue[index]
                return fault
        return None

    def _answer(self, provider: str, prompt: str) -> ScriptedAnswer:
        scripted = self._scripts.get((provider, prompt)) or self._scripts.get((None, prompt))
        return scripted or default_answer(prompt)

    # HTTP

    def _handler(
        self, dialect: Dialect, route: str
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                reply = await self._serve(dialect, route, request)
            finally:
                self.in_flight -= 1
            return reply.response()

        return handle

    async def _serve(self, dialect: Dialect, route: str, request: web.Request) -> Reply:
        provider = dialect.name
        if not dialect.authorized(request, self.api_key):
            self._count(provider, None)
            return dialect.unauthorized()
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise BadRequest("request body must be a JSON object")
            call = dialect.parse(route, request, payload)
        except (ValueError, BadRequest) as exc:
            self._count(provider, None)
            return dialect.bad_request(str(exc) or "invalid JSON body")
        self._count(provider, call.prompt)
        self._bodies[provider].append(payload)
        now = time.monotonic()
        in_last_second = self._traffic[provider].record(now)
        limit = self._rate_limits.get(provider)
        if limit is not None and in_last_second > limit.per_second:
            self._traffic[provider].throttled.append(now)
            return dialect.rate_limited(limit.retry_after, quota=False)
        fault = self._next_fault(provider, call.prompt)
        if fault is not None and fault.kind == "hang":
            await self._release.wait()
            return dialect.server_error(overloaded=False)
        latency = self._latency.get(provider, self._latency[None])
        if latency > 0:
            await asyncio.sleep(latency)
        if fault is not None:
            return self._fault_reply(dialect, call, fault)
        return Reply(200, dialect.render(route, call, self._answer(provider, call.prompt)))

    def _fault_reply(self, dialect: Dialect, call: Call, fault: Fault) -> Reply:
        match fault.kind:
            case "rate_limit" | "quota_exhausted":
                return dialect.rate_limited(
                    fault.retry_after, quota=fault.kind == "quota_exhausted"
                )
            case "server_error" | "overloaded":
                return dialect.server_error(overloaded=fault.kind == "overloaded")
            case "malformed":
                return Reply(200, {"id": "fake", "object": "unexpected"})
            case "invalid_json":
                return Reply(200, '{"id": "fake", "outp')
            case _:  # pause_turn; hang was handled by the caller
                return Reply(200, dialect.paused(call))

    async def _control(self, request: web.Request) -> web.Response:
        """``GET``: counters and settings. ``POST`` a JSON object to change them; its keys, all
        optional, are applied in this order:

        - ``"reset": true`` — as `reset`;
        - ``"latency"``: seconds for all, or ``{"openai": 0.5, "*": 0.2}``;
        - ``"scripts"``: ``[{"prompt", "text", "citations": [{"url", "title"}], "provider"?}]``;
        - ``"faults"``: ``{"openai": [{"kind": "rate_limit", "retry_after": 2, "prompt"?}]}``;
        - ``"rate_limits"``: ``{"openai": {"per_second": 20, "retry_after": 1}}`` (null lifts);
        - ``"release_hangs": true``.

        Answers with the state as ``GET`` does; 400 with ``{"error"}`` when a value is wrong.
        """
        if request.method == "POST":
            try:
                self._apply(await request.json())
            except (ValueError, TypeError, KeyError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self._state())

    def _apply(self, changes: object) -> None:
        if not isinstance(changes, dict):
            raise ValueError("control body must be a JSON object")
        if changes.get("reset"):
            self.reset()
        latency = changes.get("latency")
        if isinstance(latency, (int, float)):
            self.set_latency(float(latency))
        elif isinstance(latency, dict):
            for provider, seconds in latency.items():
                self.set_latency(float(seconds), None if provider == "*" else provider)
        for item in changes.get("scripts", ()):
            citations = citation_pairs(item.get("citations", ()))
            self.script(item["prompt"], item["text"], citations, item.get("provider"))
        for provider, faults in (changes.get("faults") or {}).items():
            self.inject(provider, *(Fault.from_json(fault) for fault in faults))
        for provider, limit in (changes.get("rate_limits") or {}).items():
            self.set_rate_limit(
                provider,
                None
                if limit is None
                else RateLimit(int(limit["per_second"]), float(limit.get("retry_after", 1.0))),
            )
        if changes.get("release_hangs"):
            self.release_hangs()

    def _state(self) -> dict[str, Any]:
        return {
            "requests": {name: self._requests[name] for name in DIALECTS},
            "prompts": [
                {"provider": provider, "prompt": prompt, "count": count}
                for (provider, prompt), count in self._prompts.items()
            ],
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "latency": {provider or "*": seconds for provider, seconds in self._latency.items()},
            "pending_faults": {name: len(queue) for name, queue in self._faults.items()},
            "rate_limited": {name: len(self._traffic[name].throttled) for name in DIALECTS},
            "peak_per_second": {name: self._traffic[name].peak_per_second for name in DIALECTS},
            "base_urls": {name: self.base_url(name) for name in DIALECTS},
        }


async def _serve_forever(host: str, port: int, latency: float, api_key: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with FakeProviderServer(host=host, port=port, latency=latency, api_key=api_key) as server:
        print(server.url, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--api-key", default=FAKE_API_KEY)
    args = parser.parse_args(argv)
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_forever(args.host, args.port, args.latency, args.api_key))


if __name__ == "__main__":
    main()

__all__ = [
    "FAKE_API_KEY",
    "FAULT_KINDS",
    "FakeProviderServer",
    "Fault",
    "RateLimit",
    "ScriptedAnswer",
    "Traffic",
]
