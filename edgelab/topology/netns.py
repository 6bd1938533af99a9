"""A network namespace per local node: where a local link's packet loss is applied.

Packet loss must be real loss that TCP recovers from (nftables drop rules, see
:mod:`edgelab.netem.loss`), and rules in the host's namespace would hit every
process on the machine. So a local cluster with a lossy link gives each worker a
namespace of its own, joined to the host's by a veth pair with private addresses:
the worker listens on its end (``10.A.B.4i+2``), the link proxy in edgelab's
process listens on the host end (``10.A.B.4i+1``) and reaches the worker from
there, and the loss rules sit inside the worker's namespace on the worker's port,
so only that hop of that link loses packets (the root and the proxies stay in the
host's namespace). Each namespace routes the cluster's /24 through the host, so a
worker reaches the other workers' proxies too: distributed-llama's workers dial
each other at the addresses the root was given, and those cross the proxies as on
Docker (and lose packets at the destination worker's port, as there).

**Every worker** of such a cluster gets a namespace, not only the lossy ones: then
every link crosses the same kind of hop (a veth with a 1500-byte MTU, as a Docker
worker's link does, instead of the 64 KiB loopback), so a TPOT difference between
links or against a lossless link is the loss and not the path, and every link's
retransmissions are read the same way, from its own worker's namespace, which holds
nothing but that worker (a lossless link then records 0, not host noise).

Names say who owns what, as cgroups do (:mod:`edgelab.topology.cgroups`): the
namespace is ``edgelab-<owner pid>-<cluster>-<node>`` (``/run/netns``), the host
end of its veth ``el<cluster><i>``. Deleting a namespace destroys the veth end
inside it and so its peer; :func:`reap_namespaces` deletes those of owners that died.
The /24 a cluster takes is derived from its id and checked against every route
and address of the host (and other clusters', under a lock) before it is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from edgelab.netem.loss import apply_loss
from edgelab.topology.cgroups import owner_alive

NETNS_DIR = Path("/run/netns")
PREFIX = "edgelab-"
#: Held while a cluster picks its subnet and adds its addresses, so two clusters
#: starting at once never take the same one.
LOCK_FILE = Path("/run/edgelab-netns.lock")
#: Where cluster subnets are taken from: 10.128.0.0/9, a /24 per cluster and a /30
#: per worker (63 workers fit; validation allows 64 nodes).
POOL = ipaddress.ip_network("10.128.0.0/9")
CANDIDATES = 64
#: The interface name of a worker's end inside its own namespace.
INNER_IF = "veth0"


def _ip(*args: str, timeout_s: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _ip_ok(*args: str) -> str:
    done = _ip(*args)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


@functools.cache
def netns_problem() -> str | None:
    """Why local nodes cannot get network namespaces here, or ``None`` when they can.

    Checked once per process by making (and removing) a namespace with a veth pair
    and asking nftables inside it: a container without ``CAP_NET_ADMIN``, a kernel
    without veth or nf_tables fails here, not half-way through a cluster start.
    """
    if os.geteuid() != 0:
        return "edgelab does not run as root (a namespace per node needs CAP_NET_ADMIN)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"the {tool} binary is missing (Debian package {package})"
    name = f"{PREFIX}{os.getpid()}-probe{uuid.uuid4().hex[:6]}"
    host_if = f"elp{uuid.uuid4().hex[:8]}"
    try:
        _ip_ok("netns", "add", name)
        _ip_ok("link", "add", host_if, "type", "veth", "peer", "name", INNER_IF, "netns", name)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"a network namespace with a veth pair cannot be made here ({exc})"
    else:
        nft = subprocess.run(
            ["nsenter", f"--net={NETNS_DIR / name}", "nft", "list", "tables"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if nft.returncode != 0:
            return f"nftables does not work in a network namespace here ({nft.stderr.strip()})"
    finally:
        _ip("netns", "delete", name)
        _ip("link", "delete", host_if)
    return None


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host routes (all tables) and every local address."""
    used: list[ipaddress.IPv4Network] = []
    for entry in json.loads(_ip_ok("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = entry.get("dst")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(dst, strict=False))  # type: ignore[arg-type]
    for link in json.loads(_ip_ok("-j", "-4", "addr", "show") or "[]"):
        for addr in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                used.append(
                    ipaddress.ip_network(  # type: ignore[arg-type]
                        f"{addr['local']}/{addr['prefixlen']}", strict=False
                    )
                )
    return used


def candidate_subnets(cluster: str) -> Iterator[ipaddress.IPv4Network]:
    """The /24s a cluster tries, in order: a sequence drawn from its id over :data:`POOL`."""
    subnets = 1 << (24 - POOL.prefixlen)
    for attempt in range(CANDIDATES):
        digest = hashlib.sha256(f"{cluster}:{attempt}".encode()).digest()
        index = int.from_bytes(digest[:4], "big") % subnets
        yield ipaddress.ip_network(f"{POOL.network_address + index * 256}/24")  # type: ignore[misc]


def pick_subnet(cluster: str, used: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    """The first candidate /24 of ``cluster`` that overlaps nothing in ``used``."""
    for subnet in candidate_subnets(cluster):
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    return None


@contextlib.contextmanager
def subnet_lock() -> Iterator[None]:
    """Exclusive between edgelab processes on this host while a subnet is chosen and used."""
    with LOCK_FILE.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class NodeNamespace:
    """One local node's network namespace and veth pair; :meth:`remove` deletes both.

    ``index`` (1 for worker1) picks the node's /30 in the cluster's ``subnet``:
    ``host_ip`` is the host's end, ``node_ip`` the node's.
    """

    def __init__(self, cluster: str, node: str, index: int, subnet: ipaddress.IPv4Network) -> None:
        self.name = f"{PREFIX}{os.getpid()}-{cluster}-{node}"
        self.path = NETNS_DIR / self.name
        self.host_if = f"el{cluster[:8]}{index}"
        base = subnet.network_address + 4 * index
        self.host_ip = str(base + 1)
        self.node_ip = str(base + 2)
        try:
            _ip_ok("netns", "add", self.name)
            _ip_ok(
                "link", "add", self.host_if, "type", "veth",
                "peer", "name", INNER_IF, "netns", self.name,
            )  # fmt: skip
            # One wire segment per packet, both ways: a veth passes TCP's 64 KiB GSO
            # super-packets whole, so nftables would drop 2 % of those (a couple per
            # run) instead of 2 % of the Ethernet-sized packets a real link loses.
            _ip_ok("link", "set", "dev", self.host_if, "gso_max_segs", "1")
            _ip_ok("-n", self.name, "link", "set", "dev", INNER_IF, "gso_max_segs", "1")
            _ip_ok("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip_ok("link", "set", self.host_if, "up")
            _ip_ok("-n", self.name, "addr", "add", f"{self.node_ip}/30", "dev", INNER_IF)
            _ip_ok("-n", self.name, "link", "set", INNER_IF, "up")
            _ip_ok("-n", self.name, "link", "set", "lo", "up")
            # The rest of the cluster's /24 through the host: other workers' proxies
            # (dllama's workers dial each other) sit at the host ends of their veths.
            _ip_ok("-n", self.name, "route", "add", str(subnet), "via", self.host_ip)
        except (OSError, subprocess.SubprocessError):
            self.remove()
            raise

    def holds(self, pid: int) -> bool:
        """Whether process ``pid`` is inside this namespace (a node's launcher enters it
        a moment after it starts: before that its counters are the host's)."""
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def apply_loss(self, loss_pct: float, port: int) -> None:
        """Drop ``loss_pct`` % of the packets to and from ``port`` inside this namespace."""
        apply_loss(str(self.path), loss_pct, port)

    def remove(self) -> None:
        """Delete the namespace (and with it both veth ends). Idempotent; call it once
        the node's processes are gone (a process inside keeps the namespace alive)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _ip("netns", "delete", self.name)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if _ip("link", "show", self.host_if).returncode == 0:
                _ip("link", "delete", self.host_if)


def owned_namespaces(owner: int) -> list[str]:
    """Names of edgelab namespaces whose owner is process ``owner`` (tests' leftover check)."""
    return sorted(p.name for p in _listed() if _owner(p.name) == owner)


def _listed() -> list[Path]:
    try:
        return list(NETNS_DIR.glob(f"{PREFIX}*"))
    except OSError:
        return []


def _owner(name: str) -> int | None:
    owner = name[len(PREFIX) :].split("-", 1)[0]
    return int(owner) if owner.isdigit() else None


def reap_namespaces() -> list[str]:
    """Delete edgelab namespaces whose owning process is gone (a ``kill -9``-ed CLI or
    worker); their nodes died with it (``PR_SET_PDEATHSIG``), so nothing holds them."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return []
    removed = []
    for path in _listed():
        owner = _owner(path.name)
        if owner is None or owner_alive(owner):
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if _ip("netns", "delete", path.name).returncode == 0:
                removed.append(path.name)
    return removed
