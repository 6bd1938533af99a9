"""The vertical slice on real llama.cpp nodes: runs through delayed links, stored end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from edgelab.catalog import Catalog, ModelInfo
from edgelab.cluster.local import LocalCluster
from edgelab.models import LinkStat, NodeSample, Run, TokenEvent
from edgelab.models.db import session_scope
from edgelab.runs import DEFAULT_PROMPT
from edgelab.runs.config import parse_config
from edgelab.runs.executor import cluster_for, config_of, create_run, execute_run, failure_text
from edgelab.runs.views import run_detail
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes")]

PROMPT = "Name three planets."


def _catalog(settings: Settings) -> Catalog:
    return Catalog(settings)


def _submit(settings: Settings, **fields: Any) -> int:
    raw = {"prompt": PROMPT, "nodes": 3, "threads": 1, "latency": "0ms", "max_tokens": 8}
    raw.update(fields)
    config, _ = parse_config(raw, _catalog(settings))
    with session_scope(settings.database_url) as s:
        return create_run(s, config).id


@pytest.mark.usefixtures("smollm2")
def test_three_node_run_is_stored_with_metrics_samples_and_links(settings: Settings) -> None:
    run_id = _submit(settings, max_tokens=12)
    events: list[dict[str, Any]] = []
    result = execute_run(settings, run_id, sink=events.append)
    assert result.status == "succeeded", result.error

    data = run_detail(settings.database_url, run_id)
    m = data["metrics"]
    assert 1 <= m["output_tokens"] <= 12
    assert m["prompt_tokens"] > 0
    assert m["ttft_ms"] > 0
    assert m["e2el_ms"] >= m["ttft_ms"]
    assert m["load_ms"] > 0
    assert data["output_text"] == "".join(t["text"] for t in data["tokens"])
    assert [t["index"] for t in data["tokens"]] == list(range(m["output_tokens"]))
    assert data["nodes"] == ["root", "worker1", "worker2"]
    assert all(s["rss_bytes"] > 0 for s in data["samples"])
    assert {link["link"] for link in data["links"]} == {"root<->worker1", "root<->worker2"}
    # Every token needs activations to cross each link both ways.
    assert all(link["bytes_up"] > 0 and link["bytes_down"] > 0 for link in data["links"])
    assert m["net_bytes_per_token"] > 0
    split = data["provenance"]["layer_split"]
    assert split, "the root must report how the layers were split"
    assert data["provenance"]["model_sha256"]
    assert data["provenance"]["engine_version"]
    # The live stream saw every token and ended with the final status.
    assert [e["index"] for e in events if e["type"] == "token"] == list(range(m["output_tokens"]))
    assert events[-1] == {"type": "status", "status": "succeeded"}


@pytest.mark.usefixtures("smollm2")
def test_single_node_run_has_no_links(settings: Settings) -> None:
    run_id = _submit(settings, nodes=1, max_tokens=4)
    result = execute_run(settings, run_id)
    assert result.status == "succeeded", result.error
    data = run_detail(settings.database_url, run_id)
    assert data["links"] == []
    assert data["nodes"] == ["root"]
    assert data["metrics"]["output_tokens"] >= 1


def test_warm_cluster_changes_latency_between_runs(settings: Settings, smollm2: ModelInfo) -> None:
    fast = _submit(settings, nodes=2, latency="0ms", max_tokens=6)
    slow = _submit(settings, nodes=2, latency="20ms", max_tokens=6)
    with session_scope(settings.database_url) as s:
        fast_run = s.get(Run, fast)
        assert fast_run is not None
        config = config_of(fast_run)
    with cluster_for(settings, config, smollm2) as cluster:
        assert isinstance(cluster, LocalCluster)
        pids = cluster.pids()
        assert execute_run(settings, fast, cluster=cluster).status == "succeeded"
        assert execute_run(settings, slow, cluster=cluster).status == "succeeded"
        assert cluster.pids() == pids, "the model must not be reloaded between runs"
    a = run_detail(settings.database_url, fast)
    b = run_detail(settings.database_url, slow)
    # 20 ms each way on the only link: every injected chunk carries at least 20 ms.
    assert b["links"][0]["delay_total_ms_up"] >= 20 * b["links"][0]["chunks_up"] * 0.99
    assert a["links"][0]["delay_total_ms_up"] == pytest.approx(0.0, abs=1.0)
    # Same greedy config -> same tokens, whatever the network did.
    assert a["output_text"] == b["output_text"]


@pytest.mark.usefixtures("smollm2")
def test_killed_worker_fails_the_run_naming_the_node(settings: Settings) -> None:
    run_id = _submit(settings, nodes=3, latency="30ms", max_tokens=200)
    killed: dict[str, int] = {}

    def kill_worker_when_streaming(event: dict[str, Any]) -> None:
        if event["type"] == "token" and event["index"] == 2 and not killed:
            for proc in _node_procs("edgelab.engines.llamacpp.worker"):
                if str(os.getpid()) in _parent_chain(proc):
                    os.kill(proc, signal.SIGKILL)
                    killed["pid"] = proc
                    break

    result = execute_run(settings, run_id, sink=kill_worker_when_streaming)
    assert killed, "no worker process was found to kill"
    assert result.status == "failed"
    assert result.error is not None
    assert "worker" in result.error
    with session_scope(settings.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert run.status == "failed"
        assert run.node_logs
        assert "root" in run.node_logs
        # What was measured before the failure is kept.
        assert s.scalar(
            select(func.count()).select_from(TokenEvent).where(TokenEvent.run_id == run_id)
        )


def _node_procs(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _parent_chain(pid: int) -> str:
    import psutil

    try:
        return " ".join(str(p.pid) for p in psutil.Process(pid).parents())
    except psutil.NoSuchProcess:
        return ""


@pytest.mark.usefixtures("smollm2")
def test_cli_run_json_and_restart_survival(settings: Settings, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        {
            "EDGELAB_DATA_DIR": str(settings.data_dir),
            "EDGELAB_MODELS_DIR": str(settings.models_dir),
            # Keep the cluster's node logs after success, to read the root's below.
            "EDGELAB_KEEP_WORK_DIRS": "always",
        }
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgelab",
            "run",
            "--prompt",
            PROMPT,
            "--nodes",
            "3",
            "--threads",
            "1",
            "--latency",
            "0ms",
            "--max-tokens",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "succeeded"
    assert 1 <= data["metrics"]["output_tokens"] <= 8
    assert "using device RPC0" in (Path(settings.data_dir) / "clusters").joinpath(
        next(p.name for p in (Path(settings.data_dir) / "clusters").iterdir())
    ).joinpath("root.log").read_text(errors="replace")
    # A new process (a "restart") reads the same rows back.
    with session_scope(settings.database_url) as s:
        assert s.scalar(
            select(func.count()).select_from(NodeSample).where(NodeSample.run_id == data["id"])
        )
        assert (
            s.scalar(
                select(func.count()).select_from(LinkStat).where(LinkStat.run_id == data["id"])
            )
            == 2
        )


@pytest.mark.usefixtures("smollm2")
def test_cli_run_without_a_prompt_sends_the_default_one(settings: Settings) -> None:
    """The issue's acceptance commands give no ``--prompt``: the documented default is sent."""
    env = dict(os.environ)
    env.update(
        {"EDGELAB_DATA_DIR": str(settings.data_dir), "EDGELAB_MODELS_DIR": str(settings.models_dir)}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edgelab", "run", "--nodes", "1", "--max-tokens", "4", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "succeeded"
    assert data["config"]["prompt"] == DEFAULT_PROMPT


def test_bad_input_is_refused_before_anything_starts(settings: Settings) -> None:
    env = dict(
        os.environ,
        EDGELAB_DATA_DIR=str(settings.data_dir),
        EDGELAB_MODELS_DIR=str(settings.models_dir),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgelab",
            "run",
            "--prompt",
            " ",
            "--nodes",
            "0",
            "--max-tokens",
            "2000",
            "--latency",
            "fast",
            "--model",
            "nope",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    for field in ("--prompt", "--nodes", "--max-tokens", "--latency", "--model"):
        assert field in proc.stderr
    assert not (settings.data_dir / "clusters").exists()


def test_cluster_startup_failure_tears_down(settings: Settings, tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)
    spec_config, model = parse_config(
        {"prompt": PROMPT, "nodes": 2, "latency": "0ms", "max_tokens": 2}, _catalog(settings)
    )
    broken = replace(model, path=bogus)
    with pytest.raises(Exception, match="root") as info, cluster_for(settings, spec_config, broken):
        pass
    # The failed cluster's directory stays, with the root's whole log, and says so.
    (kept,) = (settings.data_dir / "clusters").iterdir()
    assert (kept / "root.log").stat().st_size > 0
    assert (kept / "KEPT").exists()
    assert failure_text(info.value).endswith(
        f"(full node logs in {kept}, kept for up to 72 h / 200 MB of failed runs)"
    )


@pytest.mark.usefixtures("smollm2")
def test_a_succeeded_run_takes_its_work_dir_along(settings: Settings) -> None:
    run_id = _submit(settings, nodes=2, max_tokens=2)
    assert execute_run(settings, run_id).status == "succeeded"
    assert list((settings.data_dir / "clusters").iterdir()) == []
