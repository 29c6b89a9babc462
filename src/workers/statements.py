"""Statements whose SQL differs between PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute

from service.db.base import Base
from service.db.database import Database


def insert_ignoring_duplicates(
    db: Database, model: type[Base], unique_key: Sequence[InstrumentedAttribute[Any]]
) -> Any:
    """`INSERT ... ON CONFLICT (unique_key) DO NOTHING` for the database's dialect.

    Executed with a list of rows, SQLAlchemy batches it into multi-row INSERTs.
    """
    dialect = sqlite if db.is_sqlite else postgresql
    return dialect.insert(model).on_conflict_do_nothing(index_elements=list(unique_key))
