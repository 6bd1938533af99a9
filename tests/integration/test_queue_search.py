"""A break-even search through the real queue: cells appear as results arrive."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from edgelab.service import create_app
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sweep(client: FlaskClient, sweep_id: int) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/sweeps/{sweep_id}").get_json()
    return data


@pytest.mark.usefixtures("smollm2")
def test_a_break_even_search_runs_to_an_answer_through_the_queue(
    queue_settings: Settings, queue_worker_factory: Any
) -> None:
    worker = queue_worker_factory(queue_settings)
    client = create_app(queue_settings, {"TESTING": True}).test_client()
    spec = {
        "name": "break-even",
        "search": "break_even",
        "nodes": [2],
        "latency_range": ["0ms", "40ms"],
        "tolerance": "20ms",  # at most one midpoint
        "repetitions": 2,
        "max_tokens": 4,
        "prompts": ["Name three planets."],
    }
    resp = client.post("/api/sweeps", json=spec)
    assert resp.status_code == 202, resp.get_json()
    sweep_id = resp.get_json()["id"]

    deadline = time.monotonic() + 300
    sweep = _sweep(client, sweep_id)
    while sweep["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, (sweep, worker.log_tail())
        time.sleep(1.0)
        sweep = _sweep(client, sweep_id)

    assert sweep["status"] == "succeeded", worker.log_tail()
    search = sweep["search"]
    assert search["done"] is True
    (bracket,) = search["brackets"]
    assert bracket["status"] in ("never", "always", "converged", "indistinct")
    # Exactly the probes the bisection visited were run, each twice, plus the baseline.
    visited = {(2, p["delay_ms"]) for p in bracket["probes"]} | {(1, 0.0)}
    ran = {(c["nodes"], float(c["latency"].removesuffix("ms"))) for c in sweep["cells"]}
    assert ran == visited
    assert len(sweep["cells"]) == 2 * len(visited)
    if bracket["status"] in ("converged", "indistinct"):
        assert (2, 20.0) in ran  # the midpoint was created after the ends were measured
        assert bracket["break_even_ms"] is not None
