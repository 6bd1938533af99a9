"""A real dllama binary on a tiny synthetic model: 1 node and 3 nodes through proxies.

Opt-in: skipped (with the reason shown by ``-ra``) unless EDGELAB_DLLAMA_BIN
points at a distributed-llama build. edgelab never builds dllama itself. Both
root modes run: ``api`` (the warm default; needs ``dllama-api`` beside ``dllama``
or EDGELAB_DLLAMA_API_BIN) and ``inference`` (one ``dllama inference`` per run).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgelab.engines.client import RootClient
from edgelab.engines.dllama import DllamaEngine
from edgelab.engines.dllama.synthetic import write_synthetic_model
from edgelab.netem.profile import LatencyProfile
from edgelab.netem.proxy import LinkProxy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("EDGELAB_DLLAMA_BIN"),
        reason="EDGELAB_DLLAMA_BIN is not set (point it at a distributed-llama build to run)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = write_synthetic_model(tmp_path_factory.mktemp("dllama"))
    return path


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *argv],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_marker(log: Path, marker: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if marker in log.read_text(errors="replace"):
            return
        assert proc.poll() is None, log.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"no {marker!r} in {log}")


@pytest.fixture
def cluster(model: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RootClient]:
    nodes, mode = request.param
    engine = DllamaEngine(mode=mode)
    procs: list[subprocess.Popen[bytes]] = []
    proxies: list[LinkProxy] = []
    try:
        endpoints = []
        for i in range(1, nodes):
            port = free_port()
            launch = engine.worker_launch("127.0.0.1", port, 1)
            log = tmp_path / f"worker{i}.log"
            procs.append(start(launch.argv, log))
            assert launch.ready_marker is not None
            wait_marker(log, launch.ready_marker, procs[-1])
            proxy = LinkProxy(
                f"link{i}",
                upstream=("127.0.0.1", port),
                profile=LatencyProfile(delay_ms=1.0),
                listen=("127.0.0.1", 0),
            )
            proxy.start()
            proxies.append(proxy)
            host, pport = proxy.address
            endpoints.append(f"{host}:{pport}")
        root_port = free_port()
        root = engine.root_launch("127.0.0.1", root_port, model, endpoints, 1)
        procs.append(start(root.argv, tmp_path / "root.log"))
        client = RootClient(f"http://127.0.0.1:{root_port}", read_timeout_s=120)
        client.wait_healthy(120, is_alive=lambda: all(p.poll() is None for p in procs))
        yield client
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=10)
        for proxy in proxies:
            proxy.close()


@pytest.mark.parametrize(
    "cluster",
    [(1, "inference"), (3, "inference"), (1, "api"), (3, "api")],
    indirect=True,
    ids=["1node-inference", "3nodes-inference", "1node-api", "3nodes-api"],
)
def test_generates_tokens_with_dllama_timings(cluster: RootClient) -> None:
    info = cluster.info()
    assert info["engine"] == "dllama"
    assert info["net_turbo"] is False
    if info["mode"] == "api":
        # dllama-api stops at EOS and may merge held-back pieces into one chunk, so
        # the count is at most max_tokens; greedy random weights rarely hit either.
        events = list(cluster.generate("Hello the world", 8))
        tokens = [e for e in events if e["type"] == "token"]
        assert 1 <= len(tokens) <= 8
        assert events[0]["detail"]["start_pos"] == 0
        again = [e for e in cluster.generate("Hello the world", 8) if e["type"] == "token"]
        # Greedy and no cache reuse: the same request gives the same text again.
        assert "".join(t["text"] for t in again) == "".join(t["text"] for t in tokens)
        return
    events = list(cluster.generate("Hello the world", 8, chat=False))
    assert events[0]["type"] == "start"
    assert events[0]["prompt_tokens"] >= 2
    tokens = [e for e in events if e["type"] == "token"]
    assert len(tokens) == 8
    assert events[-1] == {**events[-1], "type": "end", "output_tokens": 8}
    offsets = [t["offset_ms"] for t in tokens]
    assert offsets == sorted(offsets)
    # Per-token dllama numbers, when the root API forwards piece detail.
    detail = tokens[0].get("detail")
    if detail is not None:
        assert {"compute_ms", "sync_ms", "sent_kb", "recv_kb", "load_ms"} <= set(detail)
        if info["nodes"] > 1:
            assert any(t["detail"]["sent_kb"] > 0 for t in tokens)
    # A second run on the same cluster works (weights streamed again).
    again = [e for e in cluster.generate("Hello", 3, chat=False) if e["type"] == "token"]
    assert len(again) == 3
