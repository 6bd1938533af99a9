"""Real packet loss on one link (issue 15 item 2): TCP recovers, retransmissions recorded.

nftables drops 2 % of worker1's link packets inside its node's network namespace
(a Docker worker's container; a local worker's own namespace, see
:mod:`edgelab.topology.netns`); the run must still succeed and record
retransmissions on that link only. Docker needs the engine, the images, root and
``nft``; local needs root, ``ip`` and ``nft`` (each skips saying why).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from edgelab.catalog import Catalog
from edgelab.cluster.dockerapi import DockerAPI, DockerUnavailable
from edgelab.cluster.images import ROOT_IMAGE, WORKER_IMAGE
from edgelab.models.db import session_scope
from edgelab.netem.loss import loss_problem
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings
from edgelab.topology.netns import netns_problem, owned_namespaces

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes", "smollm2")]


def _docker_ready() -> str | None:
    try:
        api = DockerAPI.connect(timeout_s=10)
    except DockerUnavailable as exc:
        return f"no Docker engine: {exc}"
    try:
        missing = [i for i in (ROOT_IMAGE, WORKER_IMAGE) if api.image_id(i) is None]
    finally:
        api.close()
    return f"Docker images {', '.join(missing)} missing" if missing else None


def _run_with_loss(settings: Settings, backend: str) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "prompt": "Name three planets.", "nodes": 3, "threads": 1, "latency": "0ms",
        "max_tokens": 16, "backend": backend, "links": {"worker1": "loss:2%"},
    }  # fmt: skip
    config, _ = parse_config(raw, Catalog(settings))
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id
    result = execute_run(settings, run_id)
    assert result.status == "succeeded", result.error
    run = run_detail(settings.database_url, run_id)
    links = {link["link"]: link for link in run["links"]}
    assert links["root<->worker1"]["retransmits"] > 0
    assert links["root<->worker2"]["retransmits"] == 0
    return run


@pytest.mark.docker
def test_two_percent_loss_on_one_link_shows_retransmissions_there_only(
    settings: Settings,
) -> None:
    problem = _docker_ready() or loss_problem()
    if problem is not None:
        pytest.skip(problem)
    _run_with_loss(settings, "docker")


def test_local_loss_runs_each_worker_in_its_own_namespace(settings: Settings) -> None:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"local packet loss needs a namespace per node: {problem}")
    run = _run_with_loss(settings, "local")
    limits = run["provenance"]["node_limits"]
    # Every worker in a namespace of its own, the lossless one too; the root on the host.
    assert limits["root"]["netns"] is None
    for worker in ("worker1", "worker2"):
        assert limits[worker]["netns"]["name"].startswith(f"edgelab-{os.getpid()}-")
    assert owned_namespaces(os.getpid()) == []  # gone with the cluster
