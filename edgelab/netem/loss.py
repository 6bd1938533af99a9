"""Real packet loss on a link: nftables rules in the worker node's network namespace.

The kernel here has no netem, but nftables works inside a network namespace:
``numgen random mod 10000 < N drop`` drops that share of packets, and TCP has to
recover them by retransmission, as on a lossy Wi-Fi hop. The rules sit in the
worker's own namespace (a Docker worker's container, or a local worker's namespace
of its own: :mod:`edgelab.topology.netns`) on the link's port only, in
both directions (input: root -> worker, output: worker -> root), so the link's
control endpoint stays loss-free. Applied from the host with ``nsenter`` (needs
root and the ``nft`` binary); :func:`loss_problem` says why it cannot be done.

Retransmissions are read from the namespace's TCP counters (``RetransSegs`` in
``/proc/<pid>/net/snmp``, which shows the namespace of that process): segments
the worker side sent again, less those the receiver had already (DSACKed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

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
        f"    tcp sport {port} numgen random mod {SCALE} < {n} drop\n  }}\n"
        f"  chain in {{ type filter hook input priority 0; policy accept;\n"
        f"    tcp dport {port} numgen random mod {SCALE} < {n} drop\n  }}\n"
        "}\n"
    )


def _enter(namespace: int | str) -> list[str]:
    """``nsenter`` into a host process's network namespace (a pid) or a named one (a
    path such as ``/run/netns/NAME``, a local node's: :mod:`edgelab.topology.netns`)."""
    if isinstance(namespace, int):
        return ["nsenter", "-t", str(namespace), "-n"]
    return ["nsenter", f"--net={namespace}"]


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


_RETRANS_RE = re.compile(r"\bretrans:\d+/(\d+)")
_DSACK_RE = re.compile(r"\bdsack_dups:(\d+)")


def retransmits_to(pid: int | None, address: str) -> int | None:
    """Segments the sockets of ``pid``'s namespace (``None``: this process's own) sent
    again to ``address`` that repaired a loss (their lifetime totals, ``ss -ti``, minus
    the segments the receiver DSACKed as duplicates, as in :func:`retransmits`): the
    other end of a link whose root (or proxy) shares one namespace for all its links.
    ``None``: ``ss``/``nsenter`` unavailable or refused."""
    if shutil.which("ss") is None or (pid is not None and shutil.which("nsenter") is None):
        return None
    enter = [] if pid is None else _enter(pid)
    try:
        done = subprocess.run(
            [*enter, "ss", "-tinH", "dst", address],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    sent_again = sum(int(m.group(1)) for m in _RETRANS_RE.finditer(done.stdout))
    spurious = sum(int(m.group(1)) for m in _DSACK_RE.finditer(done.stdout))
    return max(0, sent_again - spurious)
