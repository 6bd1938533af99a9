"""Real packet loss on a link: nftables rules in the worker node's network namespace.

The kernel here has no netem, but nftables works inside a network namespace:
``numgen random mod 10000 < N drop`` drops that share of packets, and TCP has to
recover them by retransmission, as on a lossy Wi-Fi hop. The rules sit in the
worker's own namespace (a Docker worker's container, or a local worker's namespace
of its own: :mod:`edgelab.topology.netns`) on the link's port only, in
both directions (input: root -> worker, output: worker -> root), so the link's
control endpoint stays loss-free. Applied from the host with ``nsenter`` (needs
root and the ``nft`` binary); :func:`loss_problem` says why it cannot be done.

Each drop rule has a ``counter``: :class:`LinkDrops` reads how many packets the
rules dropped (exact, unlike retransmissions, which a lossless link can show too).

Retransmissions are read from the namespace's TCP counters (``RetransSegs`` in
``/proc/<pid>/net/snmp``, which shows the namespace of that process): segments
the worker side sent again, less those the receiver had already (DSACKed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading

TABLE = "edgelab_loss"
# Loss is given in percent with up to two decimals: drop N out of every 10000.
SCALE = 10_000


def loss_problem() -> str | None:
    """Why this process cannot apply packet loss, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "packet loss needs root (nftables rules in the node's network namespace)"
    for tool, package in (("nft", "nftables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"packet loss needs the {tool} binary (Debian package {package})"
    return None


def ruleset(loss_pct: float, port: int) -> str:
    """The nftables table dropping ``loss_pct`` % of the link's packets each way.

    It replaces whatever loss rules the namespace had, in one transaction (declaring
    the table first makes deleting it valid when it does not exist yet), so a warm
    cluster changes a link's loss between runs atomically; at 0 % only the removal
    is left.
    """
    n = round(loss_pct / 100 * SCALE)
    replace = f"table inet {TABLE}\ndelete table inet {TABLE}\n"
    if n == 0:
        return replace
    return replace + (
        f"table inet {TABLE} {{\n"
        f"  chain out {{ type filter hook output priority 0; policy accept;\n"
        f"    tcp sport {port} numgen random mod {SCALE} < {n} counter drop\n  }}\n"
        f"  chain in {{ type filter hook input priority 0; policy accept;\n"
        f"    tcp dport {port} numgen random mod {SCALE} < {n} counter drop\n  }}\n"
        "}\n"
    )


def _enter(namespace: int | str) -> list[str]:
    """``nsenter`` into a host process's network namespace (a pid) or a named one (a
    path such as ``/run/netns/NAME``, a local node's: :mod:`edgelab.topology.netns`)."""
    if isinstance(namespace, int):
        return ["nsenter", "-t", str(namespace), "-n"]
    return ["nsenter", f"--net={namespace}"]


def _read(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run a short reading command (nft, ss); ``None`` when it cannot be run at all."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def apply_loss(namespace: int | str, loss_pct: float, port: int) -> None:
    """Install (or replace; at 0 % remove) the loss rules in ``namespace`` (a host pid
    or a namespace path).

    ``RuntimeError`` with nft's own message when it refuses.
    """
    done = subprocess.run(
        [*_enter(namespace), "nft", "-f", "-"],
        input=ruleset(loss_pct, port),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"nft refused the loss rules in namespace {namespace}: "
            f"{(done.stderr or done.stdout).strip()}"
        )


def parse_dropped(nft_json: str) -> tuple[int | None, int]:
    """From ``nft -j list table inet edgelab_loss``: the table's handle (``None``: no
    table in the output) and the packets its rules' counters hold, both chains summed.

    The handle tells one table from the next: replacing the rules (:func:`ruleset`)
    makes a new table with a new handle and counters from 0.
    """
    handle = None
    packets = 0
    for item in json.loads(nft_json).get("nftables", []):
        if "table" in item and item["table"].get("name") == TABLE:
            handle = int(item["table"]["handle"])
        rule = item.get("rule")
        if rule is None or rule.get("table") != TABLE:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                packets += int(expr["counter"]["packets"])
    return handle, packets


def read_dropped(namespace: int | str) -> tuple[int | None, int] | None:
    """The loss table's handle and dropped packets in ``namespace`` (a host pid or a
    namespace path): ``(None, 0)`` when it has no table (no rule, nothing dropped),
    ``None`` when it cannot be read."""
    done = _read([*_enter(namespace), "nft", "-j", "list", "table", "inet", TABLE])
    if done is None:
        return None
    if done.returncode != 0:
        # nft's answer for a table that does not exist; nsenter's own errors (a
        # namespace gone, no nft) say "nsenter:" and are unreadable, like anything else.
        missing = "No such file or directory" in done.stderr
        return (None, 0) if missing and not done.stderr.startswith("nsenter") else None
    try:
        return parse_dropped(done.stdout)
    except (ValueError, KeyError, TypeError):
        return None


class LinkDrops:
    """Packets a link's loss rules dropped, as a counter that only grows: the total
    over every table the link's namespace has had.

    The rules' own counters restart when a warm cluster changes the link's loss
    (:func:`ruleset` replaces the table), so a new table handle adds its count from 0
    rather than differencing it against the old table's. Packets the old table dropped
    after the last read are not counted: the rules change between runs, with no run
    on the link, and every run reads before and after itself.
    """

    def __init__(self, namespace: int | str) -> None:
        self.namespace = namespace
        self._handle: int | None = None
        self._last = 0
        self._total = 0
        self._lock = threading.Lock()

    def read(self) -> int | None:
        """The count now (``None``: unreadable). Thread-safe."""
        found = read_dropped(self.namespace)
        if found is None:
            return None
        handle, packets = found
        with self._lock:
            if handle != self._handle:
                self._handle, self._last = handle, 0
            self._total += max(0, packets - self._last)
            self._last = packets
            return self._total


def _counter(path: str, prefix: str, name: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith(prefix)]
    except OSError:
        return None
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if name in header:
            return int(values[header.index(name)])
    return None


def retransmits(pid: int) -> int | None:
    """TCP segments retransmitted in the network namespace of ``pid`` that repaired a
    loss (None: unreadable).

    Spurious retransmissions are left out: segments the receiver reports, by DSACK,
    that it had already. Linux resends a connection's last segment when its ACK is
    slow (a tail-loss probe after a delayed ACK), and a veth that reorders a burst
    makes the sender fast-retransmit segments that were only late; both count in
    ``RetransSegs`` on a link that lost nothing, and both come back DSACKed
    (``TCPDSACKRecvSegs``). A probe that did repair a lost tail is not DSACKed and
    counts. (A DSACK can itself be lost on a lossy link: then a spurious resend counts.)
    """
    sent_again = _counter(f"/proc/{pid}/net/snmp", "Tcp:", "RetransSegs")
    if sent_again is None:
        return None
    spurious = _counter(f"/proc/{pid}/net/netstat", "TcpExt:", "TCPDSACKRecvSegs") or 0
    return max(0, sent_again - spurious)


#: One socket of ``ss -tineH``: its first line (state, queues, local, peer, and with
#: ``-e`` the kernel's socket cookie ``sk:``) and the indented line of its TCP info.
_SOCKET_RE = re.compile(
    r"^(\S+)\s+\d+\s+\d+\s+(\S+)\s+(\S+)\b[^\n]*?\bsk:([0-9a-f]+)[^\n]*\n[ \t]+([^\n]*)", re.M
)
_RETRANS_RE = re.compile(r"\bretrans:\d+/(\d+)")
_DSACK_RE = re.compile(r"\bdsack_dups:(\d+)")


def socket_retransmits(ss_output: str) -> dict[tuple[str, str, str], int]:
    """Per socket of ``ss -tineH`` output, keyed by (local, peer, cookie): the segments
    it sent again less those the receiver DSACKed as duplicates. Sockets without TCP
    info (``TIME-WAIT``: already closed) are left out; the cookie (``sk:``) is the
    kernel's id for one socket, never reused, so a new connection on the same ports
    is a new key."""
    found = {}
    for m in _SOCKET_RE.finditer(ss_output):
        _state, local, peer, cookie, info = m.groups()
        sent_again = _RETRANS_RE.search(info)
        spurious = _DSACK_RE.search(info)
        found[(local, peer, cookie)] = max(
            0,
            (int(sent_again.group(1)) if sent_again else 0)
            - (int(spurious.group(1)) if spurious else 0),
        )
    return found


def _ss(pid: int | None, *filter_: str) -> str | None:
    if shutil.which("ss") is None or (pid is not None and shutil.which("nsenter") is None):
        return None
    enter = [] if pid is None else _enter(pid)
    done = _read([*enter, "ss", "-tineH", *filter_])
    return done.stdout if done is not None and done.returncode == 0 else None


class LinkRetransmits:
    """A link's retransmissions, both ends, less those the receiver DSACKed as
    duplicates, as a counter that only moves with this link's traffic.

    The worker's end is its namespace's counters (:func:`retransmits`): the namespace
    holds nothing but that worker, and its counters keep what sockets that closed
    since sent. The other end (the local proxy in edgelab's own namespace, the
    Docker root's container) serves every link and other clients, so it is read per
    socket (``ss -tie``): only the sockets of its namespace to the worker's address
    and port, each kept under its own key
    (:func:`socket_retransmits`) with the last value read. A lifetime total summed
    over whatever sockets exist at each read is not a counter: a socket that closes
    between two reads takes its retransmissions out of the sum, and one from an
    earlier connection (or cluster) toward the same address puts in its own.

    A lossless link retransmits too: a veth hands each packet to the receiving CPU's
    backlog, and on a loaded host a packet queued on a busy CPU arrives after later
    ones, so the sender marks it lost and sends it again (measured on a lossless
    worker link: 801 proxy resends, 801 DSACKed, ``reord_seen`` 134). Those are not
    loss repair, and both ends subtract what the receiver DSACKed. Not all of them
    come back DSACKed, with no drop anywhere (no rule on the link, no backlog drops
    in ``/proc/net/softnet_stat``): each of 4 clusters of ``test_link_loss`` kept 1 to
    6 on its lossless worker2 link over its life, and 2 of 3 runs counted one or more
    in the run itself, e.g. worker2's 1 with ``TCPFastRetrans`` 1 and
    ``TCPSpuriousRtxHostQueues`` 1 (the kernel noting the original was still in a
    host queue when it was marked lost); reading again 50 ms after any rise (454
    times) never saw a late DSACK lower the count. So a lossless link's count is
    small but not always 0.
    """

    def __init__(self, worker_pid: int, other: tuple[int | None, str, int] | None) -> None:
        """``other``: the other end's namespace (a pid, ``None``: this process's) and
        the worker-side address and port its link sockets connect to (``None``: not
        known, only the worker's end is counted)."""
        self.worker_pid = worker_pid
        self._other = other
        self._sockets: dict[tuple[str, str, str], int] = {}
        self._foreign: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def _read_once(self) -> int | None:
        worker_side = retransmits(self.worker_pid)
        if worker_side is None:
            return None
        if self._other is not None:
            pid, address, port = self._other
            out = _ss(pid, "dst", f"{address}:{port}")
            if out is not None:
                self._sockets.update(
                    (key, n)
                    for key, n in socket_retransmits(out).items()
                    if key not in self._foreign
                )
        return worker_side + sum(self._sockets.values())

    def ignore_existing(self) -> None:
        """Leave out the sockets to the worker's address and port that exist now: called
        before the link has any, it keeps out an earlier cluster's (a local cluster's
        subnet can be one a cluster that stopped had; its sockets linger, resending
        their FIN to an address that is gone, for minutes)."""
        if self._other is None:
            return
        pid, address, port = self._other
        out = _ss(pid, "dst", f"{address}:{port}")
        if out is not None:
            with self._lock:
                self._foreign |= set(socket_retransmits(out))

    def read(self) -> int | None:
        """The count now (``None``: the worker's namespace is unreadable). Thread-safe."""
        with self._lock:
            return self._read_once()
