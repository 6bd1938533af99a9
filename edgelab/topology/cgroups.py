"""CPU quotas for local nodes through cgroups (v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``).

A local node with ``cpus: 0.25`` runs in a cgroup of its own whose quota is a
quarter of one core per scheduling period, the same mechanism Docker's ``--cpus``
uses. The node's launcher (:mod:`edgelab.cluster.launch`) writes itself into the
group before it becomes the engine, so every thread the engine starts is capped.
Groups are named ``edgelab-<owner pid>-<cluster>-<node>`` and removed when the
cluster closes; :func:`reap_groups` removes groups of owners that died.

Needs root and a writable cgroup hierarchy with the cpu controller; anything
else is a clear refusal (:func:`cpu_quota_problem`), not a silent no-op.
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
    base: Path  # where groups are created


def _find_hierarchy(root: Path = CGROUP_ROOT) -> Hierarchy | str:
    """The cpu hierarchy to create groups in, or why there is none."""
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return Hierarchy(1, v1)
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        if "cpu" not in controllers.read_text().split():
            return f"the cgroup v2 hierarchy at {root} has no cpu controller"
        subtree = root / "cgroup.subtree_control"
        if "cpu" not in subtree.read_text().split():
            try:
                subtree.write_text("+cpu")
            except OSError as exc:
                return f"the cpu controller cannot be enabled in {subtree} ({exc.strerror})"
        return Hierarchy(2, root)
    return f"no cgroup cpu controller is mounted at {root}"


@functools.cache
def _probe() -> Hierarchy | str:
    if os.geteuid() != 0:
        return "edgelab does not run as root"
    found = _find_hierarchy()
    if isinstance(found, str):
        return found
    probe = found.base / f"{PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        probe.mkdir()
        _write_quota(found, probe, 1.0)
    except OSError as exc:
        return f"cgroups cannot be created in {found.base} ({exc.strerror})"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
    return found


def cpu_quota_problem() -> str | None:
    """Why a CPU quota cannot be applied to local nodes here, or None if it can."""
    found = _probe()
    return found if isinstance(found, str) else None


def _write_quota(h: Hierarchy, group: Path, cpus: float) -> None:
    quota = max(1000, round(cpus * PERIOD_US))
    if h.version == 1:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    else:
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")


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


class CpuGroup:
    """One node's cgroup with a CPU quota; :meth:`remove` deletes it (idempotent)."""

    def __init__(self, cluster: str, node: str, cpus: float) -> None:
        found = _probe()
        if isinstance(found, str):
            raise OSError(f"cannot apply a CPU quota: {found}")
        self.hierarchy = found
        self.path = found.base / f"{PREFIX}{os.getpid()}-{cluster}-{node}"
        self.path.mkdir()
        try:
            _write_quota(found, self.path, cpus)
        except OSError:
            self.remove()
            raise

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def applied_cpus(self) -> float | None:
        return read_quota(self.path)

    def remove(self, timeout_s: float = 5.0) -> None:
        """Delete the group once its processes are gone (rmdir fails while any is left)."""
        deadline = time.monotonic() + timeout_s
        while self.path.exists():
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() >= deadline:
                    _evict(self.path)
                    with contextlib.suppress(OSError):
                        self.path.rmdir()
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
    for group in found.base.glob(f"{PREFIX}*"):
        owner = group.name[len(PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        _evict(group)
        with contextlib.suppress(OSError):
            group.rmdir()
            removed.append(group.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
