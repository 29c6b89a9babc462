"""Logging: one JSON object per line on stderr in production; readable lines in development.

`beacon serve`, `worker` and `ticker` write JSON (`BEACON_LOG_JSON`, default true), for log
collectors. `beacon dev` writes lines for a person (`TextFormatter`: time, level, logger,
message, then the record's fields as key=value) and keeps its dependencies (QUIET_IN_DEV:
Alembic's plugin set-up and migration steps, Dramatiq's start-up, every HTTP request of
httpx) at WARNING, so that its banner is what a newcomer reads first.

The per-call request line (`beacon.rpc`) is the one written thousands of times a second, so
it is recorded lazily (`AccessLog`): a call keeps its fields in a tuple, and the records are
built, formatted and written in batches, off the call path.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import linecache
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class Formatter(logging.Formatter):
    """Formats a record's traceback without keeping the source files it read: the standard
    formatter reads every frame's whole source file into `linecache` and keeps it for the
    process's life (3-4 MiB per process after one database outage in the 60-minute soak,
    where the tickers' and the worker's RSS grew by that step)."""

    def formatException(self, ei: Any) -> str:
        try:
            return super().formatException(ei)
        finally:
            linecache.clearcache()


class JsonFormatter(Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(Formatter):
    """`12:04:31 INFO  beacon.server  grpc server started  port=50051`: one line per record
    for a person at a terminal, the record's own fields after the message."""

    def format(self, record: logging.LogRecord) -> str:
        clock = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and v != ""
        )
        line = f"{clock} {record.levelname:<5} {record.name}  {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Dependencies whose INFO lines tell a developer nothing about Beacon: `beacon dev` logs them
# from WARNING up.
QUIET_IN_DEV = ("alembic", "dramatiq", "httpx", "httpcore", "pika", "aiormq", "asyncio")


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the request lines still waiting in `access_log` before
    any other record (so the stream stays in time order) and, inside `batch()`, flushes the
    stream once at the end instead of after every line."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._batching = False

    def handle(self, record: logging.LogRecord) -> bool:
        # Before taking this handler's lock: `AccessLog.flush` takes its own lock, then this.
        if record.name != ACCESS_LOGGER:
            access_log.flush()
        return bool(super().handle(record))

    def flush(self) -> None:
        if not self._batching:
            super().flush()

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self.lock:  # type: ignore[union-attr]
            self._batching = True
            try:
                yield
            finally:
                self._batching = False
                self.flush()


ACCESS_LOGGER = "beacon.rpc"
# The fields of a request line, in the order `AccessLog.record` takes them.
ACCESS_FIELDS = (
    "method",
    "code",
    "duration_ms",
    "request_id",
    "correlation_id",
    "principal_id",
    "service_key_id",
    "peer",
)


class AccessLog:
    """The request lines (`beacon.rpc`, INFO), recorded lazily.

    `record` keeps the call's time and fields, nothing more. The pending records become
    ordinary `logging` records (any handler sees them, with the call's own time) and are
    written in one batch: FLUSH_SECONDS after the first of them on the event loop, as soon as
    MAX_PENDING wait, before any other log line, and at shutdown and exit (`flush`). A process
    that is killed outright loses at most the last FLUSH_SECONDS of request lines; metrics
    count every call at once.
    """

    FLUSH_SECONDS = 0.05
    MAX_PENDING = 512

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        # Appended to by the event loop only, drained by whichever thread flushes (deque
        # appends and pops are atomic: no line is lost or written twice).
        self._pending: deque[tuple[float, tuple[Any, ...]]] = deque()
        self._flushing = threading.RLock()

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def record(self, created: float, *fields: Any) -> None:
        """Keeps one request line: the time (`time.time()`) and ACCESS_FIELDS' values."""
        pending = self._pending
        pending.append((created, fields))
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no event loop: write it now
                self.flush()
        elif len(pending) >= self.MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Writes every pending request line."""
        if not self._pending:
            return
        pending = self._pending
        with self._flushing, ExitStack() as batches:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, LineHandler):
                    batches.enter_context(handler.batch())
            while pending:
                try:
                    created, fields = pending.popleft()
                except IndexError:  # another thread took the last one
                    break
                self.logger.handle(self._make(created, fields))

    def _make(self, created: float, fields: tuple[Any, ...]) -> logging.LogRecord:
        extra = dict(zip(ACCESS_FIELDS, fields, strict=True))
        record = self.logger.makeRecord(
            ACCESS_LOGGER, logging.INFO, "", 0, "rpc", (), None, extra=extra
        )
        record.created = created
        record.msecs = int(created * 1000) % 1000
        record.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        return record


access_log = AccessLog()
atexit.register(access_log.flush)


def configure_logging(
    level: str = "INFO", json_lines: bool = True, *, quiet_dependencies: bool = False
) -> None:
    """Every record goes to stderr, as JSON lines or (`json_lines=False`) readable ones;
    `quiet_dependencies` raises the loggers of QUIET_IN_DEV to WARNING (`beacon dev`)."""
    # No record needs its caller's file and line, thread or process names: finding them walks
    # the stack or calls into the OS on every line (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_IN_DEV:
        logging.getLogger(name).setLevel(logging.WARNING if quiet_dependencies else logging.NOTSET)
