"""Limits for local nodes through cgroups: a CPU quota (v1 ``cpu.cfs_quota_us``, v2
``cpu.max``) and a memory limit (v1 ``memory.limit_in_bytes``, v2 ``memory.max``).

A local node with ``cpus: 0.25`` runs in a cgroup of its own whose quota is a
quarter of one core per scheduling period, the same mechanism Docker's ``--cpus``
uses. The node's launcher (:mod:`edgelab.cluster.launch`) writes itself into the
group before it becomes the engine, so every thread the engine starts is capped.
Groups are named ``edgelab-<owner pid>-<cluster>-<node>`` and removed when the
cluster closes; :func:`reap_groups` removes groups of owners that died.

Needs root and a writable cgroup hierarchy with the cpu (and memory) controller;
anything else is a clear refusal (:func:`cpu_quota_problem`,
:func:`memory_limit_problem`), not a silent no-op.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
PREFIX = "edgelab-"


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    #: Where groups are created, per controller (v2: the same directory for both).
    bases: dict[str, Path]


CONTROLLERS = ("cpu", "memory")


def _find_hierarchy(root: Path = CGROUP_ROOT) -> Hierarchy | str:
    """The hierarchy to create groups in (cpu and memory controllers), or why there is none."""
    if (root / "cpu" / "cpu.cfs_quota_us").exists():
        bases = {"cpu": root / "cpu"}
        if (root / "memory" / "memory.limit_in_bytes").exists():
            bases["memory"] = root / "memory"
        return Hierarchy(1, bases)
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        available = controllers.read_text().split()
        if "cpu" not in available:
            return f"the cgroup v2 hierarchy at {root} has no cpu controller"
        subtree = root / "cgroup.subtree_control"
        enabled = subtree.read_text().split()
        for name in CONTROLLERS:
            if name in available and name not in enabled:
                try:
                    subtree.write_text(f"+{name}")
                except OSError as exc:
                    return f"the {name} controller cannot be enabled in {subtree} ({exc.strerror})"
        return Hierarchy(2, {n: root for n in CONTROLLERS if n in available})
    return f"no cgroup cpu controller is mounted at {root}"


@functools.cache
def _probe() -> Hierarchy | str:
    if os.geteuid() != 0:
        return "edgelab does not run as root"
    found = _find_hierarchy()
    if isinstance(found, str):
        return found
    for controller, base in found.bases.items():
        probe = base / f"{PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            probe.mkdir()
            if controller == "cpu":
                _write_quota(found, probe, 1.0)
        except OSError as exc:
            return f"cgroups cannot be created in {base} ({exc.strerror})"
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
    return found


def cpu_quota_problem() -> str | None:
    """Why a CPU quota cannot be applied to local nodes here, or None if it can."""
    found = _probe()
    return found if isinstance(found, str) else None


def memory_limit_problem() -> str | None:
    """Why a memory limit cannot be applied to local nodes here, or None if it can."""
    found = _probe()
    if isinstance(found, str):
        return found
    return None if "memory" in found.bases else "no cgroup memory controller is mounted"


def _write_quota(h: Hierarchy, group: Path, cpus: float) -> None:
    quota = max(1000, round(cpus * PERIOD_US))
    if h.version == 1:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    else:
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")


def _write_memory(h: Hierarchy, group: Path, mem_bytes: int) -> None:
    if h.version == 1:
        (group / "memory.limit_in_bytes").write_text(str(mem_bytes))
    else:
        (group / "memory.max").write_text(str(mem_bytes))
        with contextlib.suppress(OSError):
            (group / "memory.swap.max").write_text("0")


def read_quota(group: Path) -> float | None:
    """The quota a group actually has, in cores (None: unlimited or unreadable)."""
    try:
        if (group / "cpu.cfs_quota_us").exists():
            quota = int((group / "cpu.cfs_quota_us").read_text())
            period = int((group / "cpu.cfs_period_us").read_text())
            return None if quota < 0 else quota / period
        text = (group / "cpu.max").read_text().split()
        return None if text[0] == "max" else int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        return None


def read_memory(group: Path) -> int | None:
    """The memory limit a group actually has, in bytes (None: unlimited or unreadable)."""
    try:
        if (group / "memory.limit_in_bytes").exists():
            value = int((group / "memory.limit_in_bytes").read_text())
            return None if value >= 1 << 62 else value
        text = (group / "memory.max").read_text().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


class NodeGroup:
    """One node's cgroup(s) with its CPU quota and/or memory limit; :meth:`remove`
    deletes them (idempotent). cgroup v1 has one directory per controller."""

    def __init__(self, cluster: str, node: str, cpus: float | None, mem_bytes: int | None) -> None:
        found = _probe()
        if isinstance(found, str):
            raise OSError(f"cannot apply node limits: {found}")
        self.hierarchy = found
        name = f"{PREFIX}{os.getpid()}-{cluster}-{node}"
        wanted = [c for c, v in (("cpu", cpus), ("memory", mem_bytes)) if v is not None]
        missing = [c for c in wanted if c not in found.bases]
        if missing:
            raise OSError(f"no cgroup {' and '.join(missing)} controller is available")
        self.paths: dict[str, Path] = {}
        for controller in wanted:
            path = found.bases[controller] / name
            if path not in self.paths.values():
                path.mkdir()
            self.paths[controller] = path
        try:
            if cpus is not None:
                _write_quota(found, self.paths["cpu"], cpus)
            if mem_bytes is not None:
                _write_memory(found, self.paths["memory"], mem_bytes)
        except OSError:
            self.remove()
            raise

    @property
    def procs_files(self) -> list[Path]:
        return sorted({p / "cgroup.procs" for p in self.paths.values()})

    def applied_cpus(self) -> float | None:
        return read_quota(self.paths["cpu"]) if "cpu" in self.paths else None

    def applied_mem(self) -> int | None:
        return read_memory(self.paths["memory"]) if "memory" in self.paths else None

    def hit_memory_limit(self) -> bool:
        """Whether the memory limit was reached (the kernel's OOM killer may have acted)."""
        path = self.paths.get("memory")
        if path is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            if (path / "memory.failcnt").exists():
                return int((path / "memory.failcnt").read_text()) > 0
            events = (path / "memory.events").read_text().split()
            return int(events[events.index("oom_kill") + 1]) > 0
        return False

    def remove(self, timeout_s: float = 5.0) -> None:
        """Delete the groups once their processes are gone (rmdir fails while any is left)."""
        for path in set(self.paths.values()):
            _remove(path, timeout_s)


def _remove(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while path.exists():
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                _evict(path)
                with contextlib.suppress(OSError):
                    path.rmdir()
                return
            time.sleep(0.05)


def _evict(group: Path) -> None:
    """Move what is left in ``group`` to its parent (the group can then be removed)."""
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (group.parent / "cgroup.procs").write_text(pid)


def reap_groups() -> list[str]:
    """Remove edgelab groups whose owning process is gone (a ``kill -9``-ed CLI or worker)."""
    found = _find_hierarchy()
    if isinstance(found, str) or os.geteuid() != 0:
        return []
    removed = []
    for base in set(found.bases.values()):
        for group in base.glob(f"{PREFIX}*"):
            owner = group.name[len(PREFIX) :].split("-", 1)[0]
            if not owner.isdigit() or owner_alive(int(owner)):
                continue
            _evict(group)
            with contextlib.suppress(OSError):
                group.rmdir()
                removed.append(str(group))
    return removed


def owner_alive(pid: int) -> bool:
    """Whether the process that owns an edgelab cgroup or namespace (by its name) lives."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
