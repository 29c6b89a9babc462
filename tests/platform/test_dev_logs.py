"""What each command writes to stderr: `beacon dev` readable lines with its dependencies quiet
(the banner comes first, not Alembic's set-up), the production commands JSON lines."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import configure_logging_for
from service.config import Settings
from service.db.migrate import upgrade
from service.logs import QUIET_IN_DEV

LEVELS = ("", *QUIET_IN_DEV)


@pytest.fixture
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Puts back the process's handlers and levels (other tests log through them)."""
    for name in os.environ:
        if name.startswith("BEACON_"):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers = root.handlers[:]
    levels = {name: logging.getLogger(name).level for name in LEVELS}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def migrate_and_log(tmp: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Migrates a new database (Alembic logs at INFO), logs a Beacon line; the stderr lines."""
    capsys.readouterr()
    upgrade(f"sqlite+aiosqlite:///{tmp / 'logs.db'}")
    logging.getLogger("beacon.server").info("grpc server started", extra={"port": 50051})
    return capsys.readouterr().err.splitlines()


def test_beacon_dev_writes_readable_lines_and_keeps_alembic_quiet(
    restored_logging: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging_for("dev", Settings())
    lines = migrate_and_log(tmp_path, capsys)
    assert not [line for line in lines if "alembic" in line], lines
    [line] = [line for line in lines if "beacon.server" in line]
    assert not line.startswith("{"), line
    assert " INFO  beacon.server  grpc server started  port=50051" in line, line
    logging.getLogger("alembic.runtime.migration").warning("a real problem")
    assert "WARNING alembic.runtime.migration  a real problem" in capsys.readouterr().err


def test_beacon_dev_writes_json_when_asked(
    restored_logging: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BEACON_LOG_JSON", "true")
    configure_logging_for("dev", Settings())
    lines = migrate_and_log(tmp_path, capsys)
    record = json.loads(next(line for line in lines if "beacon.server" in line))
    assert record["port"] == 50051


@pytest.mark.parametrize("command", ["serve", "worker", "ticker"])
def test_production_commands_write_json_lines_of_everything(
    command: str, restored_logging: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging_for(command, Settings())
    records = [json.loads(line) for line in migrate_and_log(tmp_path, capsys)]
    assert any(r["logger"].startswith("alembic") for r in records), records
    [server] = [r for r in records if r["logger"] == "beacon.server"]
    assert server["message"] == "grpc server started" and server["port"] == 50051
