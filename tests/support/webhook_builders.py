"""Workspaces and webhook endpoints written straight to the database (no tests here)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from service.app import App
from service.clock import new_id, utcnow
from service.db.models import Alert, Organization, WebhookEndpoint, Workspace
from service.domain.notifications.secrets import SecretBox, new_secret
from tests.support import unique


async def make_workspace(app: App, *, domain: str = "acme.com") -> str:
    """A workspace of an organization of its own; its id."""
    org_id, ws_id = new_id("org"), new_id("ws")
    async with app.db.transaction() as session:
        session.add(Organization(id=org_id, name=unique("Org "), slug=unique("org-")))
        await session.flush()
        session.add(
            Workspace(
                id=ws_id,
                organization_id=org_id,
                name=unique("Workspace "),
                slug=unique("ws-"),
                domain=domain,
                brand_aliases=[],
                competitors=[],
                enabled_providers=["openai", "anthropic"],
            )
        )
    return ws_id


async def make_endpoint(
    app: App, workspace_id: str, url: str, *, event_types: Sequence[str] = ()
) -> tuple[str, str]:
    """An enabled endpoint of the workspace; (its id, its secret)."""
    endpoint_id, secret, now = new_id("whk"), new_secret(), utcnow()
    async with app.db.transaction() as session:
        session.add(
            WebhookEndpoint(
                id=endpoint_id,
                workspace_id=workspace_id,
                url=url,
                event_types=list(event_types),
                enabled=True,
                description="",
                disabled_reason="",
                secret_ciphertext=SecretBox.from_settings(app.settings).encrypt(
                    secret, endpoint_id
                ),
                secret_create_time=now,
                create_time=now,
            )
        )
    return endpoint_id, secret


async def alerts_of(app: App, workspace_id: str) -> list[Alert]:
    async with app.db.transaction(write=False) as session:
        return list(
            await session.scalars(
                select(Alert).where(Alert.workspace_id == workspace_id).order_by(Alert.create_time)
            )
        )
