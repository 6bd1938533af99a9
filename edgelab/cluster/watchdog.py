"""Stall watchdogs: notice a cluster that stopped making progress, and name the silent node.

A hung device (a SIGSTOP'd process, a frozen container, a link that delivers
nothing) does not die, so nothing fails by itself: the root just waits for it and
the run would hold its Celery worker until the task's time limit. The watchdog is
polled at points its caller controls (between reads of the token stream, between
start-up polls), the way celery's abortable tasks poll their abort flag, and raises
:class:`NodeStalled` once nothing has moved for ``timeout_s``.

*Progress* is anything a working cluster does: an event from the root (a token),
a node or link appearing (start-up), a byte delivered over any link, a node
using CPU (at least :data:`BUSY_CPU` of a core between two snapshots; a process
blocked on a socket uses almost none) or reading its disk (a model loading from
slow storage, :data:`BUSY_IO_BYTES`). So a slow network, a long prefill or a slow
disk is not a stall; only a cluster where *nothing* happens is.

The silent node is named from the last snapshot, most certain evidence first:

1. a node whose process is stopped (state T: SIGSTOP, a debugger) or whose
   container is paused;
2. a worker whose link counters cannot be read (a Docker worker's control
   endpoint that does not answer: its whole container is frozen);
3. a link holding data it has not delivered (a delay longer than the stall);
4. a worker the root sent a request to that has not answered since (the oldest
   unanswered link);
5. otherwise the root itself (nothing came out of it while no worker owed it
   anything).

A node that died is named by the cluster's own ``check_alive``, asked first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edgelab.cluster.base import Activity, Cluster, NodeActivity, NodeFailure

#: Fraction of one core a node must use between two snapshots to count as working.
BUSY_CPU = 0.1
#: Storage bytes a node must read or write between two snapshots to count as working.
BUSY_IO_BYTES = 1 << 20
#: Minimum time between two snapshots (a Docker snapshot costs a few API calls).
POLL_S = 0.5


class NodeStalled(NodeFailure):
    """A node went silent: no token, no link traffic and no CPU use for the stall timeout."""


def worker_of_link(link: str) -> str:
    """``root<->worker2`` -> ``worker2`` (see :meth:`ClusterSpec.link_name`)."""
    return link.split("<->", 1)[-1]


def _fmt_bytes(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1024:.0f} KiB"


class StallWatchdog:
    """Raise :class:`NodeStalled` from :meth:`check` once ``cluster`` made no progress
    for ``timeout_s``; ``what`` says which phase is watched (``cluster start``,
    ``generation``) in the error. Call :meth:`progress` on every event the caller
    sees itself (a token)."""

    def __init__(
        self,
        cluster: Cluster,
        timeout_s: float,
        what: str,
        *,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.timeout_s = timeout_s
        self.what = what
        self.poll_s = poll_s
        self._clock = clock
        self._last_progress = clock()
        self._next_check = 0.0
        self._prev: Activity | None = None
        self._prev_at = 0.0
        # CPU share per node over the last snapshot interval, for the error message.
        self._cpu_share: dict[str, float] = {}

    def progress(self) -> None:
        self._last_progress = self._clock()

    @property
    def silent_s(self) -> float:
        return self._clock() - self._last_progress

    def check(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self.poll_s
        snap = self.cluster.activity()
        if self._prev is not None and self._moved(self._prev, snap, now - self._prev_at):
            self._last_progress = now
        self._prev, self._prev_at = snap, now
        silent = now - self._last_progress
        if silent < self.timeout_s:
            return
        self.cluster.check_alive()  # a node that died is named as dead, not as silent
        node, reason = diagnose(snap, silent, self.what, self._cpu_share)
        logs = self.cluster.node_logs()
        failure = NodeStalled(node, reason, logs.get(node, []))
        failure.node_logs = logs
        self.cluster.broken = failure
        raise failure

    def _moved(self, prev: Activity, snap: Activity, dt: float) -> bool:
        moved = False
        if set(snap.nodes) != set(prev.nodes) or set(snap.links) != set(prev.links):
            moved = True
        for name, node in snap.nodes.items():
            before = prev.nodes.get(name)
            if before is None:
                continue
            if before.state != node.state:
                moved = True
            if node.cpu_s is not None and before.cpu_s is not None and dt > 0:
                share = max(0.0, node.cpu_s - before.cpu_s) / dt
                self._cpu_share[name] = share
                if share >= BUSY_CPU:
                    moved = True
            if (
                node.io_bytes is not None
                and before.io_bytes is not None
                and node.io_bytes - before.io_bytes >= BUSY_IO_BYTES
            ):
                moved = True
        for name, link in snap.links.items():
            before_link = prev.links.get(name)
            if before_link is None:
                continue
            if (link.up.bytes, link.down.bytes) != (before_link.up.bytes, before_link.down.bytes):
                moved = True
        return moved


def diagnose(
    snap: Activity, silent_s: float, what: str, cpu_share: dict[str, float] | None = None
) -> tuple[str, str]:
    """The node that went silent and why, from one snapshot (see the module docstring)."""
    first = "no token" if what == "generation" else "no node becoming ready"
    quiet = f"{first}, no link traffic and no node using CPU or disk for {silent_s:.0f} s"
    shares = cpu_share or {}
    if shares:
        quiet += " (CPU " + ", ".join(f"{n} {shares[n] * 100:.0f}%" for n in sorted(shares)) + ")"
    nodes: list[NodeActivity] = sorted(snap.nodes.values(), key=lambda n: n.role != "worker")
    for node in nodes:
        if node.state == "stopped":
            return node.name, (
                f"stopped responding during {what}: its process is stopped "
                f"(state T, e.g. SIGSTOP); {quiet}"
            )
        if node.state == "paused":
            return node.name, f"stopped responding during {what}: its container is paused; {quiet}"
    for link, error in sorted(snap.link_errors.items()):
        if "<->" in link:
            return worker_of_link(link), (
                f"stopped responding during {what}: the counters of link {link} cannot be "
                f"read ({error}); {quiet}"
            )
    for link, st in sorted(snap.links.items()):
        held = st.up.queued_bytes + st.down.queued_bytes
        if held:
            return worker_of_link(link), (
                f"is unreachable during {what}: link {link} holds {_fmt_bytes(held)} it has "
                f"not delivered (profile {st.profile}); {quiet}"
            )
    waiting = [
        (st.up.idle_s, link)
        for link, st in snap.links.items()
        if st.up.idle_s is not None and (st.down.idle_s is None or st.up.idle_s < st.down.idle_s)
    ]
    if waiting:
        idle, link = max(waiting)
        return worker_of_link(link), (
            f"did not answer the root during {what}: the root's last request on link "
            f"{link} went out {idle:.0f} s ago and nothing came back; {quiet}"
        )
    return "root", f"went silent during {what}: {quiet}, and no worker owes it an answer"


__all__ = ["BUSY_CPU", "NodeStalled", "StallWatchdog", "diagnose", "worker_of_link"]
