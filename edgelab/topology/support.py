"""What the backends can apply of a topology today: the one place that refuses the rest.

A topology field that a backend cannot honour is refused before anything starts,
never silently ignored. When a backend learns a feature, remove it from
:data:`NOT_YET` (queue bounds and delay traces are applied by every backend's link proxy;
packet loss by Docker, and by the local backend as root with iproute2 and nftables,
which then gives each worker a network namespace: see :mod:`edgelab.topology.netns`).
"""

from __future__ import annotations

from edgelab.netem.loss import loss_problem
from edgelab.topology.cgroups import cpu_quota_problem, memory_limit_problem
from edgelab.topology.netns import netns_problem
from edgelab.topology.spec import Topology

#: Link features no backend applies yet, with the words for the refusal.
NOT_YET: dict[str, str] = {}

#: Backends that can start dropping packets on a warm cluster that had none (every Docker
#: worker has a namespace of its own from the start). On the others (local: namespaces
#: only for a cluster that starts lossy) whether a cluster drops packets at all is part
#: of its key (:meth:`edgelab.cluster.spec.ClusterSpec.topology_key`); how much, never.
WARM_LOSS_BACKENDS = ("docker",)


def topology_problems(topology: Topology, backend: str) -> dict[str, str]:
    """Per field (``devices``, ``links``, ``loss``), what ``backend`` cannot apply of
    ``topology``."""
    problems: dict[str, list[str]] = {}
    for worker, link in topology.links.items():
        for attr, words in NOT_YET.items():
            value = getattr(link, attr)
            if value not in (None, 0, 0.0):
                problems.setdefault("links", []).append(
                    f"{worker}: {words} is not supported yet (no backend applies it; "
                    "remove it to run)"
                )
    lossy = [w for w, link in topology.links.items() if link.loss_pct]
    if lossy or topology.loss_pct:
        problem = loss_problem() if backend == "docker" else _local_loss_problem()
        if problem is not None:
            if lossy:
                problems.setdefault("links", []).append(
                    f"{', '.join(lossy)}: packet loss cannot be applied: {problem}"
                )
            if topology.loss_pct:  # the cluster-wide loss field
                problems["loss"] = [f"packet loss cannot be applied: {problem}"]
    if backend == "local":
        for attr, words, problem_of in (
            ("cpus", "cpus needs a CPU quota", cpu_quota_problem),
            ("mem", "mem needs a memory limit", memory_limit_problem),
        ):
            nodes = [n for n, d in topology.devices.items() if getattr(d, attr) is not None]
            problem = problem_of() if nodes else None
            if problem is not None:
                problems.setdefault("devices", []).append(
                    f"{', '.join(nodes)}: {words}, and {problem}; run as root with a writable "
                    "cgroup hierarchy, or use the Docker backend (--backend docker), which "
                    "limits each container"
                )
    return {k: "; ".join(v) for k, v in problems.items()}


def _local_loss_problem() -> str | None:
    problem = netns_problem()
    if problem is None:
        return None
    return (
        f"local nodes need a network namespace each for it, and {problem}; run edgelab as "
        "root with iproute2 and nftables, or use the Docker backend (--backend docker), "
        "where each worker's container has its own"
    )
