"""The environment the tests run in is the one `uv.lock` pins: every installed distribution is
locked, at the locked version, and the generated code was produced by the locked compiler."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# Seeded by `python -m venv` before uv takes over; not part of what Beacon runs.
UNLOCKED = {"pip"}


def locked() -> dict[str, set[str]]:
    """Each locked package's versions (more than one where the lock forks by Python version)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    return versions


def test_every_installed_distribution_is_the_locked_version() -> None:
    versions = locked()
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    drift = {
        name: (version, versions.get(name, "not locked"))
        for name, version in installed.items()
        if name not in UNLOCKED and version not in versions.get(name, set())
    }
    assert drift == {}, f"installed ≠ uv.lock (installed, locked): {drift}; run `make setup`"
    # The lock's runtime dependencies that apply here are all installed.
    for name in ("grpcio", "grpcio-tools", "protobuf", "sqlalchemy", "asyncpg", "uv"):
        assert installed.get(canonicalize_name(name)) in versions[name], name


def test_the_generated_code_was_produced_by_the_locked_compiler() -> None:
    versions = locked()
    grpc_stub = (ROOT / "generated/beacon/v1/run_service_pb2_grpc.py").read_text()
    match = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", grpc_stub)
    assert match is not None
    assert {match.group(1)} == versions["grpcio-tools"], "run `make generate` with the lock"
