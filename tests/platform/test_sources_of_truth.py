"""One source of truth per fact: the provider registry (`service.providers`) and the run and
probe statuses (`service.domain.collection.run_lifecycle`) are what every other part reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service import config, providers
from service.domain.collection.run_lifecycle import ProbeStatus, RunStatus
from service.servicers import convert
from service.servicers.run import RESPONSE_STATUS_TO_PROTO, RUN_STATUS_TO_PROTO
from workers.providers import ADAPTERS

SRC = Path(__file__).resolve().parents[2] / "src"
REGISTRY_FILE = SRC / "service" / "providers.py"


def test_settings_default_to_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in providers.REGISTRY:
        for field in ("base_url", "model"):
            monkeypatch.delenv(f"BEACON_{spec.name.upper()}_{field.upper()}", raising=False)
    settings = config.Settings()
    for spec in providers.REGISTRY:
        assert settings.provider(spec.name).base_url == spec.base_url
        assert settings.provider(spec.name).model == spec.model
    assert config.PROVIDERS == providers.NAMES


def test_the_registry_names_every_provider_of_the_wire_enum_once() -> None:
    wire = {value for value in ws_pb.Provider.values() if value != ws_pb.PROVIDER_UNSPECIFIED}
    assert set(providers.FROM_PROTO) == wire
    assert len(providers.REGISTRY) == len(wire) == len(set(providers.NAMES))
    for spec in providers.REGISTRY:
        assert ws_pb.Provider.Name(spec.proto) == f"PROVIDER_{spec.name.upper()}"
        assert ADAPTERS[spec.name].name == spec.name
    assert set(ADAPTERS) == set(providers.NAMES)
    assert {s.name: s.proto for s in providers.REGISTRY} == convert.PROVIDER_TO_PROTO
    assert {s.proto: s.name for s in providers.REGISTRY} == convert.PROVIDER_FROM_PROTO


def test_no_provider_default_is_written_outside_the_registry() -> None:
    literals = [f'"{s.base_url}"' for s in providers.REGISTRY]
    literals += [f'"{s.model}"' for s in providers.REGISTRY]
    for path in SRC.rglob("*.py"):
        if path == REGISTRY_FILE:
            continue
        text = path.read_text()
        assert [value for value in literals if value in text] == [], path
    registry = REGISTRY_FILE.read_text()
    assert all(value in registry for value in literals)


def test_every_status_has_its_wire_value() -> None:
    assert set(RUN_STATUS_TO_PROTO) == set(RunStatus)
    assert set(RESPONSE_STATUS_TO_PROTO) == set(ProbeStatus)
    for status, value in RUN_STATUS_TO_PROTO.items():
        assert run_pb.RunStatus.Name(value) == f"RUN_STATUS_{status.upper()}"
    for probe_status, response_status in RESPONSE_STATUS_TO_PROTO.items():
        name = run_pb.ResponseStatus.Name(response_status)
        assert name == f"RESPONSE_STATUS_{probe_status.upper()}"


def test_the_api_loads_no_worker_module() -> None:
    """`beacon serve` (and everything it imports) never loads `workers`: the registry holds
    names and defaults, the outbox and the message schema live in `service`."""
    probe = (
        "import sys, service.server, service.cli, service.http.server;"
        "print(sorted(m for m in sys.modules if m == 'workers' or m.startswith('workers.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout
