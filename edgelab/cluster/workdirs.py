"""Cluster work directories: where node logs live, and how long they stay.

Every cluster writes its nodes' logs under ``DATA_DIR/clusters/<name>-<pid>-<ns>/``
(``pid`` is the process that started it, ``ns`` when). Left alone they pile up
(~430 runs left 319 directories, 67 MB), so:

* a cluster that ended well takes its directory with it (``EDGELAB_KEEP_WORK_DIRS``
  = ``on-failure``, the default; ``always`` keeps every one, ``never`` none);
* a failed cluster's directory is kept (a ``KEPT`` marker says when and why) and
  the run's error says where, because the database holds only the last lines;
* :func:`prune` removes kept directories older than ``EDGELAB_WORK_DIR_KEEP_HOURS``
  and then the oldest until all of them fit in ``EDGELAB_WORK_DIR_KEEP_MB``, plus
  directories whose owning process died without cleaning up (``kill -9``). It
  runs before every cluster start and when a Celery worker process starts and
  after each task, so it needs no timer of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from edgelab.settings import Settings

MARKER = "KEPT"


def clusters_dir(settings: Settings) -> Path:
    return settings.data_dir / "clusters"


def new_work_dir(settings: Settings, name: str) -> Path:
    """A fresh, not yet created, directory for a cluster called ``name``."""
    return clusters_dir(settings) / f"{name}-{os.getpid()}-{time.time_ns()}"


def keep_note(settings: Settings, work_dir: Path) -> str:
    """What a failed run's error says about its kept directory."""
    return (
        f"(full node logs in {work_dir}, kept for up to "
        f"{settings.work_dir_keep_hours:g} h / {settings.work_dir_keep_mb:g} MB of failed runs)"
    )


def release(
    settings: Settings, work_dir: Path, *, failed: bool, logs: dict[str, list[str]] | None = None
) -> bool:
    """The cluster is closed: remove ``work_dir`` or mark it kept; True if kept.

    ``logs`` (node -> last lines) are written for nodes without a log file of their
    own, so a Docker cluster's kept directory holds its containers' last words.
    """
    mode = settings.keep_work_dirs
    keep = mode == "always" or (failed and mode == "on-failure")
    if not keep:
        shutil.rmtree(work_dir, ignore_errors=True)
        return False
    work_dir.mkdir(parents=True, exist_ok=True)
    for node, lines in (logs or {}).items():
        path = work_dir / f"{node}.log"
        if not path.exists() and lines:
            path.write_text("\n".join(lines) + "\n")
    (work_dir / MARKER).write_text(
        json.dumps({"kept_at": time.time(), "after_failure": failed}, sort_keys=True) + "\n"
    )
    return True


@dataclass(frozen=True)
class _Dir:
    path: Path
    kept_at: float | None  # None: not marked kept (a live cluster, or an orphan)
    size: int


def _owner_alive(path: Path) -> bool:
    """Whether the process named in ``<name>-<pid>-<ns>`` still runs (the same process:
    a recycled pid started after the directory was made does not count)."""
    parts = path.name.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return False
    try:
        started = psutil.Process(int(parts[1])).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    return started <= int(parts[2]) / 1e9 + 1.0


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / f).stat().st_size
    return total


def _scan(base: Path) -> list[_Dir]:
    found = []
    try:
        entries = list(base.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        if not path.is_dir():
            continue
        kept_at: float | None = None
        marker = path / MARKER
        if marker.exists():
            try:
                kept_at = float(json.loads(marker.read_text())["kept_at"])
            except (OSError, ValueError, KeyError, TypeError):
                kept_at = marker.stat().st_mtime if marker.exists() else 0.0
        found.append(_Dir(path, kept_at, _size(path)))
    return found


def prune(settings: Settings, now: float | None = None) -> list[Path]:
    """Remove what nobody needs any more (see the module docstring); return it."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    kept: list[_Dir] = []
    for d in _scan(clusters_dir(settings)):
        if d.kept_at is None:
            if not _owner_alive(d.path):  # its process died mid-run (kill -9, OOM)
                removed.append(d.path)
            continue
        if now - d.kept_at > settings.work_dir_keep_hours * 3600:
            removed.append(d.path)
        else:
            kept.append(d)
    budget = settings.work_dir_keep_mb * 1024 * 1024
    kept.sort(key=lambda d: d.kept_at or 0.0, reverse=True)  # newest first
    total = 0
    for i, d in enumerate(kept):
        total += d.size
        if total > budget and i > 0:  # the newest stays: its run's error points at it
            removed.append(d.path)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


__all__ = ["clusters_dir", "keep_note", "new_work_dir", "prune", "release"]
