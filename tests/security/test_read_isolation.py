"""What reads show: for every List/Get/Watch/Resolve RPC, tenant A's answers never contain
anything of tenant B, however many of B's rows share the database.

The RPCs are taken from the descriptors, and their requests from the access matrix's TABLE,
so a new read is covered as soon as it exists. The caller owns A's organization; B's tenants
are populated like A's (answers, audit events, invitations, schedules, prompts, members).
Two properties per read:

- no string stored in B's rows (ids, names, emails, prompt texts, answers, codes) appears in
  A's answer, every page of it (pages of 2 where the RPC pages);
- A's answer does not change when another populated tenant is added (aggregates such as the
  visibility report carry no strings to give B away).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import Message

from tests.support.security import world as w
from tests.support.security.access_matrix import TABLE
from tests.support.security.calls import is_read, methods_by_path, responses
from tests.support.security.servers import PrivateServer, private_server
from tests.support.security.tenants import as_text, identifying_strings, populate
from tests.support.security.world import World, build_world

READS = sorted(filter(is_read, methods_by_path()))
PAGE_SIZE = 2
MAX_PAGES = 100


@dataclass
class Tenants:
    server: PrivateServer
    mine: World
    theirs: list[World]

    async def add_theirs(self) -> World:
        world = await build_world(
            self.server.app, self.server.app.settings, self.server.memberships, w.ORG_OWNER, {}
        )
        await populate(self.server.app, self.server.channel, world)
        self.theirs.append(world)
        return world


@pytest.fixture(scope="module")
async def tenants(backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Tenants]:
    tmp = tmp_path_factory.mktemp(f"isolation-{backend}")
    async with private_server(backend, tmp, "isolation") as server:
        app = server.app
        mine = await build_world(app, app.settings, server.memberships, w.ORG_OWNER, {})
        await populate(app, server.channel, mine)
        found = Tenants(server, mine, [])
        for _ in range(3):
            await found.add_theirs()
        yield found


async def read_all(tenants: Tenants, path: str) -> list[Message]:
    """A's answer to the read: every message, of every page."""
    method = methods_by_path()[path]
    request = TABLE[path].request(tenants.mine)
    fields = method.input_type.fields_by_name
    paged = "page_token" in fields and "next_page_token" in method.output_type.fields_by_name
    if "page_size" in fields:
        request.page_size = PAGE_SIZE  # type: ignore[attr-defined]
    messages: list[Message] = []
    for _ in range(MAX_PAGES):
        try:
            answer = await responses(tenants.server.channel, method, request, tenants.mine.metadata)
        except grpc.aio.AioRpcError as error:
            raise AssertionError(
                f"{path} must succeed for the owner of A: {error.code().name} {error.details()}"
            ) from None
        messages.extend(answer)
        token = getattr(answer[-1], "next_page_token", "") if paged and answer else ""
        if not token:
            return messages
        request.page_token = token  # type: ignore[attr-defined]
    raise AssertionError(f"{path}: more than {MAX_PAGES} pages")


def without_page_tokens(messages: list[Message]) -> list[Message]:
    """The messages with their (opaque, possibly time-stamped) next_page_token cleared."""
    cleared = []
    for message in messages:
        copy = type(message)()
        copy.CopyFrom(message)
        if "next_page_token" in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField("next_page_token")
        cleared.append(copy)
    return cleared


def test_every_read_has_a_request() -> None:
    missing = [p for p in READS if p not in TABLE]
    assert not missing, f"add an Entry to tests.support.security.access_matrix.TABLE: {missing}"
    assert len(READS) >= 10, READS


@pytest.mark.parametrize("path", READS, ids=[p.rsplit("/", 1)[1] for p in READS])
async def test_a_read_shows_nothing_of_another_tenant(path: str, tenants: Tenants) -> None:
    first = await read_all(tenants, path)
    # Another populated tenant, newer than every row of A.
    await tenants.add_theirs()
    second = await read_all(tenants, path)

    mine, *theirs = await identifying_strings(tenants.server.app, tenants.mine, *tenants.theirs)
    foreign = set().union(*theirs) - mine
    for answer in (first, second):
        text = as_text(answer)
        leaked = sorted(s for s in foreign if s in text)
        assert not leaked, f"{path} showed A's owner strings of other tenants: {leaked[:5]}"
    assert without_page_tokens(first) == without_page_tokens(second), (
        f"{path}: A's answer changed when another tenant was added:\n"
        f"{as_text(first)}\n--- then ---\n{as_text(second)}"
    )
