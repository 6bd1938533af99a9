"""The queue end to end: real Redis, real Celery worker processes, real llama.cpp nodes.

Covers issue 5's acceptance: a run submitted through the API reaches ``succeeded``;
a 2 x 2 x 2 sweep loads the model once per topology; cancel stops the cluster and
resume completes only the missing cells; and ``edgelab up`` serves the API and
runs a job with no external services. (``kill -9`` of a worker mid-run lives with
the other faults in ``tests/integration/chaos``.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from flask.testing import FlaskClient
from queue_api import api_client, free_port, run_json, sweep_json, wait_for
from sqlalchemy import func, select

from edgelab.models import Run, TokenEvent
from edgelab.models.db import session_scope
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NodesOf = Callable[[Path], list[psutil.Process]]
StartWorker = Callable[..., Any]  # -> conftest.QueueWorker

PROMPT = "Name three planets."


def _wait(
    fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    return wait_for(fetch, done, timeout_s, poll_s=0.5)


FINAL = ("succeeded", "failed", "cancelled")


def _sse_events(client: FlaskClient, run_id: int) -> list[dict[str, Any]]:
    """Read a run's event stream to its end (the server closes it on a final status)."""
    resp = client.get(f"/api/runs/{run_id}/events", buffered=False)
    assert resp.status_code == 200
    assert resp.mimetype == "text/event-stream"
    events: list[dict[str, Any]] = []
    buffer = ""
    for chunk in resp.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            for line in block.splitlines():
                if line.startswith("data: "):
                    events.append(json.loads(line[len("data: ") :]))
    resp.close()
    return events


def test_post_run_reaches_succeeded_and_streams_live(
    queue_settings: Settings, queue_worker_factory: StartWorker
) -> None:
    queue_worker_factory(queue_settings)
    client = api_client(queue_settings)
    health = client.get("/api/health").get_json()
    assert health["ok"], health
    assert health["workers"], health

    resp = client.post(
        "/api/runs",
        json={"prompt": PROMPT, "nodes": 3, "latency": "10ms..30ms", "max_tokens": 16},
    )
    assert resp.status_code == 202
    run_id = resp.get_json()["id"]
    assert resp.headers["Location"].endswith(f"/api/runs/{run_id}")

    # Join the stream while the run is queued or starting: it must deliver every
    # token once, in order, and end with the final status.
    events = _sse_events(client, run_id)
    tokens = [e for e in events if e["type"] == "token"]
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    assert events[-1]["type"] == "end"
    assert events[-1]["status"] == "succeeded"
    assert any(e["type"] == "metrics" for e in events)

    run = _wait(lambda: run_json(client, run_id), lambda d: d["status"] in FINAL, 60)
    assert run["status"] == "succeeded", run["error"]
    assert run["metrics"]["output_tokens"] == len(tokens)
    assert 1 <= run["metrics"]["output_tokens"] <= 16
    assert run["metrics"]["ttft_ms"] > 0
    assert len(run["links"]) == 2
    assert "".join(t["text"] for t in tokens) == run["output_text"]

    # A late join (after the end) replays the same tokens from the database.
    late = [e for e in _sse_events(client, run_id) if e["type"] == "token"]
    assert [t["text"] for t in late] == [t["text"] for t in tokens]


def test_sweep_2x2x2_on_postgres_loads_each_topology_once(
    queue_settings_factory: Callable[[str, str], Settings],
    queue_redis_url: str,
    queue_postgres_url: str,
    queue_worker_factory: StartWorker,
) -> None:
    settings = queue_settings_factory(queue_redis_url, queue_postgres_url)
    queue_worker_factory(settings)
    client = api_client(settings)
    spec = {
        "name": "acceptance",
        "nodes": [1, 2],
        "latency": ["0ms", "15ms"],
        "repetitions": 2,
        "max_tokens": 4,
        "prompts": [PROMPT],
    }
    resp = client.post("/api/sweeps", json=spec)
    assert resp.status_code == 202, resp.get_json()
    sweep_id = resp.get_json()["id"]
    # 2 x 2 x 2 minus the 1-node cells that differ only in latency: one per repetition.
    assert resp.get_json()["total_cells"] == 6

    sweep = _wait(lambda: sweep_json(client, sweep_id), lambda d: d["status"] in FINAL, 240)
    errors = {c["run_id"]: run_json(client, c["run_id"])["error"] for c in sweep["cells"]}
    assert sweep["status"] == "succeeded", errors
    assert sweep["progress"]["succeeded"] == 6
    assert len(sweep["cells"]) == 6
    assert 1 <= sweep["model_loads"] <= 2
    cells = {(c["nodes"], c["latency"], c["repetition"]) for c in sweep["cells"]}
    assert cells == {(1, "0ms", 0), (1, "0ms", 1)} | {
        (2, lat, rep) for lat in ("0ms", "15ms") for rep in (0, 1)
    }
    assert any("1-node cells cannot differ" in note for note in sweep["notes"])
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(Run.id)).where(Run.sweep_id == sweep_id)) == 6
    listed = client.get(f"/api/runs?sweep={sweep_id}&status=succeeded").get_json()
    assert listed["total"] == 6


