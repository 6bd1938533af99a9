"""A llama.cpp worker node: the ggml RPC server exposing this machine's CPU.

Run as ``python -m edgelab.engines.llamacpp.worker --host H --port P --threads T``.
Once the server accepts connections it prints ``worker listening on H:P`` (the
engine's ready marker) on stdout. The server call blocks inside C for the life of
the process, where Python signal handlers never run, so SIGTERM and SIGINT keep
(or get back) their default action: the process ends at once, which is all a
stateless worker needs.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time

from edgelab.engines.base import EngineError
from edgelab.engines.llamacpp import READY_MARKER
from edgelab.engines.llamacpp.ggml import load_ggml


def _announce_when_listening(host: str, port: int, deadline_s: float = 60.0) -> None:
    # The C server prints its own banner through buffered stdio, which a pipe may
    # hold back; a successful connect is the honest sign that it listens. The
    # server drops a client that closes before its hello and keeps accepting.
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        print(f"{READY_MARKER} {host}:{port}", flush=True)
        return
    print(f"worker: nothing listens on {host}:{port} after {deadline_s:g} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        ggml = load_ggml()
    except EngineError as exc:
        print(f"worker: {exc}", file=sys.stderr, flush=True)
        return 2
    probe_host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    threading.Thread(
        target=_announce_when_listening, args=(probe_host, args.port), daemon=True
    ).start()
    ggml.start_rpc_server(f"{args.host}:{args.port}", args.threads)
    # Only reached when the server could not start (e.g. the port is taken).
    print(f"worker: RPC server on {args.host}:{args.port} stopped", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
