"""The local backend: every node is a process on this host, every link an in-process proxy.

Node processes are started through :mod:`edgelab.cluster.launch`
(``PR_SET_PDEATHSIG``) so that they die with the process that started them even
if it is killed with SIGKILL (a Celery worker ``kill -9``-ed mid-run must not
leave a loaded model behind), and they are also terminated explicitly in
:meth:`LocalCluster.close`. Linux ties the death signal to the *thread* that
forked, so start a cluster from a thread that outlives it (the main thread of
the CLI or of a Celery worker process).

Nodes share the host's network namespace (workers and proxies on loopback) unless a
link has packet loss: then every worker runs in a namespace of its own behind a
veth pair, its proxy on the host end (:mod:`edgelab.topology.netns` says why every
worker), and its link's retransmissions are read from that namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

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
    describe_split,
)
from edgelab.cluster.spec import ClusterSpec, link_profile
from edgelab.engines import Engine, get_engine
from edgelab.engines.base import EngineError
from edgelab.engines.client import RootClient
from edgelab.metrics.sampler import ProcessSource, SampleSource
from edgelab.netem.loss import LinkDrops, LinkRetransmits
from edgelab.netem.profile import LatencyProfile
from edgelab.netem.proxy import LinkProxy, LinkStats
from edgelab.netem.replay import DelayTrace, load_delay_trace
from edgelab.netem.trace import ChunkTrace
from edgelab.topology.cgroups import (
    NodeGroup,
    cpu_quota_problem,
    memory_limit_problem,
    reap_groups,
)
from edgelab.topology.netns import (
    NodeNamespace,
    netns_problem,
    pick_subnet,
    reap_namespaces,
    subnet_lock,
    used_networks,
)
from edgelab.topology.spec import Topology, mem_bytes

__all__ = ["LocalCluster", "free_port", "link_profile", "tail"]

LOOPBACK = "127.0.0.1"
WORKER_START_TIMEOUT_S = 60.0
ROOT_START_TIMEOUT_S = 300.0


def free_port() -> int:
    """A loopback port that was free a moment ago (the node binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file (missing file: none)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return list(deque(data.splitlines(), maxlen=lines))


def _trace_of(path: str | None, node: str) -> DelayTrace | None:
    if path is None:
        return None
    try:
        return load_delay_trace(path)
    except ValueError as exc:  # checked before the run; the file changed since
        raise ClusterError(f"{node}: {exc}") from exc


class _Node:
    def __init__(self, name: str, role: str, address: str, log_path: Path) -> None:
        self.name = name
        self.role = role
        self.address = address
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_marker: str | None = None
        self._log: IO[bytes] | None = None
        self._ps: psutil.Process | None = None

    def start(
        self, argv: list[str], group: NodeGroup | None = None, netns: NodeNamespace | None = None
    ) -> None:
        self._log = self.log_path.open("ab")
        enter = [a for f in (group.procs_files if group else []) for a in ("--cgroup", str(f))]
        if netns is not None:
            enter += ["--netns", str(netns.path)]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgelab.cluster.launch",
                str(os.getpid()),
                *enter,
                "--",
                sys.executable,
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            # Own process group: a Ctrl-C in the terminal reaches only edgelab, which
            # then tears the cluster down in order instead of nodes dying at random.
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def activity(self) -> NodeActivity:
        """Process state and CPU time (the node and its children) for the watchdog."""
        if self.proc is None or self.proc.poll() is not None:
            return NodeActivity(self.name, self.role, "dead")
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.proc.pid)
            with self._ps.oneshot():
                status = self._ps.status()
                t = self._ps.cpu_times()
                io = self._ps.io_counters()
            cpu = t.user + t.system + t.children_user + t.children_system
            io_bytes = int(io.read_bytes + io.write_bytes)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return NodeActivity(self.name, self.role, "dead")
        except psutil.AccessDenied:
            return NodeActivity(self.name, self.role, "unknown")
        if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
            state = "stopped"
        elif status == psutil.STATUS_ZOMBIE:
            state = "dead"
        else:
            state = "active"
        return NodeActivity(self.name, self.role, state, cpu, io_bytes)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
                # A stopped (SIGSTOP'd, hung) node keeps SIGTERM pending until it
                # continues: wake it so it exits now, not after the SIGKILL grace.
                os.killpg(self.proc.pid, signal.SIGCONT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


class LocalCluster(Cluster):
    """Nodes as processes on this host; ``engine`` defaults to ``get_engine(spec.engine)``."""

    def __init__(
        self,
        spec: ClusterSpec,
        work_dir: Path,
        model_path: Path,
        engine: Engine | None = None,
        *,
        splice: bool = True,
    ) -> None:
        """``splice``: ``Settings.netem_splice``, how the link proxies pass bytes through."""
        super().__init__(spec, work_dir, model_path)
        self.engine = engine or get_engine(spec.engine, options=spec.options)
        self.splice = splice
        self._workers: list[_Node] = []
        self._root: _Node | None = None
        self._proxies: dict[str, LinkProxy] = {}
        self._groups: dict[str, NodeGroup] = {}
        self._netns: dict[str, NodeNamespace] = {}
        #: Per worker in a namespace: its link's retransmission counter (made when the
        #: worker starts, kept so closed sockets stay counted; read once it is inside).
        self._retransmits: dict[str, LinkRetransmits] = {}
        #: Per worker in a namespace: what its link's loss rules dropped.
        self._drops: dict[str, LinkDrops] = {}
        self._closed = False
        self._watch: Watch = lambda: None
        self._id = uuid.uuid4().hex[:8]
        # (root pid and each proxy's connection count, the root's addresses then)
        self._root_clients: tuple[tuple[int, tuple[int, ...]], set[str]] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self, progress: Progress | None = None, watch: Watch | None = None) -> None:
        say = progress or (lambda _msg: None)
        self._watch = watch or (lambda: None)
        try:
            self.engine.check_available()
        except EngineError as exc:
            raise ClusterError(str(exc)) from exc
        self.work_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            self._start(say)
        except BaseException as exc:
            if isinstance(exc, ClusterError) and exc.node_logs is None:
                exc.node_logs = self.node_logs()
            self.close()
            raise
        self.startup_ms = (time.monotonic() - t0) * 1000

    def _node_group(self, node: str, say: Progress) -> NodeGroup | None:
        """The cgroup(s) holding ``node``'s CPU quota and memory limit, if its device has any."""
        device = self.spec.device(node)
        if device.cpus is None and device.mem is None:
            return None
        for wanted, problem in (
            (device.cpus is not None, cpu_quota_problem()),
            (device.mem is not None, memory_limit_problem()),
        ):
            if wanted and problem is not None:
                what = "cpus needs a CPU quota" if device.cpus is not None else "mem needs a limit"
                raise ClusterError(
                    f"{node}: {what}, and {problem}; run edgelab as root with a writable "
                    "cgroup hierarchy, or use the Docker backend (--backend docker)"
                )
        if not self._groups:
            reaped = reap_groups()
            if reaped:
                say(f"removed cgroups of dead edgelab processes: {', '.join(reaped)}")
        mem = mem_bytes(device.mem) if device.mem is not None else None
        try:
            group = NodeGroup(self._id, node, device.cpus, mem)
        except OSError as exc:
            raise ClusterError(f"{node}: cannot create its cgroup: {exc}") from exc
        self._groups[node] = group
        return group

    def _make_namespaces(self, say: Progress) -> None:
        """A network namespace per worker when any link has loss (see
        :mod:`edgelab.topology.netns` for why every worker, not only the lossy ones)."""
        spec = self.spec
        lossy = [spec.worker_name(i) for i in range(1, spec.nodes) if spec.link(i).loss_pct]
        if not lossy:
            return
        problem = netns_problem()
        if problem is not None:
            raise ClusterError(
                f"{', '.join(lossy)}: packet loss needs a network namespace per local node, "
                f"and {problem}; use the Docker backend (--backend docker)"
            )
        reaped = reap_namespaces()
        if reaped:
            say(f"removed network namespaces of dead edgelab processes: {', '.join(reaped)}")
        with subnet_lock():
            try:
                subnet = pick_subnet(self._id, used_networks())
            except (OSError, ValueError) as exc:
                raise ClusterError(f"cannot list this host's routes: {exc}") from exc
            if subnet is None:
                raise ClusterError(
                    "no free /24 for the nodes' namespaces: every candidate in 10.128.0.0/9 "
                    "overlaps a route or address of this host"
                )
            for i in range(1, spec.nodes):
                name = spec.worker_name(i)
                try:
                    self._netns[name] = NodeNamespace(self._id, name, i, subnet)
                except (OSError, subprocess.SubprocessError) as exc:
                    raise ClusterError(f"{name}: cannot make its network namespace: {exc}") from exc
        say(
            f"workers in network namespaces of their own on {subnet} (veth pairs), "
            f"for the packet loss of {', '.join(lossy)}"
        )

    def _describe(self, node: str) -> str:
        threads = self.spec.threads_of(node)
        device = self.spec.device(node)
        text = f"{threads} threads"
        if device.cpus is not None:
            text += f", CPU quota {device.cpus:g} cores"
        if device.mem is not None:
            text += f", memory limit {device.mem}"
        return text

    def _start(self, say: Progress) -> None:
        spec = self.spec
        t0 = time.monotonic()
        endpoints: list[str] = []
        self._make_namespaces(say)
        for i in range(1, spec.nodes):
            name = spec.worker_name(i)
            port = free_port()
            netns = self._netns.get(name)
            host = netns.node_ip if netns is not None else LOOPBACK
            node = _Node(name, "worker", f"{host}:{port}", self.work_dir / f"{name}.log")
            launch = self.engine.worker_launch(host, port, spec.threads_of(name))
            loss = spec.link(i).loss_pct
            if netns is not None and loss:
                try:
                    netns.apply_loss(loss, port)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    raise ClusterError(f"{name}: cannot apply packet loss: {exc}") from exc
                say(f"{name}: {loss:g} % packet loss each way on port {port} (nftables)")
            where = f" in namespace {netns.name}" if netns is not None else ""
            say(f"starting {name} on {node.address}{where} ({self._describe(name)})")
            node.start(launch.argv, self._node_group(name, say), netns)
            node.ready_marker = launch.ready_marker
            if netns is not None and node.proc is not None:
                # Before the link's proxy connects: sockets to this address now are
                # an earlier cluster's (same subnet), not this link's.
                counter = LinkRetransmits(node.proc.pid, (None, host, port))
                counter.ignore_existing()
                self._retransmits[name] = counter
            self._workers.append(node)
        for i, node in enumerate(self._workers, start=1):
            self._wait_listening(node, node.ready_marker, WORKER_START_TIMEOUT_S)
            self._watch()
            host, port_text = node.address.rsplit(":", 1)
            # A worker in a namespace of its own has its proxy at the host's end of its
            # veth: the root reaches it there as it would on loopback, and so do the
            # other workers (dllama's mesh), through their own veths.
            netns = self._netns.get(node.name)
            proxy = LinkProxy(
                spec.link_name(i),
                upstream=(host, int(port_text)),
                profile=spec.link_profile(i),
                listen=(netns.host_ip if netns is not None else LOOPBACK, 0),
                queue_bytes=spec.link(i).queue_bytes,
                trace=_trace_of(spec.link(i).trace, node.name),
                splice=self.splice,
            )
            proxy.start()
            self._proxies[proxy.name] = proxy
            phost, pport = proxy.address
            endpoints.append(f"{phost}:{pport}")
            say(f"link {proxy.name}: {phost}:{pport} -> {node.address} ({spec.link(i).label})")

        root_port = free_port()
        self._root = _Node("root", "root", f"{LOOPBACK}:{root_port}", self.work_dir / "root.log")
        root_launch = self.engine.root_launch(
            LOOPBACK, root_port, self.model_path, endpoints, spec.threads_of("root")
        )
        say(
            f"starting root on {self._root.address} ({self._describe('root')}), "
            f"loading {self.model_path.name}"
        )
        self._root.start(root_launch.argv, self._node_group("root", say))
        self._client = RootClient(f"http://{self._root.address}")
        try:
            self._client.wait_healthy(
                ROOT_START_TIMEOUT_S, is_alive=self._all_alive, on_poll=self._watch
            )
        except EngineError as exc:
            self.check_alive()  # names the dead node if one died while loading
            raise NodeFailure("root", f"did not become healthy: {exc}", self.root_tail()) from exc
        self.check_alive()
        self.root_info = self._client.info()
        say(f"cluster ready in {(time.monotonic() - t0):.1f} s: {describe_split(self.root_info)}")

    def _all_alive(self) -> bool:
        return all(n.alive() for n in self._all_nodes())

    def _wait_listening(self, node: _Node, marker: str | None, timeout_s: float) -> None:
        """Wait for the engine's ready line in the node log, else for a TCP connect.

        The ready line is preferred: some workers (dllama) treat a probe connection
        that closes without a handshake as a fatal error.
        """
        host, port = node.address.rsplit(":", 1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not node.alive():
                raise NodeFailure(node.name, "exited while starting", tail(node.log_path, 20))
            self._watch()
            if marker is not None:
                if any(marker in line for line in tail(node.log_path, 50)):
                    return
            else:
                with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
                    return
            time.sleep(0.1)
        raise NodeFailure(
            node.name,
            f"did not listen on {node.address} within {timeout_s:.0f} s",
            tail(node.log_path, 20),
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Root first: it holds connections into every worker.
        try:
            for node in ([self._root] if self._root else []) + self._workers:
                node.stop()
            for proxy in self._proxies.values():
                proxy.close()
        finally:
            # After the nodes: a cgroup can only be removed once its processes are gone,
            # and a namespace lives on while a process is inside it.
            try:
                for group in self._groups.values():
                    group.remove()
            finally:
                for netns in self._netns.values():
                    netns.remove()

    # -- queries -------------------------------------------------------------------

    def _all_nodes(self) -> list[_Node]:
        return ([self._root] if self._root else []) + self._workers

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(n.name, n.role, n.address) for n in self._all_nodes()]

    def pids(self) -> dict[str, int]:
        return {n.name: n.proc.pid for n in self._all_nodes() if n.proc is not None}

    def set_latency(self, profile: LatencyProfile, topology: Topology | None = None) -> None:
        """New profiles for the proxies; a worker in a namespace of its own whose link's
        loss changed gets its nftables rules replaced there (0 %: removed). A cluster
        started without loss has no namespaces, which is why whether it drops packets at
        all is part of a local cluster's key (``ClusterSpec.topology_key``)."""
        before = [self.spec.link(i).loss_pct for i in range(1, self.spec.nodes)]
        self.spec = replace(
            self.spec,
            latency=profile,
            topology=self.spec.topology if topology is None else topology,
        )
        for i, proxy in enumerate(self._proxies.values(), start=1):
            proxy.set_profile(self.spec.link_profile(i))
        for i, (node, old) in enumerate(zip(self._workers, before, strict=True), start=1):
            loss = self.spec.link(i).loss_pct
            netns = self._netns.get(node.name)
            if loss == old:
                continue
            if netns is None:
                raise ClusterError(
                    f"{node.name}: cannot change its loss to {loss:g} %: the cluster started "
                    "without a network namespace per worker"
                )
            try:
                netns.apply_loss(loss, int(node.address.rsplit(":", 1)[1]))
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                raise ClusterError(f"{node.name}: cannot apply packet loss: {exc}") from exc

    def link_stats(self) -> dict[str, LinkStats]:
        stats = self._proxy_stats()
        for st, node in zip(stats.values(), self._workers, strict=False):
            netns = self._netns.get(node.name)
            if netns is None or node.proc is None:
                continue  # shares the host's namespace: no counters of its own (None)
            if not netns.holds(node.proc.pid):
                continue  # not in it yet (still starting) or gone: nothing to read
            # Both ends of the link's lossy hop: everything the worker's namespace sent
            # again (it holds nothing else), and what the proxy's upstream sockets (this
            # process, in the host's namespace) sent again to the worker's port.
            counter = self._retransmits.get(node.name)
            if counter is None or counter.worker_pid != node.proc.pid:
                host, port = node.address.rsplit(":", 1)
                counter = LinkRetransmits(node.proc.pid, (None, host, int(port)))
                self._retransmits[node.name] = counter
            st.retransmits = counter.read()
            # Workers have namespaces only in a lossy cluster: a link without rules
            # dropped 0 (read as such: its namespace has no loss table).
            drops = self._drops.get(node.name)
            if drops is None:
                drops = self._drops[node.name] = LinkDrops(str(netns.path))
            st.dropped_packets = drops.read()
        return stats

    def root_clients(self) -> set[str]:
        """The root's TCP addresses (psutil over its process tree: ~20 ms of CPU).

        Read again only when a proxy accepted a connection since the last read: a
        warm cluster's root keeps its worker connections from run to run, so its
        addresses are the same, and a new root connection always passes a proxy.
        """
        if self._root is None or self._root.proc is None:
            return set()
        key = (
            self._root.proc.pid,
            tuple(proxy.stats().connections_total for proxy in self._proxies.values()),
        )
        if self._root_clients is not None and self._root_clients[0] == key:
            return set(self._root_clients[1])
        found = self._read_root_clients(self._root.proc.pid)
        self._root_clients = (key, found)
        return set(found)

    @staticmethod
    def _read_root_clients(pid: int) -> set[str]:
        found: set[str] = set()
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    for conn in proc.net_connections(kind="tcp"):
                        if conn.laddr:
                            found.add(f"{conn.laddr.ip}:{conn.laddr.port}")
        except psutil.Error:
            return set()
        return found

    def link_chunks(self, since: float) -> dict[str, ChunkTrace]:
        return {name: proxy.chunks_since(since) for name, proxy in self._proxies.items()}

    def sample_sources(self) -> list[SampleSource]:
        sources: list[SampleSource] = []
        for node in self._all_nodes():
            if node.proc is not None and node.alive():
                with contextlib.suppress(Exception):
                    sources.append(ProcessSource(node.name, node.role, node.proc.pid))
        return sources

    def _proxy_stats(self) -> dict[str, LinkStats]:
        return {name: proxy.stats() for name, proxy in self._proxies.items()}

    def activity(self) -> Activity:
        """Like the base, with the proxies' counters only: the stall watchdog looks at
        traffic, and the loss counters :meth:`link_stats` adds in a lossy cluster cost
        an ``ss`` and an ``nft`` process per link at every poll (as Docker's own
        ``activity`` reads its proxies alone)."""
        return Activity(self.node_activity(), self._proxy_stats(), {})

    def node_activity(self) -> dict[str, NodeActivity]:
        return {n.name: n.activity() for n in self._all_nodes() if n.proc is not None}

    def check_alive(self) -> None:
        # Workers first: when a worker dies the root usually dies of it, and the
        # worker is the cause worth naming.
        for node in self._workers + ([self._root] if self._root else []):
            if node.proc is not None and node.proc.poll() is not None:
                code = node.proc.returncode
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                group = self._groups.get(node.name)
                if code == -signal.SIGKILL and group is not None and group.hit_memory_limit():
                    how = (
                        f"ran out of memory: its memory limit {self.spec.device(node.name).mem} "
                        f"is too small for model {self.spec.model} (the kernel's OOM killer "
                        "ended it); raise its mem"
                    )
                raise NodeFailure(node.name, how, tail(node.log_path, 20))

    def root_tail(self, lines: int = 20) -> list[str]:
        return tail(self._root.log_path, lines) if self._root else []

    def node_logs(self, lines: int = 20) -> dict[str, list[str]]:
        return {n.name: tail(n.log_path, lines) for n in self._all_nodes()}

    def node_limits(self) -> dict[str, dict[str, Any]]:
        """Per node the threads it was started with and the CPU quota its cgroup has
        (read back from the cgroup, not from the request), and the network namespace it
        ran in with its address there (None: the host's namespace)."""
        out: dict[str, dict[str, Any]] = {}
        for node in self._all_nodes():
            group = self._groups.get(node.name)
            netns = self._netns.get(node.name)
            out[node.name] = {
                "threads": self.spec.threads_of(node.name),
                "cpus": group.applied_cpus() if group is not None else None,
                "mem": group.applied_mem() if group is not None else None,
                "cgroup": [str(p) for p in group.paths.values()] if group is not None else None,
                "netns": (
                    {"name": netns.name, "address": netns.node_ip, "host": netns.host_ip}
                    if netns is not None
                    else None
                ),
            }
        return out

    def provenance(self) -> dict[str, Any]:
        return {"backend": "local", "pids": self.pids(), "node_limits": self.node_limits()}
