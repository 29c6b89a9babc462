"""service keys bound to organizations; audit events name the key and the correlation id

Revision ID: 0002
Revises: 0001

Keys created before this revision are bound to no organization (they can act for nobody
until re-created with `--organization` or `--all-organizations`): failing closed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("service_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("organization_ids", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.add_column(
            sa.Column("all_organizations", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("service_key_id", sa.String(length=40), nullable=True))
        batch_op.add_column(
            sa.Column("correlation_id", sa.String(length=100), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_column("correlation_id")
        batch_op.drop_column("service_key_id")
    with op.batch_alter_table("service_keys", schema=None) as batch_op:
        batch_op.drop_column("all_organizations")
        batch_op.drop_column("organization_ids")
