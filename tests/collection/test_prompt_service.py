"""PromptService through a real server: store, list (paged), add, delete."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from beacon.v1 import prompt_service_pb2 as pb
from service.app import App
from tests.support import expect_error
from tests.support.app import NewUser
from tests.support.app import TestUser as Caller
from tests.support.builders import add_workspace_member, all_pages, audited_actions, make_workspace


@pytest.fixture
async def owner(new_user: NewUser) -> Caller:
    return await new_user()


@pytest.fixture
async def workspace_id(app: App, owner: Caller) -> str:
    return (await make_workspace(app, owner.user_id)).workspace_id


async def store(
    collection: SimpleNamespace, user: Caller, workspace_id: str, texts: list[str]
) -> Any:
    return await collection.prompts.StorePrompts(
        pb.StorePromptsRequest(workspace_id=workspace_id, prompts=texts), metadata=user.metadata
    )


async def listed(
    collection: SimpleNamespace, user: Caller, workspace_id: str, page_size: int = 0
) -> list[Any]:
    return await all_pages(
        lambda token: collection.prompts.ListPrompts(
            pb.ListPromptsRequest(workspace_id=workspace_id, page_size=page_size, page_token=token),
            metadata=user.metadata,
        ),
        "prompts",
    )


async def test_store_replaces_the_set(
    collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    first = await store(collection, owner, workspace_id, ["  best crm  ", "cheap crm", "best crm"])
    assert [p.text for p in first.prompts] == ["best crm", "cheap crm"]
    assert first.duplicates_dropped == 1
    assert all(p.id.startswith("prm_") and p.workspace_id == workspace_id for p in first.prompts)
    kept_id = first.prompts[1].id

    second = await store(collection, owner, workspace_id, ["cheap crm", "crm for lawyers"])
    assert [p.text for p in second.prompts] == ["cheap crm", "crm for lawyers"]
    assert second.prompts[0].id == kept_id
    assert second.prompts[0].create_time == first.prompts[1].create_time
    assert [(p.id, p.text) for p in await listed(collection, owner, workspace_id)] == [
        (p.id, p.text) for p in second.prompts
    ]

    cleared = await store(collection, owner, workspace_id, [])
    assert list(cleared.prompts) == []
    assert await listed(collection, owner, workspace_id) == []


async def test_bad_prompts_are_named_and_nothing_is_written(
    collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    await store(collection, owner, workspace_id, ["kept"])
    failure = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        store(collection, owner, workspace_id, ["new", "x" * 2001, " ", "bell\x07"]),
    )
    fields = [v.field for v in failure.details["BadRequest"].field_violations]
    assert fields == ["prompts[1]", "prompts[2]", "prompts[3]"]
    assert "prompts[1]: must be at most 2000 characters" in failure.message
    too_many = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        store(collection, owner, workspace_id, [f"q{i}" for i in range(501)]),
    )
    assert "at most 500" in too_many.message
    assert [p.text for p in await listed(collection, owner, workspace_id)] == ["kept"]


async def test_list_pages_oldest_first(
    collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    texts = [f"question {i:02d}" for i in range(23)]
    await store(collection, owner, workspace_id, texts)
    page = await collection.prompts.ListPrompts(
        pb.ListPromptsRequest(workspace_id=workspace_id, page_size=10), metadata=owner.metadata
    )
    assert len(page.prompts) == 10
    assert page.total_size == 23
    assert page.next_page_token
    assert [p.text for p in await listed(collection, owner, workspace_id, page_size=10)] == texts
    # A page of everything.
    whole = await collection.prompts.ListPrompts(
        pb.ListPromptsRequest(workspace_id=workspace_id, page_size=500), metadata=owner.metadata
    )
    assert (len(whole.prompts), whole.next_page_token) == (23, "")
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        collection.prompts.ListPrompts(
            pb.ListPromptsRequest(workspace_id=workspace_id, page_token="forged"),
            metadata=owner.metadata,
        ),
    )


async def test_a_page_token_is_bound_to_its_workspace(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    other = (await make_workspace(app, owner.user_id)).workspace_id
    await store(collection, owner, workspace_id, ["a", "b"])
    page = await collection.prompts.ListPrompts(
        pb.ListPromptsRequest(workspace_id=workspace_id, page_size=1), metadata=owner.metadata
    )
    failure = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        collection.prompts.ListPrompts(
            pb.ListPromptsRequest(workspace_id=other, page_token=page.next_page_token),
            metadata=owner.metadata,
        ),
    )
    assert "page_token" in failure.message


async def test_add_prompts(collection: SimpleNamespace, owner: Caller, workspace_id: str) -> None:
    await store(collection, owner, workspace_id, ["a", "b"])
    added = await collection.prompts.AddPrompts(
        pb.AddPromptsRequest(workspace_id=workspace_id, prompts=["b", " c ", "c", "d"]),
        metadata=owner.metadata,
    )
    assert [p.text for p in added.added] == ["c", "d"]
    assert added.duplicates_dropped == 2
    assert [p.text for p in await listed(collection, owner, workspace_id)] == ["a", "b", "c", "d"]
    await store(collection, owner, workspace_id, [f"q{i}" for i in range(499)])
    failure = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        collection.prompts.AddPrompts(
            pb.AddPromptsRequest(workspace_id=workspace_id, prompts=["new 1", "new 2"]),
            metadata=owner.metadata,
        ),
    )
    assert "at most 500" in failure.message
    assert failure.details["PreconditionFailure"].violations[0].type == "PROMPT_LIMIT"
    assert len(await listed(collection, owner, workspace_id, page_size=500)) == 499


async def test_delete_prompt(collection: SimpleNamespace, owner: Caller, workspace_id: str) -> None:
    stored = await store(collection, owner, workspace_id, ["a", "b"])
    await collection.prompts.DeletePrompt(
        pb.DeletePromptRequest(prompt_id=stored.prompts[0].id), metadata=owner.metadata
    )
    assert [p.text for p in await listed(collection, owner, workspace_id)] == ["b"]
    for prompt_id in (stored.prompts[0].id, "prm_doesnotexist"):
        await expect_error(
            grpc.StatusCode.NOT_FOUND,
            collection.prompts.DeletePrompt(
                pb.DeletePromptRequest(prompt_id=prompt_id), metadata=owner.metadata
            ),
        )
    # An id of another kind names no prompt whoever asks: refused by its shape.
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        collection.prompts.DeletePrompt(
            pb.DeletePromptRequest(prompt_id=workspace_id), metadata=owner.metadata
        ),
    )


async def test_members_may_edit_and_strangers_see_nothing(
    app: App,
    collection: SimpleNamespace,
    new_user: NewUser,
    owner: Caller,
    workspace_id: str,
) -> None:
    member, stranger = await new_user(), await new_user()
    await add_workspace_member(app, workspace_id, member.user_id, "member")
    stored = await store(collection, member, workspace_id, ["from a member"])
    for call in (
        store(collection, stranger, workspace_id, ["intruder"]),
        collection.prompts.ListPrompts(
            pb.ListPromptsRequest(workspace_id=workspace_id), metadata=stranger.metadata
        ),
        collection.prompts.AddPrompts(
            pb.AddPromptsRequest(workspace_id=workspace_id, prompts=["x"]),
            metadata=stranger.metadata,
        ),
        collection.prompts.DeletePrompt(
            pb.DeletePromptRequest(prompt_id=stored.prompts[0].id), metadata=stranger.metadata
        ),
    ):
        await expect_error(grpc.StatusCode.NOT_FOUND, call)
    assert [p.text for p in await listed(collection, owner, workspace_id)] == ["from a member"]


async def test_changes_are_audited_and_reads_are_not(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    stored = await store(collection, owner, workspace_id, ["a"])
    added = await collection.prompts.AddPrompts(
        pb.AddPromptsRequest(workspace_id=workspace_id, prompts=["b"]), metadata=owner.metadata
    )
    await listed(collection, owner, workspace_id)
    await collection.prompts.DeletePrompt(
        pb.DeletePromptRequest(prompt_id=stored.prompts[0].id), metadata=owner.metadata
    )
    assert await audited_actions(app, workspace_id) == [
        ("StorePrompts", [workspace_id]),
        ("AddPrompts", [added.added[0].id]),
        ("DeletePrompt", [stored.prompts[0].id]),
    ]
