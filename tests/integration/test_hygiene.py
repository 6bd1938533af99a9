"""Measurement hygiene on real runs: host contention and oversubscription are recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from edgelab.catalog import Catalog
from edgelab.metrics.host import OTHER_CORES_THRESHOLD
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes")]

PROMPT = "Write a long story about the planets of the solar system."


def _run(settings: Settings, nodes: int, max_tokens: int) -> dict[str, object]:
    raw = {"prompt": PROMPT, "nodes": nodes, "threads": 1, "max_tokens": max_tokens}
    config, _ = parse_config(raw, Catalog(settings))
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id
    result = execute_run(settings, run_id)
    assert result.status == "succeeded", result.error
    return run_detail(settings.database_url, run_id)


@pytest.fixture
def cpu_hog() -> Iterator[subprocess.Popen[bytes]]:
    """Another CPU-heavy process on the host: one busy-looping Python."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.usefixtures("smollm2")
def test_a_run_beside_a_cpu_heavy_process_is_flagged_contended(
    settings: Settings, cpu_hog: subprocess.Popen[bytes]
) -> None:
    data = _run(settings, nodes=1, max_tokens=24)

    hygiene = data["hygiene"]
    assert isinstance(hygiene, dict)
    assert hygiene["contended"] is True
    contention = hygiene["host_contention"]
    assert contention["other_cpu_cores"] > OTHER_CORES_THRESHOLD
    assert contention["reasons"]
    assert contention["cluster_cpu_cores"] > 0
    assert hygiene["oversubscribed"] is False


@pytest.mark.usefixtures("smollm2")
def test_four_one_thread_nodes_oversubscribe_a_host_with_fewer_cores(settings: Settings) -> None:
    data = _run(settings, nodes=4, max_tokens=2)

    hygiene = data["hygiene"]
    assert isinstance(hygiene, dict)
    assert hygiene["oversubscribed"] is ((os.cpu_count() or 1) < 4)
    assert hygiene["warmup"] is False
