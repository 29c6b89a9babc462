"""Every per-process structure that grows with distinct keys has a bound and evicts (issue 26).

Each test fills one structure past its bound with distinct keys and checks that it holds no
more than the bound, and that it still works afterwards. `make soak` (bench/soak.py) checks
the whole: RSS flat after warm-up over an hour of load.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from service import access_cache, memtrace
from service.access_cache import AccessCache
from service.auth.cache import TtlCache
from service.auth.identity import Authenticator
from service.auth.tokens import TokenVerifier, mint_dev_token
from service.config import Settings
from service.db.database import Database
from service.domain.actor import Access
from service.domain.errors import ResourceExhausted
from service.domain.tenancy.workspace_views import WorkspaceView
from service.logs import AccessLog, JsonFormatter, TextFormatter, configure_logging
from service.pipeline import observability
from service.servicers.convert import WorkspaceMessages
from tests.support import REDIS_URL, reachable

SECRET = "bounds-test-secret-0123456789abcdef"
SIGNING = "bounds-test-signing-secret-0123456789abcdef"


class Clock:
    """time.monotonic under the test's control (what the caches read)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = time.monotonic()
        monkeypatch.setattr(time, "monotonic", self)

    def __call__(self) -> float:
        return self.now


# --- TtlCache (tokens, users, service keys, acted-as users, Workspace messages) --------------


def test_ttl_cache_holds_at_most_max_items_dropping_the_oldest() -> None:
    cache: TtlCache[int, str] = TtlCache(ttl_seconds=60, max_items=100)
    for n in range(1000):
        cache.put(n, f"value {n}")
    assert len(cache) == 100
    assert cache.get(0) is None and cache.get(899) is None
    assert cache.get(900) == "value 900" and cache.get(999) == "value 999"


def test_ttl_cache_drops_expired_entries_long_before_max_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    cache: TtlCache[int, str] = TtlCache(ttl_seconds=1.0, max_items=10_000)
    for n in range(5000):  # a distinct key every 10 ms: 50 s of them
        cache.put(n, "x")
        clock.now += 0.01
    # About one second of them is live; the rest were dropped, not kept until max_items.
    assert len(cache) <= 110
    assert cache.get(4999) == "x"


async def test_verified_token_cache_is_bounded() -> None:
    verifier = TokenVerifier(Settings(auth_secret=SECRET))
    verifier._verified.max_items = 50
    for n in range(120):
        token = mint_dev_token(verifier.settings, email=f"u{n}@example.com", ttl_seconds=600)
        assert (await verifier.verify(token)).email == f"u{n}@example.com"
    assert len(verifier._verified) == 50


def test_user_service_key_and_act_as_caches_are_bounded() -> None:
    authenticator = Authenticator(
        Settings(auth_secret=SECRET), Database("sqlite+aiosqlite:///:memory:")
    )
    for cache in (authenticator._users, authenticator._keys, authenticator._acted):
        assert 0 < cache.max_items <= 10_000
        for n in range(cache.max_items + 50):
            cache.put(n, "x")  # type: ignore[arg-type]
        assert len(cache) == cache.max_items


def workspace_view(n: int) -> WorkspaceView:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    return WorkspaceView(
        id=f"ws_{n:026d}",
        organization_id="org_1",
        organization_name="Org",
        organization_slug="org",
        name=f"Workspace {n}",
        slug=f"workspace-{n}",
        domain="example.com",
        icon_file_id="",
        brand_aliases=[],
        competitors=[],
        enabled_providers=[],
        cron="",
        time_zone="UTC",
        create_time=now,
        update_time=now,
        version=1,
        delete_time=None,
        purge_time=None,
    )


