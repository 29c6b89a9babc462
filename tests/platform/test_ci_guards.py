"""The test session itself: CI cannot pass with the PostgreSQL + Redis half missing, a
misspelt marker is an error, and the summary says how many tests ran on each backend.

Each test runs pytest in a subprocess on a small selection of this suite.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import postgres_available
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
HEALTH = "tests/platform/test_server.py::test_health_is_serving"


@dataclass
class Session:
    code: int
    output: str


async def pytest_session(*args: str, **env: str) -> Session:
    """pytest on `args` in a subprocess, with `env` added to (or, when empty, removed from)
    this environment."""
    environment = {k: v for k, v in os.environ.items() if k not in env}
    environment.update({k: v for k, v in env.items() if v})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        *args,
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(240):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return Session(process.returncode, output.decode(errors="replace"))


async def test_a_required_postgres_backend_that_is_missing_fails_the_session() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    required = await pytest_session(
        HEALTH, BEACON_TEST_REQUIRE_POSTGRES="1", BEACON_TEST_REDIS_URL=nowhere
    )
    assert required.code == pytest.ExitCode.USAGE_ERROR, required.output
    assert "PostgreSQL + Redis backend is missing" in required.output
    assert f"Redis is not reachable at {nowhere}" in required.output
    # Without the requirement the same session passes on SQLite alone: the guard is what fails.
    optional = await pytest_session(
        HEALTH, BEACON_TEST_REQUIRE_POSTGRES="", BEACON_TEST_REDIS_URL=nowhere
    )
    assert optional.code == pytest.ExitCode.OK, optional.output
    assert "sqlite: 1 ran (1 passed)" in optional.output
    assert "postgres:" not in optional.output


@pytest.mark.postgres_only
async def test_a_required_backend_on_which_nothing_ran_fails_the_session(backend: str) -> None:
    assert postgres_available()
    only_sqlite = await pytest_session(HEALTH + "[sqlite]", BEACON_TEST_REQUIRE_POSTGRES="1")
    assert only_sqlite.code == pytest.ExitCode.TESTS_FAILED, only_sqlite.output
    assert "no test ran on PostgreSQL + Redis" in only_sqlite.output


@pytest.mark.postgres_only
async def test_the_summary_counts_the_tests_of_each_backend(backend: str) -> None:
    both = await pytest_session(
        HEALTH, "tests/security/test_access_matrix.py::test_every_rpc_requires_credentials"
    )
    assert both.code == pytest.ExitCode.OK, both.output
    lines = both.output.splitlines()
    for line in (
        "sqlite: 1 ran (1 passed)",
        "postgres: 1 ran (1 passed)",
        "none: 1 ran (1 passed)",
    ):
        assert line in lines, both.output


async def test_an_unregistered_marker_is_an_error(tmp_path: Path) -> None:
    module = tmp_path / "test_marked.py"
    module.write_text("import pytest\n\n\n@pytest.mark.postgres_onyl\ndef test_x():\n    pass\n")
    session = await pytest_session(
        str(module), "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")
    )
    assert session.code != pytest.ExitCode.OK, session.output
    assert "'postgres_onyl' not found in `markers`" in session.output
