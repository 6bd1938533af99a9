"""link_stats queue depth, pushback and retransmissions (issue 15)

Revision ID: 0005_link_queues
Revises: 0004_topology
Create Date: 2026-12-01 23:55:00

Links push back now (bounded queues): per run the most bytes each direction held
(``queue_max_bytes_up/down``) and how long its readers waited on a full queue
(``pushback_ms_up/down``); ``retransmits`` counts TCP retransmissions on the link
(packet loss). All NULL for runs before this revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_link_queues"
down_revision: str | Sequence[str] | None = "0004_topology"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("link_stats") as batch:
        batch.add_column(sa.Column("queue_max_bytes_up", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("queue_max_bytes_down", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("pushback_ms_up", sa.Float(), nullable=True))
        batch.add_column(sa.Column("pushback_ms_down", sa.Float(), nullable=True))
        batch.add_column(sa.Column("retransmits", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("link_stats") as batch:
        batch.drop_column("retransmits")
        batch.drop_column("pushback_ms_down")
        batch.drop_column("pushback_ms_up")
        batch.drop_column("queue_max_bytes_down")
        batch.drop_column("queue_max_bytes_up")
