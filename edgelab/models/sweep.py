"""A sweep: a grid of run configurations queued together."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from edgelab.models.base import Base, StrEnumColumn, utcnow
from edgelab.store.status import SweepStatus

if TYPE_CHECKING:
    from edgelab.models.run import Run

SWEEP_STATUSES: tuple[SweepStatus, ...] = tuple(SweepStatus)


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[SweepStatus] = mapped_column(
        StrEnumColumn(SweepStatus), default=SweepStatus.QUEUED
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total_cells: Mapped[int] = mapped_column(Integer, default=0)
    # How often a cluster (model load) was started for this sweep: cells sharing a
    # topology are meant to share one load, and tests assert on this count.
    model_loads: Mapped[int] = mapped_column(Integer, default=0)

    runs: Mapped[list[Run]] = relationship(back_populates="sweep", order_by="Run.id")

    __table_args__ = (
        Index("ix_sweeps_created_at", "created_at"),
        Index("ix_sweeps_status", "status"),
    )
