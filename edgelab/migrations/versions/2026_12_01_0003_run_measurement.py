"""runs.measurement: how a run was measured (engine mode, cluster it ran on)

Revision ID: 0003_measurement
Revises: 0002_measure
Create Date: 2026-12-01 22:30:00

distributed-llama runs can be measured two ways (a warm dllama-api root, or one
dllama inference per run) with different per-token detail; each run says which,
plus the facts of the cluster that served it (its start-up, how many runs it had
served before), so a cluster's load is reported once and not copied into runs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_measurement"
down_revision: str | Sequence[str] | None = "0002_measure"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("measurement", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("measurement")
