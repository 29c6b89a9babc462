"""Request ids (AIP-155) across callers, for every RPC whose request has a `request_id`.

A retried request with the same id returns the first result to its sender and changes
nothing again (one audit event: the change was made once); another user sending the same id
(with their own token, or through a service key acting for them) gets a result of their own
or a clear refusal, never the first user's resource.

The module runs a server of its own, with provider keys so that StartRun makes a run (and
its response names one) rather than answering NO_PROVIDERS.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message
from sqlalchemy import func, select

from service.db.models import AuditEvent
from tests.support import failure
from tests.support.security import world as w
from tests.support.security.access_matrix import TABLE
from tests.support.security.calls import Metadata, bearer, methods_by_path, responses
from tests.support.security.servers import PrivateServer, private_server
from tests.support.security.world import Person, build_world

IDEMPOTENT = sorted(
    path
    for path, method in methods_by_path().items()
    if "request_id" in method.input_type.fields_by_name
)
ID = re.compile(r"\b[a-z]+_[0-9A-Za-z]{10,}\b")
# How a second user may be refused a request id that another user already used.
REFUSALS = {
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
}


def ids_in(message: Message) -> set[str]:
    """Every resource id the response names."""
    return set(ID.findall(text_format.MessageToString(message)))


@pytest.fixture(scope="module")
async def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PrivateServer]:
    tmp = tmp_path_factory.mktemp(f"idempotency-{backend}")
    keys = {"openai_api_key": "test-key", "anthropic_api_key": "test-key"}
    async with private_server(backend, tmp, "idempotency", **keys) as started:
        yield started


@pytest.fixture(scope="module")
async def act_as_key(server: PrivateServer) -> AsyncIterator[str]:
    # Bound to all organizations: it acts for two users of two unrelated organizations.
    secret, info = await server.app.services.service_keys.create(
        "idempotency", ["act_as"], all_organizations=True
    )
    yield secret
    await server.app.services.service_keys.revoke(info.id)


async def audit_count(server: PrivateServer, path: str, actor_id: str) -> int:
    """How many changes `actor_id` made through the RPC at `path`."""
    async with server.app.db.transaction(write=False) as session:
        count = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == path.lstrip("/"), AuditEvent.actor_id == actor_id)
        )
    return int(count or 0)


def test_some_rpcs_take_request_ids() -> None:
    assert IDEMPOTENT, "no RPC has a request_id field any more: this module checks nothing"


@pytest.mark.parametrize("via", ["token", "act_as"])
@pytest.mark.parametrize("path", IDEMPOTENT, ids=[p.rsplit("/", 1)[1] for p in IDEMPOTENT])
async def test_a_request_id_replays_only_for_its_own_user(
    path: str, via: str, server: PrivateServer, act_as_key: str
) -> None:
    assert path in TABLE, f"add an Entry for {path} to tests.support.security.access_matrix.TABLE"
    method = methods_by_path()[path]
    # Two users, each owning an organization of their own.
    app, channel = server.app, server.channel
    worlds = [
        await build_world(app, app.settings, server.memberships, w.ORG_OWNER, {}) for _ in "ab"
    ]
    request_id = f"req-{uuid.uuid4().hex}"

    def call(index: int) -> tuple[Message, Metadata]:
        world = worlds[index]
        request = TABLE[path].request(world)
        request.request_id = request_id  # type: ignore[attr-defined]
        caller: Person | None = world.caller
        assert caller is not None
        if via == "token":
            return request, bearer(caller.token)
        return request, (*bearer(act_as_key), ("x-beacon-act-as", caller.user_id))

    [mine] = await responses(channel, method, *call(0))
    [again] = await responses(channel, method, *call(0))
    assert again == mine, "a retry with the same request id must return the first result"
    first_caller = worlds[0].caller
    assert first_caller is not None
    changes = await audit_count(server, path, first_caller.user_id)
    assert changes == 1, f"a retry must change nothing again: {changes} audited changes"
    try:
        [theirs] = await responses(channel, method, *call(1))
    except grpc.aio.AioRpcError as error:
        refused = failure(error)
        assert refused.code in REFUSALS, f"{refused.code}: {refused.message}"
        assert "request_id" in refused.message, "a refusal names the request id"
        return
    leaked = ids_in(mine) & ids_in(theirs)
    assert not leaked, f"a second user's request id replayed the first user's resource: {leaked}"
    assert ids_in(theirs), "the second user's result names the resource made for them"
