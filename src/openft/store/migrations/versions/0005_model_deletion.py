"""fine-tuned models can be deleted; chat completions find a job by its model name

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_deleted_at", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_jobs_fine_tuned_model"), ["fine_tuned_model"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_fine_tuned_model"))
        batch_op.drop_column("model_deleted_at")
