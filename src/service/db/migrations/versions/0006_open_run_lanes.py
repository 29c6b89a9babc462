"""open-run lanes: at most BEACON_MAX_OPEN_RUNS_PER_WORKSPACE open runs per workspace, held
by a unique index on (workspace_id, open_lane) over the runs not ended

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Runs open at the upgrade take lanes 0, 1, ... per workspace, oldest first, so that a
# workspace with one open run starts no other until it ends.
BACKFILL_LANES = """
UPDATE runs SET open_lane = (
    SELECT count(*) FROM runs AS earlier
    WHERE earlier.workspace_id = runs.workspace_id
      AND earlier.end_time IS NULL
      AND (earlier.create_time < runs.create_time
           OR (earlier.create_time = runs.create_time AND earlier.id < runs.id))
)
WHERE end_time IS NULL
"""


def upgrade() -> None:
    op.add_column("runs", sa.Column("open_lane", sa.SmallInteger(), nullable=True))
    op.execute(BACKFILL_LANES)
    op.create_index(
        "uq_runs_open_lane",
        "runs",
        ["workspace_id", "open_lane"],
        unique=True,
        postgresql_where=sa.text("end_time IS NULL"),
        sqlite_where=sa.text("end_time IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_runs_open_lane", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("open_lane")
