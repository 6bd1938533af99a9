"""What a cluster is made of, independent of where it runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from edgelab.netem.profile import LatencyProfile


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster's topology plus the network between its nodes.

    ``nodes`` counts every device including the root (nodes=1 is the root alone),
    as distributed-llama and the original experiments do.
    """

    model: str
    nodes: int
    threads: int
    latency: LatencyProfile
    engine: str = "llamacpp"
    backend: str = "local"
    # Backend extras, e.g. {"cpus": 1.0, "mem": "512m"} for Docker.
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return self.nodes - 1

    def topology_key(self) -> str:
        """Equal for specs that can share one loaded cluster (latency may differ)."""
        return json.dumps(
            {
                "engine": self.engine,
                "backend": self.backend,
                "model": self.model,
                "nodes": self.nodes,
                "threads": self.threads,
                "options": self.options,
            },
            sort_keys=True,
        )

    @staticmethod
    def worker_name(index: int) -> str:
        """Node names as stored in samples and shown in errors: root, worker1, worker2..."""
        return f"worker{index}"

    @staticmethod
    def link_name(index: int) -> str:
        return f"root<->worker{index}"
