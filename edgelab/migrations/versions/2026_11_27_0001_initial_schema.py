"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 03:26:44.526080

The whole results schema: sweeps, runs and the per-run token events, node
samples and link statistics (see edgelab.models for why each is a table).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total_cells", sa.Integer(), nullable=False),
        sa.Column("model_loads", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    op.create_index("ix_sweeps_created_at", "sweeps", ["created_at"])
    op.create_index("ix_sweeps_status", "sweeps", ["status"])

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("latency_label", sa.String(length=64), nullable=False),
        sa.Column("bandwidth_bps", sa.BigInteger(), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("repetition", sa.Integer(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("e2el_ms", sa.Float(), nullable=True),
        sa.Column("tpot_ms", sa.Float(), nullable=True),
        sa.Column("itl_mean_ms", sa.Float(), nullable=True),
        sa.Column("itl_p50_ms", sa.Float(), nullable=True),
        sa.Column("itl_p90_ms", sa.Float(), nullable=True),
        sa.Column("itl_p99_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("prefill_tps", sa.Float(), nullable=True),
        sa.Column("decode_tps", sa.Float(), nullable=True),
        sa.Column("load_ms", sa.Float(), nullable=True),
        sa.Column("net_bytes_per_token", sa.Float(), nullable=True),
        sa.Column("output_text", sa.Text(), nullable=True),
        sa.Column("engine_version", sa.String(length=64), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.Column("image_ids", sa.JSON(), nullable=True),
        sa.Column("host_cpu", sa.String(length=200), nullable=True),
        sa.Column("host_cores", sa.Integer(), nullable=True),
        sa.Column("edgelab_version", sa.String(length=32), nullable=True),
        sa.Column("layer_split", sa.JSON(), nullable=True),
        sa.Column("node_logs", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name=op.f("fk_runs_sweep_id_sweeps"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.create_index("ix_runs_fingerprint", "runs", ["fingerprint"])
    op.create_index("ix_runs_model", "runs", ["model"])
    op.create_index("ix_runs_nodes", "runs", ["nodes"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_sweep_id", "runs", ["sweep_id"])

    op.create_table(
        "link_stats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("link", sa.String(length=64), nullable=False),
        sa.Column("bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("bytes_down", sa.BigInteger(), nullable=False),
        sa.Column("chunks_up", sa.Integer(), nullable=False),
        sa.Column("chunks_down", sa.Integer(), nullable=False),
        sa.Column("delay_total_ms_up", sa.Float(), nullable=False),
        sa.Column("delay_total_ms_down", sa.Float(), nullable=False),
        sa.Column("delay_max_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_link_stats_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_stats")),
    )
    op.create_index("ix_link_stats_run_id", "link_stats", ["run_id"])

    op.create_table(
        "node_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("offset_ms", sa.Float(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=False),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("net_rx_bytes", sa.BigInteger(), nullable=True),
        sa.Column("net_tx_bytes", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_node_samples_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_samples")),
    )
    op.create_index("ix_node_samples_run_id", "node_samples", ["run_id"])

    op.create_table(
        "token_events",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("offset_ms", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_token_events_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "index", name=op.f("pk_token_events")),
    )


def downgrade() -> None:
    # Children first; dropping a table drops its indexes with it.
    op.drop_table("token_events")
    op.drop_table("node_samples")
    op.drop_table("link_stats")
    op.drop_table("runs")
    op.drop_table("sweeps")
