"""What every application service holds: the database it opens units of work on, the
settings it was built with, and the clock it reads `now` from (injectable for tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from service.clock import utcnow
from service.config import Settings
from service.db.database import Database


@dataclass(slots=True, kw_only=True)
class ServiceBase:
    """The database, settings and clock of one application service, built once by `App`."""

    db: Database
    settings: Settings
    clock: Callable[[], datetime] = field(default=utcnow)
