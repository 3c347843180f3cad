"""grants and ai_processed

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 23:25:51.908210
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "grants",
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("viewer_id", sa.String(length=36), nullable=False),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "viewer_id"),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index("ix_grants_viewer", ["viewer_id"], unique=False)

    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ai_processed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:

    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_column("ai_processed")

    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index("ix_grants_viewer")

    op.drop_table("grants")
