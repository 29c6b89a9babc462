"""What operators see of each call: one structured log line (method, code, request id, never a
credential) and Prometheus samples by method and code."""

from __future__ import annotations

import json
import logging
import uuid
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import REGISTRY

from beacon.v1 import organization_service_pb2 as org_pb
from service.auth.tokens import mint_dev_token
from service.config import Settings
from service.logs import JsonFormatter
from tests.support.app import NewUser
from tests.support.assertions import expect_refusal, rpc_log_record
from tests.support.processes import eventually

LIST_MINE = org_pb.ListMyOrganizationsRequest()
METHOD = "beacon.v1.OrganizationService/ListMyOrganizations"


def forged_token(settings: Settings, email: str) -> str:
    other = settings.model_copy(update={"auth_secret": "another-secret-0123456789abcdef0123"})
    return mint_dev_token(other, email=email)


async def test_request_log_never_contains_the_token(
    probes: SimpleNamespace, new_user: NewUser, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    user = await new_user()
    forged = forged_token(settings, user.email)
    caplog.set_level(logging.INFO)
    ok_id, refused_id = f"req-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex}"
    await probes.organizations.ListMyOrganizations(
        LIST_MINE, metadata=(*user.metadata, ("x-request-id", ok_id))
    )
    await expect_refusal(
        grpc.StatusCode.UNAUTHENTICATED,
        "BAD_SIGNATURE",
        probes.organizations.ListMyOrganizations(
            LIST_MINE,
            metadata=(("authorization", f"Bearer {forged}"), ("x-request-id", refused_id)),
        ),
    )
    formatter = JsonFormatter()
    ok = json.loads(formatter.format(await rpc_log_record(caplog, ok_id)))
    refused = json.loads(formatter.format(await rpc_log_record(caplog, refused_id)))
    assert (ok["method"], ok["code"], ok["principal_id"]) == (METHOD, "OK", user.user_id)
    assert (refused["method"], refused["code"]) == (METHOD, "UNAUTHENTICATED")
    for line in map(formatter.format, caplog.records):
        assert user.token not in line and forged not in line
        assert "Bearer" not in line


def samples() -> dict[str, float]:
    """The method's call counts (OK, UNAUTHENTICATED) and latency observations."""
    values = {
        "ok": REGISTRY.get_sample_value("beacon_rpc_total", {"method": METHOD, "code": "OK"}),
        "refused": REGISTRY.get_sample_value(
            "beacon_rpc_total", {"method": METHOD, "code": "UNAUTHENTICATED"}
        ),
        "timed": REGISTRY.get_sample_value("beacon_rpc_seconds_count", {"method": METHOD}),
    }
    return {k: v or 0.0 for k, v in values.items()}


async def test_metrics_count_calls_by_method_and_code(
    probes: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    before = samples()
    for _ in range(2):
        await probes.organizations.ListMyOrganizations(LIST_MINE, metadata=user.metadata)
    await expect_refusal(
        grpc.StatusCode.UNAUTHENTICATED,
        "NO_CREDENTIALS",
        probes.organizations.ListMyOrganizations(LIST_MINE),
    )

    async def counted() -> bool:  # a refusal is counted just after the client has it
        after = samples()
        return {k: after[k] - before[k] for k in before} == {"ok": 2, "refused": 1, "timed": 3}

    await eventually(counted, what="two OK and one UNAUTHENTICATED call in the metrics")
