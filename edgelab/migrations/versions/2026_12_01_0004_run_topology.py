"""runs.topology, topology_label, node_limits: heterogeneous clusters (issue 15)

Revision ID: 0004_topology
Revises: 0003_measurement
Create Date: 2026-12-01 23:15:00

A run's devices per node and network per link (``topology``, run config, part of
the fingerprint; NULL = a uniform cluster, as every run before this revision),
its one-line ``topology_label`` for history filters, and ``node_limits``: what the
backend actually applied per node (threads, CPU quota, memory limit), provenance.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_topology"
down_revision: str | Sequence[str] | None = "0003_measurement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("topology", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("topology_label", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("node_limits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("node_limits")
        batch.drop_column("topology_label")
        batch.drop_column("topology")
