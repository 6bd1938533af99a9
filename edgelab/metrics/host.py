"""Host contention during a run: can its numbers be trusted?

Every node of a cluster shares this host's CPUs with whatever else runs on it
(other experiments, a build, another user). A run that competed for the CPU
measures the competition, not the cluster. So each run records, over its
generation window (the node sampler's window):

- ``other_cpu_cores``: CPU time used on the host by processes *outside* the
  cluster, as an average number of busy cores: the host's busy time from
  ``/proc/stat`` minus the cluster's nodes (integrated from the node sampler's
  per-node CPU readings) minus the edgelab process running the experiment (it
  hosts the link proxies of the local backend and the samplers, so it is part of
  the measurement, not competition);
- ``steal_percent``: CPU time the hypervisor gave to other guests (``steal`` in
  ``/proc/stat``), as a percentage of all CPU time in the window;
- ``load_avg_1m``: the 1-minute load average, highest seen in the window
  (``/proc/loadavg``; it counts the cluster's own threads too, so it is shown,
  not used for the flag).

A run is **contended** when ``other_cpu_cores`` > :data:`OTHER_CORES_THRESHOLD`
(a quarter of a core on average: on a 2-core host that is 12.5 % of the machine,
enough to delay a 1-thread node's decode steps noticeably) or ``steal_percent`` >
:data:`STEAL_PERCENT_THRESHOLD`. A cluster is **oversubscribed** when the threads
of all its nodes exceed the host's cores: its nodes then time-share cores, and a
speedup from more nodes cannot be measured on this host.

Only Linux has ``/proc``; elsewhere the contention is ``None`` (not recorded).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

OTHER_CORES_THRESHOLD = 0.25
STEAL_PERCENT_THRESHOLD = 5.0
PROC_STAT = Path("/proc/stat")
PROC_LOADAVG = Path("/proc/loadavg")


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat, in seconds."""

    busy: float  # user + nice + system + irq + softirq (+ guest is inside user)
    total: float  # busy + idle + iowait + steal
    steal: float

    @classmethod
    def parse(cls, text: str) -> CpuTimes:
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                values = [float(v) / tick for v in fields[1:9]]
                values += [0.0] * (8 - len(values))
                user, nice, system, idle, iowait, irq, softirq, steal = values
                busy = user + nice + system + irq + softirq
                return cls(busy=busy, total=busy + idle + iowait + steal, steal=steal)
        raise ValueError("no aggregate cpu line in /proc/stat")

    @classmethod
    def read(cls) -> CpuTimes | None:
        try:
            return cls.parse(PROC_STAT.read_text())
        except (OSError, ValueError):
            return None


def load_avg_1m() -> float | None:
    try:
        return float(PROC_LOADAVG.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_seconds() -> float:
    """CPU time of this process (all threads: proxies, samplers, the stream reader)."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


@dataclass(frozen=True)
class HostContention:
    window_s: float
    cores: int
    host_busy_cores: float
    cluster_cpu_cores: float
    edgelab_cpu_cores: float
    other_cpu_cores: float
    steal_percent: float
    load_avg_1m: float | None

    @property
    def reasons(self) -> list[str]:
        found = []
        if self.other_cpu_cores > OTHER_CORES_THRESHOLD:
            found.append(
                f"processes outside the cluster used {self.other_cpu_cores:.2f} cores on "
                f"average (threshold {OTHER_CORES_THRESHOLD})"
            )
        if self.steal_percent > STEAL_PERCENT_THRESHOLD:
            found.append(
                f"the hypervisor stole {self.steal_percent:.1f} % of CPU time "
                f"(threshold {STEAL_PERCENT_THRESHOLD} %)"
            )
        return found

    @property
    def contended(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_s": round(self.window_s, 3),
            "cores": self.cores,
            "host_busy_cores": round(self.host_busy_cores, 3),
            "cluster_cpu_cores": round(self.cluster_cpu_cores, 3),
            "edgelab_cpu_cores": round(self.edgelab_cpu_cores, 3),
            "other_cpu_cores": round(self.other_cpu_cores, 3),
            "steal_percent": round(self.steal_percent, 2),
            "load_avg_1m": self.load_avg_1m,
            "thresholds": {
                "other_cpu_cores": OTHER_CORES_THRESHOLD,
                "steal_percent": STEAL_PERCENT_THRESHOLD,
            },
            "reasons": self.reasons,
        }


def contention(
    before: CpuTimes,
    after: CpuTimes,
    window_s: float,
    cluster_cpu_s: float,
    edgelab_cpu_s: float,
    cores: int,
    load_avg: float | None = None,
) -> HostContention:
    """What else used the host between two /proc/stat snapshots ``window_s`` apart."""
    window = max(window_s, 1e-9)
    busy = max(0.0, after.busy - before.busy)
    total = max(0.0, after.total - before.total)
    other = max(0.0, busy - cluster_cpu_s - edgelab_cpu_s)
    steal = max(0.0, after.steal - before.steal)
    return HostContention(
        window_s=window_s,
        cores=cores,
        host_busy_cores=busy / window,
        cluster_cpu_cores=cluster_cpu_s / window,
        edgelab_cpu_cores=edgelab_cpu_s / window,
        other_cpu_cores=other / window,
        steal_percent=100.0 * steal / total if total > 0 else 0.0,
        load_avg_1m=load_avg,
    )


def cluster_cpu_seconds(samples: Iterable[tuple[str, float, float]]) -> float:
    """CPU seconds of the cluster's nodes from sampler readings ``(node, offset_ms, cpu %)``.

    Each reading's CPU % covers the time since that node's previous reading (or
    the sampler's start, offset 0), as :class:`edgelab.metrics.sampler.ProcessSource`
    and the Docker stats source measure it.
    """
    last: dict[str, float] = {}
    seconds = 0.0
    for node, offset_ms, cpu_percent in sorted(samples, key=lambda s: s[1]):
        previous = last.get(node, 0.0)
        seconds += max(0.0, offset_ms - previous) / 1000.0 * cpu_percent / 100.0
        last[node] = offset_ms
    return seconds


def oversubscribed(threads_per_node: Iterable[int], cores: int | None) -> bool | None:
    """More threads over all nodes than the host has cores (None: cores unknown)."""
    if not cores:
        return None
    return sum(threads_per_node) > cores


class HostMonitor:
    """Snapshots taken by the node sampler at its start, on every tick and at its stop."""

    def __init__(self) -> None:
        self.before: CpuTimes | None = None
        self.after: CpuTimes | None = None
        self.own_before = 0.0
        self.own_after = 0.0
        self.started = 0.0
        self.stopped = 0.0
        self.load_max: float | None = None

    def start(self) -> None:
        self.before = CpuTimes.read()
        self.own_before = own_cpu_seconds()
        self.started = time.monotonic()
        self.sample()

    def sample(self) -> None:
        load = load_avg_1m()
        if load is not None and (self.load_max is None or load > self.load_max):
            self.load_max = load

    def stop(self) -> None:
        self.sample()
        self.after = CpuTimes.read()
        self.own_after = own_cpu_seconds()
        self.stopped = time.monotonic()

    def result(self, cluster_cpu_s: float, cores: int | None = None) -> HostContention | None:
        if self.before is None or self.after is None:
            return None
        return contention(
            self.before,
            self.after,
            self.stopped - self.started,
            cluster_cpu_s,
            max(0.0, self.own_after - self.own_before),
            cores or os.cpu_count() or 1,
            self.load_max,
        )
