"""Entrypoint of a worker container: engine worker + its link proxy + the link's control.

Inside ``worker_image`` one process owns the whole worker node, so the container
lives and dies with it:

* the engine's worker (e.g. the ggml RPC server) runs as a child process bound to
  127.0.0.1 only, so nothing can reach it except through the proxy;
* a :class:`~edgelab.netem.proxy.LinkProxy` listens on 0.0.0.0 and is the only
  way in: every root<->worker byte crosses it and gets the link's delay;
* a :class:`~edgelab.netem.control.ControlServer` lets the host read the link's
  counters and change its profile while the cluster stays warm.

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

from edgelab.engines import get_engine
from edgelab.netem.control import ControlServer
from edgelab.netem.profile import LatencyProfile
from edgelab.netem.proxy import LinkProxy

ENGINE_PORT = 50051
PROXY_PORT = 50052
CONTROL_PORT = 50053
READY_MARKER = "worker node ready"


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
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
    parser.add_argument("--engine-port", type=int, default=ENGINE_PORT)
    parser.add_argument("--proxy-port", type=int, default=PROXY_PORT)
    parser.add_argument("--control-port", type=int, default=CONTROL_PORT)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    profile = LatencyProfile.from_dict(json.loads(args.latency))
    launch = get_engine(args.engine).worker_launch("127.0.0.1", args.engine_port, args.threads)
    # stdout/stderr are inherited, so the engine's own messages are the container's log.
    proc = subprocess.Popen([sys.executable, *launch.argv])

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if proc.poll() is None:
            proc.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not _wait_listening(args.engine_port, proc, args.ready_timeout):
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
