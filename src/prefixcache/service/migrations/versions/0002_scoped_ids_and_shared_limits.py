"""Sessions scoped by user, replies linked to their turns, admin keys, shared rate
limits, instance heartbeats, per-session cache records.

- ``sessions.id`` becomes ``<tenant>/<user>/<the caller's id>`` (existing rows are
  rewritten, with the messages and tasks that point at them), so two tenants' ids never
  collide; the column widens to 200 characters.
- ``messages.reply_to``: the user turn an assistant turn answers. Existing replies are
  linked to the user turn right before them (what the old code assumed).
- ``messages.instance_id`` / ``tasks.instance_id``: the instance waiting on a pending
  turn or running task, so that another instance can mark them ``interrupted``.
- ``api_keys.admin``, ``cache_records.session_id``, ``rate_windows``,
  ``service_instances``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEY = 200


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:  # the session id is rewritten below: its references go first
        op.drop_constraint("messages_session_id_fkey", "messages", type_="foreignkey")
        op.drop_constraint("tasks_session_id_fkey", "tasks", type_="foreignkey")
        # SQLite does not enforce a VARCHAR's length: only PostgreSQL needs the change
        op.alter_column("sessions", "id", type_=sa.String(KEY), existing_nullable=False)
        for table in ("messages", "tasks"):
            op.alter_column(table, "session_id", type_=sa.String(KEY), existing_nullable=False)
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reply_to", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("instance_id", sa.String(32), nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("instance_id", sa.String(32), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("cache_records") as batch:
        batch.add_column(sa.Column("session_id", sa.String(KEY), nullable=True))
    op.create_index("ix_cache_records_session", "cache_records", ["session_id"])
    for group in ("agent_type", "tier"):
        op.create_index(
            f"ix_cache_records_tenant_{group.split('_')[0]}_ttft",
            "cache_records",
            ["tenant_id", group, "ttft", "prompt_tokens", "cached_tokens"],
        )

    # existing data: scope the session ids, link replies to the turn before them
    for table in ("messages", "tasks"):
        op.execute(
            f"UPDATE {table} SET session_id = "
            "(SELECT s.user_id || '/' || s.id FROM sessions s WHERE s.id = "
            f"{table}.session_id) WHERE session_id IN (SELECT id FROM sessions)"
        )
    op.execute("UPDATE sessions SET id = user_id || '/' || id")
    op.execute(
        "UPDATE messages SET reply_to = (SELECT p.id FROM messages p WHERE "
        "p.session_id = messages.session_id AND p.id < messages.id ORDER BY p.id DESC "
        "LIMIT 1) WHERE role = 'assistant'"
    )
    if postgres:
        for table in ("messages", "tasks"):
            op.create_foreign_key(
                f"{table}_session_id_fkey",
                table,
                "sessions",
                ["session_id"],
                ["id"],
                ondelete="CASCADE",
            )

    op.create_table(
        "rate_windows",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("window", sa.Integer(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "service_instances",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("0002 rewrites session ids; restore a backup to go back")
