"""key ids and last use

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import secrets
import string

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# A migration stands alone: it does not import the code's id helpers, which may change.
_ALPHABET = string.digits + string.ascii_letters


def _key_id() -> str:
    return "key_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.BigInteger(), nullable=True))
    keys = sa.table("api_keys", sa.column("pk", sa.BigInteger()), sa.column("id", sa.String()))
    connection = op.get_bind()
    for (pk,) in connection.execute(sa.select(keys.c.pk)).all():
        connection.execute(sa.update(keys).where(keys.c.pk == pk).values(id=_key_id()))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("id", existing_type=sa.String(length=40), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_api_keys_id"), ["id"])


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_api_keys_id"), type_="unique")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("id")
