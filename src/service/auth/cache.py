"""A small per-process cache for hot lookups (tokens, users, service keys, messages)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small LRU with expiry, for per-process caches of hot lookups.

    Bounded twice: never more than `max_items` entries (the least recently stored go first),
    and an expired entry does not wait for that: each `put` drops the expired entries at the
    old end of the order (amortised O(1)), and `get` drops the one it finds expired. A process
    that stores a distinct key every second therefore keeps about `ttl` seconds of them, not
    `max_items` (whose entries may each hold a message or a view).
    """

    def __init__(self, ttl_seconds: float, max_items: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_items = max_items
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        """Stores `value` for the cache's ttl, or for `ttl` seconds when that is shorter."""
        ttl = self.ttl if ttl is None else min(ttl, self.ttl)
        if ttl <= 0:
            return
        now = time.monotonic()
        self._items[key] = (now + ttl, value)
        self._items.move_to_end(key)
        items = self._items
        while len(items) > self.max_items:
            items.popitem(last=False)
        # The oldest stored first: drop those that have expired (a shorter per-entry ttl can
        # hide an expired entry behind a live one; `max_items` still bounds it).
        for _ in range(2):
            oldest = next(iter(items.items()), None)
            if oldest is None or oldest[1][0] >= now:
                break
            del items[oldest[0]]
