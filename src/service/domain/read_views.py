"""The hot list and get reads (ListWorkspaces, ListPrompts, GetRun) as Core statements.

Each statement is built once, with bound parameters for everything a call supplies (user,
workspace, cursor, page size), and runs on a Core connection (`Database.read`: autocommit,
no ORM session, no identity map), so a call pays for neither building nor compiling SQL nor
loading ORM objects. Rows come back as plain tuples and become the same views the domain's
ORM reads give (`workspace_views.list_views`, `runs.get_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, and_, bindparam, func, or_, select
from sqlalchemy.sql.elements import BindParameter

from service.db.compiled import CompiledSelect
from service.db.database import Reader
from service.db.models import Organization, Prompt, Run, Workspace
from service.domain.collection.prompts import MAX_PROMPTS
from service.domain.collection.runs import RunView, run_views
from service.domain.errors import NotFound
from service.domain.inputs import require_id
from service.domain.paging import Page, parse_page
from service.domain.tenancy.visibility import accessible_workspaces, reachable_organizations
from service.domain.tenancy.workspace_views import VIEWS, WorkspaceView, view_of

_USER: BindParameter[str] = bindparam("user_id")
_LIMIT: BindParameter[int] = bindparam("limit", type_=Integer)


def _after(time_col: Any, id_col: Any, *, descending: bool = False) -> ColumnElement[bool]:
    """`Page.where` with the cursor bound at execution (`after_time`, `after_id`)."""
    after_time: BindParameter[datetime] = bindparam("after_time")
    after_id: BindParameter[str] = bindparam("after_id")
    if descending:
        return or_(time_col < after_time, and_(time_col == after_time, id_col < after_id))
    return or_(time_col > after_time, and_(time_col == after_time, id_col > after_id))


def _page_params(page: Page) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": page.size + 1}
    if page.after is not None:
        params["after_time"], params["after_id"] = page.after
    return params


# Workspaces ---------------------------------------------------------------------------------


def _workspaces_statement(in_organization: bool, after: bool) -> Select[Any]:
    query = VIEWS.where(accessible_workspaces(_USER))
    if in_organization:
        query = query.where(Workspace.organization_id == bindparam("organization_id"))
    if after:
        query = query.where(_after(Workspace.create_time, Workspace.id))
    return query.order_by(Workspace.create_time, Workspace.id).limit(_LIMIT)


_WORKSPACES = {
    (in_org, after): CompiledSelect(_workspaces_statement(in_org, after))
    for in_org in (False, True)
    for after in (False, True)
}
_REACHABLE_ORGANIZATION = select(Organization.id).where(
    Organization.id == bindparam("organization_id"), reachable_organizations(_USER)
)


async def list_workspaces(
    reader: Reader, user_id: str, organization_id: str, page: Page
) -> tuple[list[WorkspaceView], str]:
    """`workspace_views.list_views` without `deleted`: the workspaces `user_id` can access
    (of one organization when given), oldest first, and the next page token; NotFound when
    `organization_id` names an organization the user does not reach."""
    params = {"user_id": user_id, **_page_params(page)}
    if organization_id:
        require_id("organization_id", organization_id)
        params["organization_id"] = organization_id
        if await reader.scalar(_REACHABLE_ORGANIZATION, params) is None:
            raise NotFound("organization", organization_id)
    statement = _WORKSPACES[(bool(organization_id), page.after is not None)]
    views = [view_of(row) for row in await statement.rows(reader, params)]
    return views[: page.size], page.next_token(views)


# Prompts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptRow:
    """The columns of a prompt that a Prompt message shows."""

    id: str
    workspace_id: str
    text: str
    create_time: datetime
    market: dict[str, str]


def _prompts_statement(after: bool) -> Select[str, str, str, datetime, dict[str, str]]:
    query = select(
        Prompt.id, Prompt.workspace_id, Prompt.text, Prompt.create_time, Prompt.market
    ).where(Prompt.workspace_id == bindparam("workspace_id"))
    if after:
        query = query.where(_after(Prompt.create_time, Prompt.id))
    return query.order_by(Prompt.create_time, Prompt.id).limit(_LIMIT)


_PROMPTS = {after: CompiledSelect(_prompts_statement(after)) for after in (False, True)}
_PROMPT_COUNT = CompiledSelect(
    select(func.count()).select_from(Prompt).where(Prompt.workspace_id == bindparam("workspace_id"))
)


@dataclass(frozen=True, slots=True)
class PromptRowPage:
    """`prompts.PromptPage` with plain rows."""

    prompts: list[PromptRow]
    next_page_token: str
    total_size: int


async def list_prompts(
    reader: Reader, workspace_id: str, *, page_size: int, page_token: str
) -> PromptRowPage:
    """The workspace's prompts, oldest first, paged (1-500 per page,
    default 100), and their total count."""
    page = parse_page(
        page_size, page_token, scope=f"prompts:{workspace_id}", default=100, maximum=MAX_PROMPTS
    )
    params = {"workspace_id": workspace_id, **_page_params(page)}
    rows = [PromptRow(*row) for row in await _PROMPTS[page.after is not None].rows(reader, params)]
    total = await _PROMPT_COUNT.scalar(reader, params)
    return PromptRowPage(rows[: page.size], page.next_token(rows), int(total or 0))


# Runs ---------------------------------------------------------------------------------------


_RUN = CompiledSelect(
    select(
        Run.id,
        Run.workspace_id,
        Run.status,
        Run.trigger,
        Run.scheduled_time,
        Run.create_time,
        Run.start_time,
        Run.end_time,
        Run.prompt_count,
        Run.prompt_ids,
        Run.providers,
        Run.failure_reason,
    ).where(Run.id == bindparam("run_id"), Run.workspace_id == bindparam("workspace_id"))
)


async def get_run(reader: Reader, workspace_id: str, run_id: str) -> RunView:
    """`runs.get_run`: one run of the workspace with its progress; NotFound otherwise."""
    rows = await _RUN.rows(reader, {"run_id": run_id, "workspace_id": workspace_id})
    if not rows:
        raise NotFound("run", run_id)
    return (await run_views(reader, rows))[0]
