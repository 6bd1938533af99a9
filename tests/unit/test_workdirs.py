"""Cluster work dirs: removed with the cluster, kept on failure for a bounded time and size."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from edgelab.cluster import workdirs
from edgelab.settings import Settings


def _settings(tmp_path: Path, **changes: object) -> Settings:
    return Settings(data_dir=tmp_path).with_overrides(**changes)


def _cluster_dir(settings: Settings, name: str, size: int = 10) -> Path:
    path = workdirs.new_work_dir(settings, name)
    path.mkdir(parents=True)
    (path / "root.log").write_bytes(b"x" * size)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_cluster_that_ended_well_takes_its_dir_along(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    path = _cluster_dir(s, "run1")
    assert workdirs.release(s, path, failed=False) is False
    assert not path.exists()


def test_a_failed_cluster_keeps_its_dir_marked_with_the_logs_it_was_given(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    path = _cluster_dir(s, "run2")
    logs = {"root": ["mine"], "worker1": ["last words", "bye"]}
    assert workdirs.release(s, path, failed=True, logs=logs) is True
    assert (path / "root.log").read_bytes() == b"x" * 10  # its own log is not replaced
    assert (path / "worker1.log").read_text() == "last words\nbye\n"
    assert json.loads((path / "KEPT").read_text())["after_failure"] is True


def test_keep_mode_always_and_never(tmp_path: Path) -> None:
    always = _settings(tmp_path, keep_work_dirs="always")
    assert workdirs.release(always, _cluster_dir(always, "a"), failed=False) is True
    never = _settings(tmp_path, keep_work_dirs="never")
    path = _cluster_dir(never, "b")
    assert workdirs.release(never, path, failed=True) is False
    assert not path.exists()


def test_prune_removes_old_kept_dirs_and_dirs_of_dead_owners_but_not_live_ones(
    tmp_path: Path,
) -> None:
    s = _settings(tmp_path, work_dir_keep_hours=1.0)
    now = time.time()
    old = _cluster_dir(s, "old")
    workdirs.release(s, old, failed=True)
    (old / "KEPT").write_text(json.dumps({"kept_at": now - 3601, "after_failure": True}))
    fresh = _cluster_dir(s, "fresh")
    workdirs.release(s, fresh, failed=True)
    live = _cluster_dir(s, "live")  # this process is running a cluster in it
    orphan = workdirs.clusters_dir(s) / f"run9-{_dead_pid()}-{time.time_ns()}"
    orphan.mkdir()
    # A recycled pid: this process exists, but started after the directory was made.
    recycled = workdirs.clusters_dir(s) / f"run8-{os.getpid()}-{int((now - 3600 * 24) * 1e9)}"
    recycled.mkdir()

    removed = workdirs.prune(s, now=now)
    assert set(removed) == {old, orphan, recycled}
    assert [p.exists() for p in (old, fresh, live, orphan, recycled)] == [
        False,
        True,
        True,
        False,
        False,
    ]


def test_prune_keeps_the_newest_failed_dirs_within_the_size_budget(tmp_path: Path) -> None:
    s = _settings(tmp_path, work_dir_keep_mb=1.0)
    paths = []
    for i in range(4):
        path = _cluster_dir(s, f"run{i}", size=400 * 1024)
        workdirs.release(s, path, failed=True)
        marker = json.loads((path / "KEPT").read_text())
        marker["kept_at"] = 1000.0 + i  # run3 is the newest
        (path / "KEPT").write_text(json.dumps(marker))
        paths.append(path)
    removed = workdirs.prune(s, now=1010.0)
    # 400 KiB each plus the marker: two fit in 1 MB, the two oldest go.
    assert sorted(removed) == paths[:2]
    assert [p.exists() for p in paths] == [False, False, True, True]


def test_prune_keeps_the_newest_failed_dir_even_when_it_alone_is_over_budget(
    tmp_path: Path,
) -> None:
    s = _settings(tmp_path, work_dir_keep_mb=0.1)
    path = _cluster_dir(s, "big", size=300 * 1024)
    workdirs.release(s, path, failed=True)
    assert workdirs.prune(s) == []
    assert path.exists()


def test_keep_note_names_the_dir_and_the_bounds(tmp_path: Path) -> None:
    s = _settings(tmp_path, work_dir_keep_hours=6.0, work_dir_keep_mb=50.0)
    assert workdirs.keep_note(s, Path("/x/run1")) == (
        "(full node logs in /x/run1, kept for up to 6 h / 50 MB of failed runs)"
    )
