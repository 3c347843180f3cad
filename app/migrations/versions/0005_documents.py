"""document versions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 11:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "document_versions",
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("document_id", sa.String(length=64), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "document_id"),
    )
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("document_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch_op.create_index("ix_uploads_owner_document", ["owner_id", "document_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index("ix_uploads_owner_document")
        batch_op.drop_column("version")
        batch_op.drop_column("document_id")
    op.drop_table("document_versions")
