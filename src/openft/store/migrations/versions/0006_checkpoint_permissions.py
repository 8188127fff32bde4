"""checkpoint permissions: admin keys share a fine-tuned model or checkpoint with projects

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "checkpoint_permissions",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_pk", PK, nullable=False),
        sa.Column("model", sa.String(length=600), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_pk"],
            ["jobs.pk"],
            name=op.f("fk_checkpoint_permissions_job_pk_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_checkpoint_permissions_project_id_projects"),
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_checkpoint_permissions")),
        sa.UniqueConstraint("id", name=op.f("uq_checkpoint_permissions_id")),
    )
    op.create_index(
        op.f("ix_checkpoint_permissions_model_project_id"),
        "checkpoint_permissions",
        ["model", "project_id"],
        unique=True,
    )
    op.create_index(
        op.f("ix_checkpoint_permissions_project_id"), "checkpoint_permissions", ["project_id"]
    )


def downgrade() -> None:
    # Only a downgrade drops the table (and the permissions in it): upgrades never do.
    op.drop_index(op.f("ix_checkpoint_permissions_project_id"), "checkpoint_permissions")
    op.drop_index(op.f("ix_checkpoint_permissions_model_project_id"), "checkpoint_permissions")
    op.drop_table("checkpoint_permissions")
