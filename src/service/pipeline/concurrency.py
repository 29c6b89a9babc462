"""Concurrency budgets of one server process: unary calls and streams apart, per-user and
per-workspace stream caps, and the guard that ends a stream whose caller lost the right to it.

grpc.aio's own `maximum_concurrent_rpcs` counts every RPC, so streams held open (WatchRun)
would use up the budget of unary calls: a few users holding streams made everyone's calls
RESOURCE_EXHAUSTED. Here unary calls count against `BEACON_MAX_CONCURRENT_RPCS` and streams
against `BEACON_MAX_CONCURRENT_STREAMS`, each apart (`ConcurrencyAround`, before
authentication, so that a flood of unauthenticated calls is bounded too). Once the caller and
the workspace are known (`StreamCapsAround`, after authorization) a stream also takes a slot
of its user (`BEACON_MAX_STREAMS_PER_USER`) and of its workspace
(`BEACON_MAX_STREAMS_PER_WORKSPACE`). Every count is per process: with R replicas a user may
hold R times their cap, and no replica's unary calls ever wait behind streams.

A stream lives at most `BEACON_MAX_STREAM_SECONDS` (then UNAVAILABLE STREAM_LIFETIME_ENDED:
reopen it) and re-authenticates its original credentials every
`BEACON_WATCH_ACCESS_CHECK_SECONDS` (an expired token or a revoked service key ends it
UNAUTHENTICATED): `StreamGuard.check`, which a streaming handler calls between its polls
(`CallContext.stream_check`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from service.auth.context import Principal, current_call
from service.auth.identity import Authenticator
from service.config import Settings
from service.domain.errors import ResourceExhausted, Unauthenticated, Unavailable
from service.pipeline.base import Around, Stream, Unary
from service.rpc_options import MethodRules

BUSY_RETRY_SECONDS = 1.0
STREAMS_RETRY_SECONDS = 5.0


class ConcurrencyAround(Around):
    """Unary calls and streams in flight in this process, each against its own budget."""

    def __init__(self, max_unary: int, max_streams: int) -> None:
        self.max_unary = max_unary
        self.max_streams = max_streams
        self.unary = 0
        self.streams = 0

    async def call(self, rules: MethodRules, request: Any, context: Any, inner: Unary) -> Any:
        if self.unary >= self.max_unary:
            raise ResourceExhausted(
                f"the server is serving its maximum of {self.max_unary} concurrent calls; retry",
                retry_after=BUSY_RETRY_SECONDS,
                subject="server",
                quota=f"{self.max_unary} concurrent calls (BEACON_MAX_CONCURRENT_RPCS)",
                reason="SERVER_BUSY",
            )
        self.unary += 1
        try:
            return await inner(request, context)
        finally:
            self.unary -= 1

    async def stream(
        self, rules: MethodRules, request: Any, context: Any, inner: Stream
    ) -> AsyncIterator[Any]:
        if self.streams >= self.max_streams:
            raise ResourceExhausted(
                f"the server holds its maximum of {self.max_streams} open streams; retry",
                retry_after=STREAMS_RETRY_SECONDS,
                subject="server",
                quota=f"{self.max_streams} open streams (BEACON_MAX_CONCURRENT_STREAMS)",
                reason="TOO_MANY_STREAMS",
            )
        self.streams += 1
        try:
            async for item in inner(request, context):
                yield item
        finally:
            self.streams -= 1


class StreamGuard:
    """Ends a stream (by raising from `check`) once its lifetime is over or the credentials
    it was opened with no longer authenticate the same principal."""

    def __init__(
        self,
        authenticator: Authenticator,
        principal: Principal,
        metadata: dict[str, str],
        *,
        lifetime: float,
        check_every: float,
    ) -> None:
        self.authenticator = authenticator
        self.principal = principal
        self.authorization = metadata.get("authorization")
        self.act_as = metadata.get("x-beacon-act-as")
        self.lifetime = lifetime
        self.check_every = check_every
        started = time.monotonic()
        self.ends_at = started + lifetime
        self.next_check = started + check_every

    async def check(self) -> None:
        """Raises Unavailable (STREAM_LIFETIME_ENDED) past the lifetime, and, every
        `check_every` seconds, Unauthenticated (or PermissionDenied) when the credentials
        fail or name someone else now (an expired token, a revoked key, a deleted user)."""
        now = time.monotonic()
        if now >= self.ends_at:
            raise Unavailable(
                f"the stream reached its maximum lifetime of {self.lifetime:g} s"
                " (BEACON_MAX_STREAM_SECONDS); open it again",
                reason="STREAM_LIFETIME_ENDED",
                retry_after=0,
            )
        if now < self.next_check:
            return
        again = await self.authenticator.authenticate(self.authorization, self.act_as)
        if (again.user_id, again.key_id) != (self.principal.user_id, self.principal.key_id):
            raise Unauthenticated(
                "the credentials no longer name the caller who opened the stream",
                reason="CREDENTIALS_CHANGED",
            )
        self.next_check = time.monotonic() + self.check_every


class StreamCapsAround(Around):
    """A stream's slots of its user and of its workspace (unary calls pass untouched), and
    its guard (`CallContext.stream_check`)."""

    def __init__(self, settings: Settings, authenticator: Authenticator) -> None:
        self.per_user = settings.max_streams_per_user
        self.per_workspace = settings.max_streams_per_workspace
        self.lifetime = settings.max_stream_seconds
        self.check_every = settings.watch_access_check_seconds
        self.authenticator = authenticator
        self.users: Counter[str] = Counter()
        self.workspaces: Counter[str] = Counter()

    async def stream(
        self, rules: MethodRules, request: Any, context: Any, inner: Stream
    ) -> AsyncIterator[Any]:
        call = current_call()
        principal = call.require_principal()
        user = principal.actor_id
        workspace = call.access.workspace_id if call.access is not None else None
        if self.users[user] >= self.per_user:
            raise _too_many("user", user, self.per_user, "BEACON_MAX_STREAMS_PER_USER")
        if workspace is not None and self.workspaces[workspace] >= self.per_workspace:
            raise _too_many(
                "workspace", workspace, self.per_workspace, "BEACON_MAX_STREAMS_PER_WORKSPACE"
            )
        self.users[user] += 1
        if workspace is not None:
            self.workspaces[workspace] += 1
        call.stream_check = StreamGuard(
            self.authenticator,
            principal,
            call.metadata,
            lifetime=self.lifetime,
            check_every=self.check_every,
        ).check
        try:
            async for item in inner(request, context):
                yield item
        finally:
            _release(self.users, user)
            if workspace is not None:
                _release(self.workspaces, workspace)


def _too_many(scope: str, subject: str, cap: int, variable: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"this {scope} already holds {cap} open streams, the most allowed; close one first",
        retry_after=STREAMS_RETRY_SECONDS,
        subject=f"{scope}:{subject}",
        quota=f"{cap} open streams per {scope} ({variable})",
        reason="TOO_MANY_STREAMS",
    )


def _release(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
