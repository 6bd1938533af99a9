"""What a cluster is made of, independent of where it runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from edgelab.netem.profile import LatencyProfile
from edgelab.topology.spec import LinkSpec, NodeDevice, Topology
from edgelab.topology.support import WARM_LOSS_BACKENDS


def link_profile(profile: LatencyProfile, index: int) -> LatencyProfile:
    """The profile of link ``index``: same distribution, its own seed.

    Links with one seed would delay in lockstep, which no real network does; a
    derived seed keeps each link reproducible and independent.
    """
    if profile.seed is None:
        return profile
    return replace(profile, seed=profile.seed * 1009 + index)


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster's topology plus the network between its nodes.

    ``nodes`` counts every device including the root (nodes=1 is the root alone),
    as distributed-llama and the original experiments do. ``threads`` and
    ``latency`` are the cluster-wide defaults; ``topology`` says where a node's
    device or a link differs from them (empty: a uniform cluster).
    """

    model: str
    nodes: int
    threads: int
    latency: LatencyProfile
    engine: str = "llamacpp"
    backend: str = "local"
    # Backend extras, e.g. {"cpus": 1.0, "mem": "512m"} for Docker.
    options: dict[str, Any] = field(default_factory=dict)
    topology: Topology = field(default_factory=Topology)

    @property
    def workers(self) -> int:
        return self.nodes - 1

    def topology_key(self) -> str:
        """Equal for specs that can share one loaded cluster: link delays may differ, and
        so may packet loss (a worker's nftables rules are replaced between runs, see
        ``set_latency`` of each backend), except between lossless and lossy clusters on
        a backend outside ``WARM_LOSS_BACKENDS``."""
        key: dict[str, Any] = {
            "engine": self.engine,
            "backend": self.backend,
            "model": self.model,
            "nodes": self.nodes,
            "threads": self.threads,
            "options": self.options,
        }
        shape = self.topology.cluster_key()
        if shape["devices"] or shape["links"]:
            # Only then: a uniform cluster keeps its key, and clusters that differ only in
            # link delays or loss share one started cluster.
            key["topology"] = shape
        if self.backend not in WARM_LOSS_BACKENDS and any(
            self.link(i).loss_pct for i in range(1, self.nodes)
        ):
            # This backend makes what loss needs when a cluster starts (a local node's
            # namespace): a lossy cluster changes its loss, a lossless one cannot gain one.
            key["lossy"] = True
        return json.dumps(key, sort_keys=True)

    def device(self, node: str) -> NodeDevice:
        """The device of ``node`` as given (``None`` fields: the cluster-wide value)."""
        return self.topology.device(node)

    def threads_of(self, node: str) -> int:
        return self.topology.threads_of(node, self.threads)

    def link(self, index: int) -> LinkSpec:
        """Link ``index`` (root<->worker{index}) with its own seeded profile."""
        spec = self.topology.link(self.worker_name(index), self.latency)
        return replace(spec, profile=link_profile(spec.profile, index))

    def link_profile(self, index: int) -> LatencyProfile:
        return self.link(index).profile

    @staticmethod
    def worker_name(index: int) -> str:
        """Node names as stored in samples and shown in errors: root, worker1, worker2..."""
        return f"worker{index}"

    @staticmethod
    def link_name(index: int) -> str:
        return f"root<->worker{index}"