def test_cancel_stops_the_cluster_and_resume_completes_only_missing_cells(
    queue_settings: Settings, queue_worker_factory: StartWorker, queue_nodes_of: NodesOf
) -> None:
    worker = queue_worker_factory(queue_settings)
    client = api_client(queue_settings)
    spec = {
        "name": "cancel-resume",
        "nodes": 2,
        # slow links so a run is still generating when the cancel arrives
        "latency": ["0ms", "40ms", "60ms"],
        "repetitions": 2,
        "max_tokens": 16,
        "prompts": [PROMPT],
    }
    sweep_id = client.post("/api/sweeps", json=spec).get_json()["id"]

    def first_done_and_one_generating(d: dict[str, Any]) -> bool:
        if d["progress"]["succeeded"] < 1:
            return False
        with session_scope(queue_settings.database_url) as s:
            return bool(
                s.scalar(
                    select(func.count(TokenEvent.index))
                    .join(Run, Run.id == TokenEvent.run_id)
                    .where(Run.sweep_id == sweep_id, Run.status == "running")
                )
            )

    _wait(lambda: sweep_json(client, sweep_id), first_done_and_one_generating, 180)
    resp = client.post(f"/api/sweeps/{sweep_id}/cancel")
    assert resp.status_code == 202

    sweep = _wait(
        lambda: sweep_json(client, sweep_id),
        lambda d: d["progress"]["running"] == 0 and d["progress"]["starting"] == 0,
        60,
    )
    assert sweep["status"] == "cancelled"
    succeeded_before = {c["run_id"] for c in sweep["cells"] if c["status"] == "succeeded"}
    assert 1 <= len(succeeded_before) < 6
    assert sweep["progress"]["cancelled"] == 6 - len(succeeded_before)
    # No cluster left: the worker tears it down as soon as the group has nothing to run.
    deadline = time.monotonic() + 20
    while queue_nodes_of(queue_settings.data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not queue_nodes_of(queue_settings.data_dir), worker.log_tail()
    loads_before = sweep["model_loads"]

    resp = client.post(f"/api/sweeps/{sweep_id}/resume")
    assert resp.status_code == 202
    assert len(resp.get_json()["created"]) == 6 - len(succeeded_before)

    sweep = _wait(lambda: sweep_json(client, sweep_id), lambda d: d["status"] in FINAL, 240)
    assert sweep["status"] == "succeeded", sweep
    assert sweep["progress"]["succeeded"] == 6
    # The cells that had succeeded kept their run: nothing was executed twice.
    assert succeeded_before <= {c["run_id"] for c in sweep["cells"]}
    assert sweep["model_loads"] == loads_before + 1
    with session_scope(queue_settings.database_url) as s:
        runs = list(s.scalars(select(Run).where(Run.sweep_id == sweep_id)))
    assert sum(r.status == "succeeded" for r in runs) == 6
    assert len(runs) == 6 + (6 - len(succeeded_before))  # cancelled runs stay as history


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_edgelab_up_serves_the_api_and_runs_a_job_without_external_services(
    tmp_path: Path, models_dir: Path, smollm2: object
) -> None:
    port = free_port()
    data_dir = tmp_path / "up"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
    env.update(
        EDGELAB_DATA_DIR=str(data_dir),
        EDGELAB_MODELS_DIR=str(models_dir),
        EDGELAB_BIND=f"127.0.0.1:{port}",
    )
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgelab", "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api"
    redis_url = ""
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            try:
                status, health = _http("GET", f"{base}/health")
                # `up` prints its summary once it has seen the web app answer itself,
                # which can be a moment after this poll sees it: wait for both.
                printed = "edgelab is up: http://127.0.0.1:" in (tmp_path / "up.log").read_text()
                if status == 200 and health["workers"] and printed:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(1)
        redis_url = (data_dir / "embedded-redis.url").read_text().strip()
        assert redis_url.startswith("redis://127.0.0.1:")

        status, body = _http("POST", f"{base}/runs", {"prompt": PROMPT, "max_tokens": 4})
        assert status == 202, body
        run_id = body["id"]
        deadline = time.monotonic() + 120
        while True:
            _status, run = _http("GET", f"{base}/runs/{run_id}")
            if run["status"] in FINAL:
                break
            assert time.monotonic() < deadline, run
            time.sleep(1)
        assert run["status"] == "succeeded", run["error"]
        assert run["metrics"]["output_tokens"] >= 1
    finally:
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()
    assert not (data_dir / "embedded-redis.url").exists()
    # Web and broker ports are closed: everything stopped.
    for port_ in (port, int(redis_url.rsplit(":", 1)[1].split("/")[0])):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port_)) != 0
