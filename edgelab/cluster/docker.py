"""The Docker backend: every node is a resource-limited container on its own network.

Each cluster gets a user-defined bridge network (so containers find each other by
name) and one container per node:

* ``worker_image`` containers run :mod:`edgelab.cluster.worker_node` — the engine
  worker on the container's loopback, the link proxy in front of it, and the link's
  control endpoint — so every root<->worker byte crosses that worker's proxy;
* one ``root_image`` container runs the engine's root with the models directory
  mounted read-only, its workers given as ``<worker container>:<proxy port>``.

Host files an engine needs beyond the images (distributed-llama's user-built
binary, a tokenizer outside the models directory) come from
:meth:`~edgelab.engines.base.Engine.for_containers` and are mounted read-only
into the containers of the roles that need them.

CPU (``--threads`` or an explicit ``cpus`` option) and memory (``mem`` option)
limits make a container behave like a small device. The host reaches the root
API and the link controls at the containers' addresses on the cluster network;
a host that itself runs in a container (the compose ``worker`` service) names
itself in ``EDGELAB_DOCKER_SELF`` (``Settings.docker_self``) and is attached to each
cluster network.

Everything is labelled (see :mod:`edgelab.cluster.dockerapi`) and removed in
:meth:`DockerCluster.close`; leftovers of a process that died without closing are
removed by :func:`reap_orphans`.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import psutil

from edgelab.cluster.base import (
    Activity,
    Cluster,
    ClusterError,
    NodeActivity,
    NodeFailure,
    NodeInfo,
    Progress,
    Watch,
)
from edgelab.cluster.dockerapi import (
    LABEL_CLUSTER,
    LABEL_NODE,
    LABEL_RUN,
    DockerAPI,
    DockerAPIError,
    DockerUnavailable,
    owner_labels,
)
from edgelab.cluster.spec import ClusterSpec
from edgelab.cluster.worker_node import CONTROL_PORT, PROXY_PORT
from edgelab.engines import get_engine
from edgelab.engines.base import ContainerFile, Engine, EngineError
from edgelab.engines.client import RootClient
from edgelab.metrics.sampler import Reading, SampleSource
from edgelab.netem.control import ControlClient, ControlError
from edgelab.netem.loss import LinkDrops, LinkRetransmits, apply_loss, loss_problem
from edgelab.netem.profile import LatencyProfile
from edgelab.netem.proxy import LinkStats
from edgelab.netem.trace import ChunkTrace
from edgelab.settings import Settings
from edgelab.topology.spec import Topology

ROOT_PORT = 8080
MODELS_MOUNT = "/models"
TRACE_MOUNT = "/edgelab/link-trace.csv"
WORKER_START_TIMEOUT_S = 60.0
ROOT_START_TIMEOUT_S = 300.0
_MEM_RE = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)

log = logging.getLogger(__name__)


def reap_orphans() -> list[str]:
    """Remove edgelab containers/networks whose owning process is gone.

    Meant for a Celery worker's start and the end of each task; a missing Docker
    engine is not an error here (the local backend does not need one).
    """
    try:
        api = DockerAPI.connect(timeout_s=10)
    except DockerUnavailable:
        return []
    try:
        return api.reap_orphans()
    finally:
        api.close()


class DockerStatsSource(SampleSource):
    """One container read through Docker's stats stream.

    The daemon produces about one stats entry per second; a background thread
    keeps the newest, so the sampler's ~200 ms reads repeat it in between. CPU %
    is over the daemon's own interval (100 = one core busy), memory is usage
    minus reclaimable page cache (what ``docker stats`` shows), network bytes are
    the container's interface counters since it started.
    """

    def __init__(self, name: str, role: str, api: DockerAPI, container_id: str) -> None:
        super().__init__(name, role)
        self._api = api
        self._container_id = container_id
        self._latest: Reading | None = None
        #: Cumulative CPU seconds and storage bytes of the container (the newest
        #: entry), for the watchdog.
        self.cpu_s: float | None = None
        self.io_bytes: int | None = None
        self._gone = False
        self._thread = threading.Thread(
            target=self._follow, name=f"docker-stats-{name}", daemon=True
        )
        self._thread.start()

    def _follow(self) -> None:
        for entry in self._api.stats_stream(self._container_id):
            total = ((entry.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
            if total is not None:
                self.cpu_s = float(total) / 1e9
            blkio = (entry.get("blkio_stats") or {}).get("io_service_bytes_recursive")
            if isinstance(blkio, list):
                self.io_bytes = sum(
                    int(e.get("value", 0))
                    for e in blkio
                    if str(e.get("op", "")).lower() in ("read", "write")
                )
            reading = parse_stats(entry)
            if reading is not None:
                self._latest = reading
        self._gone = True

    def read(self) -> Reading | None:
        if self._gone:
            return None
        return self._latest


def _any_stopped(pid: int) -> bool:
    """Whether the container's main process (host ``pid``) or a child is stopped (state T)."""
    if pid <= 0:
        return False
    try:
        main = psutil.Process(pid)
        procs = [main, *main.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    for proc in procs:
        try:
            if proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return False


def parse_stats(entry: dict[str, Any]) -> Reading | None:
    """A :class:`Reading` from one Docker stats entry (cgroup v1 or v2), or ``None``."""
    cpu = entry.get("cpu_stats") or {}
    pre = entry.get("precpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage")
    system, pre_system = cpu.get("system_cpu_usage"), pre.get("system_cpu_usage")
    if total is None or pre_total is None or not system or not pre_system:
        return None  # the first entry has no previous interval
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [1])
    system_delta = system - pre_system
    cpu_percent = (total - pre_total) / system_delta * online * 100.0 if system_delta > 0 else 0.0
    mem = entry.get("memory_stats") or {}
    mstats = mem.get("stats") or {}
    cache = mstats.get("total_inactive_file", mstats.get("inactive_file", 0))
    rss = max(0, int(mem.get("usage", 0)) - int(cache))
    networks = entry.get("networks") or {}
    rx = sum(int(n.get("rx_bytes", 0)) for n in networks.values())
    tx = sum(int(n.get("tx_bytes", 0)) for n in networks.values())
    return Reading(cpu_percent=cpu_percent, rss_bytes=rss, net_rx_bytes=rx, net_tx_bytes=tx)


