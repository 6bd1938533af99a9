"""The contract of a cluster backend.

A cluster is started once (model loaded once) and may then serve several runs,
changing only its latency profile between them. Everything a cluster starts is
torn down by :meth:`Cluster.close`, which is idempotent and must be called in a
``finally`` (or by using the cluster as a context manager).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edgelab.cluster.spec import ClusterSpec
from edgelab.engines.client import RootClient
from edgelab.metrics.sampler import SampleSource
from edgelab.netem.profile import LatencyProfile
from edgelab.netem.proxy import LinkStats

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster could not start or serve."""

    #: Last log lines of every node, attached when the error ends a run.
    node_logs: dict[str, list[str]] | None = None


class NodeFailure(ClusterError):
    """A node died or stopped answering; the message names it and shows its last log lines."""

    def __init__(self, node: str, reason: str, log_tail: list[str]) -> None:
        self.node = node
        self.reason = reason
        self.log_tail = log_tail
        tail = "\n".join(f"    {line}" for line in log_tail) or "    (no output)"
        super().__init__(f"node {node} {reason}; last log lines:\n{tail}")


def describe_split(info: dict[str, Any]) -> str:
    """One line saying which node holds which layers, from the root's ``/info``."""
    parts = []
    for entry in info.get("layer_split") or []:
        if not isinstance(entry, dict):
            continue
        where = f"{entry.get('node')} ({entry.get('device')})"
        if entry.get("n_layers"):
            where += f": layers {entry.get('first_layer')}-{entry.get('last_layer')}"
        if entry.get("output_layer"):
            where += " + output"
        parts.append(where)
    return ", ".join(parts) or "no layer split reported"


@dataclass(frozen=True)
class NodeInfo:
    name: str  # "root", "worker1", ...
    role: str  # "root" | "worker"
    address: str  # where the node listens (host:port)


class Cluster(ABC):
    """One running root + workers + link proxies."""

    spec: ClusterSpec
    #: Milliseconds from the first node start until the root answered healthy.
    startup_ms: float | None = None
    #: What the root reported about itself (engine version, layer split, load_ms...).
    root_info: dict[str, Any]

    def __init__(self, spec: ClusterSpec, work_dir: Path, model_path: Path) -> None:
        self.spec = spec
        self.work_dir = work_dir
        self.model_path = model_path
        self.root_info = {}
        self._client: RootClient | None = None

    @abstractmethod
    def start(self, progress: Progress | None = None) -> None:
        """Start workers, proxies and the root; return once the root is healthy.

        On failure everything already started is torn down before raising.
        """

    @property
    def client(self) -> RootClient:
        """The root API client (set by :meth:`start`)."""
        if self._client is None:
            raise ClusterError("cluster is not started")
        return self._client

    @abstractmethod
    def nodes(self) -> list[NodeInfo]: ...

    @abstractmethod
    def set_latency(self, profile: LatencyProfile) -> None:
        """Change the profile of every link without dropping connections."""

    @abstractmethod
    def link_stats(self) -> dict[str, LinkStats]:
        """Counters of each link proxy, keyed by link name."""

    @abstractmethod
    def sample_sources(self) -> list[SampleSource]:
        """Things the node sampler can read CPU/memory/network from, one per node."""

    @abstractmethod
    def check_alive(self) -> None:
        """Raise ``NodeFailure`` naming the first node that is no longer running."""

    @abstractmethod
    def node_logs(self, lines: int = 20) -> dict[str, list[str]]:
        """The last ``lines`` log lines of every node."""

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Backend facts stored with each run (image ids, container limits...)."""

    @abstractmethod
    def close(self) -> None:
        """Stop everything this cluster started. Idempotent."""

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
