"""`service.db.compiled.CompiledSelect`: the hot reads' rows, read on the driver connection, equal what
SQLAlchemy's own execution returns, and a driver failure looks like SQLAlchemy's."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, literal_column, select, table, text
from sqlalchemy.exc import DBAPIError

from service.app import App
from service.clock import new_id, utcnow
from service.db.compiled import CompiledSelect
from service.db.models import Organization, OrganizationMember, Prompt, Run, Schedule, Workspace
from service.domain import read_views
from service.pipeline.errors import translate
from tests.support.app import NewUser


async def seed(app: App, user_id: str) -> dict[str, Any]:
    """A workspace with every kind of column a hot read returns: JSON lists and objects,
    times, a schedule, prompts and a run."""
    now = utcnow()
    org = Organization(id=new_id("org"), name="Hot Org", slug=new_id("hot"))
    workspace_id, run_id = new_id("ws"), new_id("run")
    prompts = [new_id("prm") for _ in range(3)]
    async with app.db.transaction() as session:
        session.add(org)
        await session.flush()
        session.add(
            OrganizationMember(
                organization_id=org.id, user_id=user_id, role="owner", create_time=now
            )
        )
        session.add(
            Workspace(
                id=workspace_id,
                organization_id=org.id,
                name="Hot",
                slug=new_id("hot"),
                domain="hot.example",
                brand_aliases=["Hot", "Hotter"],
                competitors=[{"name": "Cold", "domain": "cold.example"}],
                enabled_providers=["openai", "mistral"],
                create_time=now,
            )
        )
        await session.flush()
        session.add(
            Schedule(
                workspace_id=workspace_id,
                cron="0 6 * * *",
                time_zone="Asia/Tokyo",
                next_run_time=now + timedelta(days=1),
                create_time=now,
                update_time=now,
            )
        )
        for index, prompt_id in enumerate(prompts):
            prompt_text = f"hot prompt {index}"
            session.add(
                Prompt(
                    id=prompt_id,
                    workspace_id=workspace_id,
                    text=prompt_text,
                    text_hash=hashlib.sha256(prompt_text.encode()).hexdigest(),
                    create_time=now + timedelta(microseconds=index),
                )
            )
        session.add(
            Run(
                id=run_id,
                workspace_id=workspace_id,
                trigger="manual",
                status="succeeded",
                prompt_ids=prompts,
                providers=["openai"],
                prompt_count=len(prompts),
                create_time=now,
                start_time=now,
                end_time=now + timedelta(seconds=3),
            )
        )
    return {
        "user_id": user_id,
        "organization_id": org.id,
        "workspace_id": workspace_id,
        "run_id": run_id,
        "limit": 10,
        "after_time": now,
        "after_id": prompts[0],
    }


def test_an_in_list_the_caller_binds_is_refused_when_built() -> None:
    in_list = select(Prompt.id).where(Prompt.id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        CompiledSelect(in_list)


def hot_selects() -> list[CompiledSelect]:
    return [
        *read_views._WORKSPACES.values(),  # with the IN lists of roles the statements fix
        *read_views._PROMPTS.values(),
        read_views._PROMPT_COUNT,
        read_views._RUN,
    ]


async def test_hot_rows_equal_sqlalchemys_rows(app: App, new_user: NewUser) -> None:
    params = await seed(app, (await new_user()).user_id)
    async with app.db.read() as conn:
        for hot in hot_selects():
            expected = [tuple(row) for row in await conn.execute(hot.statement, params)]
            rows = await hot.rows(conn, params)
            assert expected, hot.statement  # every statement finds the seeded rows
            assert [tuple(row) for row in rows] == expected
            # Columns are reachable by key too, as on SQLAlchemy's rows.
            keys = [c.key for c in hot.statement.selected_columns]
            if "status" in keys:
                assert rows[0].status == "succeeded"


@pytest.mark.postgres_only
async def test_a_broken_connection_is_dropped_and_reported_as_an_outage(
    app: App, new_user: NewUser
) -> None:
    params = await seed(app, (await new_user()).user_id)
    hot = read_views._RUN
    async with app.db.read() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with app.db.read() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            await hot.rows(conn, params)
        assert raised.value.connection_invalidated
        assert conn.invalidated
        assert translate(raised.value) is not None
        assert translate(raised.value).reason == "DATABASE_UNAVAILABLE"  # type: ignore[union-attr]
    async with app.db.read() as conn:  # the pool hands out a working connection again
        assert len(await hot.rows(conn, params)) == 1


@pytest.mark.postgres_only
async def test_a_failing_statement_raises_sqlalchemys_error_with_the_drivers_sqlstate(
    app: App,
) -> None:
    missing = CompiledSelect(select(literal_column("1")).select_from(table("no_such_table")))
    async with app.db.read() as conn:
        with pytest.raises(DBAPIError) as raised:
            await missing.rows(conn, {})
        assert raised.value.orig.sqlstate == "42P01"  # type: ignore[union-attr]
        assert not raised.value.connection_invalidated
        assert translate(raised.value) is None  # a bug, not an outage: INTERNAL
        # The connection is still good.
        assert await read_views._PROMPT_COUNT.scalar(conn, {"workspace_id": "ws_none"}) == 0
