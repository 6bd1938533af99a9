"""Exec a node command so that it dies with the process that started it.

``python -m edgelab.cluster.launch PARENT_PID [--cgroup PROCS_FILE]... -- PROGRAM ARGS...`` sets
``PR_SET_PDEATHSIG`` (which survives ``execve``) and then becomes PROGRAM. Doing
this in a launcher rather than in ``preexec_fn`` keeps ``subprocess`` fork-safe in
a parent that already runs proxy threads. The parent pid is checked after the
prctl so that a parent that died in between is not missed. With ``--cgroup`` the
launcher first moves itself into those cgroups (``cgroup.procs``: a node's CPU
quota and memory limit), so every thread the program starts is inside it from its first instruction.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    usage = "usage: python -m edgelab.cluster.launch PARENT_PID [--cgroup FILE] -- PROGRAM [ARGS]"
    cgroups: list[str] = []
    while len(argv) >= 3 and argv[1] == "--cgroup":
        cgroups.append(argv[2])
        argv = [argv[0], *argv[3:]]
    if len(argv) < 3 or argv[1] != "--":
        sys.exit(usage)
    parent = int(argv[0])
    for cgroup in cgroups:
        try:
            with open(cgroup, "w") as f:
                f.write(str(os.getpid()))
        except OSError as exc:
            sys.exit(f"cannot enter cgroup {cgroup}: {exc}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        sys.exit(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
    if os.getppid() != parent:
        sys.exit("parent exited before the node started")
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
