"""The request lines (`service.logs.access_log`): recorded on the call path, written in batches
off it, with each call's own time and fields, and never after a later log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from service.logs import ACCESS_FIELDS, AccessLog, JsonFormatter, LineHandler, access_log

CREATED = 1_790_000_000.25  # 2026-09-21T14:13:20.250000+00:00
OWN_METHOD = "beacon.v1.X/Y"


class CountingStream(io.StringIO):
    """The lines of this test's own calls (a server another test left stopping may still log
    a call of its own meanwhile: the access log is one per process), and the flushes that
    wrote them."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self._flushed_lines = 0

    def flush(self) -> None:
        count = len(self.lines())
        if count != self._flushed_lines:
            self.flushes += 1
            self._flushed_lines = count
        super().flush()

    def lines(self) -> list[dict[str, object]]:
        every = [json.loads(line) for line in self.getvalue().splitlines()]
        return [line for line in every if line.get("method", OWN_METHOD) == OWN_METHOD]


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    """A JSON line handler on the root logger, writing to a stream of its own."""
    stream = CountingStream()
    handler = LineHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    access_log.flush()  # nothing of another test's calls lands here
    try:
        yield stream
    finally:
        access_log.flush()
        root.removeHandler(handler)
        root.setLevel(level)


def fields(n: int) -> tuple[object, ...]:
    return (OWN_METHOD, "OK", 0.5, f"req_{n}", "", f"user_{n}", None, "ipv4:127.0.0.1:1")


async def test_request_lines_are_written_later_in_one_batch_with_their_own_time(
    stream: CountingStream,
) -> None:
    for n in range(3):
        access_log.record(CREATED + n, *fields(n))
    assert stream.lines() == []  # not on the call path
    await asyncio.sleep(AccessLog.FLUSH_SECONDS * 4)
    lines = stream.lines()
    assert [line["request_id"] for line in lines] == ["req_0", "req_1", "req_2"]
    assert lines[0]["time"] == "2026-09-21T14:13:20.250000+00:00"
    assert lines[2]["time"] == "2026-09-21T14:13:22.250000+00:00"
    assert {k: lines[1][k] for k in ACCESS_FIELDS} == dict(
        zip(ACCESS_FIELDS, fields(1), strict=True)
    )
    assert (lines[1]["logger"], lines[1]["level"], lines[1]["message"]) == (
        "beacon.rpc",
        "info",
        "rpc",
    )
    assert stream.flushes == 1


async def test_a_later_log_line_is_written_after_the_request_lines_before_it(
    stream: CountingStream,
) -> None:
    access_log.record(CREATED, *fields(1))
    logging.getLogger("beacon.test").warning("after the call")
    assert [line["message"] for line in stream.lines()] == ["rpc", "after the call"]
    await asyncio.sleep(AccessLog.FLUSH_SECONDS * 4)
    assert len(stream.lines()) == 2  # the scheduled flush finds nothing more to write


async def test_a_full_batch_is_written_at_once(stream: CountingStream) -> None:
    for n in range(AccessLog.MAX_PENDING):
        access_log.record(CREATED, *fields(n))
    assert len(stream.lines()) == AccessLog.MAX_PENDING


def test_outside_an_event_loop_a_line_is_written_at_once(stream: CountingStream) -> None:
    access_log.record(CREATED, *fields(7))
    assert [line["request_id"] for line in stream.lines()] == ["req_7"]


def test_request_lines_follow_the_level_of_their_logger(stream: CountingStream) -> None:
    logger = logging.getLogger("beacon.rpc")
    logger.setLevel(logging.WARNING)
    try:
        assert not access_log.enabled()
    finally:
        logger.setLevel(logging.NOTSET)
    assert access_log.enabled()
