"""Rate limits from each RPC's `(beacon.v1.rate_limit)` options, in two phases.

Before authorization (right after authentication) the call is counted by peer and by user,
so a caller who only ever gets NOT_FOUND is limited like any other; the per-peer ceiling
is counted even before authentication. Workspace budgets are counted after authorization,
so that nobody can spend the budget of a workspace they cannot reach.
"""

from __future__ import annotations

from typing import Any

from beacon.v1 import options_pb2
from service.auth.context import current_call
from service.pipeline.base import Around
from service.rate_limits import RateLimits
from service.rpc_options import MethodRules

CALLER_KEYS = frozenset({options_pb2.RATE_LIMIT_KEY_USER, options_pb2.RATE_LIMIT_KEY_PEER})
WORKSPACE_KEYS = frozenset({options_pb2.RATE_LIMIT_KEY_WORKSPACE})


class PeerCeilingAround(Around):
    """Every call, authenticated or not, against the per-peer ceiling."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits

    async def before(self, rules: MethodRules, request: Any, context: Any) -> None:
        await self.limits.hit_peer_ceiling(current_call())


class RateLimitAround(Around):
    """The RPC's own rules whose key is among `keys`."""

    def __init__(self, limits: RateLimits, keys: frozenset[int]) -> None:
        self.limits = limits
        self.keys = keys

    async def before(self, rules: MethodRules, request: Any, context: Any) -> None:
        await self.limits.hit_rules(rules, self.keys, current_call(), request)
