"""Entrypoint of a worker container: engine worker + its link proxy + the link's control.

Inside ``worker_image`` one process owns the whole worker node, so the container
lives and dies with it:

* the engine's worker (e.g. the ggml RPC server) runs as a child process bound to
  127.0.0.1 only, so nothing can reach it except through the proxy;
* a :class:`~edgelab.netem.proxy.LinkProxy` listens on 0.0.0.0 and is the only
  way in: every root<->worker byte crosses it and gets the link's delay;
* a :class:`~edgelab.netem.control.ControlServer` lets the host read the link's
  counters and change its profile while the cluster stays warm.

Readiness is the engine's own ready line when it prints one (its output is
copied to ours line by line, so it still is the container's log); only an
engine without one is probed by connecting, because a distributed-llama worker
treats a connection that closes before its handshake as fatal.

When the engine worker dies this process exits with the worker's status (a
signal death becomes 128 + signal, as a shell would report it), which is what
Docker's container state then shows to ``DockerCluster.check_alive``.

Run as ``python -m edgelab.cluster.worker_node --name worker1 --threads 1``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import IO

from edgelab.engines import get_engine
from edgelab.netem.control import ControlServer
from edgelab.netem.profile import LatencyProfile
from edgelab.netem.proxy import LinkProxy
from edgelab.netem.replay import load_delay_trace
from edgelab.settings import Settings

ENGINE_PORT = 50051
PROXY_PORT = 50052
CONTROL_PORT = 50053
READY_MARKER = "worker node ready"


def _copy_output(stream: IO[bytes], marker: str, seen: threading.Event) -> None:
    """Copy the engine's output to our stdout, noting when its ready line appears."""
    out = sys.stdout.buffer
    for line in iter(stream.readline, b""):
        out.write(line)
        out.flush()
        if not seen.is_set() and marker.encode() in line:
            seen.set()


def _wait_ready(
    port: int,
    proc: subprocess.Popen[bytes],
    timeout_s: float,
    ready_line: threading.Event | None,
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready_line is not None:
            if ready_line.wait(0.05):
                return True
            continue
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgelab worker node (container entrypoint)")
    parser.add_argument("--name", default="worker", help="node name, e.g. worker1")
    parser.add_argument("--link", default=None, help="link name (default root<->NAME)")
    parser.add_argument("--engine", default="llamacpp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency", default="{}", help="LatencyProfile.to_dict() as JSON")
    parser.add_argument(
        "--queue-bytes", type=int, default=None, help="per-direction link queue (default: BDP)"
    )
    parser.add_argument("--trace", default=None, help="delay-trace CSV to replay")
    parser.add_argument("--engine-port", type=int, default=ENGINE_PORT)
    parser.add_argument("--proxy-port", type=int, default=PROXY_PORT)
    parser.add_argument("--control-port", type=int, default=CONTROL_PORT)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    # The container's environment holds what DockerCluster wrote (Settings.node_env).
    settings = Settings.from_env()

    profile = LatencyProfile.from_dict(json.loads(args.latency))
    launch = get_engine(args.engine).worker_launch("127.0.0.1", args.engine_port, args.threads)
    # The engine's messages are the container's log: stderr is inherited, stdout is
    # copied through when we need to watch it for the ready line.
    ready_line: threading.Event | None = None
    if launch.ready_marker is None:
        proc = subprocess.Popen([sys.executable, *launch.argv])
    else:
        ready_line = threading.Event()
        proc = subprocess.Popen([sys.executable, *launch.argv], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        threading.Thread(
            target=_copy_output,
            args=(proc.stdout, launch.ready_marker, ready_line),
            name="engine-output",
            daemon=True,
        ).start()

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if proc.poll() is None:
            proc.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not _wait_ready(args.engine_port, proc, args.ready_timeout, ready_line):
        code = proc.poll()
        if code is None:
            proc.kill()
            proc.wait()
            print(
                f"{args.name}: engine worker not listening after {args.ready_timeout:g} s",
                file=sys.stderr,
                flush=True,
            )
            return 1
        print(f"{args.name}: engine worker exited with {code}", file=sys.stderr, flush=True)
        return _exit_status(code)

    link = args.link or f"root<->{args.name}"
    proxy = LinkProxy(
        link,
        upstream=("127.0.0.1", args.engine_port),
        profile=profile,
        listen=("0.0.0.0", args.proxy_port),
        queue_bytes=args.queue_bytes,
        trace=None if args.trace is None else load_delay_trace(args.trace),
        splice=settings.netem_splice,
    )
    control = ControlServer(proxy, ("0.0.0.0", args.control_port))
    try:
        proxy.start()
        control.start()
        print(
            f"{READY_MARKER}: {link} proxy :{args.proxy_port} -> engine :{args.engine_port}, "
            f"control :{args.control_port}, profile {profile.label}",
            flush=True,
        )
        code = proc.wait()
    finally:
        control.close()
        proxy.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if stopping.is_set():
        return 0
    print(f"{args.name}: engine worker exited with {code}", file=sys.stderr, flush=True)
    return _exit_status(code)


if __name__ == "__main__":
    sys.exit(main())
