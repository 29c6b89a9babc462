"""invitations expire

Revision ID: 0003
Revises: 0001

Pending invitations get an `expire_time`; those already stored expire 7 days after they
were made (the default `BEACON_INVITATION_TTL_HOURS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

import service.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("workspace_invitations", "organization_invitations")
EXISTING_TTL = timedelta(days=7)


def upgrade() -> None:
    bind = op.get_bind()
    for name in TABLES:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("expire_time", service.db.types.UTCDateTime(timezone=True), nullable=True)
            )
        table = sa.table(
            name,
            sa.column("id", sa.String()),
            sa.column("create_time", service.db.types.UTCDateTime(timezone=True)),
            sa.column("expire_time", service.db.types.UTCDateTime(timezone=True)),
        )
        rows = bind.execute(sa.select(table.c.id, table.c.create_time)).all()
        for invitation_id, created in rows:
            bind.execute(
                table.update()
                .where(table.c.id == invitation_id)
                .values(expire_time=created + EXISTING_TTL)
            )
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.alter_column(
                "expire_time",
                existing_type=service.db.types.UTCDateTime(timezone=True),
                nullable=False,
            )


def downgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_column("expire_time")
