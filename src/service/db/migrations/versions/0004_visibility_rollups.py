"""visibility rollups per (workspace, UTC day, provider), backfilled from the answers

Revision ID: 0004
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANSWERED = "status = 'succeeded'"

# The same sums as service.domain.collection.rollups.add_answers, over every stored answer.
BACKFILL_TOTALS = """
INSERT INTO visibility_rollups
    (workspace_id, day, provider, responses, brand_mentions, rank_sum, ranked,
     brand_citations, citations)
SELECT workspace_id, {day}, provider, count(*),
       sum(CASE WHEN brand_mentioned THEN 1 ELSE 0 END),
       sum(CASE WHEN brand_mentioned AND brand_rank > 0 THEN brand_rank ELSE 0 END),
       sum(CASE WHEN brand_mentioned AND brand_rank > 0 THEN 1 ELSE 0 END),
       sum(brand_citations), sum(citation_count)
FROM probes
WHERE status = 'succeeded' AND complete_time IS NOT NULL
GROUP BY workspace_id, {day}, provider
"""
# Answers mentioning each competitor: non-empty string names, once per answer.
BACKFILL_COMPETITORS = """
INSERT INTO competitor_rollups (workspace_id, day, provider, name, mentions)
SELECT p.workspace_id, {day}, p.provider, {name}, count(DISTINCT p.id)
FROM probes AS p, {elements}
WHERE p.status = 'succeeded' AND p.complete_time IS NOT NULL AND {is_text} AND {name} <> ''
GROUP BY p.workspace_id, {day}, p.provider, {name}
"""
POSTGRESQL = {
    "day": "CAST(timezone('UTC', complete_time) AS date)",
    "name": "c.value ->> 'name'",
    "elements": "json_array_elements(CASE WHEN json_typeof(p.competitors) = 'array' "
    "THEN p.competitors ELSE '[]'::json END) AS c(value)",
    "is_text": "json_typeof(c.value -> 'name') = 'string'",
}
SQLITE = {
    # The stored text's date part: date() of the whole text rounds to milliseconds.
    "day": "date(substr(complete_time, 1, 10))",
    "name": "json_extract(c.value, '$.name')",
    "elements": "json_each(p.competitors) AS c",
    "is_text": "json_type(c.value, '$.name') = 'text'",
}


def upgrade() -> None:
    op.create_table(
        "visibility_rollups",
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("responses", sa.Integer(), nullable=False),
        sa.Column("brand_mentions", sa.Integer(), nullable=False),
        sa.Column("rank_sum", sa.Integer(), nullable=False),
        sa.Column("ranked", sa.Integer(), nullable=False),
        sa.Column("brand_citations", sa.Integer(), nullable=False),
        sa.Column("citations", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_visibility_rollups_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "workspace_id", "day", "provider", name=op.f("pk_visibility_rollups")
        ),
    )
    op.create_table(
        "competitor_rollups",
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("mentions", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_competitor_rollups_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "workspace_id", "day", "provider", "name", name=op.f("pk_competitor_rollups")
        ),
    )
    with op.batch_alter_table("probes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_probes_ws_answered",
            ["workspace_id", "complete_time"],
            unique=False,
            postgresql_where=sa.text(ANSWERED),
            sqlite_where=sa.text(ANSWERED),
        )
    parts = SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRESQL
    op.execute(BACKFILL_TOTALS.format(**parts))
    op.execute(BACKFILL_COMPETITORS.format(**parts))


def downgrade() -> None:
    with op.batch_alter_table("probes", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_probes_ws_answered",
            postgresql_where=sa.text(ANSWERED),
            sqlite_where=sa.text(ANSWERED),
        )
    op.drop_table("competitor_rollups")
    op.drop_table("visibility_rollups")
