"""Real packet loss on one link (issue 15 item 2): TCP recovers, retransmissions recorded.

nftables drops 2 % of worker1's link packets inside its node's network namespace
(a Docker worker's container; a local worker's own namespace, see
:mod:`edgelab.topology.netns`); the run must still succeed and record
retransmissions on that link, more than on the lossless one (whose few, if any, are
spurious resends no DSACK cancelled: :class:`edgelab.netem.loss.LinkRetransmits`),
and packets dropped by its rules on that link only (none on the other: exact).
Docker needs the engine, the images, root and ``nft``; local needs root, ``ip`` and
``nft`` (each skips saying why).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
from available import docker_problem

from edgelab.catalog import Catalog
from edgelab.models.db import session_scope
from edgelab.netem.loss import loss_problem
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings
from edgelab.topology.netns import netns_problem, owned_namespaces, reap_namespaces

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes", "smollm2")]


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
    lossy, lossless = (links[f"root<->{w}"]["retransmits"] for w in ("worker1", "worker2"))
    assert lossy > 0
    # Not 0: a lossless veth link resends a few segments under load that no DSACK
    # cancels (measured: LinkRetransmits); the lossy link's repairs are many more.
    assert lossless < lossy, (lossy, lossless)
    # What the loss rules dropped is exact: worker1's rules dropped packets, worker2's
    # link has none and dropped none.
    dropped = [links[f"root<->{w}"]["dropped_packets"] for w in ("worker1", "worker2")]
    assert dropped[0] > 0, dropped
    assert dropped[1] == 0, dropped
    return run


@pytest.mark.docker
def test_two_percent_loss_on_one_link_shows_retransmissions_there_only(
    settings: Settings,
) -> None:
    problem = docker_problem() or loss_problem()
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


def test_namespaces_of_a_killed_run_are_reaped(settings: Settings) -> None:
    """A ``kill -9``-ed edgelab cannot delete its nodes' namespaces (its nodes, running
    inside them, die with it: PR_SET_PDEATHSIG); the reaper removes them, and the veths
    go with them. ``no_leftover_nodes`` checks that the nodes are gone."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"local packet loss needs a namespace per node: {problem}")
    env = {
        **os.environ,
        "EDGELAB_DATA_DIR": str(settings.data_dir),
        "EDGELAB_MODELS_DIR": str(settings.models_dir),
    }
    argv = [
        sys.executable, "-m", "edgelab", "run", "--prompt", "Name three planets.",
        "--backend", "local", "--nodes", "3", "--threads", "1", "--latency", "10ms",
        "--link", "worker1=loss:2%", "--max-tokens", "200",
    ]  # fmt: skip
    cli = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Until both workers run inside their namespaces (``ip netns pids``).
        deadline = time.monotonic() + 60
        while not _workers_inside(cli.pid):
            assert cli.poll() is None, cli.stderr.read() if cli.stderr else ""
            assert time.monotonic() < deadline, "no workers in namespaces within 60 s"
            time.sleep(0.1)
    finally:
        cli.kill()
        cli.wait()
    left = owned_namespaces(cli.pid)
    assert len(left) == 2  # nothing deleted them
    removed = reap_namespaces()
    assert set(left) <= set(removed)
    assert owned_namespaces(cli.pid) == []
    # The host ends of the veths go with the namespaces, once the kernel's (asynchronous)
    # namespace clean-up has run: a moment after the delete.
    cluster = left[0].split("-")[2]  # edgelab-<owner>-<cluster>-<node>
    deadline = time.monotonic() + 10
    while True:
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True)
        if f"el{cluster}" not in links.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert f"el{cluster}" not in links.stdout


def _workers_inside(owner: int) -> bool:
    spaces = owned_namespaces(owner)
    return len(spaces) == 2 and all(
        subprocess.run(["ip", "netns", "pids", n], capture_output=True, text=True).stdout.strip()
        for n in spaces
    )
