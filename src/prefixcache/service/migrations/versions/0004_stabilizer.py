"""The gateway's stabilizer on each cache record: the mode applied, the request family,
what was (or would be) moved, and the cached tokens predicted with and without the
rewrite (``service/stabilizer.py``). A task's engine time and output tokens (its cache
figures, as ``/chat`` reports them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def columns() -> tuple[sa.Column[Any], ...]:
    return (
        sa.Column("stabilize", sa.String(8), nullable=True),
        sa.Column("family", sa.String(200), nullable=True),
        sa.Column("rewritten", sa.Boolean(), nullable=True),
        sa.Column("moved_lines", sa.Integer(), nullable=True),
        sa.Column("tools_sorted", sa.Boolean(), nullable=True),
        sa.Column("moved_shapes", sa.Text(), nullable=True),
        sa.Column("predicted_original", sa.Integer(), nullable=True),
        sa.Column("predicted_stabilized", sa.Integer(), nullable=True),
    )


def upgrade() -> None:
    with op.batch_alter_table("cache_records") as batch:
        for column in columns():
            batch.add_column(column)
    op.create_index("ix_cache_records_tenant_family", "cache_records", ["tenant_id", "family"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("processing_time", sa.Float(), nullable=True))
        batch.add_column(sa.Column("completion_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("completion_tokens")
        batch.drop_column("processing_time")
    op.drop_index("ix_cache_records_tenant_family", table_name="cache_records")
    with op.batch_alter_table("cache_records") as batch:
        for column in reversed(columns()):
            batch.drop_column(column.name)
