"""Chaos tests for the store, the reconciler and broker outages (issue 11).

Real ``edgelab worker`` processes, real llama.cpp nodes on the small model, real
Redis. A test that kills or restarts Redis starts a ``redis-server`` of its own on
a free loopback port (never the shared one); the others use the test Redis
database. Every test is bounded in time, stops its workers itself and then checks
that no process it started is left.

What each test proves, and the number it records (``CHAOS-TIMING`` lines, see
``conftest.py``):

* broker killed and restarted 5 s later mid-sweep, without persistence: the other
  group's message is gone with the broker; the reconciler sends it again and
  every cell succeeds exactly once (detection: restart -> the lost group resumes);
* the executing worker killed with a live peer, at the default lock TTL of 30 s:
  the peer adopts the run without any restart (detection: kill -> adopted);
* the cluster start failing with something other than ClusterError (the group's
  soft time limit firing mid-start): every run of the group ends failed with it;
* 500 queued runs: 500 terminal rows, each claimed exactly once;
* cancel of a finished sweep: 409, the sweep stays succeeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from queue_api import api_client, free_port, sweep_json, wait_for
from sqlalchemy import func, select

from edgelab.catalog import Catalog
from edgelab.models import LinkStat, Run, TokenEvent
from edgelab.models.db import session_scope, upgrade
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPT = "Name three planets."
FINAL = ("succeeded", "failed", "cancelled")
CLAIMED = re.compile(r"run (\d+) claimed by pid")
StartWorker = Callable[..., Any]  # -> conftest.QueueWorker
RecordTiming = Callable[..., None]


def _wait(
    fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    return wait_for(fetch, done, timeout_s, poll_s=0.3)


def _server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from edgelab.embedded import server_binary  # the valkey-server of `edgelab up`

    return str(server_binary())


class OwnRedis:
    """A redis-server owned by one test: killed with SIGKILL, restarted on its port.

    No persistence (``--appendonly no --save ""``): a restart comes back empty, as
    a broker without persistence does, which is the case the reconciler repairs.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        with (self.directory / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.1)
        pytest.fail(f"own redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "own-redis")
    server.start()
    yield server
    server.kill()


def _claims(*workers: Any) -> Counter[int]:
    """How often each run was claimed (one log line per execution attempt)."""
    counts: Counter[int] = Counter()
    for worker in workers:
        counts.update(int(m) for m in CLAIMED.findall(worker.log_path.read_text(errors="replace")))
    return counts


def _executed_once_each(settings: Settings, run_ids: list[int]) -> None:
    """One contiguous set of tokens and one link row per link for every run."""
    with session_scope(settings.database_url) as s:
        for run in s.scalars(select(Run).where(Run.id.in_(run_ids))):
            indexes = list(
                s.scalars(
                    select(TokenEvent.index)
                    .where(TokenEvent.run_id == run.id)
                    .order_by(TokenEvent.index)
                )
            )
            assert indexes == list(range(run.output_tokens or 0)), run.id
            links = s.scalar(select(func.count(LinkStat.id)).where(LinkStat.run_id == run.id))
            assert links == run.nodes - 1, run.id


def _stop_and_check_nothing_left(settings: Settings, *workers: Any) -> None:
    """Stop the workers; then no process started for this data dir may remain."""
    for worker in workers:
        worker.stop()
    want = str(settings.data_dir)
    deadline = time.monotonic() + 15
    left: list[int] = []
    while time.monotonic() < deadline:
        left = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if proc.pid != os.getpid() and proc.environ().get("EDGELAB_DATA_DIR") == want:
                    left.append(proc.pid)
        if not left:
            return
        time.sleep(0.5)
    pytest.fail(f"processes left behind: {left}")


def test_broker_killed_and_restarted_mid_sweep_loses_nothing_and_runs_nothing_twice(
    own_redis: OwnRedis,
    queue_settings_factory: Callable[[str, str], Settings],
    queue_worker_factory: StartWorker,
    chaos_timing: RecordTiming,
) -> None:
    settings = queue_settings_factory(own_redis.url, "")
    worker = queue_worker_factory(settings, EDGELAB_RECONCILE_S="1")
    client = api_client(settings)
    spec = {
        "name": "broker-restart",
        "nodes": [2, 3],  # two topology groups: two messages (2 x 2 x 2 = 8 cells)
        "latency": ["0ms", "30ms"],
        "repetitions": 2,
        "max_tokens": 12,
        "prompts": [PROMPT],
    }
    resp = client.post("/api/sweeps", json=spec)
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["total_cells"] == 8
    sweep_id = resp.get_json()["id"]

    def one_done_one_generating(d: dict[str, Any]) -> bool:
        states = [c["status"] for c in d["cells"]]
        return "succeeded" in states and "running" in states

    sweep = _wait(lambda: sweep_json(client, sweep_id), one_done_one_generating, 240)
    executing = {c["nodes"] for c in sweep["cells"] if c["status"] == "running"}
    waiting = [
        c["run_id"]
        for c in sweep["cells"]
        if c["status"] == "queued" and c["nodes"] not in executing
    ]
    assert len(waiting) == 4  # the other group, whose message waits in the broker

    own_redis.kill()
    time.sleep(5)
    own_redis.start()
    back = time.monotonic()
    assert redis.Redis.from_url(own_redis.url).llen("experiments") == 0  # the message is gone

    resumed: float | None = None
    deadline = back + 300
    while True:
        sweep = sweep_json(client, sweep_id)
        states = {c["run_id"]: c["status"] for c in sweep["cells"]}
        if resumed is None and any(states[rid] != "queued" for rid in waiting):
            resumed = time.monotonic()
        if sweep["status"] in FINAL:
            break
        assert time.monotonic() < deadline, (sweep, worker.log_tail())
        time.sleep(0.3)
    done = time.monotonic()
    assert resumed is not None
    assert sweep["status"] == "succeeded", worker.log_tail()
    assert sweep["progress"]["succeeded"] == 8
    with session_scope(settings.database_url) as s:
        run_ids = list(s.scalars(select(Run.id).where(Run.sweep_id == sweep_id)))
    assert len(run_ids) == 8  # 0 lost, and no cell needed a second run
    assert _claims(worker) == Counter(dict.fromkeys(run_ids, 1))  # 0 duplicated
    _executed_once_each(settings, run_ids)

    # A finished sweep cannot be cancelled: 409, and 8/8 succeeded stays succeeded.
    resp = client.post(f"/api/sweeps/{sweep_id}/cancel")
    assert resp.status_code == 409
    assert resp.get_json()["status"] == "succeeded"
    assert sweep_json(client, sweep_id)["status"] == "succeeded"

    _stop_and_check_nothing_left(settings, worker)
    chaos_timing(
        "broker killed, restarted empty 5 s later, mid-sweep (8 cells, 2 groups)",
        detect_s=round(resumed - back, 2),
        recover_s=round(done - back, 2),
        note="detect: restart -> lost group resumed; recover: restart -> sweep succeeded",
    )


def test_a_live_worker_adopts_the_run_of_a_killed_worker_at_the_default_lock_ttl(
    queue_settings: Settings,
    queue_worker_factory: StartWorker,
    chaos_timing: RecordTiming,
) -> None:
    # The default TTL of 30 s on purpose: the acceptance is "adopted within 60 s".
    env = {"EDGELAB_LOCK_TTL": "30", "EDGELAB_RECONCILE_S": "2"}
    workers = [queue_worker_factory(queue_settings, **env) for _ in range(2)]
    client = api_client(queue_settings)
    resp = client.post(
        "/api/runs",
        json={"prompt": PROMPT, "nodes": 3, "latency": "40ms", "max_tokens": 24},
    )
    assert resp.status_code == 202
    run_id = resp.get_json()["id"]

    def run() -> dict[str, Any]:
        data: dict[str, Any] = client.get(f"/api/runs/{run_id}").get_json()
        return data

    _wait(run, lambda d: d["status"] == "running" and len(d["tokens"]) >= 1, 180)
    (victim,) = [w for w in workers if _claims(w)[run_id]]
    (peer,) = [w for w in workers if w is not victim]
    victim.kill9()
    killed = time.monotonic()

    adopted: float | None = None
    deadline = killed + 120
    while True:
        data = run()
        if adopted is None and _claims(peer)[run_id]:
            adopted = time.monotonic()
        if data["status"] in FINAL:
            break
        assert time.monotonic() < deadline, (data["status"], peer.log_tail())
        time.sleep(0.2)
    done = time.monotonic()
    assert data["status"] == "succeeded", data["error"]
    assert adopted is not None
    assert adopted - killed <= 60, f"adopted after {adopted - killed:.1f} s"
    # Completed exactly once: claimed once by each worker, one set of results.
    assert (_claims(victim)[run_id], _claims(peer)[run_id]) == (1, 1)
    _executed_once_each(queue_settings, [run_id])
    finished_at = data["finished_at"]
    time.sleep(5)
    assert run()["finished_at"] == finished_at  # nothing executes it again later

    _stop_and_check_nothing_left(queue_settings, *workers)
    chaos_timing(
        "kill -9 of the executing worker, a second worker alive (lock TTL 30 s)",
        detect_s=round(adopted - killed, 2),
        recover_s=round(done - killed, 2),
        note="detect: kill -> claimed by the live worker; recover: kill -> succeeded",
    )


def test_a_non_cluster_error_at_cluster_start_leaves_every_run_of_the_group_failed(
    queue_settings: Settings,
    queue_worker_factory: StartWorker,
    chaos_timing: RecordTiming,
) -> None:
    """The group's soft time limit (SoftTimeLimitExceeded, not a ClusterError) fires
    while a cluster behind 3 s links is still starting."""
    limits = {"EDGELAB_RUN_TIME_LIMIT": "5", "EDGELAB_CLEANUP_GRACE": "30"}
    worker = queue_worker_factory(
        queue_settings,
        **limits,  # a group of 2 runs: 10 s soft limit
        EDGELAB_START_STALL_TIMEOUT="300",  # the watchdog must not win the race
    )
    # The sender sets a message's time limits, from its own settings.
    client = api_client(queue_settings.with_overrides(run_time_limit_s=5.0, cleanup_grace_s=30.0))
    spec = {
        "name": "start-fails",
        "nodes": 2,
        "latency": ["3000ms"],
        "repetitions": 2,
        "max_tokens": 4,
        "prompts": [PROMPT],
    }
    resp = client.post("/api/sweeps", json=spec)
    assert resp.status_code == 202, resp.get_json()
    sweep_id = resp.get_json()["id"]
    t0 = time.monotonic()
    sweep = _wait(lambda: sweep_json(client, sweep_id), lambda d: d["status"] in FINAL, 120)
    ended = time.monotonic()
    assert sweep["status"] == "failed"
    assert [c["status"] for c in sweep["cells"]] == ["failed", "failed"]
    for cell in sweep["cells"]:
        error = client.get(f"/api/runs/{cell['run_id']}").get_json()["error"]
        assert error.startswith("the cluster could not start: SoftTimeLimitExceeded"), error
    _stop_and_check_nothing_left(queue_settings, worker)
    chaos_timing(
        "cluster start raises a non-ClusterError (soft time limit) inside run_group",
        recover_s=round(ended - t0, 2),
        note="submit -> every run of the group failed with the reason (10 s soft limit)",
    )


def test_500_queued_runs_end_in_500_terminal_rows_each_claimed_once(
    tmp_path: Path,
    smollm2: Any,
    queue_redis_url: str,
    queue_worker_factory: StartWorker,
    chaos_timing: RecordTiming,
) -> None:
    """500 queued runs through the real queue on two workers (two hosts): 20 sweep
    cells that really generate (one token on a warm 1-node cluster) and 480 single
    runs, one message each, whose model left the catalog after they were queued, so
    each is claimed and fails at once.

    Why the cheap path: a real generation costs about a second per run on this
    shared 2-core host (prompt processing), 500 of them ten minutes. What is under
    test - 500 messages with their sent markers, leases, one claim per run, the
    reconciler's pass over every open run each second - is the same for a run that
    fails right after its claim; real executions exactly once are what the other
    tests of this module check.
    """
    models = tmp_path / "models"  # a catalog of this test's own
    catalog = Catalog(path=models / "catalog.json", models_dir=models)
    catalog.register(smollm2)
    catalog.register(dataclasses.replace(smollm2, name="doomed"))
    settings = Settings(data_dir=tmp_path / "data", models_dir=models, redis_url=queue_redis_url)
    upgrade(settings.database_url)
    client = api_client(settings)
    spec = {
        "name": "twenty",
        "nodes": 1,
        "latency": ["0ms"],
        "repetitions": 20,
        "max_tokens": 1,
        "prompts": ["Hi"],
    }
    resp = client.post("/api/sweeps", json=spec)
    assert resp.status_code == 202, resp.get_json()
    sweep_id = resp.get_json()["id"]
    body = {"prompt": "Hi", "model": "doomed", "nodes": 1, "latency": "0ms", "max_tokens": 1}
    for _ in range(480):
        assert client.post("/api/runs", json=body).status_code == 202
    catalog.remove("doomed")  # before any worker runs: every single run will fail
    assert redis.Redis.from_url(queue_redis_url).llen("experiments") == 481

    t0 = time.monotonic()
    workers = [
        queue_worker_factory(settings, EDGELAB_HOST_ID=f"host{i}", EDGELAB_RECONCILE_S="1")
        for i in range(2)
    ]

    def open_runs() -> dict[str, Any]:
        with session_scope(settings.database_url) as s:
            left = s.scalar(
                select(func.count(Run.id)).where(Run.status.in_(("queued", "starting", "running")))
            )
        return {"open": left}

    _wait(open_runs, lambda d: d["open"] == 0, 300)
    wall = time.monotonic() - t0
    with session_scope(settings.database_url) as s:
        rows = {r.id: (r.status, r.sweep_id, r.error or "") for r in s.scalars(select(Run))}
    assert len(rows) == 500
    statuses = Counter((status, sweep) for status, sweep, _ in rows.values())
    assert statuses == Counter({("succeeded", sweep_id): 20, ("failed", None): 480})
    assert all("no model named 'doomed'" in e for st, _, e in rows.values() if st == "failed")
    assert _claims(*workers) == Counter(dict.fromkeys(rows, 1))  # none executed twice
    assert sweep_json(client, sweep_id)["model_loads"] == 1
    _stop_and_check_nothing_left(settings, *workers)
    chaos_timing(
        "500 queued runs (480 single messages + a 20-cell sweep, 2 workers)",
        recover_s=round(wall, 2),
        note=f"workers started -> 500 terminal rows ({500 / wall:.1f} runs/s), each claimed once",
    )
