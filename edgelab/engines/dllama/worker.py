"""A distributed-llama worker node: ``dllama worker`` kept alive by a tiny supervisor.

Run as ``python -m edgelab.engines.dllama.worker --dllama-bin B --port P --threads T``.
Why not exec the binary directly: a dllama worker exits for good when a
connection closes before the handshake ends (its accept path is outside its
retry loop) - a TCP health probe, or a root stopped while it streams weights,
would leave a dead node. The supervisor restarts it at once, prints the ready
marker when the port accepts connections (checked in ``/proc/net/tcp``, never by
connecting, which would trigger exactly that exit), and gives up only when the
worker keeps dying right after start (a taken port, a broken binary).

``--net-turbo 0`` is the default: turbo mode busy-spins sockets, which on a host
with fewer cores than total threads makes everything dozens of times slower.
dllama binds all interfaces; ``--host`` is only used for the ready message.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from edgelab.engines.base import EngineError
from edgelab.engines.dllama import READY_MARKER
from edgelab.engines.dllama.binary import resolve_binary

TCP_LISTEN = "0A"
MAX_QUICK_DEATHS = 5
QUICK_DEATH_S = 2.0


def listening(port: int) -> bool:
    """True when some socket on this host listens on TCP ``port`` (IPv4 or IPv6)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 3
                and fields[3] == TCP_LISTEN
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                return True
    return False


def worker_argv(binary: Path, port: int, threads: int, net_turbo: bool) -> list[str]:
    return [
        str(binary),
        "worker",
        "--port",
        str(port),
        "--nthreads",
        str(threads),
        "--net-turbo",
        "1" if net_turbo else "0",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dllama-bin", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--net-turbo", type=int, choices=(0, 1), default=0)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    try:
        binary = resolve_binary(args.dllama_bin)
    except EngineError as exc:
        print(f"worker: {exc}", file=sys.stderr, flush=True)
        return 2

    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    command = worker_argv(binary, args.port, args.threads, bool(args.net_turbo))
    quick_deaths = 0
    announced = False
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        while child.poll() is None and not announced:
            if listening(args.port):
                print(f"{READY_MARKER} {args.host}:{args.port}", flush=True)
                announced = True
                break
            time.sleep(0.05)
        code = child.wait()
        if stopping:
            break
        lived = time.monotonic() - started
        quick_deaths = quick_deaths + 1 if lived < QUICK_DEATH_S else 0
        print(f"worker: dllama exited with code {code} after {lived:.1f} s", flush=True)
        if quick_deaths >= MAX_QUICK_DEATHS:
            print(
                f"worker: dllama died {quick_deaths} times within {QUICK_DEATH_S:g} s of "
                "starting; giving up",
                file=sys.stderr,
                flush=True,
            )
            return 1
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
