"""link timing, bytes by phase, host contention, warm-up runs

Revision ID: 0002_measure
Revises: 0001
Create Date: 2026-12-01 22:10:00

Per-link round trips, phase bytes, decode time split and effective one-way
delay percentiles (edgelab.metrics.linktiming); per-run phase bytes, host
contention and oversubscription flags, and the sweep warm-up flag. Every new
column is nullable (or has a server default) so existing rows stay valid.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_measure"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LINK_COLUMNS = [
    ("bytes_load", sa.BigInteger()),
    ("bytes_prefill", sa.BigInteger()),
    ("bytes_decode", sa.BigInteger()),
    ("round_trips_prefill", sa.Integer()),
    ("round_trips_decode", sa.Integer()),
    ("decode_worker_ms", sa.Float()),
    ("decode_injected_ms", sa.Float()),
    ("decode_transfer_ms", sa.Float()),
    ("eff_delay_p50_ms_up", sa.Float()),
    ("eff_delay_p99_ms_up", sa.Float()),
    ("eff_delay_max_ms_up", sa.Float()),
    ("eff_delay_p50_ms_down", sa.Float()),
    ("eff_delay_p99_ms_down", sa.Float()),
    ("eff_delay_max_ms_down", sa.Float()),
    ("timing", sa.JSON()),
]
RUN_COLUMNS = [
    ("net_load_bytes", sa.BigInteger()),
    ("net_prefill_bytes", sa.BigInteger()),
    ("net_decode_bytes", sa.BigInteger()),
    ("round_trips_per_token", sa.Float()),
    ("host_contention", sa.JSON()),
    ("contended", sa.Boolean()),
    ("oversubscribed", sa.Boolean()),
]


def upgrade() -> None:
    with op.batch_alter_table("link_stats") as batch:
        for name, type_ in LINK_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("runs") as batch:
        for name, type_ in RUN_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.add_column(
            sa.Column("warmup", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("warmup")
        for name, _ in reversed(RUN_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("link_stats") as batch:
        for name, _ in reversed(LINK_COLUMNS):
            batch.drop_column(name)
