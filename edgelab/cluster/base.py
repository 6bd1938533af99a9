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
from edgelab.netem.trace import ChunkTrace
from edgelab.topology.spec import Topology

Progress = Callable[[str], None]
#: Called about every 0.1-0.5 s while a start waits (for a node, for the model
#: load); it may raise (a cancel, a stall) to abort the start, which then tears
#: down everything already started and re-raises.
Watch = Callable[[], None]


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
class NodeActivity:
    """What one node is doing right now, as the watchdog sees it.

    ``state`` is ``active`` (alive and schedulable; whether it makes progress is
    what ``cpu_s``/``io_bytes`` tell), ``stopped`` (a process in state T: SIGSTOP, a
    debugger), ``paused`` (a frozen container), ``dead`` (exited) or ``unknown``
    (a word apart from the run states of :class:`edgelab.store.RunStatus`);
    ``cpu_s`` is the node's cumulative CPU time and ``io_bytes`` its cumulative
    storage reads and writes (a model loading from a slow disk uses little CPU);
    either is None where it cannot be read.
    """

    name: str
    role: str
    state: str
    cpu_s: float | None = None
    io_bytes: int | None = None


@dataclass(frozen=True)
class Activity:
    """One snapshot of a cluster's nodes and links for the stall watchdog.

    ``link_errors`` holds links whose counters could not be read (a Docker
    worker's control endpoint that does not answer: its container is frozen).
    """

    nodes: dict[str, NodeActivity]
    links: dict[str, LinkStats]
    link_errors: dict[str, str]


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
    #: Runs this cluster has served (started generating) so far. The run that
    #: finds 0 here is the one the cluster was started for: it alone waited for
    #: the start-up, so only it reports the start-up as its ``load_ms`` and is
    #: charged the start-up's link traffic (weights sent to workers) as load bytes.
    runs_served: int = 0

    def __init__(self, spec: ClusterSpec, work_dir: Path, model_path: Path) -> None:
        self.spec = spec
        self.work_dir = work_dir
        self.model_path = model_path
        self.root_info = {}
        self._client: RootClient | None = None
        #: Set when a node died or went silent (by the executor, the stall watchdog):
        #: the cluster must not serve another run, even if every node process still
        #: exists, and controls of its links are not asked again (they would only
        #: time out).
        self.broken: NodeFailure | None = None
        #: A run on this cluster failed: keep its work dir (node logs) when it closes.
        self.keep_work_dir = False

    @abstractmethod
    def start(self, progress: Progress | None = None, watch: Watch | None = None) -> None:
        """Start workers, proxies and the root; return once the root is healthy.

        ``watch`` is polled while the start waits (see :data:`Watch`). On failure
        (or when ``watch`` raises) everything already started is torn down before
        raising.
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
    def set_latency(self, profile: LatencyProfile, topology: Topology | None = None) -> None:
        """Change the profile of every link without dropping connections.

        ``profile`` is the cluster-wide latency; ``topology`` (same devices and link
        features, see ``ClusterSpec.topology_key``) gives links their own profiles, and
        their packet loss where the backend can change it on a warm cluster.
        """

    @abstractmethod
    def link_stats(self) -> dict[str, LinkStats]:
        """Counters of each link proxy, keyed by link name."""

    def link_chunks(self, since: float) -> dict[str, ChunkTrace]:
        """Per link, the chunks that reached its proxy at or after ``since``
        (``time.monotonic()`` seconds); empty where a backend cannot tell."""
        return {}

    def root_clients(self) -> set[str]:
        """Addresses (``host:port``, or a bare ``host`` meaning any port) from which the
        root's own processes connect to the link proxies; empty if unknown.

        Worker-to-worker traffic (dllama's mesh) crosses the proxies too; this tells
        the two apart. Asked while a generation runs, when the root's connections exist.
        """
        return set()

    @abstractmethod
    def sample_sources(self) -> list[SampleSource]:
        """Things the node sampler can read CPU/memory/network from, one per node."""

    def activity(self) -> Activity:
        """A snapshot for the stall watchdog: node states and CPU, link counters.

        Backends override :meth:`node_activity`; link counters come from
        :meth:`link_stats` (all or nothing here; a backend whose links can fail
        one by one overrides this).
        """
        try:
            links, errors = self.link_stats(), {}
        except ClusterError as exc:
            links, errors = {}, {"links": str(exc)}
        return Activity(self.node_activity(), links, errors)

    def node_activity(self) -> dict[str, NodeActivity]:
        """State and CPU time of every node started so far (none by default)."""
        return {}

    @abstractmethod
    def check_alive(self) -> None:
        """Raise ``NodeFailure`` naming the first node that is no longer running."""

    @abstractmethod
    def node_logs(self, lines: int = 20) -> dict[str, list[str]]:
        """The last ``lines`` log lines of every node."""

    def node_limits(self) -> dict[str, dict[str, Any]]:
        """Per node what the backend actually applied: ``threads``, ``cpus`` (cores of
        CPU quota, None = unlimited), ``mem`` (bytes, None = unlimited)."""
        return {}

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
