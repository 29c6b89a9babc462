"""Provider budgets in one process (the in-memory store `beacon dev` uses): how calls are paced,
paused and shared; the cooldown also through the Redis store two processes share. The
fleet-wide behaviour over Redis, with `beacon worker` processes, is in
tests/collection/test_provider_budgets.py."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from limits.aio.storage import MemoryStorage
from pydantic import ValidationError

from service.config import DEFAULT_PROVIDER_RPM, Settings
from tests.support import REDIS_URL, unique
from tests.support.app import delete_redis_keys
from workers.budgets import (
    MAX_WAIT_SECONDS,
    Budget,
    MemoryState,
    ProviderBudgets,
    RedisState,
    budgets_of,
    estimate_tokens,
)

WS_A, WS_B = "ws-a", "ws-b"


def budgets(
    state: MemoryState | None = None, storage: MemoryStorage | None = None, **per: Budget
) -> ProviderBudgets:
    return ProviderBudgets(per, storage or MemoryStorage(), state or MemoryState())


async def grant_times(budget: ProviderBudgets, count: int, workspace: str = WS_A) -> list[float]:
    times = []
    for _ in range(count):
        assert await budget.acquire("openai", workspace, "best crm") is None
        times.append(time.monotonic())
    return times


def most_in_one_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_budgets_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEACON_OPENAI_RPM", "600")
    monkeypatch.setenv("BEACON_OPENAI_TPM", "90000")
    monkeypatch.setenv("BEACON_ANTHROPIC_RPM", "")  # empty: the conservative default
    monkeypatch.setenv("BEACON_GOOGLE_RPM", "0")  # explicitly unlimited
    monkeypatch.delenv("BEACON_MISTRAL_RPM", raising=False)
    configured = budgets_of(Settings())
    assert configured["openai"] == Budget(rpm=600, tpm=90000)
    assert configured["openai"].per_second == 10
    assert configured["anthropic"] == Budget(DEFAULT_PROVIDER_RPM, 0) == configured["mistral"]
    assert DEFAULT_PROVIDER_RPM == 60
    assert configured["google"] == Budget(0, 0)
    monkeypatch.setenv("BEACON_OPENAI_RPM", "-5")
    with pytest.raises(ValidationError, match=r"providers\.openai\.rpm"):
        Settings()


async def test_a_minutes_requests_are_spaced_evenly() -> None:
    budget = budgets(openai=Budget(rpm=180))  # 3 a second, one every 333 ms
    times = await grant_times(budget, 7)
    # Never a burst: a second holds 3 calls, and a 4th only at its very edge.
    assert most_in_one_second(times) <= 4
    assert times[-1] - times[0] >= 1.95
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.3


async def test_a_provider_without_a_budget_is_not_paced() -> None:
    budget = budgets(openai=Budget())
    times = await grant_times(budget, 50)
    assert times[-1] - times[0] < 0.5
    assert not budget.fair("openai")


async def test_a_429_pauses_every_process_sharing_the_store() -> None:
    state, storage = MemoryState(), MemoryStorage()
    first, second = budgets(state, storage), budgets(state, storage)
    await first.throttled("openai", 0.5)
    started = time.monotonic()
    assert await second.acquire("openai", WS_A, "best crm") is None
    assert time.monotonic() - started >= 0.5
    # Other providers are not paused.
    started = time.monotonic()
    assert await second.acquire("anthropic", WS_A, "best crm") is None
    assert time.monotonic() - started < 0.1


async def test_a_429_in_one_process_hands_back_the_next_probe_of_another(backend: str) -> None:
    """The shared part of a cooldown, through the store a fleet shares (Redis; on SQLite the
    process's own): the other process, which has never seen the 429, does not call."""
    prefix = unique("beacon-test-cooldown-")
    if backend == "postgres":
        states: list[MemoryState | RedisState] = [RedisState(REDIS_URL, prefix) for _ in "ab"]
    else:
        states = [MemoryState()] * 2
    first, second = (ProviderBudgets({}, MemoryStorage(), state) for state in states)
    try:
        await first.throttled("openai", 30.0)
        delay = await second.acquire("openai", WS_A, "best crm")
        assert delay is not None and delay >= 29.0, delay
        assert await second.acquire("anthropic", WS_A, "best crm") is None
    finally:
        for budget in (first, second):
            await budget.close()
        if backend == "postgres":
            await delete_redis_keys(prefix)


async def test_a_long_cooldown_hands_the_probe_back_instead_of_holding_it() -> None:
    budget = budgets()
    await budget.throttled("openai", 30.0)
    started = time.monotonic()
    delay = await budget.acquire("openai", WS_A, "best crm")
    assert time.monotonic() - started < 0.1
    assert delay is not None and 29.0 <= delay <= 31.5


async def test_a_cooldown_is_never_shortened_by_a_later_429() -> None:
    budget = budgets()
    await budget.throttled("openai", 30.0)
    await budget.throttled("openai", 1.0)
    delay = await budget.acquire("openai", WS_A, "best crm")
    assert delay is not None and delay >= 29.0


async def test_a_busy_budget_holds_a_probe_for_a_bounded_time() -> None:
    budget = budgets(openai=Budget(rpm=60))  # 1 a second, 60 a minute
    assert await budget.acquire("openai", WS_A, "q") is None
    started = time.monotonic()
    results = await asyncio.gather(*(budget.acquire("openai", WS_A, "q") for _ in range(6)))
    assert time.monotonic() - started <= MAX_WAIT_SECONDS + 0.5
    granted = [result for result in results if result is None]
    assert len(granted) == 2  # one a second, for the two seconds a probe may wait
    assert all(result >= 0.5 for result in results if result is not None)  # handed back


async def test_tokens_per_minute_count_the_prompt_and_the_expected_answer() -> None:
    budget = budgets(openai=Budget(tpm=300))
    budget.spent("openai", "x" * 400)  # answers are about 100 tokens
    prompt = "y" * 400  # 100 tokens
    assert estimate_tokens(prompt) == 100
    assert await budget.acquire("openai", WS_A, prompt) is None  # 200 of 300
    delay = await budget.acquire("openai", WS_A, prompt)  # 400 > 300: the minute is spent
    assert delay is not None and delay > MAX_WAIT_SECONDS


async def test_a_workspace_alone_may_use_the_whole_budget() -> None:
    budget = budgets(openai=Budget(rpm=600))  # one every 100 ms
    await budget.waiting_for("openai", [WS_A])
    times = await grant_times(budget, 10)
    assert times[-1] - times[0] < 1.2


async def test_workspaces_waiting_together_get_equal_shares() -> None:
    budget = budgets(openai=Budget(rpm=600))  # 10 a second
    await budget.waiting_for("openai", [WS_A, WS_B])
    outcomes = [await budget.acquire("openai", WS_A, "q") for _ in range(8)]
    granted = [outcome for outcome in outcomes if outcome is None]
    assert len(granted) == 5  # half of the second's 10
    deferred = [outcome for outcome in outcomes if outcome is not None]
    assert all(0.5 <= delay <= 2.0 for delay in deferred)
    # The other workspace still gets its share at once.
    started = time.monotonic()
    assert [await budget.acquire("openai", WS_B, "q") for _ in range(5)] == [None] * 5
    assert time.monotonic() - started < 0.8


async def test_a_workspace_stops_counting_once_it_has_not_waited_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("workers.budgets.ACTIVE_SECONDS", 0.2)
    monkeypatch.setattr("workers.budgets.ACTIVE_CACHE_SECONDS", 0.0)
    budget = budgets(openai=Budget(rpm=600))
    await budget.waiting_for("openai", [WS_B])
    await asyncio.sleep(0.3)  # WS_B's registration lapses (what is tested is its expiry)
    outcomes = [await budget.acquire("openai", WS_A, "q") for _ in range(8)]
    assert outcomes == [None] * 8  # no longer held to half of the second