def test_workspace_messages_memo_is_bounded_and_drops_expired_views(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    settings = Settings(signing_secret=SIGNING)
    messages = WorkspaceMessages(settings, max_age=1.0, max_entries=64)
    views = [workspace_view(n) for n in range(200)]
    for view in views:  # all at once: the entry bound
        assert messages.get(view).name == view.name
    assert len(messages._built) == 64
    for view in views:  # one every 50 ms: the expiry, far below the entry bound
        messages.get(replace(view))
        clock.now += 0.05
    assert len(messages._built) <= 22


# --- the access cache ----------------------------------------------------------------------


def access(n: int) -> Access:
    return Access(organization_id=f"org_{n % 7}", workspace_id=f"ws_{n % 11}")


def test_access_cache_holds_at_most_max_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_cache, "MAX_ENTRIES", 100)
    cache = AccessCache(shared=False)
    for n in range(1000):  # a distinct resource each: run ids, prompt ids
        cache.put(("ws", "user_1", f"run_{n}"), access(n), cache.generation)
    assert len(cache._entries) <= 100
    assert sum(len(keys) for keys in cache._tagged.values()) <= 300
    key = ("ws", "user_1", "run_999")
    assert cache.get(key) == access(999)


def test_access_cache_tag_lists_are_bounded_when_expired_entries_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    monkeypatch.setattr(access_cache, "MAX_ENTRIES", 100)
    monkeypatch.setattr(access_cache, "MAX_TAGGED_KEYS", 300)
    cache = AccessCache(shared=False, clock=clock)
    for n in range(1000):
        key = ("ws", f"user_{n % 3}", f"run_{n}")
        cache.put(key, access(n), cache.generation)
        clock.now += 2.0  # expired by the next lookup, which drops the entry
        assert cache.get(key) is None
    assert len(cache._entries) <= 100
    assert sum(len(keys) for keys in cache._tagged.values()) <= 300


def test_access_cache_drops_expired_entries_long_before_max_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    cache = AccessCache(shared=False, clock=clock)
    for n in range(5000):  # a new run every 10 ms, never asked about again: 50 s of them
        cache.put(("ws", "user_1", f"run_{n}"), access(n), cache.generation)
        clock.now += 0.01
    # About a second of them is live; the rest were dropped, not kept until MAX_ENTRIES.
    assert len(cache._entries) <= 110
    assert cache.get(("ws", "user_1", "run_4999")) == access(4999)


# --- rate limits ------------------------------------------------------------------------------


