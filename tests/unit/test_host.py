"""Host contention and oversubscription from made-up /proc readings with known answers."""

from __future__ import annotations

import os

import pytest

from edgelab.metrics.host import (
    OTHER_CORES_THRESHOLD,
    CpuTimes,
    HostMonitor,
    cluster_cpu_seconds,
    contention,
    oversubscribed,
)

TICK = os.sysconf("SC_CLK_TCK")


def stat(user: int, system: int, idle: int, steal: int = 0) -> str:
    return (
        f"cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\n"
        f"cpu0 {user} 0 {system} {idle} 0 0 0 {steal} 0 0\nintr 1 2 3\n"
    )


def test_proc_stat_is_read_in_seconds() -> None:
    times = CpuTimes.parse(stat(user=3 * TICK, system=TICK, idle=6 * TICK, steal=TICK))

    assert times == CpuTimes(busy=4.0, total=11.0, steal=1.0)


def test_other_cpu_is_host_busy_time_minus_the_cluster_and_edgelab() -> None:
    before = CpuTimes.parse(stat(0, 0, 0))
    # 10 s on 2 cores: 14 s busy, of which the cluster used 9 s and edgelab 1 s.
    after = CpuTimes.parse(stat(12 * TICK, 2 * TICK, 5 * TICK, steal=TICK))

    found = contention(before, after, 10.0, cluster_cpu_s=9.0, edgelab_cpu_s=1.0, cores=2)

    assert found.other_cpu_cores == pytest.approx(0.4)
    assert found.steal_percent == pytest.approx(5.0)
    assert found.contended
    assert found.reasons == [
        f"processes outside the cluster used 0.40 cores on average (threshold "
        f"{OTHER_CORES_THRESHOLD})"
    ]


def test_an_idle_host_is_not_contended() -> None:
    before = CpuTimes.parse(stat(0, 0, 0))
    after = CpuTimes.parse(stat(9 * TICK, TICK, 10 * TICK))

    found = contention(before, after, 10.0, cluster_cpu_s=9.5, edgelab_cpu_s=0.4, cores=2)

    assert found.other_cpu_cores == pytest.approx(0.01)
    assert not found.contended
    assert found.to_dict()["reasons"] == []


def test_cluster_cpu_integrates_each_nodes_readings_over_its_own_intervals() -> None:
    samples = [("root", 200.0, 100.0), ("worker1", 100.0, 50.0), ("worker1", 300.0, 25.0)]

    # root: 0.2 s at one core; worker1: 0.1 s at half a core + 0.2 s at a quarter.
    assert cluster_cpu_seconds(samples) == pytest.approx(0.2 + 0.05 + 0.05)


def test_oversubscribed_counts_threads_over_all_nodes_against_cores() -> None:
    assert oversubscribed([1, 1, 1, 1], cores=2) is True
    assert oversubscribed([1, 1], cores=2) is False
    assert oversubscribed([2], cores=None) is None


def test_the_monitor_measures_this_host() -> None:
    monitor = HostMonitor()
    monitor.start()
    monitor.stop()

    found = monitor.result(cluster_cpu_s=0.0)

    assert found is not None
    assert found.window_s >= 0
    assert found.load_avg_1m is not None