class _Container:
    def __init__(self, name: str, role: str, container_name: str) -> None:
        self.name = name  # node name: root, worker1, ...
        self.role = role
        self.container_name = container_name
        self.id: str | None = None
        self.ip: str | None = None
        self.created_at = 0.0
        self.ready_ms: float | None = None
        self.pid = 0  # the main process as the host sees it (0: unknown)


class DockerCluster(Cluster):
    """A cluster of containers; see the module docstring.

    ``run`` is the value of the ``edgelab.run`` label (the run or sweep the
    cluster was started for); it defaults to the cluster id. ``engine``
    defaults to ``get_engine(spec.engine)``. ``settings`` gives the images and
    how edgelab itself reaches the engine (``docker_self``, ``docker_models_source``,
    ``netem_splice`` for the worker's proxy); default: ``Settings()``.
    """

    def __init__(
        self,
        spec: ClusterSpec,
        work_dir: Path,
        model_path: Path,
        *,
        run: str | None = None,
        engine: Engine | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__(spec, work_dir, model_path)
        self.settings = settings or Settings()
        self.engine = engine or get_engine(spec.engine, options=spec.options)
        self._files: list[ContainerFile] = []
        #: Per worker: its link's retransmission counter (kept so that the root's
        #: sockets that closed stay counted; see :class:`LinkRetransmits`).
        self._retransmits: dict[str, LinkRetransmits] = {}
        #: Per worker: what its link's loss rules dropped, made once the cluster has
        #: loss on any link (a lossless cluster runs no nft per read).
        self._drops: dict[str, LinkDrops] = {}
        self.cluster_id = f"{uuid.uuid4().hex[:10]}"
        self.run = run or self.cluster_id
        # The server's images (Settings), never a request's: options cannot name one.
        self.root_image, self.worker_image = self.settings.root_image, self.settings.worker_image
        #: Per node: CPU limit (cores) and memory limit, from the node's device, else
        #: the cluster-wide ``cpus``/``mem`` options, else the node's threads / no limit.
        self.limits: dict[str, tuple[float, str | None]] = {}
        for node in ["root", *(spec.worker_name(i) for i in range(1, spec.nodes))]:
            device = spec.device(node)
            cpus = float(
                device.cpus
                if device.cpus is not None
                else spec.options.get("cpus", spec.threads_of(node))
            )
            mem = device.mem if device.mem is not None else spec.options.get("mem")
            mem = None if mem in (None, "") else str(mem)
            if cpus <= 0:
                raise ClusterError(f"{node}: cpus must be > 0, got {cpus:g}")
            if mem is not None and not _MEM_RE.match(mem):
                raise ClusterError(
                    f"{node}: mem must look like 512m, 2g or a byte count, got {mem!r}"
                )
            self.limits[node] = (cpus, mem)
        # The cluster-wide values (the root's), as older code and messages use them.
        self.cpus, self.mem = self.limits["root"]
        self._api: DockerAPI | None = None
        self._network_id: str | None = None
        self._self_attached: str | None = None
        self._workers: list[_Container] = []
        self._root: _Container | None = None
        self._controls: dict[str, ControlClient] = {}
        self._sources: list[DockerStatsSource] = []
        self._image_ids: dict[str, str] = {}
        self._final_logs: dict[str, list[str]] = {}
        self._closed = False
        self._watch: Watch = lambda: None

    # --- lifecycle ----------------------------------------------------------

    @property
    def network_name(self) -> str:
        return f"edgelab-{self.cluster_id}"

    def _labels(self, node: str | None = None) -> dict[str, str]:
        labels = {LABEL_CLUSTER: self.cluster_id, LABEL_RUN: self.run, **owner_labels()}
        if node is not None:
            labels[LABEL_NODE] = node
        return labels

    def start(self, progress: Progress | None = None, watch: Watch | None = None) -> None:
        say = progress or (lambda _msg: None)
        self._watch = watch or (lambda: None)
        if not self.model_path.is_file():
            raise ClusterError(f"model file {self.model_path} does not exist")
        try:
            self._api = DockerAPI.connect()
        except DockerUnavailable as exc:
            raise ClusterError(str(exc)) from exc
        t0 = time.monotonic()
        try:
            self._start(self._api, say)
        except BaseException as exc:
            if isinstance(exc, ClusterError) and exc.node_logs is None:
                exc.node_logs = self.node_logs()
            self.close()
            raise
        self.startup_ms = (time.monotonic() - t0) * 1000

    def _mounts(self, role: str) -> tuple[dict[str, str], dict[str, str]]:
        """Read-only mounts (host source -> container path) and environment for ``role``."""
        files = [f for f in self._files if role in f.roles]
        volumes = {str(f.source): str(f.target) for f in files}
        env = {f.env: str(f.target) for f in files if f.env}
        return volumes, env

    def _start(self, api: DockerAPI, say: Progress) -> None:
        spec = self.spec
        model_in_container = PurePosixPath(MODELS_MOUNT) / self.model_path.name
        try:
            # Before any container: a missing binary or tokenizer fails at once.
            inside, self._files = self.engine.for_containers(self.model_path, model_in_container)
        except EngineError as exc:
            raise ClusterError(str(exc)) from exc
        for file in self._files:
            say(f"mounting {file.source} at {file.target} (read-only, {'+'.join(file.roles)})")
        reaped = api.reap_orphans()
        if reaped:
            say(f"removed leftovers of dead edgelab processes: {', '.join(reaped)}")
        for role, image in (("root", self.root_image), ("worker", self.worker_image)):
            if role == "worker" and spec.workers == 0:
                continue
            image_id = api.image_id(image)
            if image_id is None:
                raise ClusterError(
                    f"Docker image {image} is missing; build it with `edgelab images build` "
                    "(here: `edgelab images build --base-image edgelab-base:bookworm`)"
                )
            self._image_ids[role] = image_id

        self._network_id = api.create_network(self.network_name, self._labels())
        self_container = self.settings.docker_self
        if self_container:
            api.connect_container(self._network_id, self_container)
            self._self_attached = self_container

        worker_volumes, worker_env = self._mounts("worker")
        worker_env = {**self.settings.node_env(), **worker_env}
        for i in range(1, spec.nodes):
            node = _Container(spec.worker_name(i), "worker", f"{self.network_name}-worker{i}")
            cpus, mem = self.limits[node.name]
            say(
                f"starting {node.name} container {node.container_name} "
                f"({self._describe(node.name)})"
            )
            command = [
                "--name", node.name,
                "--link", spec.link_name(i),
                "--engine", spec.engine,
                "--threads", str(spec.threads_of(node.name)),
                "--latency", json.dumps(spec.link_profile(i).to_dict()),
            ]  # fmt: skip
            queue_bytes = spec.link(i).queue_bytes
            if queue_bytes is not None:
                command += ["--queue-bytes", str(queue_bytes)]
            volumes = dict(worker_volumes)
            trace = spec.link(i).trace
            if trace is not None:
                # The worker's own proxy replays it: the file is mounted read-only.
                volumes[trace] = TRACE_MOUNT
                command += ["--trace", TRACE_MOUNT]
            self._watch()
            node.created_at = time.monotonic()
            node.id = api.run_container(
                image=self.worker_image,
                name=node.container_name,
                command=command,
                network_id=self._network_id,
                labels=self._labels(node.name),
                nano_cpus=int(cpus * 1e9),
                mem_limit=mem,
                volumes=volumes,
                environment=worker_env,
            )
            node.ip = api.ip_address(node.id, self._network_id)
            self._workers.append(node)
            # Follow stats from the start: Docker's first entry has no CPU interval.
            self._sources.append(DockerStatsSource(node.name, node.role, api, node.id))
            self._controls[spec.link_name(i)] = ControlClient(node.ip, CONTROL_PORT)

        for i, node in enumerate(self._workers, start=1):
            self._wait_worker(node, self._controls[spec.link_name(i)])
            say(f"{node.name} ready at {node.ip} in {node.ready_ms:.0f} ms")
            self._apply_loss(i, node, say)

        root = _Container("root", "root", f"{self.network_name}-root")
        root_volumes, root_env = self._mounts("root")
        launch = inside.root_launch(
            "0.0.0.0",
            ROOT_PORT,
            Path(model_in_container),
            [f"{w.container_name}:{PROXY_PORT}" for w in self._workers],
            spec.threads_of("root"),
        )
        say(
            f"starting root container {root.container_name} ({self._describe('root')}), "
            f"loading {spec.model}"
        )
        root.created_at = time.monotonic()
        root.id = api.run_container(
            image=self.root_image,
            name=root.container_name,
            command=launch.argv,
            network_id=self._network_id,
            labels=self._labels("root"),
            nano_cpus=int(self.limits["root"][0] * 1e9),
            mem_limit=self.limits["root"][1],
            volumes={self._models_source(): MODELS_MOUNT, **root_volumes},
            environment=root_env,
        )
        self._root = root
        if not self.settings.docker_self:
            root_state = api.state(root.id)
            root.pid = root_state.pid if root_state is not None else 0
        self._sources.insert(0, DockerStatsSource(root.name, root.role, api, root.id))
        root.ip = api.ip_address(root.id, self._network_id)
        self._client = RootClient(f"http://{root.ip}:{ROOT_PORT}")
        try:
            self._client.wait_healthy(
                ROOT_START_TIMEOUT_S, is_alive=self._root_alive, on_poll=self._watch
            )
        except EngineError as exc:
            self.check_alive()  # names a node that died (an OOM kill, a crash) if there is one
            raise ClusterError(f"root did not become healthy: {exc}") from exc
        root.ready_ms = (time.monotonic() - root.created_at) * 1000
        self.root_info = self._client.info()
        say(f"root ready at {root.ip} in {root.ready_ms:.0f} ms")

    def _apply_loss(self, index: int, node: _Container, say: Progress) -> None:
        """Note the worker's host pid (its namespace's TCP counters) and, if its link
        has loss, drop packets on the link's port inside that namespace."""
        assert self._api is not None
        assert node.id is not None
        if self.settings.docker_self:
            pid = 0  # our /proc is not the host's: no namespace counters from here
        else:
            state = self._api.state(node.id)
            pid = state.pid if state is not None else 0
        node.pid = pid
        loss = self.spec.link(index).loss_pct
        if loss:
            self._set_loss(node, loss)
            say(f"{node.name}: {loss:g} % packet loss each way on its link (nftables)")

    def _set_loss(self, node: _Container, loss: float) -> None:
        """Replace the loss rules in ``node``'s namespace (0: remove them)."""
        problem = loss_problem() or (
            None
            if node.pid
            else "edgelab runs in a container and cannot enter the worker's namespace"
        )
        if problem is not None:
            raise ClusterError(f"{node.name}: {problem}")
        try:
            apply_loss(node.pid, loss, PROXY_PORT)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise ClusterError(f"{node.name}: cannot apply packet loss: {exc}") from exc

    def _describe(self, node: str) -> str:
        cpus, mem = self.limits[node]
        text = f"{self.spec.threads_of(node)} threads, {cpus:g} CPU"
        return text + (f", {mem} memory" if mem else "")

    def _models_source(self) -> str:
        """What to mount at /models: the model's directory as the Docker engine sees it.

        When edgelab itself runs in a container, the engine cannot see our paths;
        ``Settings.docker_models_source`` (``EDGELAB_DOCKER_MODELS_SOURCE``) then names
        the volume (or host path) that holds the same models directory.
        """
        return self.settings.docker_models_source or str(self.model_path.resolve().parent)

    def _root_alive(self) -> bool:
        assert self._api is not None
        assert self._root is not None
        assert self._root.id is not None
        state = self._api.state(self._root.id)
        return state is not None and state.running

    def _wait_worker(self, node: _Container, control: ControlClient) -> None:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        last = ""
        while True:
            self._check_node(node)
            self._watch()
            try:
                control.health()
            except ControlError as exc:
                last = str(exc)
            else:
                node.ready_ms = (time.monotonic() - node.created_at) * 1000
                return
            if time.monotonic() >= deadline:
                raise NodeFailure(
                    node.name,
                    f"did not become ready within {WORKER_START_TIMEOUT_S:g} s ({last})",
                    self._logs(node, 20),
                )
            time.sleep(0.1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        api = self._api
        if api is None:
            return
        try:
            for node in self._all_nodes():
                if node.id is not None:
                    self._final_logs[node.name] = api.logs(node.id, 50)
            for node in self._all_nodes():
                if node.id is not None:
                    if self.broken is not None:
                        # A forced removal of a container with a stopped process
                        # waited ~10 s here; an explicit SIGKILL first takes ~0.1 s.
                        api.kill(node.id)
                    api.remove_container(node.id)
        finally:
            try:
                if self._network_id is not None:
                    if self._self_attached:
                        api.disconnect_container(self._network_id, self._self_attached)
                    api.remove_network(self._network_id)
            finally:
                api.close()

    # --- observation --------------------------------------------------------

    def _all_nodes(self) -> list[_Container]:
        return [*self._workers, *([self._root] if self._root is not None else [])]

    def nodes(self) -> list[NodeInfo]:
        infos = []
        if self._root is not None:
            infos.append(NodeInfo("root", "root", f"{self._root.ip}:{ROOT_PORT}"))
        infos.extend(NodeInfo(w.name, "worker", f"{w.ip}:{PROXY_PORT}") for w in self._workers)
        return infos

    def set_latency(self, profile: LatencyProfile, topology: Topology | None = None) -> None:
        """New link profiles through each worker's control, and a link whose packet loss
        changed gets its nftables rules replaced in the worker's namespace: every Docker
        worker has its own from the start, so loss never needs a cluster of its own
        (``WARM_LOSS_BACKENDS``) and a sweep over loss loads its model once."""
        before = [self.spec.link(i).loss_pct for i in range(1, self.spec.nodes)]
        self.spec = replace(
            self.spec,
            latency=profile,
            topology=self.spec.topology if topology is None else topology,
        )
        for i in range(1, self.spec.nodes):
            try:
                self._controls[self.spec.link_name(i)].set_profile(self.spec.link_profile(i))
            except ControlError as exc:
                self.check_alive()
                raise ClusterError(str(exc)) from exc
        for i, (node, old) in enumerate(zip(self._workers, before, strict=True), start=1):
            loss = self.spec.link(i).loss_pct
            if loss != old:
                self._set_loss(node, loss)

    def link_stats(self) -> dict[str, LinkStats]:
        if self.broken is not None:
            # A dead or hung container's control would only time out; say why at once.
            raise ClusterError(f"link counters not read: node {self.broken.node} failed")
        stats = {}
        for (name, control), node in zip(self._controls.items(), self._workers, strict=False):
            try:
                stats[name] = control.stats()
            except ControlError as exc:
                self.check_alive()
                raise ClusterError(str(exc)) from exc
            if node.pid:
                # Both ends of the link: the worker's namespace, and the root's sockets
                # to this worker's proxy (the root's namespace serves every link).
                counter = self._retransmits.get(name)
                if counter is None or counter.worker_pid != node.pid:
                    root = self._root
                    peer = (
                        (root.pid, node.ip, PROXY_PORT)
                        if root is not None and root.pid and node.ip
                        else None
                    )
                    counter = LinkRetransmits(node.pid, peer)
                    self._retransmits[name] = counter
                stats[name].retransmits = counter.read()
                drops = self._drops.get(name)
                if drops is None or drops.namespace != node.pid:
                    if not (self._drops or self._lossy()):
                        continue
                    drops = self._drops[name] = LinkDrops(node.pid)
                stats[name].dropped_packets = drops.read()
        return stats

    def _lossy(self) -> bool:
        """Whether any link of the cluster has loss (then every link's drops are read:
        a link without rules dropped 0)."""
        return any(self.spec.link(i).loss_pct for i in range(1, self.spec.nodes))

    def root_clients(self) -> set[str]:
        # Each node is a container with its own address on the cluster network.
        return {self._root.ip} if self._root is not None and self._root.ip else set()

    def link_chunks(self, since: float) -> dict[str, ChunkTrace]:
        if self.broken is not None:
            raise ClusterError(f"link traces not read: node {self.broken.node} failed")
        traces = {}
        for name, control in self._controls.items():
            try:
                traces[name] = control.chunks_since(since)
            except ControlError as exc:
                self.check_alive()  # a dead node fails the run as usual
                # A worker image from before chunk traces (its control answers 404):
                # no per-token timing for this run; the byte counters still hold.
                log.warning("link %s has no chunk trace (%s); rebuild the images", name, exc)
                return {}
        return traces

    def sample_sources(self) -> list[SampleSource]:
        return list(self._sources)

    def activity(self) -> Activity:
        """Like the base, but link by link: a frozen container's control does not
        answer, and that is evidence about that one worker.

        The watchdog polls this while a cancel waits, so a control that does not
        answer gets 1 s, and one of a paused or dead container is not asked at all.
        """
        nodes = self.node_activity()
        links: dict[str, LinkStats] = {}
        errors: dict[str, str] = {}
        for i, worker in enumerate(self._workers, start=1):
            name = self.spec.link_name(i)
            control = self._controls.get(name)
            if control is None or not worker.ready_ms:
                continue  # still starting: no control endpoint yet, not a hang
            state = nodes.get(worker.name)
            if state is not None and state.state in ("paused", "dead"):
                errors[name] = f"its container is {state.state}"
                continue
            try:
                links[name] = ControlClient(control.host, control.port, timeout_s=1.0).stats()
            except ControlError as exc:
                errors[name] = str(exc)
        return Activity(nodes, links, errors)

    def node_activity(self) -> dict[str, NodeActivity]:
        """Container state; processes stopped inside it are seen through the host pid
        when this process shares the host's pid namespace (not from inside compose)."""
        if self._api is None or self._closed:
            return {}
        cpu = {src.name: src.cpu_s for src in self._sources}
        io = {src.name: src.io_bytes for src in self._sources}
        out: dict[str, NodeActivity] = {}
        for node in self._all_nodes():
            if node.id is None:
                continue
            state = self._api.state(node.id)
            if state is None or not (state.running or state.status == "paused"):
                kind = "dead"
            elif state.status == "paused":
                kind = "paused"
            else:
                kind = "stopped" if _any_stopped(state.pid) else "active"
            out[node.name] = NodeActivity(
                node.name, node.role, kind, cpu.get(node.name), io.get(node.name)
            )
        return out

    def _logs(self, node: _Container, lines: int) -> list[str]:
        if self._api is None or node.id is None or self._closed:
            return self._final_logs.get(node.name, [])[-lines:]
        return self._api.logs(node.id, lines)

    def _check_node(self, node: _Container) -> None:
        assert self._api is not None
        assert node.id is not None
        state = self._api.state(node.id)
        if state is not None and state.running:
            return
        if state is None:
            reason = f"is gone (container {node.container_name} was removed)"
        elif state.oom_killed:
            reason = (
                f"ran out of memory: its container's memory limit {self.limits[node.name][1]} "
                "is too small "
                f"for model {self.spec.model} (Docker reports OOMKilled, exit code "
                f"{state.exit_code}); raise the mem option"
            )
        elif state.exit_code == 137:
            reason = f"was killed (container {node.container_name}, SIGKILL, exit code 137)"
        else:
            detail = f": {state.error}" if state.error else ""
            reason = (
                f"stopped (container {node.container_name} is {state.status}, "
                f"exit code {state.exit_code}{detail})"
            )
        raise NodeFailure(node.name, reason, self._logs(node, 20))

    def check_alive(self) -> None:
        """Raise ``NodeFailure`` for the first dead node, workers first.

        Workers are checked before the root because a root usually dies *because*
        a worker vanished (ggml's RPC client aborts), and the worker is the cause.
        """
        if self._api is None or self._closed:
            return
        for node in self._workers:
            self._check_node(node)
        if self._root is not None:
            self._check_node(self._root)

    def node_logs(self, lines: int = 20) -> dict[str, list[str]]:
        return {node.name: self._logs(node, lines) for node in self._all_nodes()}

    def node_limits(self) -> dict[str, dict[str, Any]]:
        """Per container what Docker enforces (read back by inspect), with its threads."""
        api = self._api
        out: dict[str, dict[str, Any]] = {}
        for node in self._all_nodes():
            applied: dict[str, Any] = {}
            if api is not None and node.id is not None and not self._closed:
                applied = api.limits(node.id)
            nano = applied.get("nano_cpus")
            out[node.name] = {
                "threads": self.spec.threads_of(node.name),
                "cpus": nano / 1e9 if nano else None,
                "mem": applied.get("memory_bytes"),
                "container": node.container_name,
            }
        return out

    def provenance(self) -> dict[str, Any]:
        api = self._api
        containers: dict[str, Any] = {}
        for node in self._all_nodes():
            entry: dict[str, Any] = {"container": node.container_name, "ready_ms": node.ready_ms}
            if api is not None and node.id is not None and not self._closed:
                entry.update(api.limits(node.id))
            containers[node.name] = entry
        return {
            "backend": "docker",
            "docker_version": api.version() if api is not None and not self._closed else None,
            "images": {
                role: {"name": self.root_image if role == "root" else self.worker_image, "id": i}
                for role, i in self._image_ids.items()
            },
            "limits": {"cpus": self.cpus, "mem": self.mem},
            "node_limits": self.node_limits(),
            "network": self.network_name,
            "containers": containers,
            "mounts": [
                {"source": str(f.source), "target": str(f.target), "roles": list(f.roles)}
                for f in self._files
            ],
        }


__all__ = ["DockerAPIError", "DockerCluster", "DockerStatsSource", "parse_stats", "reap_orphans"]
