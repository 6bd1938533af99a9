"""Delay traces on Docker (issue 15): a worker container's link replays its trace.

The trace CSV is mounted read-only into worker1's container, whose own proxy replays
it from a start drawn from the link's seed (the local counterpart is
``test_netem_trace.py``). A real generation runs over that link; afterwards every
chunk the proxy forwarded, weights at start-up and tokens alike, must have had the
delay the trace holds at its arrival and have left the proxy that long after it.

The proxy's trace clock starts inside the container, between the container's
creation and its ready line, on the host's monotonic clock (containers share it);
the test finds that origin within that window from the chunks themselves: only a
proxy that follows the trace from the seeded start is consistent with one (a start
half a period off is not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from available import docker_problem

from edgelab.catalog import Catalog
from edgelab.cluster.docker import DockerCluster
from edgelab.models.db import session_scope
from edgelab.netem.replay import DelayTrace, load_delay_trace
from edgelab.netem.trace import UP
from edgelab.runs.config import parse_config
from edgelab.runs.executor import cluster_for, create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes", "smollm2")]

#: A new delay every 0.25 s, no two stretches alike: the chunks pin the phase (the
#: period, 3 s, is four times the window the proxy's clock starts in).
DELAYS_MS = (5, 30, 12, 45, 8, 20, 35, 3, 25, 15, 40, 10)
TRACE_CSV = "offset_s,delay_ms\n" + "".join(f"{i * 0.25:g},{d}\n" for i, d in enumerate(DELAYS_MS))
#: Origin candidates are first tried this far apart, then refined around the best.
COARSE_S = 0.0002
FINE_S = 0.000002


def _matches(trace: DelayTrace, start_s: float, arrival: Any, delay: Any, origins: Any) -> Any:
    """Per candidate origin, how many chunks got the trace's delay at their arrival."""
    offsets = np.array(trace.offsets)
    levels = np.array(trace.delays_s)
    position = (arrival[None, :] - origins[:, None] + start_s) % trace.period_s
    predicted = levels[np.searchsorted(offsets, position, side="right") - 1]
    return (predicted == delay[None, :]).sum(axis=1)


@pytest.mark.docker
def test_a_docker_workers_link_follows_its_trace(settings: Settings, tmp_path: Path) -> None:
    problem = docker_problem()
    if problem is not None:
        pytest.skip(problem)
    path = tmp_path / "wifi.csv"
    path.write_text(TRACE_CSV)
    trace = load_delay_trace(str(path))
    raw: dict[str, Any] = {
        "prompt": "Name three planets.", "nodes": 2, "threads": 1, "latency": "0ms",
        "max_tokens": 32, "backend": "docker", "links": {"worker1": f"trace:{path}"},
    }  # fmt: skip
    config, model = parse_config(raw, Catalog(settings))
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id
    with cluster_for(settings, config, model, name=f"run{run_id}") as cluster:
        assert isinstance(cluster, DockerCluster)
        result = execute_run(settings, run_id, cluster=cluster)
        assert result.status == "succeeded", result.error
        chunks = cluster.link_chunks(0.0)["root<->worker1"]
        worker = cluster._workers[0]  # when its container was created and answered
        assert worker.ready_ms is not None
        window = (worker.created_at, worker.created_at + worker.ready_ms / 1000.0)
        seed = cluster.spec.link_profile(1).seed
    assert chunks.complete
    assert len(chunks) > 100  # the weights at start-up and every token's exchange
    arrival = np.array(chunks.arrival)
    delay = np.array(chunks.delay)
    start_s = trace.start_offset_s(seed)

    coarse = np.arange(window[0], window[1], COARSE_S)
    best = coarse[int(np.argmax(_matches(trace, start_s, arrival, delay, coarse)))]
    fine = np.arange(best - 2 * COARSE_S, best + 2 * COARSE_S, FINE_S)
    found = _matches(trace, start_s, arrival, delay, fine)
    # One origin in the window explains the delay of every chunk the link forwarded.
    assert found.max() == len(chunks), f"{len(chunks) - found.max()} chunks off the trace"
    # The check tells phases apart: a start half a period off explains far fewer.
    off = _matches(trace, start_s + trace.period_s / 2, arrival, delay, coarse)
    assert off.max() < 0.9 * len(chunks)
    up = {d for d, code in zip(chunks.delay, chunks.direction, strict=True) if code == UP}
    assert up <= {d / 1000 for d in DELAYS_MS}
    assert len(up) >= 6  # the run crossed half the trace's stretches at least
    for i in range(len(chunks)):
        # ... and each chunk left the proxy its delay after it arrived.
        assert chunks.out[i] - chunks.arrival[i] >= chunks.delay[i] - 0.0005
    run = run_detail(settings.database_url, run_id)
    link = run["config"]["topology"]["links"][0]
    assert link["trace"] == str(path.resolve())
