"""The one place where runs and sweeps change state.

* :mod:`edgelab.store.status` - ``RunStatus``/``SweepStatus`` and the transition tables.
* :mod:`edgelab.store.store` - ``Store``: every state change, guarded, in its own
  session, returning plain dataclasses (MLflow's ``SqlAlchemyStore`` shape).
* :mod:`edgelab.store.errors` - the typed errors it raises.
* :mod:`edgelab.store.actions` - submit, cancel, re-run, resume: the store plus the
  queue, shared by the API, the pages and the CLI.

Only ``status`` and ``errors`` are imported eagerly: the models import ``status``,
and ``store`` imports the models.
"""

from __future__ import annotations

from typing import Any

from edgelab.store.errors import (
    InvalidTransition,
    NotFound,
    RunNotFound,
    StoreError,
    SweepNotFound,
)
from edgelab.store.status import (
    RUN_ACTIVE,
    RUN_OPEN,
    RUN_OPEN_ORDER,
    RUN_TERMINAL,
    SWEEP_TERMINAL,
    RunStatus,
    SweepStatus,
)

__all__ = [
    "RUN_ACTIVE",
    "RUN_OPEN",
    "RUN_OPEN_ORDER",
    "RUN_TERMINAL",
    "SWEEP_TERMINAL",
    "InvalidTransition",
    "NotFound",
    "RunNotFound",
    "RunState",
    "RunStatus",
    "Store",
    "StoreError",
    "SweepNotFound",
    "SweepState",
    "SweepStatus",
]


def __getattr__(name: str) -> Any:
    if name in ("Store", "RunState", "SweepState", "ResumeResult"):
        from edgelab.store import store

        return getattr(store, name)
    raise AttributeError(name)
