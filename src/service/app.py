"""The objects every servicer shares, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.config import Settings
from service.db.database import Database
from service.rate_limits import RateLimits


@dataclass(slots=True)
class App:
    """Settings, the database and the rate-limit counters; servicers receive it at
    construction."""

    settings: Settings
    db: Database
    rate_limits: RateLimits = field(init=False)

    def __post_init__(self) -> None:
        self.rate_limits = RateLimits(self.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> App:
        return cls(settings=settings, db=Database(settings.database_url))

    async def close(self) -> None:
        await self.db.dispose()
