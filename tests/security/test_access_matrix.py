"""Every RPC by every kind of caller, with the status each must get.

The expected code of a cell follows from the RPC's `(beacon.v1.auth)` option and the caller's
relation to the target: UNAUTHENTICATED without valid credentials; NOT_FOUND when the caller
cannot see the target; PERMISSION_DENIED when they see it without the role (or are a service
key the RPC does not admit); otherwise the call passes auth and succeeds — or meets the one
domain rule its table entry names. Each cell runs against a fresh tenant (`World`), and a
call that fails leaves that tenant's rows exactly as they were.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from beacon.v1 import options_pb2
from beacon.v1 import organization_service_pb2 as org_pb
from service.app import App
from service.clock import new_id
from service.config import Settings
from service.domain.collection import suggestions
from service.rpc_options import method_rules
from tests.support.security import world as w
from tests.support.security.access_matrix import (
    CELLS,
    NOT_FOUND,
    OK,
    ORG,
    PERMISSION_DENIED,
    TABLE,
    cell_id,
    expected_refusal,
)
from tests.support.security.calls import Outcome, invoke, methods_by_path
from tests.support.security.snapshots import ORGANIZATION_TABLES, TABLES, WORKSPACE_TABLES, snapshot
from tests.support.security.world import World, build_world


def test_the_table_has_one_entry_per_rpc() -> None:
    assert set(TABLE) == set(method_rules()) == set(methods_by_path())


def test_every_table_of_a_workspace_is_in_the_tenants_snapshot() -> None:
    """A new table keyed by workspace (a rollup, say) must be compared row by row too."""
    keyed = {name for name, table in TABLES.items() if "workspace_id" in table.c}
    assert keyed - {"audit_events"} <= {*WORKSPACE_TABLES, *ORGANIZATION_TABLES}


def test_every_rpc_requires_credentials() -> None:
    open_levels = (options_pb2.AUTH_LEVEL_UNSPECIFIED, options_pb2.AUTH_LEVEL_OPEN)
    assert [p for p, rules in method_rules().items() if rules.level in open_levels] == []


def test_domain_outcomes_are_only_named_for_callers_that_pass_auth() -> None:
    rules = method_rules()
    for path, entry in TABLE.items():
        for caller in entry.outcomes:
            assert expected_refusal(rules[path], caller) is None, (path, caller)


@pytest.fixture(scope="module")
async def keys(app: App) -> AsyncIterator[dict[str, str]]:
    """Secrets of a service key without scopes and of one with the `workos` scope (both
    platform-internal: bound to all organizations, as each cell builds its own tenants)."""
    plain, plain_info = await app.services.service_keys.create(
        "security matrix", [], all_organizations=True
    )
    workos, workos_info = await app.services.service_keys.create(
        "security matrix", ["workos"], all_organizations=True
    )
    yield {w.SERVICE_KEY: plain, w.WORKOS_KEY: workos}
    for info in (plain_info, workos_info):
        await app.services.service_keys.revoke(info.id)


def ghost(world: World) -> World:
    """The world with every resource id replaced by a well-formed one that names nothing."""
    return dataclasses.replace(
        world,
        organization_id=new_id("org"),
        workspace_id=new_id("ws"),
        deleted_workspace_id=new_id("ws"),
        prompt_id=new_id("prm"),
        run_id=new_id("run"),
        ended_run_id=new_id("run"),
        suggestion_id=suggestions.suggestion_id("name", uuid.uuid4().hex),
        invitation_id=new_id("inv"),
        webhook_endpoint_id=new_id("whk"),
        webhook_delivery_id=new_id("dlv"),
        alert_rule_id=new_id("alr"),
    )


def as_seen(outcome: Outcome, world: World) -> tuple[str, str, dict[str, str]]:
    """What a NOT_FOUND tells the caller, with the world's ids masked: message, reason and
    ErrorInfo metadata (without the request id)."""
    assert outcome.failure is not None
    info = outcome.failure.details["ErrorInfo"]
    ids = (
        world.organization_id,
        world.workspace_id,
        world.deleted_workspace_id,
        world.prompt_id,
        world.run_id,
        world.invitation_id,
        world.webhook_endpoint_id,
        world.webhook_delivery_id,
        world.alert_rule_id,
    )
    message = outcome.failure.message
    for id_ in (*ids, world.ended_run_id):
        message = message.replace(id_, "<id>")
    metadata = {k: v for k, v in info.metadata.items() if k != "request_id"}
    return message, info.reason, metadata


@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
async def test_access(
    cell: tuple[str, str],
    app: App,
    settings: Settings,
    channel: grpc.aio.Channel,
    stubs: SimpleNamespace,
    keys: dict[str, str],
) -> None:
    path, caller = cell
    entry = TABLE[path]
    world = await build_world(app, settings, stubs.memberships, caller, keys)
    refusal = expected_refusal(method_rules()[path], caller)
    expected = refusal or entry.outcomes.get(caller, OK)
    # Row counts of every table too: a refused call may not write anywhere, not only in the
    # target tenant.
    before = await snapshot(app, world, counts=True)

    outcome = await invoke(channel, methods_by_path()[path], entry.request(world), world.metadata)

    assert outcome.code == expected, f"{cell_id(cell)}: expected {expected.name}, got " + (
        outcome.describe()
    )
    if outcome.failure is not None:
        assert outcome.failure.message
        assert "ErrorInfo" in outcome.failure.details
        after = await snapshot(app, world, counts=True)
        assert before.changes(after) == [], "a refused call wrote"
    if expected == NOT_FOUND:
        # Exactly as if it did not exist: the answer for ids that name nothing.
        absent = ghost(world)
        missing = await invoke(
            channel, methods_by_path()[path], entry.request(absent), world.metadata
        )
        assert as_seen(outcome, world) == as_seen(missing, absent)


async def test_a_workspace_id_reveals_nothing_of_its_organization_to_outsiders(
    app: App,
    settings: Settings,
    channel: grpc.aio.Channel,
    stubs: SimpleNamespace,
    keys: dict[str, str],
) -> None:
    """UpdateOrganization also accepts a workspace id (the seed's form): an outsider naming
    another tenant's workspace gets the answer of a workspace that does not exist."""
    world = await build_world(app, settings, stubs.memberships, w.OTHER_TENANT, keys)
    method = methods_by_path()[ORG + "UpdateOrganization"]

    def rename(x: World) -> org_pb.UpdateOrganizationRequest:
        return org_pb.UpdateOrganizationRequest(
            workspace_id=x.workspace_id,
            organization=org_pb.Organization(name="Renamed Org"),
            update_mask=FieldMask(paths=["name"]),
        )

    real = await invoke(channel, method, rename(world), world.metadata)
    absent = ghost(world)
    missing = await invoke(channel, method, rename(absent), world.metadata)
    assert real.code == missing.code == NOT_FOUND
    assert as_seen(real, world) == as_seen(missing, absent)
    assert world.organization_id not in (real.failure.message if real.failure else "")


async def test_a_guest_naming_their_workspace_on_an_organization_rpc_is_denied_not_hidden(
    app: App,
    settings: Settings,
    channel: grpc.aio.Channel,
    stubs: SimpleNamespace,
    keys: dict[str, str],
) -> None:
    """A guest sees the workspace (and so knows it exists) but has no organization role:
    organization-level RPCs addressed by that workspace are PERMISSION_DENIED, and write
    nothing."""
    world = await build_world(app, settings, stubs.memberships, w.GUEST, keys)
    organization_rpcs = [
        path
        for path, rules in method_rules().items()
        if rules.level
        in (
            options_pb2.AUTH_LEVEL_ORGANIZATION_ADMIN,
            options_pb2.AUTH_LEVEL_ORGANIZATION_MEMBER,
            options_pb2.AUTH_LEVEL_ORGANIZATION_BILLING,
        )
        and "workspace_id" in rules.resource_fields
    ]
    assert organization_rpcs == [ORG + "UpdateOrganization"]
    method = methods_by_path()[ORG + "UpdateOrganization"]
    request = org_pb.UpdateOrganizationRequest(
        workspace_id=world.workspace_id,
        organization=org_pb.Organization(name="Renamed Org"),
        update_mask=FieldMask(paths=["name"]),
    )
    before = await snapshot(app, world)

    outcome = await invoke(channel, method, request, world.metadata)

    assert outcome.code == PERMISSION_DENIED, outcome.describe()
    assert outcome.failure is not None
    assert outcome.failure.details["ErrorInfo"].reason == "NOT_ORGANIZATION_MEMBER"
    assert before.changes(await snapshot(app, world)) == []
