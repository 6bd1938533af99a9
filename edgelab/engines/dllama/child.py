"""The dllama child process of a root: started on a pty, stopped with a grace period.

Both roots (:mod:`edgelab.engines.dllama.root` for ``dllama inference``,
:mod:`edgelab.engines.dllama.api` for ``dllama-api``) read their child's stdout
through a pseudo-terminal: on a pipe the C stdio of dllama buffers whole blocks,
so token lines (and ``dllama-api``'s unflushed ``Server URL`` line) would arrive
late or never. The child goes through :mod:`edgelab.cluster.launch`, so it dies
with the root even when the root is killed.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
import tty


def spawn_on_pty(argv: list[str], stderr_on_pty: bool) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` with stdout on a raw pty; return the process and the pty's master fd.

    Raw mode: no ``\\n`` -> ``\\r\\n`` translation, bytes arrive as dllama wrote them.
    stderr goes to the pty as well with ``stderr_on_pty``, else to a pipe
    (``proc.stderr``). The caller owns the master fd and closes it.
    """
    master, slave = pty.openpty()
    tty.setraw(slave)
    launcher = [sys.executable, "-m", "edgelab.cluster.launch", str(os.getpid()), "--"]
    try:
        proc = subprocess.Popen(
            [*launcher, *argv],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave if stderr_on_pty else subprocess.PIPE,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return proc, master


def stop_child(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """End ``proc`` now: SIGTERM, then SIGKILL after ``grace_s``; wait for it either way."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["spawn_on_pty", "stop_child"]
