"""Answer analysis costs time linear in the answer's length, whatever the answer holds.

An answer is written by a provider on a tenant's prompt, so a tenant chooses it: one unbroken
token of digits, dots, hosts, addresses or closing brackets once cost time quadratic in its
length ("3." and 40,000 digits: 10 s). Each adversarial family below is analysed at sizes
growing fourfold up to `MAX_ANSWER_CHARS`, and each step may cost at most `MAX_STEP_RATIO`
times the one before: linear analysis costs 4 times more, quadratic 16 times.

Costs are the CPU time of the analysing thread (other processes on the machine barely move it),
the least of a few tries when a step looks too dear; there is no absolute bound on any time.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.builders import BRAND, COMPETITORS
from workers.analysis import MAX_ANSWER_CHARS, analyse

# Linear: 4 (a little less, with fixed costs); quadratic: 16.
MAX_STEP_RATIO = 10.0
SIZES = (MAX_ANSWER_CHARS // 64, MAX_ANSWER_CHARS // 16, MAX_ANSWER_CHARS // 4, MAX_ANSWER_CHARS)
# Below this a measure is mostly noise; smaller costs count as this much.
NOISE_FLOOR_SECONDS = 0.002


def repeat(unit: str, size: int, prefix: str = "") -> str:
    """``prefix`` then ``unit`` repeated, cut to ``size`` characters."""
    return (prefix + unit * (size // len(unit) + 1))[:size]


def deep_list(size: int) -> str:
    """Markdown lists nested ever deeper (indentation, numbering, links), to ``size``."""
    lines: list[str] = []
    length = depth = 0
    while length < size:
        line = (
            "  " * (depth % 200) + f"{depth}.{depth}. [Acme](https://acme.com/{depth}) vs HubSpot\n"
        )
        lines.append(line)
        length += len(line)
        depth += 1
    return "".join(lines)[:size]


FAMILIES: dict[str, Callable[[int], str]] = {
    "digits after a dot": lambda size: repeat("1", size, prefix="3."),
    "one long word": lambda size: repeat("a", size),
    "many dots": lambda size: repeat(".", size),
    "dotted numbers": lambda size: repeat("1.", size),
    "many labels": lambda size: repeat("a.", size - 3) + "com",
    "hyphenated labels": lambda size: repeat("a-", size - 5, prefix="x.") + "a.com",
    "hosts glued together": lambda size: repeat("a.com,", size),
    "URLs glued together": lambda size: repeat("https://acme.com/x,", size),
    "URLs between spaces": lambda size: repeat("https://hubspot.com/acme ", size),
    "closing brackets after a URL": lambda size: repeat(")", size, prefix="http://acme.com/"),
    "addresses glued together": lambda size: repeat("a.b@c.d", size),
    "at signs": lambda size: repeat("a@", size),
    "markdown links glued together": lambda size: repeat("[Acme](https://acme.com)", size),
    "names": lambda size: repeat("Acme HubSpot ", size),
    "deep lists": deep_list,
}


def cost(text: str, tries: int = 1) -> float:
    """Seconds of this thread's CPU that analysing ``text`` takes, the least of ``tries``."""
    best = math.inf
    for _ in range(tries):
        gc.collect()
        gc.disable()  # a collection would charge one analysis for everyone's garbage
        try:
            start = time.thread_time()
            analyse(text, (), BRAND, COMPETITORS)
            best = min(best, time.thread_time() - start)
        finally:
            gc.enable()
    return max(best, NOISE_FLOOR_SECONDS)


def assert_linear(build: Callable[[int], str], sizes: tuple[int, ...]) -> None:
    """Each size costs at most `MAX_STEP_RATIO` times the one a quarter its length (measured
    again, the least of three, when it looks a little dearer), stopping at the first that
    does not."""
    smaller = build(sizes[0])
    smaller_cost = cost(smaller)
    for size in sizes[1:]:
        text = build(size)
        assert len(text) == size
        spent = cost(text)
        if MAX_STEP_RATIO * smaller_cost < spent < 2 * MAX_STEP_RATIO * smaller_cost:
            smaller_cost = min(smaller_cost, cost(smaller, tries=2))
            spent = min(spent, cost(text, tries=2))
        assert spent <= MAX_STEP_RATIO * smaller_cost, (
            f"{size:,} characters cost {spent:.3f} s, "
            f"{spent / smaller_cost:.1f} times {len(smaller):,} characters"
        )
        smaller, smaller_cost = text, spent


@pytest.mark.parametrize("family", FAMILIES)
def test_analysis_time_grows_linearly_up_to_the_largest_answer(family: str) -> None:
    assert_linear(FAMILIES[family], SIZES)


TRICKY = st.sampled_from(
    [*"a1.@-_/:()[]<>+#?!'\"é ", "\n", "http://", "https://", "www.", ".com", "acme", "Acme "]
)
PIECES = st.lists(TRICKY, max_size=4).map("".join)


@settings(max_examples=15, deadline=None)
@given(prefix=PIECES, unit=st.lists(TRICKY, min_size=1, max_size=8).map("".join))
def test_analysis_time_grows_linearly_for_any_repeated_text(prefix: str, unit: str) -> None:
    assert_linear(
        lambda size: repeat(unit, size, prefix=prefix),
        (MAX_ANSWER_CHARS // 64, MAX_ANSWER_CHARS // 16),
    )
