"""The per-token breakdown on a real 3-node llama.cpp cluster at 0 and 20 ms.

One warm cluster serves both runs, so they share a topology and differ only in
the injected delay; the numbers are checked against what the profile implies
(2 links x 1 round trip x 2 x 20 ms = 80 ms of injected delay per token), not
against timings of this busy host.
"""

from __future__ import annotations

import statistics

import pytest

from edgelab.analysis.breakdown import adds_up, breakdown
from edgelab.catalog import Catalog
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import cluster_for, create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes")]

# A prompt the small model answers at length, so 32 tokens are generated.
PROMPT = "Write a long story about the planets of the solar system."


@pytest.mark.usefixtures("smollm2")
def test_breakdown_of_a_three_node_run_at_0_and_20_ms(settings: Settings) -> None:
    catalog = Catalog(settings)
    ids = {}
    for latency in ("0ms", "20ms"):
        raw = {"prompt": PROMPT, "nodes": 3, "threads": 1, "latency": latency, "max_tokens": 32}
        config, model = parse_config(raw, catalog)
        with session_scope(settings.database_url) as s:
            ids[latency] = create_run(s, config).id
    with cluster_for(settings, config, model) as cluster:
        for run_id in ids.values():
            result = execute_run(settings, run_id, cluster=cluster, catalog=catalog)
            assert result.status == "succeeded", result.error
    fast, slow = (run_detail(settings.database_url, ids[k]) for k in ("0ms", "20ms"))

    for data in (fast, slow):
        bd = data["breakdown"]
        assert bd is not None
        assert bd["source"] == "proxy"
        assert bd["decode_tokens"] == data["metrics"]["output_tokens"] - 1 >= 15
        assert abs(bd["parts_ms"] - data["metrics"]["tpot_ms"]) <= 0.05 * data["metrics"]["tpot_ms"]
        for link in data["links"]:
            # llama.cpp's layer split: one round trip per worker per decode token
            # (the first decode token may add one while the graph is re-planned).
            assert statistics.median(link["timing"]["per_token"]["round_trips"]) == 1
            phases = link["bytes_load"] + link["bytes_prefill"] + link["bytes_decode"]
            if data is slow:  # the first run was charged the cluster's weight upload
                assert phases == link["bytes_up"] + link["bytes_down"]
    assert fast["breakdown"]["injected_ms"] == 0.0
    assert slow["breakdown"]["injected_ms"] == pytest.approx(80.0, rel=0.10)
    # Greedy decoding of the same prompt: the same activations cross the same links
    # (the first run on a fresh cluster sends a few hundred bytes more set-up).
    assert slow["metrics"]["net_bytes_per_token"] == pytest.approx(
        fast["metrics"]["net_bytes_per_token"], rel=0.01
    )
    assert slow["metrics"]["round_trips_per_token"] == pytest.approx(2.0, abs=0.2)
    # Weights went to the workers once, charged to the first run's load phase.
    assert fast["metrics"]["net_load_bytes"] > 10_000_000
    assert slow["metrics"]["net_load_bytes"] == 0
    for link in slow["links"]:
        assert 20.0 <= link["eff_delay_p50_ms_up"] <= 21.0
        assert link["eff_delay_max_ms_up"] >= link["eff_delay_p50_ms_up"]
    for data in (fast, slow):
        found = breakdown(data)
        assert found is not None
        assert adds_up(found)
        shown = {k: v for k, v in found.to_dict().items() if k != "per_token"}
        print(f"{data['config']['latency']}: {shown}")  # with -s: the numbers for RESULTS.md
