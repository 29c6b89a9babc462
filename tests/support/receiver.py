"""A real HTTP receiver on 127.0.0.1 that verifies Standard Webhooks signatures with the
`standardwebhooks` library, as a customer's service would (no tests here).

Each path answers from a script of statuses (the last one repeats); a path may also hold its
requests until released (to kill a worker mid-delivery), redirect, or answer a large body.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    message_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool  # against the path's secret (any of its signatures)

    @property
    def event(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class Receiver:
    port: int = 0
    secrets: dict[str, list[str]] = field(default_factory=dict)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    holding: dict[str, asyncio.Event] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def of(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int, within: float = 60.0) -> list[Received]:
        """Until `path` received `count` requests; them."""
        async with asyncio.timeout(within):
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.of(path)) >= count)
        return self.of(path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = any(_verifies(secret, body, headers) for secret in self.secrets.get(path, []))
        async with self.arrived:
            self.received.append(
                Received(path, headers.get("webhook-id", ""), headers, body, verified)
            )
            self.arrived.notify_all()
        if path in self.holding:
            await self.holding[path].wait()
        script = self.scripts.get(path, [200])
        status = script[min(self.served[path], len(script) - 1)]
        self.served[path] += 1
        if status in (301, 302, 307, 308):
            raise web.HTTPTemporaryRedirect(self.url("redirected"))
        if status == 299:  # a 200 with a body far beyond any cap
            return web.Response(status=200, body=b"x" * (8 * 1024 * 1024))
        return web.Response(status=status, text="ok" if status < 300 else "no")


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{path:.*}", receiver.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    receiver.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield receiver
    finally:
        for event in receiver.holding.values():
            event.set()
        await runner.cleanup()
