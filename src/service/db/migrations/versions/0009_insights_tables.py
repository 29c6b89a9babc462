"""insights: rollups of cited sources, cited URLs and visibility per prompt; answered
prompts' texts; competitor suggestions' evidence and decisions

Answers stored before this revision are not in the new rollups (no backfill): reports of
sources and per prompt start with the answers stored after it.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import service.db.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUMS = ("responses", "brand_mentions", "rank_sum", "ranked", "brand_citations", "citations")


def _key(name: str, length: int | None = None) -> sa.Column[str]:
    kind = sa.Text() if length is None else sa.String(length=length)
    return sa.Column(name, kind, nullable=False)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False)


def _table(name: str, keys: list[sa.Column[Any]], *columns: sa.Column[Any]) -> None:
    """A table keyed by workspace_id then `keys`, deleted with its workspace."""
    op.create_table(
        name,
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        *keys,
        *columns,
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f(f"fk_{name}_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", *(k.name for k in keys), name=op.f(f"pk_{name}")),
    )


def _bucketed(*keys: sa.Column[str]) -> list[sa.Column[str]]:
    return [
        _key("unit", 1),
        sa.Column("bucket", service.db.types.UTCDateTime(timezone=True), nullable=False),
        *keys,
    ]


def upgrade() -> None:
    _table(
        "source_rollups",
        _bucketed(_key("provider", 20), _key("domain", 253)),
        _count("citations"),
        _count("answers"),
    )
    _table(
        "cited_url_rollups",
        _bucketed(_key("domain", 253), _key("url_hash", 64), _key("prompt_id", 40)),
        _key("url"),
        _count("citations"),
    )
    _table(
        "prompt_rollups",
        _bucketed(_key("prompt_id", 40), _key("provider", 20)),
        *(_count(name) for name in SUMS),
    )
    _table(
        "prompt_competitor_rollups",
        _bucketed(_key("prompt_id", 40), _key("provider", 20), _key("name")),
        _count("mentions"),
    )
    _table("answered_prompts", [_key("prompt_id", 40)], _key("text"))
    _table(
        "suggestion_evidence",
        [_key("kind", 10), _key("key", 253), _key("provider", 20)],
        _key("label"),
        _count("answers"),
        sa.Column("last_time", service.db.types.UTCDateTime(timezone=True), nullable=False),
        _key("example_response_id", 40),
    )
    _table(
        "suggestion_decisions",
        [_key("kind", 10), _key("key", 253)],
        _key("decision", 10),
        sa.Column("decide_time", service.db.types.UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for name in (
        "suggestion_decisions",
        "suggestion_evidence",
        "answered_prompts",
        "prompt_competitor_rollups",
        "prompt_rollups",
        "cited_url_rollups",
        "source_rollups",
    ):
        op.drop_table(name)
