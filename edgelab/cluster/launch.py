"""Exec a node command so that it dies with the process that started it.

``python -m edgelab.cluster.launch PARENT_PID [--cgroup PROCS_FILE]... [--netns PATH] -- PROGRAM
ARGS...`` sets
``PR_SET_PDEATHSIG`` (which survives ``execve``) and then becomes PROGRAM. Doing
this in a launcher rather than in ``preexec_fn`` keeps ``subprocess`` fork-safe in
a parent that already runs proxy threads. The parent pid is checked after the
prctl so that a parent that died in between is not missed. With ``--cgroup`` the
launcher first moves itself into those cgroups (``cgroup.procs``: a node's CPU
quota and memory limit), so every thread the program starts is inside it from its first instruction.
With ``--netns`` it then enters that network namespace (``/run/netns/NAME``, a
local node's own: :mod:`edgelab.topology.netns`) with ``setns(2)`` through ctypes
(Python 3.11 has no ``os.setns``); done here, in the still single-threaded launcher,
rather than through ``ip netns exec``, so that the node stays this process (its pid
is the one the cluster stops, samples and reads namespace counters of) and the
death signal is set on the process that becomes the node.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000


def main(argv: list[str]) -> None:
    usage = (
        "usage: python -m edgelab.cluster.launch PARENT_PID [--cgroup FILE]... [--netns PATH] "
        "-- PROGRAM [ARGS]"
    )
    cgroups: list[str] = []
    netns: str | None = None
    while len(argv) >= 3 and argv[1] in ("--cgroup", "--netns"):
        if argv[1] == "--cgroup":
            cgroups.append(argv[2])
        else:
            netns = argv[2]
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
    if netns is not None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            sys.exit(f"cannot open network namespace {netns}: {exc}")
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            sys.exit(f"cannot enter network namespace {netns}: errno {ctypes.get_errno()}")
        os.close(fd)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        sys.exit(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
    if os.getppid() != parent:
        sys.exit("parent exited before the node started")
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
