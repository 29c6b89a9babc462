"""hourly and quarter-hour visibility rollups per (workspace, UTC hour or quarter-hour,
provider), backfilled from the answers

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same sums as service.domain.collection.rollups.add_answers, over every stored answer.
BACKFILL_TOTALS = """
INSERT INTO {table}_visibility_rollups
    (workspace_id, {column}, provider, responses, brand_mentions, rank_sum, ranked,
     brand_citations, citations)
SELECT workspace_id, {slot}, provider, count(*),
       sum(CASE WHEN brand_mentioned THEN 1 ELSE 0 END),
       sum(CASE WHEN brand_mentioned AND brand_rank > 0 THEN brand_rank ELSE 0 END),
       sum(CASE WHEN brand_mentioned AND brand_rank > 0 THEN 1 ELSE 0 END),
       sum(brand_citations), sum(citation_count)
FROM probes
WHERE status = 'succeeded' AND complete_time IS NOT NULL
GROUP BY workspace_id, {slot}, provider
"""
# Answers mentioning each competitor: non-empty string names, once per answer.
BACKFILL_COMPETITORS = """
INSERT INTO {table}_competitor_rollups (workspace_id, {column}, provider, name, mentions)
SELECT p.workspace_id, {slot}, p.provider, {name}, count(DISTINCT p.id)
FROM probes AS p, {elements}
WHERE p.status = 'succeeded' AND p.complete_time IS NOT NULL AND {is_text} AND {name} <> ''
GROUP BY p.workspace_id, {slot}, p.provider, {name}
"""
POSTGRESQL = {
    # In UTC whatever the session's TimeZone (date_trunc of a timestamptz uses it).
    "hour": "timezone('UTC', date_trunc('hour', timezone('UTC', complete_time)))",
    "quarter_hour": "timezone('UTC', date_trunc('hour', timezone('UTC', complete_time)) "
    "+ interval '15 minutes' * floor(extract(minute FROM timezone('UTC', complete_time)) / 15))",
    "name": "c.value ->> 'name'",
    "elements": "json_array_elements(CASE WHEN json_typeof(p.competitors) = 'array' "
    "THEN p.competitors ELSE '[]'::json END) AS c(value)",
    "is_text": "json_typeof(c.value -> 'name') = 'string'",
}
SQLITE = {
    # The stored text 'YYYY-MM-DD HH:MM:SS.ffffff' cut at the hour.
    "hour": "substr(complete_time, 1, 13) || ':00:00.000000'",
    # ... and at the quarter-hour.
    "quarter_hour": "substr(complete_time, 1, 14) "
    "|| printf('%02d:00.000000', CAST(substr(complete_time, 15, 2) AS integer) / 15 * 15)",
    "name": "json_extract(c.value, '$.name')",
    "elements": "json_each(p.competitors) AS c",
    "is_text": "json_type(c.value, '$.name') = 'text'",
}


SUMS = ("responses", "brand_mentions", "rank_sum", "ranked", "brand_citations", "citations")
# (table prefix, key column) of each rollup this revision adds.
SLOTS = (("hourly", "hour"), ("quarter_hour", "quarter_hour"))


def create_tables(prefix: str, column: str) -> None:
    """The visibility and competitor rollups of one slot (hour, quarter-hour)."""
    for kind, keys, values in (
        ("visibility", ("workspace_id", column, "provider"), SUMS),
        ("competitor", ("workspace_id", column, "provider", "name"), ("mentions",)),
    ):
        table = f"{prefix}_{kind}_rollups"
        op.create_table(
            table,
            sa.Column("workspace_id", sa.String(length=40), nullable=False),
            sa.Column(column, service.db.types.UTCDateTime(timezone=True), nullable=False),
            sa.Column("provider", sa.String(length=20), nullable=False),
            *([sa.Column("name", sa.Text(), nullable=False)] if kind == "competitor" else []),
            *(sa.Column(name, sa.Integer(), nullable=False) for name in values),
            sa.ForeignKeyConstraint(
                ["workspace_id"],
                ["workspaces.id"],
                name=op.f(f"fk_{table}_workspace_id_workspaces"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint(*keys, name=op.f(f"pk_{table}")),
        )


def upgrade() -> None:
    for prefix, column in SLOTS:
        create_tables(prefix, column)
    parts = SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRESQL
    for table, column in SLOTS:
        slot = {"table": table, "column": column, "slot": parts[column]}
        op.execute(BACKFILL_TOTALS.format(**parts, **slot))
        op.execute(BACKFILL_COMPETITORS.format(**parts, **slot))


def downgrade() -> None:
    op.drop_table("quarter_hour_competitor_rollups")
    op.drop_table("quarter_hour_visibility_rollups")
    op.drop_table("hourly_competitor_rollups")
    op.drop_table("hourly_visibility_rollups")
