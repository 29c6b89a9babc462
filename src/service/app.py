"""The objects every servicer shares, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings
from service.db.database import Database


@dataclass(slots=True)
class App:
    """Settings and the database; servicers receive it at construction."""

    settings: Settings
    db: Database

    @classmethod
    def from_settings(cls, settings: Settings) -> App:
        return cls(settings=settings, db=Database(settings.database_url))

    async def close(self) -> None:
        await self.db.dispose()
