"""A sweep over packet loss (issue 15 item 4): ``loss`` is an axis; loss changes warm.

``loss: [10%, 5%, 0%]`` in grid order on a 2-node cluster. On Docker every cell shares
one warm cluster (one model load): between runs the worker's nftables table is
replaced, so the lossy runs record retransmissions and the 0 % run after them none
(its rules were removed, not left behind). On the local backend (as root) the two
lossy cells share a cluster whose worker has a namespace of its own, and the 0 %
cell starts its own lossless one: two loads. Skips saying why without the engine,
the images, root or ``nft``/``ip``.
"""

from __future__ import annotations

from typing import Any

import pytest
from available import docker_problem
from sqlalchemy import select
from sweep_db import run_stored, store_sweep

from edgelab.catalog import Catalog
from edgelab.models import LinkStat, Run, Sweep
from edgelab.models.db import session_scope
from edgelab.netem.loss import loss_problem
from edgelab.settings import Settings
from edgelab.topology.netns import netns_problem

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes", "smollm2")]


def _sweep(settings: Settings, test_redis: Any, backend: str) -> tuple[int, dict[str, Any]]:
    """Run the loss sweep group by group; the model loads and, per loss, its run's
    status, root<->worker1 retransmissions and packets its loss rules dropped."""
    catalog = Catalog(settings)
    stored = store_sweep(
        settings,
        {
            "name": "loss",
            "nodes": 2,
            "backend": backend,
            "latency": "0ms",
            "loss": ["10%", "5%", "0%"],
            "order": "grid",
            "max_tokens": 16,
            "prompts": ["Name three planets."],
        },
        catalog,
        max_cells=10,
    )
    run_stored(settings, test_redis, stored, catalog)
    cells, by_index, sweep_id = stored.cells, stored.run_ids, stored.id
    out: dict[str, Any] = {}
    with session_scope(settings.database_url) as s:
        loads = s.get_one(Sweep, sweep_id).model_loads
        for cell in cells:
            run = s.get_one(Run, by_index[cell.index])
            link = s.scalars(select(LinkStat).where(LinkStat.run_id == run.id)).one()
            out[f"{cell.config.topology.loss_pct:g}%"] = (
                run.status, run.error, link.retransmits, link.dropped_packets,
            )  # fmt: skip
    return loads, {"groups": len(stored.groups), **out}


def test_docker_loss_sweep_shares_one_warm_cluster(settings: Settings, test_redis: Any) -> None:
    problem = docker_problem() or loss_problem()
    if problem is not None:
        pytest.skip(problem)
    loads, runs = _sweep(settings, test_redis, "docker")
    assert (runs.pop("groups"), loads) == (1, 1)
    assert {loss: status for loss, (status, *_) in runs.items()} == {
        "10%": "succeeded", "5%": "succeeded", "0%": "succeeded",
    }, runs  # fmt: skip
    assert runs["10%"][2] > 0
    assert runs["5%"][2] > 0
    assert runs["0%"][2] == 0  # the warm worker's rules went with the loss
    # The 5 % run's rules are a new table, counting from 0: its own drops, not 10 %'s
    # less; at 0 % nothing is left to drop.
    assert runs["10%"][3] > 0
    assert runs["5%"][3] > 0
    assert runs["0%"][3] == 0


def test_local_loss_sweep_keeps_lossless_cells_apart(settings: Settings, test_redis: Any) -> None:
    problem = netns_problem() or loss_problem()
    if problem is not None:
        pytest.skip(f"local packet loss needs a namespace per node: {problem}")
    loads, runs = _sweep(settings, test_redis, "local")
    assert (runs.pop("groups"), loads) == (2, 2)
    assert {loss: status for loss, (status, *_) in runs.items()} == {
        "10%": "succeeded", "5%": "succeeded", "0%": "succeeded",
    }, runs  # fmt: skip
    assert runs["10%"][2] > 0
    assert runs["5%"][2] > 0  # changed on the warm cluster, still dropping
    assert runs["0%"][2] is None  # its own lossless cluster: the host's loopback
    assert runs["10%"][3] > 0
    assert runs["5%"][3] > 0
    assert runs["0%"][3] is None  # no loss anywhere on that cluster: not read
