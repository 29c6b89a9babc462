"""Control characters other than NUL in a `request_id`, for every RPC whose request has one.

NUL is refused in any string field before a handler runs (see test_fuzz), so a request id
with an ANSI escape, a line break or a bidi override reaches the request-id check itself:
each must be INVALID_ARGUMENT naming `request_id`, with nothing written (the id would be
stored, and shown in audit trails and logs, as sent).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.support.security import world as w
from tests.support.security.access_matrix import TABLE
from tests.support.security.calls import bearer, invoke, methods_by_path
from tests.support.security.servers import PrivateServer, private_server
from tests.support.security.snapshots import snapshots
from tests.support.security.world import World, build_world

IDEMPOTENT = sorted(
    path
    for path, method in methods_by_path().items()
    if "request_id" in method.input_type.fields_by_name
)
CONTROL_IDS = {
    "ansi-escape": "req-\x1b[31mred\x1b[0m",
    "bell": "req-\x07",
    "backspace": "req-1\x08\x08admin",
    "crlf": "req-1\r\nx-injected: yes",
    "delete": "req-\x7f",
    "c1-next-line": "req-\x85",
    "bidi-override": "req-\u202eevil",
}


@pytest.fixture(scope="module")
async def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PrivateServer]:
    tmp = tmp_path_factory.mktemp(f"request-ids-{backend}")
    keys = {"openai_api_key": "test-key"}  # StartRun would otherwise stop at NO_PROVIDERS
    async with private_server(backend, tmp, "request_ids", **keys) as started:
        yield started


@pytest.fixture(scope="module")
async def world(server: PrivateServer) -> World:
    return await build_world(server.app, server.app.settings, server.memberships, w.ORG_OWNER, {})


def test_some_rpcs_take_request_ids() -> None:
    assert IDEMPOTENT, "no RPC has a request_id field any more: this module checks nothing"


@pytest.mark.parametrize("kind", sorted(CONTROL_IDS))
@pytest.mark.parametrize("path", IDEMPOTENT, ids=[p.rsplit("/", 1)[1] for p in IDEMPOTENT])
async def test_a_request_id_with_a_control_character_is_refused_and_writes_nothing(
    path: str, kind: str, server: PrivateServer, world: World
) -> None:
    method = methods_by_path()[path]
    request = TABLE[path].request(world)
    request.request_id = CONTROL_IDS[kind]  # type: ignore[attr-defined]
    assert world.caller is not None
    [before] = await snapshots(server.app, world, counts=True)

    outcome = await invoke(server.channel, method, request, bearer(world.caller.token))

    [after] = await snapshots(server.app, world, counts=True)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    assert outcome.failure is not None
    named = [
        re.sub(r"\[\d+\]", "", v.field)
        for v in outcome.failure.details["BadRequest"].field_violations
    ]
    assert named == ["request_id"], (named, outcome.describe())
    assert before.changes(after) == [], f"{outcome.describe()} yet wrote"
