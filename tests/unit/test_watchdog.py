"""The stall watchdog's rules: what counts as progress, and which node gets named.

The snapshots here are built by hand so that each rule is pinned with exact
numbers; the same code against real llama.cpp nodes (a SIGSTOP'd worker, a link
that delivers nothing) is exercised by ``tests/integration/chaos``. The cluster
below is a stand-in that replays snapshots: it is the only way to drive the
watchdog through a chosen sequence of states on a fake clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgelab.cluster.base import Activity, Cluster, NodeActivity, NodeFailure, NodeInfo
from edgelab.cluster.spec import ClusterSpec
from edgelab.cluster.watchdog import NodeStalled, StallWatchdog, diagnose, worker_of_link
from edgelab.metrics.sampler import SampleSource
from edgelab.netem.profile import LatencyProfile
from edgelab.netem.proxy import DirectionStats, LinkStats


def link(
    name: str,
    up_bytes: int = 0,
    down_bytes: int = 0,
    up_idle: float | None = None,
    down_idle: float | None = None,
    queued: int = 0,
) -> LinkStats:
    return LinkStats(
        name=name,
        profile="0ms",
        up=DirectionStats(bytes=up_bytes, idle_s=up_idle, queued_bytes=queued),
        down=DirectionStats(bytes=down_bytes, idle_s=down_idle),
    )


def nodes(cpu: dict[str, float], states: dict[str, str] | None = None) -> dict[str, NodeActivity]:
    states = states or {}
    return {
        name: NodeActivity(
            name, "root" if name == "root" else "worker", states.get(name, "active"), c
        )
        for name, c in cpu.items()
    }


IDLE = {"root": 1.0, "worker1": 1.0, "worker2": 1.0}


class ReplayCluster(Cluster):
    """Stand-in cluster returning one scripted snapshot per ``activity()`` call."""

    def __init__(self, snapshots: list[Activity], dead: NodeFailure | None = None) -> None:
        spec = ClusterSpec("m", 3, 1, LatencyProfile.parse("0ms"))
        super().__init__(spec, Path("/nonexistent"), Path("/nonexistent"))
        self.snapshots = snapshots
        self.dead = dead

    def activity(self) -> Activity:
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]

    def start(self, progress: Any = None, watch: Any = None) -> None: ...
    def nodes(self) -> list[NodeInfo]:
        return []

    def set_latency(self, profile: LatencyProfile, topology: object = None) -> None: ...
    def link_stats(self) -> dict[str, LinkStats]:
        return {}

    def sample_sources(self) -> list[SampleSource]:
        return []

    def check_alive(self) -> None:
        if self.dead is not None:
            raise self.dead

    def node_logs(self, lines: int = 20) -> dict[str, list[str]]:
        return {"worker1": ["w1 last line"], "root": ["root line"]}

    def provenance(self) -> dict[str, Any]:
        return {}

    def close(self) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_worker_of_link_matches_cluster_spec_names() -> None:
    assert worker_of_link(ClusterSpec.link_name(2)) == ClusterSpec.worker_name(2) == "worker2"


def test_a_stopped_process_is_named_before_any_link_evidence() -> None:
    snap = Activity(
        nodes(IDLE, {"worker2": "stopped"}),
        {"root<->worker1": link("root<->worker1", 10, 10, up_idle=9.0, down_idle=20.0)},
        {},
    )
    node, reason = diagnose(snap, 12.4, "generation")
    assert node == "worker2"
    assert reason.startswith("stopped responding during generation: its process is stopped")
    assert "for 12 s" in reason


def test_a_paused_container_and_an_unreadable_link_name_their_worker() -> None:
    assert diagnose(Activity(nodes(IDLE, {"worker1": "paused"}), {}, {}), 5, "x")[0] == "worker1"
    snap = Activity(nodes(IDLE), {}, {"root<->worker2": "timed out"})
    node, reason = diagnose(snap, 5, "generation")
    assert node == "worker2"
    assert "counters of link root<->worker2 cannot be read (timed out)" in reason


def test_a_link_holding_undelivered_bytes_names_its_worker() -> None:
    snap = Activity(
        nodes(IDLE),
        {
            "root<->worker1": link("root<->worker1", queued=24),
            "root<->worker2": link("root<->worker2"),
        },
        {},
    )
    node, reason = diagnose(snap, 61, "cluster start")
    assert node == "worker1"
    assert "link root<->worker1 holds 24 B it has not delivered" in reason


def test_the_oldest_unanswered_request_names_its_worker() -> None:
    snap = Activity(
        nodes(IDLE),
        {
            # worker1 answered its last request; worker2 was asked 7 s ago and did not.
            "root<->worker1": link("root<->worker1", up_idle=9.0, down_idle=8.9),
            "root<->worker2": link("root<->worker2", up_idle=7.0, down_idle=9.5),
        },
        {},
    )
    node, reason = diagnose(snap, 7, "generation")
    assert node == "worker2"
    assert "last request on link root<->worker2 went out 7 s ago" in reason


def test_with_no_worker_owing_an_answer_the_root_is_named() -> None:
    snap = Activity(nodes(IDLE), {"root<->worker1": link("root<->worker1", 5, 5, 3.0, 2.0)}, {})
    node, reason = diagnose(snap, 30, "generation", {"root": 0.0, "worker1": 0.004})
    assert node == "root"
    assert reason.endswith("(CPU root 0%, worker1 0%), and no worker owes it an answer")


def _watch(
    snapshots: list[Activity], timeout_s: float = 10.0, **kw: Any
) -> tuple[StallWatchdog, Clock, ReplayCluster]:
    clock = Clock()
    cluster = ReplayCluster(snapshots, **kw)
    return StallWatchdog(cluster, timeout_s, "generation", poll_s=1.0, clock=clock), clock, cluster


def test_nothing_moving_for_the_timeout_fails_naming_the_node_with_its_logs() -> None:
    quiet = Activity(nodes(IDLE, {"worker1": "stopped"}), {}, {})
    dog, clock, cluster = _watch([quiet])
    for _ in range(9):
        dog.check()
        clock.t += 1.0
    dog.check()  # 9 s silent: not yet
    clock.t += 1.0
    with pytest.raises(NodeStalled) as info:
        dog.check()  # 10 s
    assert info.value.node == "worker1"
    assert info.value.log_tail == ["w1 last line"]
    assert info.value.node_logs == cluster.node_logs()
    assert cluster.broken is info.value  # the cluster must not serve another run


def test_link_bytes_cpu_and_tokens_count_as_progress() -> None:
    def snap(b: int, root_cpu: float) -> Activity:
        return Activity(
            nodes({**IDLE, "root": root_cpu}), {"root<->worker1": link("root<->worker1", b, b)}, {}
        )

    # bytes move, then the root computes (0.5 core), then only a token arrives
    dog, clock, _ = _watch([snap(0, 1.0), snap(8, 1.0), snap(8, 1.5), snap(8, 1.5)], 2.0)
    dog.check()
    clock.t += 1.9
    dog.check()  # bytes moved: progress at t=1.9
    clock.t += 1.9
    dog.check()  # root used 0.5/1.9 of a core: progress at t=3.8
    clock.t += 1.0
    dog.progress()  # a token at t=4.8
    clock.t += 1.9
    dog.check()  # 1.9 s after the token: still fine
    clock.t += 0.5
    dog.check()  # within poll_s of the last snapshot: not even looked at
    clock.t += 0.5
    with pytest.raises(NodeStalled):
        dog.check()  # 2.9 s after the token


def test_an_idle_trickle_of_cpu_is_not_progress() -> None:
    # 0.05 s of CPU per second (a poll loop) is below BUSY_CPU: still a stall.
    snaps = [Activity(nodes({**IDLE, "root": 1.0 + 0.05 * i}), {}, {}) for i in range(12)]
    dog, clock, _ = _watch(snaps, 5.0)
    for _ in range(5):
        dog.check()
        clock.t += 1.0
    with pytest.raises(NodeStalled) as info:
        dog.check()  # 5 s of trickle
    assert info.value.node == "root"


def test_a_dead_node_is_named_as_dead_not_as_silent() -> None:
    dead = NodeFailure("worker2", "was killed by signal 9", [])
    dog, clock, _ = _watch([Activity(nodes(IDLE), {}, {})], 1.0, dead=dead)
    dog.check()
    clock.t += 1.0
    with pytest.raises(NodeFailure) as info:
        dog.check()
    assert info.value is dead


def test_a_node_reading_its_disk_is_working_not_stalled() -> None:
    # A root loading a model from slow storage: little CPU, megabytes read.
    def snap(io: int) -> Activity:
        root = NodeActivity("root", "root", "active", 1.0, io)
        return Activity({"root": root}, {}, {})

    mib = 1 << 20
    dog, clock, _ = _watch([snap(0), snap(2 * mib), snap(4 * mib), snap(4 * mib + 100)], 2.0)
    for _ in range(3):
        dog.check()
        clock.t += 1.5  # 2 MiB per 1.5 s: progress every time
    dog.check()  # only 100 B more (a /health request): not progress, 1.5 s silent
    clock.t += 1.5
    with pytest.raises(NodeStalled) as info:
        dog.check()
    assert "no node using CPU or disk for 3 s" in str(info.value)
