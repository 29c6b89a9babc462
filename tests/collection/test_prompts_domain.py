"""Prompt normalization (pure) and the stored set (against the real database)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.app import App
from service.clock import utcnow
from service.domain.collection import prompts
from service.domain.errors import FailedPrecondition, InvalidArgument
from tests.support import actor_of
from tests.support.app import NewUser
from tests.support.builders import make_workspace, stored_texts

STORE_PROMPTS = "beacon.v1.PromptService/StorePrompts"


def test_texts_are_trimmed_and_duplicates_dropped_in_order() -> None:
    result = prompts.normalize_prompts(["  b  ", "a", "b", "\tb\n", "a ", "c"])
    assert result.texts == ["b", "a", "c"]
    assert result.duplicates_dropped == 3


def test_line_breaks_and_tabs_are_kept_and_unified() -> None:
    result = prompts.normalize_prompts(["line one\r\nline two\rthree\tfour"])
    assert result.texts == ["line one\nline two\nthree\tfour"]


def test_duplicates_are_exact_not_case_insensitive() -> None:
    assert prompts.normalize_prompts(["Best CRM", "best crm"]).texts == ["Best CRM", "best crm"]


@pytest.mark.parametrize(
    ("texts", "field", "message"),
    [
        (["ok", ""], "prompts[1]", "must not be empty"),
        (["   \n\t "], "prompts[0]", "must not be empty"),
        (["ok", "ok", "x" * 2001], "prompts[2]", "at most 2000 characters (got 2001)"),
        (["bell\x07"], "prompts[0]", "U+0007 at position 4"),
        (["nul\x00byte"], "prompts[0]", "control characters"),
        (["esc\x1b[31m"], "prompts[0]", "control characters"),
        (["del\x7f"], "prompts[0]", "control characters"),
    ],
)
def test_bad_entries_are_named_by_index(texts: list[str], field: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        prompts.normalize_prompts(texts)
    assert caught.value.violations[0].field == field
    assert message in caught.value.violations[0].description


def test_every_bad_entry_is_reported() -> None:
    with pytest.raises(InvalidArgument) as caught:
        prompts.normalize_prompts(["", "fine", "x" * 3000, ""])
    assert [v.field for v in caught.value.violations] == ["prompts[0]", "prompts[2]", "prompts[3]"]


def test_length_limits_are_inclusive() -> None:
    assert prompts.normalize_prompts(["x" * 2000, "y"]).texts == ["x" * 2000, "y"]
    # 2000 characters, not bytes.
    assert prompts.normalize_prompts(["é" * 2000]).texts == ["é" * 2000]


def test_at_most_500_distinct_prompts() -> None:
    assert len(prompts.normalize_prompts([f"p{i}" for i in range(500)] + ["p0"]).texts) == 500
    with pytest.raises(InvalidArgument) as caught:
        prompts.normalize_prompts([f"p{i}" for i in range(501)])
    assert caught.value.violations[0].field == "prompts"
    assert "at most 500" in caught.value.message


async def test_store_replaces_the_set_and_keeps_ids_of_kept_texts(
    app: App, new_user: NewUser
) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    actor = actor_of(user.user_id, STORE_PROMPTS)
    now = utcnow()
    async with app.db.transaction() as session:
        first = await prompts.store_prompts(
            session, actor, tenant.workspace_id, ["a", "b", "c"], now=now
        )
    ids = {row.text: row.id for row in first.prompts}
    async with app.db.transaction() as session:
        second = await prompts.store_prompts(
            session,
            actor,
            tenant.workspace_id,
            ["c", " d ", "a", "d"],
            now=now + timedelta(seconds=1),
        )
    assert [row.text for row in second.prompts] == ["c", "d", "a"]
    assert second.duplicates_dropped == 1
    assert second.prompts[0].id == ids["c"]
    assert second.prompts[2].id == ids["a"]
    stored = await stored_texts(app, tenant.workspace_id)
    assert stored == {"a": ids["a"], "c": ids["c"], "d": second.prompts[1].id}
    assert second.prompts[1].id.startswith("prm_")


async def test_bad_input_writes_nothing(app: App, new_user: NewUser) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    actor = actor_of(user.user_id, STORE_PROMPTS)
    async with app.db.transaction() as session:
        await prompts.store_prompts(session, actor, tenant.workspace_id, ["kept"], now=utcnow())
    with pytest.raises(InvalidArgument):
        async with app.db.transaction() as session:
            await prompts.store_prompts(
                session, actor, tenant.workspace_id, ["new", ""], now=utcnow()
            )
    assert list(await stored_texts(app, tenant.workspace_id)) == ["kept"]


async def test_add_skips_stored_texts_and_respects_the_limit(app: App, new_user: NewUser) -> None:
    user = await new_user()
    tenant = await make_workspace(app, user.user_id)
    actor = actor_of(user.user_id, STORE_PROMPTS)
    async with app.db.transaction() as session:
        await prompts.store_prompts(
            session, actor, tenant.workspace_id, [f"p{i}" for i in range(498)], now=utcnow()
        )
    async with app.db.transaction() as session:
        added = await prompts.add_prompts(
            session, actor, tenant.workspace_id, ["p1", "new", "new ", "p2"], now=utcnow()
        )
    assert [row.text for row in added.prompts] == ["new"]
    assert added.duplicates_dropped == 3
    with pytest.raises(FailedPrecondition) as caught:
        async with app.db.transaction() as session:
            await prompts.add_prompts(session, actor, tenant.workspace_id, ["x", "y"], now=utcnow())
    assert caught.value.violations[0].type == "PROMPT_LIMIT"
    assert len(await stored_texts(app, tenant.workspace_id)) == 499
