"""markets and money: a prompt's market, a workspace's default market, each answer's market,
usage and cost, monthly usage rollups, and monthly spending caps per organization and workspace

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EMPTY_OBJECT = "{}"


def upgrade() -> None:
    op.add_column(
        "prompts", sa.Column("market", sa.JSON(), nullable=False, server_default=EMPTY_OBJECT)
    )
    op.add_column(
        "workspaces",
        sa.Column("default_market", sa.JSON(), nullable=False, server_default=EMPTY_OBJECT),
    )
    op.add_column("workspaces", sa.Column("monthly_cap_micros", sa.BigInteger(), nullable=True))
    op.add_column("organizations", sa.Column("monthly_cap_micros", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("probes") as batch:
        batch.add_column(
            sa.Column("market", sa.JSON(), nullable=False, server_default=EMPTY_OBJECT)
        )
        batch.add_column(
            sa.Column("market_applied", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        for name in ("input_tokens", "output_tokens", "search_calls"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("cost_micros", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("usage", sa.JSON(), nullable=False, server_default=EMPTY_OBJECT))
    op.create_table(
        "usage_rollups",
        sa.Column("workspace_id", sa.String(length=40), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("answers", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("search_calls", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workspace_id", "month", "provider"),
    )


def downgrade() -> None:
    op.drop_table("usage_rollups")
    with op.batch_alter_table("probes") as batch:
        for name in (
            "usage",
            "cost_micros",
            "search_calls",
            "output_tokens",
            "input_tokens",
            "market_applied",
            "market",
        ):
            batch.drop_column(name)
    op.drop_column("organizations", "monthly_cap_micros")
    op.drop_column("workspaces", "monthly_cap_micros")
    op.drop_column("workspaces", "default_market")
    op.drop_column("prompts", "market")
