"""link_stats dropped_packets: what a link's loss rules dropped (issue 15)

Revision ID: 0006_link_drops
Revises: 0005_link_queues
Create Date: 2026-12-02 02:30:00

``dropped_packets`` is the packets the link's nftables loss rules dropped during the
run (their own counters), exact where ``retransmits`` can include a lossless link's
spurious resends. NULL for runs before this revision and for runs without loss.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_link_drops"
down_revision: str | Sequence[str] | None = "0005_link_queues"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("link_stats") as batch:
        batch.add_column(sa.Column("dropped_packets", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("link_stats") as batch:
        batch.drop_column("dropped_packets")
