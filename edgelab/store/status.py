"""The states of runs and sweeps, and the one table of legal moves between them.

Everything else in edgelab names a state through these enums; the strings they stand
for are exactly what the database has always stored (``StrEnum`` members *are* those
strings), so no data migration was needed when they replaced the bare literals.

The transition tables are the single written-down answer to "may a run/sweep in
state X become Y?". :mod:`edgelab.store.store` checks every write against them
(and makes the database enforce the same check with a guarded ``UPDATE``), and
``tests/unit/test_store.py`` walks every pair.

This module imports nothing from the models: the models import it.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"  # in the database, waiting for (or carried by) a queue message
    STARTING = "starting"  # claimed by an executor; its cluster is coming up
    RUNNING = "running"  # generating tokens
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in RUN_TERMINAL

    @property
    def active(self) -> bool:
        """Claimed by an executor (which holds the run's lease while it lives)."""
        return self in RUN_ACTIVE


class SweepStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in SWEEP_TERMINAL


RUN_TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
)
RUN_ACTIVE: frozenset[RunStatus] = frozenset({RunStatus.STARTING, RunStatus.RUNNING})
#: Not yet finished: what a run may be in while something should still happen to it.
RUN_OPEN: frozenset[RunStatus] = frozenset({RunStatus.QUEUED, *RUN_ACTIVE})
#: The same, in the order the queue panel and ``/api/health`` show them.
RUN_OPEN_ORDER: tuple[RunStatus, ...] = (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING)
SWEEP_TERMINAL: frozenset[SweepStatus] = frozenset(
    {SweepStatus.SUCCEEDED, SweepStatus.FAILED, SweepStatus.CANCELLED}
)

_R = RunStatus
#: Legal run transitions. Read a row as "from this state, a run may become ...".
#:
#: * queued -> starting: an executor claims it (its message was delivered).
#: * queued -> failed: it cannot be executed at all (its message could not be sent,
#:   the model left the catalog, its group ran out of time before reaching it).
#: * starting/running -> starting: the holder of the run's lease re-claims a run
#:   left behind by a dead executor (its partial rows are discarded).
#: * starting/running -> queued: the reconciler hands a dead executor's run back to
#:   the queue once its lease has lapsed (it is then re-sent like any queued run).
#: * starting -> succeeded is not legal: a run succeeds only after it generated.
#: * A finished run never moves again: it cannot be cancelled, claimed or re-queued
#:   (re-run and resume create a *new* run with the same configuration).
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    _R.QUEUED: frozenset({_R.STARTING, _R.FAILED, _R.CANCELLED}),
    _R.STARTING: frozenset({_R.STARTING, _R.RUNNING, _R.QUEUED, _R.FAILED, _R.CANCELLED}),
    _R.RUNNING: frozenset({_R.STARTING, _R.QUEUED, _R.SUCCEEDED, _R.FAILED, _R.CANCELLED}),
    _R.SUCCEEDED: frozenset(),
    _R.FAILED: frozenset(),
    _R.CANCELLED: frozenset(),
}

_S = SweepStatus
#: Legal sweep transitions. A sweep's state follows its cells (see
#: ``Store.refresh_sweep``) within this table, with two explicit moves:
#:
#: * cancel: queued/running -> cancelled; it sticks while stopping runs end.
#: * resume: failed/cancelled -> queued (new runs for the missing cells). A
#:   succeeded sweep has nothing to resume and never changes again; a running one
#:   stays running (resume only re-sends its queued cells).
#:
#: Following the cells never leaves a finished state: only resume does, so a sweep
#: that was cancelled stays cancelled while its last run is still stopping.
SWEEP_TRANSITIONS: dict[SweepStatus, frozenset[SweepStatus]] = {
    _S.QUEUED: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.QUEUED, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset({_S.QUEUED}),
    _S.CANCELLED: frozenset({_S.QUEUED}),
}


def run_may(current: RunStatus | str, target: RunStatus | str) -> bool:
    """Whether a run in ``current`` may become ``target``."""
    return RunStatus(target) in RUN_TRANSITIONS[RunStatus(current)]


def sweep_may(current: SweepStatus | str, target: SweepStatus | str) -> bool:
    """Whether a sweep in ``current`` may become ``target``."""
    return SweepStatus(target) in SWEEP_TRANSITIONS[SweepStatus(current)]


def run_sources(target: RunStatus) -> tuple[RunStatus, ...]:
    """Every state from which a run may become ``target`` (for guarded updates)."""
    return tuple(s for s in RunStatus if target in RUN_TRANSITIONS[s])


def sweep_sources(target: SweepStatus) -> tuple[SweepStatus, ...]:
    return tuple(s for s in SweepStatus if target in SWEEP_TRANSITIONS[s])


def derived_sweep_status(counts: dict[RunStatus, int]) -> SweepStatus:
    """The state a sweep's cells (latest run of each) say it is in.

    Anything still executing, or some cells done and some still queued: running.
    Only queued cells: queued. All succeeded: succeeded. Otherwise the sweep ended
    with problems: cancelled if cells were cancelled and none failed, else failed.
    ``Store.refresh_sweep`` applies this only within the transition table.
    """
    n = {s: counts.get(s, 0) for s in RunStatus}
    done = sum(n[s] for s in RUN_TERMINAL)
    total = sum(n.values())
    if n[RunStatus.STARTING] or n[RunStatus.RUNNING] or (n[RunStatus.QUEUED] and done):
        return SweepStatus.RUNNING
    if n[RunStatus.QUEUED]:
        return SweepStatus.QUEUED
    if total and n[RunStatus.SUCCEEDED] == total:
        return SweepStatus.SUCCEEDED
    if n[RunStatus.CANCELLED] and not n[RunStatus.FAILED]:
        return SweepStatus.CANCELLED
    return SweepStatus.FAILED
