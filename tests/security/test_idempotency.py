"""Request ids (AIP-155) across callers, for every RPC whose request has a `request_id`.

A retried request with the same id returns the first result to its sender; another user
sending the same id (with their own token, or through a service key acting for them) gets a
result of their own or a clear refusal, never the first user's resource.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from service.app import App
from service.auth import service_keys
from service.config import Settings
from tests.security import world as w
from tests.security.calls import Metadata, bearer, methods_by_path, responses
from tests.security.test_access_matrix import TABLE
from tests.security.world import Person, build_world
from tests.support import failure

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
async def act_as_key(app: App) -> AsyncIterator[str]:
    secret, info = await service_keys.create_key(
        app.db, "idempotency", ["act_as"], all_organizations=True
    )
    yield secret
    await service_keys.revoke_key(app.db, info.id)


def test_some_rpcs_take_request_ids() -> None:
    assert IDEMPOTENT, "no RPC has a request_id field any more: this module checks nothing"


@pytest.mark.parametrize("via", ["token", "act_as"])
@pytest.mark.parametrize("path", IDEMPOTENT, ids=[p.rsplit("/", 1)[1] for p in IDEMPOTENT])
async def test_a_request_id_replays_only_for_its_own_user(
    path: str,
    via: str,
    app: App,
    settings: Settings,
    channel: grpc.aio.Channel,
    stubs: SimpleNamespace,
    act_as_key: str,
) -> None:
    assert path in TABLE, f"add an Entry for {path} to tests/security/test_access_matrix.py TABLE"
    method = methods_by_path()[path]
    # Two users, each owning an organization of their own.
    worlds = [await build_world(app, settings, stubs.memberships, w.ORG_OWNER, {}) for _ in "ab"]
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
