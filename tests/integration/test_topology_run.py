"""Heterogeneous clusters on the real engine (issue 15): a slow worker behind a slow link.

worker2 gets a quarter of a core (``cpus: 0.25``) and a 30 ms link, worker1 a 1 ms
link; against the uniform cluster (every link 1 ms, no quota) its samples must show
the cap, each link's measured delay its own profile, and TPOT must be higher. Local
nodes need root and a writable cgroup hierarchy (CI runs as root); the Docker
variant needs the engine and the images, and skips saying why otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import redis
from sweep_db import run_stored, store_sweep

from edgelab.analysis import group_records, load_records
from edgelab.catalog import Catalog
from edgelab.cluster.dockerapi import DockerAPI, DockerUnavailable
from edgelab.cluster.images import ROOT_IMAGE, WORKER_IMAGE
from edgelab.models import Sweep
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings
from edgelab.topology.cgroups import CGROUP_ROOT, PREFIX, cpu_quota_problem
from edgelab.topology.netns import netns_problem

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes", "smollm2")]

PROMPT = "Name three planets."
SLOW = {"devices": {"worker2": "cpus:0.25"}, "links": {"worker2": "30ms", "worker1": "1ms"}}
#: The sampler reads CPU about every 0.2 s (Docker: once a second); a 0.25-core quota
#: is enforced per 100 ms period, so a reading may catch a little more than 25 %.
CAP_PERCENT = 32.0


def _run(settings: Settings, **fields: Any) -> dict[str, Any]:
    raw = {"prompt": PROMPT, "nodes": 3, "threads": 1, "latency": "1ms", "max_tokens": 16}
    raw.update(fields)
    config, _ = parse_config(raw, Catalog(settings))
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id
    result = execute_run(settings, run_id)
    assert result.status == "succeeded", result.error
    return run_detail(settings.database_url, run_id)


def _mean_cpu(run: dict[str, Any], node: str) -> float:
    """Mean CPU % of ``node`` over the run's samples. Not the peak: one 200 ms sample
    can straddle parts of three 100 ms CFS periods and read up to ~37 % under a
    25 % quota (seen: 39.3 %), while the mean is what the quota bounds."""
    values = [s["cpu_percent"] for s in run["samples"] if s["node"] == node]
    return sum(values) / len(values)


def _my_groups() -> list[Path]:
    return [
        p
        for base in (CGROUP_ROOT / "cpu", CGROUP_ROOT / "memory", CGROUP_ROOT)
        if base.is_dir()
        for p in base.glob(f"{PREFIX}{os.getpid()}-*")
    ]


def _check_slow_worker(slow: dict[str, Any], uniform: dict[str, Any]) -> None:
    links = {link["node"]: link for link in slow["config"]["topology"]["links"]}
    assert links["worker1"]["latency"] == "1ms"
    assert links["worker2"]["latency"] == "30ms"
    limits = slow["provenance"]["node_limits"]
    assert limits["worker2"]["cpus"] == pytest.approx(0.25)
    assert limits["worker1"]["threads"] == limits["worker2"]["threads"] == 1
    assert _mean_cpu(slow, "worker2") <= CAP_PERCENT
    measured = {link["link"]: link for link in slow["links"]}
    for direction in ("up", "down"):
        # Effective one-way delays include in-order waits: at least the profile.
        assert 30.0 <= measured["root<->worker2"][f"eff_delay_p50_ms_{direction}"] < 40.0
        assert 1.0 <= measured["root<->worker1"][f"eff_delay_p50_ms_{direction}"] < 10.0
    # Two 30 ms hops per token through worker2's link, and a quarter of a core.
    assert slow["metrics"]["tpot_ms"] > uniform["metrics"]["tpot_ms"] + 40.0


def test_local_slow_worker_is_capped_and_its_link_delays(settings: Settings) -> None:
    problem = cpu_quota_problem()
    if problem is not None:
        pytest.skip(f"local CPU quotas need root and writable cgroups: {problem}")
    uniform = _run(settings)
    slow = _run(settings, **SLOW)
    assert uniform["provenance"]["node_limits"]["worker2"]["cpus"] is None
    _check_slow_worker(slow, uniform)
    assert _my_groups() == []  # every node's cgroup went with its cluster


def test_local_refusals_name_the_field(settings: Settings) -> None:
    from edgelab.runs.config import ConfigError

    raw = {"prompt": PROMPT, "nodes": 3, "latency": "1ms", "max_tokens": 4}
    with pytest.raises(ConfigError) as info:
        parse_config({**raw, "devices": {"worker3": "slow"}}, Catalog(settings))
    assert "worker3 does not exist" in info.value.errors["devices"]
    if netns_problem() is not None:  # as root with ip and nft it is applied
        with pytest.raises(ConfigError) as info:
            parse_config({**raw, "links": {"worker1": "loss:2%"}}, Catalog(settings))
        assert "packet loss cannot be applied" in info.value.errors["links"]
        assert "--backend docker" in info.value.errors["links"]
    with pytest.raises(ConfigError) as info:
        parse_config({**raw, "devices": {"root": {"cpus": 64}}}, Catalog(settings))
    assert "above this host's" in info.value.errors["devices"]


@pytest.mark.docker
def test_docker_slow_worker_is_capped_and_its_link_delays(settings: Settings) -> None:
    try:
        api = DockerAPI.connect(timeout_s=10)
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    try:
        missing = [i for i in (ROOT_IMAGE, WORKER_IMAGE) if api.image_id(i) is None]
    finally:
        api.close()
    if missing:
        pytest.skip(f"Docker images {', '.join(missing)} missing; `edgelab images build`")
    uniform = _run(settings, backend="docker")
    slow = _run(settings, backend="docker", **SLOW)
    assert slow["provenance"]["node_limits"]["worker1"]["cpus"] == pytest.approx(1.0)
    _check_slow_worker(slow, uniform)


def test_sweep_over_topologies_loads_once_per_topology(
    settings: Settings, test_redis: redis.Redis
) -> None:
    if cpu_quota_problem() is not None:
        pytest.skip(f"local CPU quotas need root and writable cgroups: {cpu_quota_problem()}")
    catalog = Catalog(settings)
    spec = {
        "name": "topologies",
        "nodes": 3,
        "devices": ["uniform", "one-slow-worker"],
        "latency": ["0ms", "10ms"],
        "max_tokens": 4,
        "prompts": [PROMPT],
    }
    sweep = store_sweep(settings, spec, catalog, max_cells=10)
    assert len(sweep.groups) == 2
    run_stored(settings, test_redis, sweep, catalog)
    sweep_id = sweep.id
    with session_scope(settings.database_url) as s:
        assert s.get_one(Sweep, sweep_id).model_loads == 2
        records = load_records(s, sweep_id=sweep_id)
    assert all(r.status == "succeeded" for r in records), [r.id for r in records]
    keys = {(g.key.topology.split(" ")[0], g.key.latency) for g in group_records(records)}
    assert keys == {
        ("uniform", "0ms"),
        ("uniform", "10ms"),
        ("one-slow-worker", "0ms"),
        ("one-slow-worker", "10ms"),
    }
