"""Data the collection tests need, written straight to the database (no tests here).

Workspaces are inserted as rows so that these tests depend only on the collection API; probe
results are inserted as a worker would write them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from service.app import App
from service.clock import new_id, utcnow
from service.db.models import (
    AuditEvent,
    Organization,
    OrganizationMember,
    Probe,
    Prompt,
    Run,
    Workspace,
    WorkspaceMember,
)
from service.domain.collection import insight_rollups, rollups
from service.domain.collection.prompts import text_hash
from tests.support import unique


@dataclass(frozen=True, slots=True)
class Tenant:
    """A workspace in its own organization, owned by one user."""

    organization_id: str
    workspace_id: str


async def make_workspace(
    app: App,
    owner_id: str,
    *,
    enabled: Sequence[str] = ("openai", "anthropic"),
    domain: str = "acme.com",
    competitors: Sequence[str] = (),
) -> Tenant:
    """An organization owned by `owner_id` with one workspace tracking `domain`."""
    now = utcnow()
    org_id, ws_id = new_id("org"), new_id("ws")
    async with app.db.transaction() as session:
        session.add(Organization(id=org_id, name=unique("Org "), slug=unique("org-")))
        await session.flush()
        session.add(
            OrganizationMember(
                organization_id=org_id, user_id=owner_id, role="owner", create_time=now
            )
        )
        session.add(
            Workspace(
                id=ws_id,
                organization_id=org_id,
                name=unique("Workspace "),
                slug=unique("ws-"),
                domain=domain,
                brand_aliases=[],
                competitors=[{"name": name, "domain": ""} for name in competitors],
                enabled_providers=list(enabled),
            )
        )
    return Tenant(org_id, ws_id)


async def stored_texts(app: App, workspace_id: str) -> dict[str, str]:
    """The workspace's prompt ids by text."""
    async with app.db.transaction(write=False) as session:
        rows = await session.scalars(select(Prompt).where(Prompt.workspace_id == workspace_id))
        return {row.text: row.id for row in rows}


async def add_workspace_member(app: App, workspace_id: str, user_id: str, role: str) -> None:
    """Adds a guest member (no organization role) to a workspace."""
    async with app.db.transaction() as session:
        session.add(
            WorkspaceMember(
                workspace_id=workspace_id, user_id=user_id, role=role, create_time=utcnow()
            )
        )


async def insert_prompts(app: App, workspace_id: str, texts: Sequence[str]) -> list[str]:
    """Prompt rows, in order; returns their ids."""
    ids = [new_id("prm") for _ in texts]
    now = utcnow()
    async with app.db.transaction() as session:
        for prompt_id, text in zip(ids, texts, strict=True):
            session.add(
                Prompt(
                    id=prompt_id,
                    workspace_id=workspace_id,
                    text=text,
                    text_hash=text_hash(text),
                    create_time=now,
                )
            )
    return ids


async def insert_run(
    app: App,
    workspace_id: str,
    *,
    create_time: datetime | None = None,
    providers: Sequence[str] = ("openai",),
    prompt_count: int = 1,
    status: str = "running",
) -> str:
    """A run row as a worker would have it after picking it up."""
    run_id = new_id("run")
    async with app.db.transaction() as session:
        session.add(
            Run(
                id=run_id,
                workspace_id=workspace_id,
                trigger="manual",
                status=status,
                prompt_ids=[],
                providers=list(providers),
                prompt_count=prompt_count,
                create_time=create_time or utcnow(),
            )
        )
    return run_id


async def insert_probe(
    app: App,
    run_id: str,
    prompt_id: str,
    provider: str,
    *,
    status: str = "succeeded",
    complete_time: datetime | None = None,
    **fields: Any,
) -> str:
    """A probe row; finished ones get a complete_time (now unless given)."""
    async with app.db.transaction() as session:
        run = (await session.scalars(select(Run).where(Run.id == run_id))).one()
        probe = Probe(
            id=new_id("rsp"),
            run_id=run_id,
            workspace_id=run.workspace_id,
            prompt_id=prompt_id,
            prompt_text=fields.pop("prompt_text", "prompt"),
            provider=provider,
            status=status,
            create_time=run.create_time,
            complete_time=None if status == "pending" else complete_time or utcnow(),
            **fields,
        )
        session.add(probe)
        await session.flush()
        if status == "succeeded":
            await rollups.add_answers(session, [rollups.answer_of(probe)])
            await insight_rollups.add_answers(session, [insight_rollups.stored_answer(probe)])
    return probe.id


async def finish_probe(app: App, probe_id: str, status: str = "succeeded", **fields: Any) -> None:
    """Marks a pending probe finished, as a worker does (answers enter the rollups)."""
    async with app.db.transaction() as session:
        finished = await session.scalar(
            update(Probe)
            .where(Probe.id == probe_id, Probe.status == "pending")
            .values(status=status, complete_time=utcnow(), **fields)
            .returning(Probe)
        )
        if finished is not None and status == "succeeded":
            await rollups.add_answers(session, [rollups.answer_of(finished)])
            await insight_rollups.add_answers(session, [insight_rollups.stored_answer(finished)])


async def end_run(app: App, run_id: str, status: str) -> None:
    """Ends a run, as a worker does when its last probe finishes."""
    async with app.db.transaction() as session:
        await session.execute(
            update(Run)
            .where(Run.id == run_id, Run.end_time.is_(None))
            .values(status=status, end_time=utcnow())
        )


async def audited_actions(app: App, workspace_id: str) -> list[tuple[str, list[str]]]:
    """(RPC, target ids) of the workspace's audit events, oldest first."""
    async with app.db.transaction(write=False) as session:
        rows = await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.workspace_id == workspace_id)
            .order_by(AuditEvent.create_time)
        )
        return [(row.action.rsplit("/", 1)[-1], list(row.target_ids)) for row in rows]


async def all_pages(fetch: Callable[[str], Awaitable[Any]], field: str) -> list[Any]:
    """Every item of a List RPC: `fetch(page_token)` is called until next_page_token is empty."""
    items: list[Any] = []
    token = ""
    while True:
        page = await fetch(token)
        items.extend(getattr(page, field))
        token = page.next_page_token
        if not token:
            return items