@pytest.mark.skipif(not reachable(REDIS_URL, 6379), reason="needs Redis")
async def test_batched_rate_limit_slots_are_bounded_and_count_exactly_beyond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service import rate_limits
    from service.rate_limits import RateLimits
    from service.rpc_options import RateLimit
    from tests.support.app import delete_redis_keys

    monkeypatch.setattr(rate_limits, "MAX_BATCHED_SLOTS", 40)
    prefix = f"beacon-bounds-{uuid.uuid4().hex[:8]}"
    limits = RateLimits(
        Settings(redis_url=REDIS_URL, rate_limit_key_prefix=prefix, peer_rate_limit_per_minute=0)
    )
    from beacon.v1 import options_pb2

    hot = RateLimit(600, 60, options_pb2.RATE_LIMIT_KEY_USER, False, "")
    assert rate_limits.is_hot(hot)
    try:
        assert limits.batched is not None
        for n in range(150):  # a distinct user each
            await limits.hit("/beacon.v1.Test/Read", 0, hot, f"user:{n}")
        assert len(limits.batched._slots) == 40
        # A subject beyond the bound is still counted, exactly, in the shared store.
        for _ in range(600):
            await limits.hit("/beacon.v1.Test/Read", 0, hot, "user:late")
        with pytest.raises(ResourceExhausted):
            await limits.hit("/beacon.v1.Test/Read", 0, hot, "user:late")
        assert len(limits.batched._slots) == 40
    finally:
        await limits.batched.close() if limits.batched else None
        await delete_redis_keys(prefix)


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window-counter"])
async def test_in_process_rate_limit_counts_are_bounded(
    monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    from beacon.v1 import options_pb2
    from service import rate_limits
    from service.rate_limits import RateLimits
    from service.rpc_options import RateLimit

    monkeypatch.setattr(rate_limits, "MAX_MEMORY_KEYS", 50)
    limits = RateLimits(Settings(redis_url="", rate_limit_strategy=strategy))
    storage = limits.storage
    assert isinstance(storage, rate_limits.BoundedMemoryStorage)
    rule = RateLimit(2, 900, options_pb2.RATE_LIMIT_KEY_PEER, False, "")
    for n in range(500):  # a distinct peer each, all within one window
        await limits.hit("/beacon.v1.Test/Write", 0, rule, f"peer:ipv4:10.0.{n // 250}.{n % 250}")
        assert len(storage.storage) + len(storage.events) <= 50
    # Still counting: a subject's third call in the window is refused.
    await limits.hit("/beacon.v1.Test/Write", 0, rule, "peer:ipv4:10.9.9.9")
    await limits.hit("/beacon.v1.Test/Write", 0, rule, "peer:ipv4:10.9.9.9")
    with pytest.raises(ResourceExhausted):
        await limits.hit("/beacon.v1.Test/Write", 0, rule, "peer:ipv4:10.9.9.9")


# --- metrics, log lines ------------------------------------------------------------------------


def test_rpc_metric_children_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability, "_COUNTERS", {})
    monkeypatch.setattr(observability, "_TIMERS", {})
    monkeypatch.setattr(observability, "_METHODS", {})
    for n in range(observability.MAX_METHODS + 100):
        observability._counter(f"/beacon.v1.Fake/M{n}", "OK").inc()
        observability._timer(f"/beacon.v1.Fake/M{n}").observe(0.001)
    assert len(observability._COUNTERS) == observability.MAX_METHODS + 1
    assert len(observability._TIMERS) == observability.MAX_METHODS + 1
    other = observability.RPCS.labels(observability.OTHER_METHOD, "OK")
    assert other._value.get() >= 100


async def test_pending_request_lines_are_bounded_while_the_loop_is_busy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_logging("INFO", json_lines=True)
    log = AccessLog()
    written: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record)

    keep = Keep()
    log.logger.addHandler(keep)
    try:
        total = AccessLog.MAX_PENDING * 5 + 7
        for n in range(total):  # no await: the timed flush cannot run meanwhile
            log.record(time.time(), "/m", "OK", 1.0, f"req_{n}", "", "user_1", "", "peer")
            assert len(log._pending) < AccessLog.MAX_PENDING
        await asyncio.sleep(AccessLog.FLUSH_SECONDS * 4)
        assert [r.request_id for r in written] == [f"req_{n}" for n in range(total)]  # type: ignore[attr-defined]
    finally:
        log.logger.removeHandler(keep)


def test_malloc_arenas_are_capped_on_glibc_and_left_alone_at_zero() -> None:
    """Issue 26: serve, worker and ticker cap glibc's arenas (RSS grew in steps as bursts
    of grpc and executor threads each took an arena of their own)."""
    glibc = platform.libc_ver()[0] == "glibc"
    assert memtrace.limit_arenas(Settings(malloc_arena_max=2)) is glibc
    assert memtrace.limit_arenas(Settings(malloc_arena_max=0)) is False


@pytest.mark.parametrize("json_lines", [True, False])
def test_a_logged_traceback_leaves_no_source_lines_cached(json_lines: bool) -> None:
    """Issue 26: formatting a traceback read every frame's source file into linecache and
    kept it (the tickers' and worker's RSS stepped up 3-4 MiB after a database outage)."""
    import linecache

    formatter = JsonFormatter() if json_lines else TextFormatter()
    linecache.clearcache()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(record)
    assert "ValueError: boom" in text and "raise ValueError" in text
    assert linecache.cache == {}
