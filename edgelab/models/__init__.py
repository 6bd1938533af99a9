"""The results database: every sweep, run, token, node sample and link statistic.

Import models from here (``from edgelab.models import Run``); the session and
engine helpers live in :mod:`edgelab.models.db`.
"""

from edgelab.models.base import Base
from edgelab.models.run import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    LinkStat,
    NodeSample,
    Run,
    TokenEvent,
)
from edgelab.models.sweep import SWEEP_STATUSES, Sweep
from edgelab.store.status import RunStatus, SweepStatus

__all__ = [
    "RUN_STATUSES",
    "SWEEP_STATUSES",
    "TERMINAL_STATUSES",
    "Base",
    "LinkStat",
    "NodeSample",
    "Run",
    "RunStatus",
    "Sweep",
    "SweepStatus",
    "TokenEvent",
]
