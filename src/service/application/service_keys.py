"""Service keys: the `beacon service-key` commands (create, list, revoke)."""

from __future__ import annotations

from service.application.base import ServiceBase
from service.auth import service_keys
from service.auth.service_keys import KeyInfo


class ServiceKeyService(ServiceBase):
    """The service keys of the deployment (operators manage them from the CLI)."""

    async def create(
        self,
        name: str,
        scopes: list[str],
        *,
        organization_ids: list[str] | None = None,
        all_organizations: bool = False,
    ) -> tuple[str, KeyInfo]:
        """A new key bound to `organization_ids` or to all organizations; its secret (shown
        once) and its record."""
        async with self.db.transaction() as session:
            return await service_keys.create_key(
                session,
                name,
                scopes,
                organization_ids=organization_ids,
                all_organizations=all_organizations,
                now=self.clock(),
            )

    async def list_keys(self) -> list[KeyInfo]:
        """Every key, oldest first, revoked ones too."""
        async with self.db.transaction(write=False) as session:
            # Read inside the transaction: ending a read-only one expires the loaded rows.
            return await service_keys.list_keys(session)

    async def revoke(self, key_id: str) -> None:
        """Revokes an active key; NotFound otherwise."""
        async with self.db.transaction() as session:
            await service_keys.revoke_key(session, key_id, now=self.clock())
