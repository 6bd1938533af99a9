"""Chaos on the Docker backend: a worker container frozen mid-generation.

A paused container (``docker pause``: the cgroup freezer) and a container whose
main process is SIGSTOP'd (its link proxy and control endpoint with it) both stop
answering without dying; Docker reports the second one as ``running``. The stall
watchdog must name the worker either way, from the container state or from the
host's view of its processes, and tear the cluster down without leftovers. Real
Docker engine, the edgelab images, llama.cpp on the small model; the run is
executed in this process (the Celery path is the same executor, covered by
test_hung_nodes.py). Skipped, with the reason, without an engine or the images.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from edgelab.catalog import Catalog
from edgelab.cluster.dockerapi import (
    DockerAPI,
)
from edgelab.models import Run
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run, execute_run
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

RecordTiming = Callable[..., None]
STALL_S = 5.0


def _freeze(how: str, container: str) -> None:
    if how == "pause":
        subprocess.run(["docker", "pause", container], check=True, capture_output=True)
        return
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    psutil.Process(int(pid)).send_signal(signal.SIGSTOP)


@pytest.mark.usefixtures("smollm2")
@pytest.mark.parametrize(
    ("how", "evidence"),
    [
        ("pause", "its container is paused"),
        ("sigstop", "its process is stopped (state T, e.g. SIGSTOP)"),
    ],
)
def test_a_frozen_worker_container_fails_the_run_naming_it(
    settings: Settings,
    docker_api: DockerAPI,
    chaos_timing: RecordTiming,
    how: str,
    evidence: str,
) -> None:
    settings = settings.with_overrides(stall_timeout_s=STALL_S)
    config, _ = parse_config(
        {
            "prompt": "Write a long story about a robot who learns to paint.",
            "nodes": 3,
            "threads": 1,
            "latency": "20ms",
            "max_tokens": 96,
            "backend": "docker",
        },
        Catalog(settings),
    )
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id
    frozen: dict[str, float] = {}

    def sink(event: dict[str, Any]) -> None:
        if event.get("type") == "token" and event["index"] == 2 and not frozen:
            with session_scope(settings.database_url) as s:
                provenance = s.get_one(Run, run_id).image_ids or {}
            _freeze(how, provenance["containers"]["worker1"]["container"])
            frozen["at"] = time.monotonic()

    result = execute_run(settings, run_id, sink=sink)
    elapsed = time.monotonic() - frozen["at"]
    assert result.status == "failed", result
    assert result.error is not None
    assert result.error.startswith(f"node worker1 stopped responding during generation: {evidence}")
    assert elapsed <= STALL_S + 10, elapsed
    chaos_timing(
        f"Docker worker container frozen mid-generation ({how})",
        detect_s=round(elapsed, 2),
        recover_s=round(elapsed, 2),
        note=f"stall timeout {STALL_S:g} s; containers removed before the status is written",
    )
