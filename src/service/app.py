"""The objects every servicer shares, built once per process from the settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import dramatiq

from service.application.services import Services
from service.config import Settings
from service.db.database import Database
from service.outbox import RunDispatcher
from service.rate_limits import RateLimits


class Dispatcher(Protocol):
    """Sends runs that were written and committed to the workers (`service.outbox`)."""

    async def dispatch_runs(self, run_ids: Sequence[str]) -> int:
        """Sends the runs not yet enqueued among `run_ids`; returns how many were sent."""
        ...


@dataclass(slots=True)
class App:
    """Settings, the database, the run dispatcher, the rate-limit counters and the
    application services; servicers receive it at construction.

    `dispatcher` defaults to one without a broker (runs wait in the outbox for the ticker);
    `from_settings` is given the broker explicitly.
    It becomes the database's run sender: the runs a domain command wrote are sent once its
    transaction has committed (`service.db.database.send_runs_after_commit`), so servicers
    never dispatch.
    """

    settings: Settings
    db: Database
    dispatcher: Dispatcher = field(default=None)  # type: ignore[assignment]
    rate_limits: RateLimits = field(init=False)
    # The application services that servicers, the HTTP side and the CLI call.
    services: Services = field(init=False)

    def __post_init__(self) -> None:
        self.rate_limits = RateLimits(self.settings)
        self.services = Services.build(self.db, self.settings, self.rate_limits.charge_run)
        if self.dispatcher is None:
            self.dispatcher = RunDispatcher(self.db, None)
        self.db.run_sender = self.dispatcher.dispatch_runs

    @classmethod
    def from_settings(cls, settings: Settings, *, broker: dramatiq.Broker | None = None) -> App:
        db = Database(settings.database_url)
        return cls(settings=settings, db=db, dispatcher=RunDispatcher(db, broker))

    async def close(self) -> None:
        await self.db.dispose()
