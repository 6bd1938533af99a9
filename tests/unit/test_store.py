"""The store: the transition tables, and every guarded change on a real SQLite database.

The expected tables are written out here a second time on purpose: changing what a
run or a sweep may do has to be a deliberate edit in two places.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from edgelab.models import Run, Sweep, TokenEvent
from edgelab.models.base import utcnow
from edgelab.models.db import session_scope, upgrade
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import RunConfig
from edgelab.store import (
    RUN_TERMINAL,
    InvalidTransition,
    RunNotFound,
    RunStatus,
    SweepNotFound,
    SweepStatus,
)
from edgelab.store.status import (
    RUN_TRANSITIONS,
    SWEEP_TRANSITIONS,
    derived_sweep_status,
    run_may,
    sweep_may,
)
from edgelab.store.store import Store, cell_counts, latest_cells

R = RunStatus
S = SweepStatus

EXPECTED_RUN_MOVES = {
    (R.QUEUED, R.STARTING),
    (R.QUEUED, R.FAILED),
    (R.QUEUED, R.CANCELLED),
    (R.STARTING, R.STARTING),
    (R.STARTING, R.RUNNING),
    (R.STARTING, R.QUEUED),
    (R.STARTING, R.FAILED),
    (R.STARTING, R.CANCELLED),
    (R.RUNNING, R.STARTING),
    (R.RUNNING, R.QUEUED),
    (R.RUNNING, R.SUCCEEDED),
    (R.RUNNING, R.FAILED),
    (R.RUNNING, R.CANCELLED),
}
EXPECTED_SWEEP_MOVES = {
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.SUCCEEDED),
    (S.QUEUED, S.FAILED),
    (S.QUEUED, S.CANCELLED),
    (S.RUNNING, S.QUEUED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
    (S.FAILED, S.QUEUED),
    (S.CANCELLED, S.QUEUED),
}


def test_run_transition_table_is_exactly_the_expected_one() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    for a in RunStatus:
        for b in RunStatus:
            assert run_may(a, b) == ((a, b) in EXPECTED_RUN_MOVES), (a, b)


def test_sweep_transition_table_is_exactly_the_expected_one() -> None:
    assert set(SWEEP_TRANSITIONS) == set(SweepStatus)
    for a in SweepStatus:
        for b in SweepStatus:
            assert sweep_may(a, b) == ((a, b) in EXPECTED_SWEEP_MOVES), (a, b)


def test_a_finished_run_never_moves_and_a_succeeded_sweep_never_changes() -> None:
    for status in RUN_TERMINAL:
        assert RUN_TRANSITIONS[status] == frozenset()
        assert status.terminal
        assert not status.active
    assert SWEEP_TRANSITIONS[S.SUCCEEDED] == frozenset()
    for status in (S.SUCCEEDED, S.FAILED, S.CANCELLED):
        assert not sweep_may(status, S.CANCELLED)  # cannot be cancelled
        assert not sweep_may(status, S.RUNNING)  # nor picked up again without resume


def test_statuses_are_the_strings_the_database_always_stored() -> None:
    assert [s.value for s in RunStatus] == [
        "queued",
        "starting",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert [s.value for s in SweepStatus] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({R.QUEUED: 3}, S.QUEUED),
        ({R.QUEUED: 2, R.SUCCEEDED: 1}, S.RUNNING),
        ({R.RUNNING: 1, R.SUCCEEDED: 3}, S.RUNNING),
        ({R.STARTING: 1}, S.RUNNING),
        ({R.SUCCEEDED: 12}, S.SUCCEEDED),
        ({R.SUCCEEDED: 2, R.CANCELLED: 1}, S.CANCELLED),
        ({R.SUCCEEDED: 2, R.CANCELLED: 1, R.FAILED: 1}, S.FAILED),
        ({R.FAILED: 1}, S.FAILED),
    ],
)
def test_derived_sweep_status(counts: dict[RunStatus, int], expected: SweepStatus) -> None:
    assert derived_sweep_status(counts) == expected


# --- the store on a real database ---------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    return Store(url)


CONFIG = RunConfig(
    prompt="x", model="tiny", nodes=1, threads=1, latency=LatencyProfile.parse("0ms"), max_tokens=4
)


def _force(store: Store, run_id: int, status: RunStatus, **values: object) -> None:
    """Put a run in ``status`` directly (test set-up only; the code never does this)."""
    with session_scope(store.database_url) as s:
        s.execute(update(Run).where(Run.id == run_id).values(status=status, **values))


def _sweep(store: Store, n: int) -> tuple[int, list[int]]:
    with session_scope(store.database_url) as s:
        sweep = Sweep(name="s", spec={}, status=S.QUEUED, total_cells=n)
        s.add(sweep)
        s.flush()
        sweep_id = sweep.id
    ids = [store.create_run(replace(CONFIG, repetition=i), sweep_id).id for i in range(n)]
    return sweep_id, ids


def test_the_column_holds_plain_strings_and_reads_back_enum_members(store: Store) -> None:
    run = store.create_run(CONFIG)
    assert run.status is RunStatus.QUEUED
    with session_scope(store.database_url) as s:
        raw = s.execute(text("SELECT status FROM runs WHERE id = :i"), {"i": run.id}).scalar()
        loaded = s.get_one(Run, run.id).status
    assert raw == "queued"
    assert type(raw) is str
    assert loaded is RunStatus.QUEUED


def test_a_run_goes_through_its_life_once(store: Store) -> None:
    rid = store.create_run(CONFIG).id
    assert not store.mark_running(rid)  # not claimed yet
    assert store.claim_run(rid)
    assert store.get_run(rid).status == R.STARTING
    assert not store.succeed_run(rid, {})  # starting -> succeeded is not a move
    assert store.mark_running(rid)
    assert store.get_run(rid).started_at is not None
    assert store.succeed_run(rid, {"output_text": "hi"}, links={"root<->worker1": _link()})
    assert store.get_run(rid).status == R.SUCCEEDED
    # Finished: nothing moves it any more.
    assert not store.claim_run(rid)
    assert not store.fail_run(rid, "late")
    assert not store.end_cancelled(rid, "late")
    assert not store.requeue_run(rid)
    assert store.get_run(rid).status == R.SUCCEEDED
    assert store.get_run(rid).error is None


def _tokens(run_id: int, store: Store) -> list[tuple[int, str]]:
    with session_scope(store.database_url) as s:
        rows = s.scalars(select(TokenEvent).where(TokenEvent.run_id == run_id))
        return sorted((t.index, t.text) for t in rows)


def test_the_last_token_batch_is_stored_with_the_outcome(store: Store) -> None:
    """The executor's last token batch rides on the outcome's commit: written with a
    success or a stopped run's measurements, and not at all for a run that is no
    longer running here (claimed again elsewhere: its new execution owns the tokens)."""
    tokens = [{"index": i, "offset_ms": 10.0 * i, "text": f"t{i}", "detail": None} for i in (0, 1)]
    done = store.create_run(CONFIG).id
    assert store.claim_run(done)
    assert store.mark_running(done)
    assert store.succeed_run(done, {"output_text": "t0t1"}, tokens=tokens)
    assert _tokens(done, store) == [(0, "t0"), (1, "t1")]

    stopped = store.create_run(CONFIG).id
    assert store.claim_run(stopped)
    assert store.mark_running(stopped)
    assert store.keep_measurements(stopped, {"output_text": "t0"}, tokens=tokens[:1])
    assert _tokens(stopped, store) == [(0, "t0")]

    lost = store.create_run(CONFIG).id
    assert store.claim_run(lost)  # starting, not running: nothing may be written
    assert not store.succeed_run(lost, {}, tokens=tokens)
    assert not store.keep_measurements(lost, {"output_text": "t0t1"}, tokens=tokens)
    assert _tokens(lost, store) == []


def test_a_warm_run_is_claimed_and_started_in_one_commit(store: Store) -> None:
    rid = store.create_run(CONFIG).id
    assert store.claim_run(rid)
    assert store.mark_running(rid)
    assert store.keep_measurements(rid, {"output_text": "t0"}, tokens=[_token(0)])
    _force(store, rid, R.QUEUED)  # left by a dead executor, handed out again
    assert store.claim_run(rid, running={"engine_version": "v2"})
    run = store.get_run(rid)
    assert run.status == R.RUNNING
    assert run.started_at is not None
    with session_scope(store.database_url) as s:
        assert s.get_one(Run, rid).engine_version == "v2"
    assert _tokens(rid, store) == []  # the earlier execution's rows are gone
    store.cancel_run(store.create_run(CONFIG).id)
    cancelled = store.runs_in([R.CANCELLED])[0].id
    assert not store.claim_run(cancelled, running={"engine_version": "v2"})
    assert store.get_run(cancelled).status == R.CANCELLED
    assert store.get_run(cancelled).started_at is None


def _token(index: int) -> dict[str, object]:
    return {"index": index, "offset_ms": 10.0 * index, "text": f"t{index}", "detail": None}


def _link() -> dict[str, float]:
    return {
        "bytes_up": 1,
        "bytes_down": 2,
        "chunks_up": 1,
        "chunks_down": 1,
        "delay_total_ms_up": 0.0,
        "delay_total_ms_down": 0.0,
        "delay_max_ms": 0.0,
    }


@pytest.mark.parametrize("final", sorted(RUN_TERMINAL))
def test_a_finished_run_cannot_be_cancelled_or_claimed(store: Store, final: RunStatus) -> None:
    rid = store.create_run(CONFIG).id
    _force(store, rid, final)
    with pytest.raises(InvalidTransition) as info:
        store.cancel_run(rid)
    assert info.value.http_status == 409
    assert f"already {final}" in str(info.value)
    assert not store.claim_run(rid)
    assert store.get_run(rid).status == final


def test_cancel_queued_ends_it_and_cancel_active_asks_the_executor(store: Store) -> None:
    queued = store.create_run(CONFIG).id
    result = store.cancel_run(queued)
    assert (result.status, result.stopping) == (R.CANCELLED, False)
    assert store.get_run(queued).finished_at is not None
    assert not store.claim_run(queued)  # a redelivered message finds it cancelled

    active = store.create_run(CONFIG).id
    assert store.claim_run(active)
    result = store.cancel_run(active)
    assert (result.status, result.stopping) == (R.STARTING, True)
    assert store.get_run(active).status == R.STARTING  # the executor ends it on the flag
    assert store.end_cancelled(active, "cancelled")
    with pytest.raises(RunNotFound):
        store.cancel_run(999)


def test_reclaiming_a_dead_executors_run_discards_its_partial_rows(store: Store) -> None:
    rid = store.create_run(CONFIG).id
    assert store.claim_run(rid)
    assert store.mark_running(rid)
    with session_scope(store.database_url) as s:
        s.add(TokenEvent(run_id=rid, index=0, offset_ms=1.0, text="half"))
    assert store.claim_run(rid)  # the new lease holder
    with session_scope(store.database_url) as s:
        assert s.scalars(select(TokenEvent).where(TokenEvent.run_id == rid)).all() == []
    assert store.get_run(rid).started_at is None


def test_requeue_hands_an_active_run_back_and_queued_runs_cannot_be_requeued(
    store: Store,
) -> None:
    rid = store.create_run(CONFIG).id
    assert not store.requeue_run(rid)  # queued -> queued is not a move
    assert store.claim_run(rid)
    assert store.mark_running(rid)
    assert store.requeue_run(rid, "its worker died")
    run = store.get_run(rid)
    assert (run.status, run.error, run.started_at) == (R.QUEUED, "its worker died", None)
    assert store.claim_run(rid)
    assert store.get_run(rid).error is None


def test_fail_runs_fails_only_the_unfinished(store: Store) -> None:
    a, b, c = (store.create_run(CONFIG).id for _ in range(3))
    _force(store, b, R.SUCCEEDED)
    assert store.claim_run(c)
    assert sorted(store.fail_runs([a, b, c], "boom", {"worker1": ["x"]})) == [a, c]
    assert store.get_run(b).status == R.SUCCEEDED
    assert store.get_run(c).error == "boom"


def test_overdue_runs_are_those_generating_for_too_long(store: Store) -> None:
    old, recent, unstarted = (store.create_run(CONFIG).id for _ in range(3))
    _force(store, old, R.RUNNING, started_at=utcnow() - timedelta(hours=2))
    _force(store, recent, R.RUNNING, started_at=utcnow())
    _force(store, unstarted, R.STARTING)
    assert [r.id for r in store.overdue_runs(3600)] == [old]


def test_sweep_follows_its_cells_and_cancel_of_a_finished_sweep_is_refused(
    store: Store,
) -> None:
    sweep_id, ids = _sweep(store, 3)
    assert store.get_sweep(sweep_id).status == S.QUEUED
    for rid in ids:
        assert store.claim_run(rid)
        assert store.get_sweep(sweep_id).status == S.RUNNING  # refreshed with the run
        assert store.mark_running(rid)
        assert store.succeed_run(rid, {})
    sweep = store.get_sweep(sweep_id)
    assert sweep.status == S.SUCCEEDED
    assert sweep.finished_at is not None
    with pytest.raises(InvalidTransition) as info:
        store.cancel_sweep(sweep_id)
    assert info.value.http_status == 409
    assert store.get_sweep(sweep_id).status == S.SUCCEEDED  # 3/3 succeeded stays so
    assert store.resume_sweep(sweep_id, []).created == []
    assert store.get_sweep(sweep_id).status == S.SUCCEEDED
    with pytest.raises(SweepNotFound):
        store.cancel_sweep(999)


def test_cell_counts_count_each_cells_latest_run_and_no_warmups(store: Store) -> None:
    sweep_id, ids = _sweep(store, 3)
    _force(store, ids[0], R.FAILED)
    _force(store, ids[1], R.SUCCEEDED)
    again = store.create_run(replace(CONFIG, repetition=0), sweep_id).id  # cell 0 re-run
    warmup = store.create_run(replace(CONFIG, repetition=1), sweep_id).id
    with session_scope(store.database_url) as s:
        s.execute(update(Run).where(Run.id == warmup).values(warmup=True))
        assert cell_counts(s, sweep_id) == {R.QUEUED: 2, R.SUCCEEDED: 1}
        assert cell_counts(s, sweep_id) == Counter(
            status for _rid, status in latest_cells(s, sweep_id).values()
        )
        assert latest_cells(s, sweep_id)[(store.get_run(again).fingerprint, 0)][0] == again


def test_a_cancelled_sweep_stays_cancelled_while_its_last_run_stops(store: Store) -> None:
    sweep_id, ids = _sweep(store, 3)
    assert store.claim_run(ids[0])
    assert store.mark_running(ids[0])
    assert store.cancel_sweep(sweep_id) == [ids[0]]
    assert [store.get_run(i).status for i in ids] == [R.RUNNING, R.CANCELLED, R.CANCELLED]
    assert store.get_sweep(sweep_id).status == S.CANCELLED
    assert store.get_sweep(sweep_id).finished_at is None  # a run is still stopping
    assert store.succeed_run(ids[0], {})  # it finished before it saw the flag
    sweep = store.get_sweep(sweep_id)
    assert (sweep.status, sweep.finished_at is not None) == (S.CANCELLED, True)
    with pytest.raises(InvalidTransition):
        store.cancel_sweep(sweep_id)  # cancelled is finished too
