"""multipart uploads

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("multipart_upload_id", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("part_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_column("part_size")
        batch_op.drop_column("multipart_upload_id")
