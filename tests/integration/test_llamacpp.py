"""The llama.cpp engine as real processes on loopback: RPC workers plus a root.

No proxies and no cluster code: these tests pin down what the engine itself
does (where layers land, that tokens stream, that greedy decoding repeats, what
happens when a worker dies) so the cluster tests can rely on it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgelab.engines import get_engine
from edgelab.engines.base import EngineError
from edgelab.engines.client import RootClient

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes")]

PROMPT = "Name three planets."
ENGINE = get_engine("llamacpp")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


class Nodes:
    """Starts node processes and always reaps them, whatever the test did."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Node] = []

    def spawn(self, name: str, argv: list[str]) -> Node:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT)
        node = Node(proc, log)
        self.started.append(node)
        return node

    def worker(self, name: str) -> tuple[Node, str]:
        port = free_port()
        launch = ENGINE.worker_launch("127.0.0.1", port, 1)
        node = self.spawn(name, launch.argv)
        assert launch.ready_marker is not None
        deadline = time.monotonic() + 30
        while launch.ready_marker not in node.text():
            assert node.alive(), f"worker died while starting:\n{node.text()}"
            assert time.monotonic() < deadline, f"worker not ready:\n{node.text()}"
            time.sleep(0.05)
        return node, f"127.0.0.1:{port}"

    def root(self, model: Path, workers: list[str]) -> tuple[Node, RootClient]:
        port = free_port()
        node = self.spawn("root", ENGINE.root_launch("127.0.0.1", port, model, workers, 1).argv)
        client = RootClient(f"http://127.0.0.1:{port}", read_timeout_s=60)
        try:
            client.wait_healthy(timeout_s=120, is_alive=node.alive)
        except EngineError as exc:
            raise AssertionError(f"{exc}\n{node.text()[-3000:]}") from exc
        return node, client

    def stop_all(self) -> None:
        for node in self.started:
            if node.alive():
                node.proc.terminate()
        for node in self.started:
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def model(smollm2: Any) -> Path:
    return Path(smollm2.path)


@pytest.fixture(scope="module")
def smollm2(models_dir: Path) -> Any:
    # Module-scoped twin of the shared fixture, so one cluster serves many tests.
    from edgelab.catalog import Catalog

    return Catalog(models_dir=models_dir, path=models_dir / "catalog.json").fetch("smollm2-135m")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@dataclass
class Cluster:
    root: Node
    client: RootClient
    workers: list[Node]
    endpoints: list[str]


@pytest.fixture(scope="module")
def three_nodes(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Nodes(tmp_path_factory.mktemp("three_nodes"))
    try:
        workers = [started.worker(f"worker{i}") for i in (1, 2)]
        endpoints = [endpoint for _, endpoint in workers]
        root, client = started.root(model, endpoints)
        yield Cluster(root, client, [node for node, _ in workers], endpoints)
    finally:
        started.stop_all()


def collect(client: RootClient, max_tokens: int, **kwargs: Any) -> list[dict[str, Any]]:
    return list(client.generate(PROMPT, max_tokens, **kwargs))


@pytest.mark.timeout(300)
def test_three_nodes_stream_greedy_tokens_repeatably(three_nodes: Cluster) -> None:
    first = collect(three_nodes.client, 8)
    assert first[0]["type"] == "start"
    assert first[0]["prompt_tokens"] > len(PROMPT.split())  # chat template applied
    tokens = [e for e in first if e["type"] == "token"]
    end = first[-1]
    assert end["type"] == "end"
    assert 1 <= end["output_tokens"] == len(tokens) <= 8
    if end["stop_reason"] == "length":
        assert len(tokens) == 8
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    offsets = [e["offset_ms"] for e in first]
    assert offsets == sorted(offsets)
    assert "".join(t["text"] for t in tokens).strip()

    second = collect(three_nodes.client, 8)
    assert [t["text"] for t in second if t["type"] == "token"] == [t["text"] for t in tokens]
    # Every run prefills again: the previous run's KV cache is not reused.
    assert second[0]["prompt_tokens"] == first[0]["prompt_tokens"]


@pytest.mark.timeout(300)
def test_three_nodes_split_layers_over_root_and_both_workers(three_nodes: Cluster) -> None:
    info = three_nodes.client.info()
    assert info["engine"] == "llamacpp"
    assert info["engine_version"].startswith("llama-cpp-python ")
    assert info["nodes"] == 3
    assert info["n_layers"] == 30
    assert info["load_ms"] > 0
    assert info["rpc_devices"] == {
        "RPC0": three_nodes.endpoints[0],
        "RPC1": three_nodes.endpoints[1],
    }
    split = info["layer_split"]
    assert [(s["node"], s["device"], s["endpoint"]) for s in split] == [
        ("root", "CPU", None),
        ("worker1", "RPC0", three_nodes.endpoints[0]),
        ("worker2", "RPC1", three_nodes.endpoints[1]),
    ]
    assert [(s["n_layers"], s["first_layer"], s["last_layer"]) for s in split] == [
        (10, 0, 9),
        (10, 10, 19),
        (10, 20, 29),
    ]
    assert [s["output_layer"] for s in split] == [False, False, True]
    assert all(s["model_buffer_mib"] > 0 for s in split)
    log = three_nodes.root.text()
    assert "using device RPC0 (" + three_nodes.endpoints[0] in log
    assert "using device RPC1 (" + three_nodes.endpoints[1] in log
    assert "layer  10 assigned to device RPC0" in log
    assert "WARNING layer split" not in log


@pytest.mark.timeout(300)
def test_root_refuses_a_second_generation_while_one_runs(three_nodes: Cluster) -> None:
    stream = three_nodes.client.generate(PROMPT, 8)
    try:
        assert next(stream)["type"] == "start"
        with pytest.raises(EngineError, match="busy"):
            collect(three_nodes.client, 1)
    finally:
        with contextlib.suppress(EngineError):
            list(stream)


@pytest.mark.timeout(300)
def test_sampling_with_a_seed_repeats(three_nodes: Cluster) -> None:
    runs = [
        [e["text"] for e in collect(three_nodes.client, 6, temperature=0.9, seed=s) if "text" in e]
        for s in (42, 42)
    ]
    assert runs[0] == runs[1]


@pytest.mark.timeout(300)
def test_one_node_root_runs_alone(model: Path, nodes: Nodes) -> None:
    root, client = nodes.root(model, [])
    info = client.info()
    assert info["nodes"] == 1
    assert info["n_gpu_layers"] == 0
    assert info["rpc_devices"] == {}
    assert [(s["device"], s["n_layers"], s["output_layer"]) for s in info["layer_split"]] == [
        ("CPU", 30, True)
    ]
    events = collect(client, 4)
    assert events[-1]["type"] == "end"
    assert 1 <= events[-1]["output_tokens"] <= 4
    assert "using device RPC" not in root.text()
    client.shutdown()
    assert root.proc.wait(timeout=30) == 0


@pytest.mark.timeout(300)
def test_killed_worker_fails_the_generation_instead_of_hanging(model: Path, nodes: Nodes) -> None:
    workers = [nodes.worker(f"worker{i}") for i in (1, 2)]
    root, client = nodes.root(model, [endpoint for _, endpoint in workers])
    seen: list[dict[str, Any]] = []

    def read_and_kill_at_token_2() -> None:
        for event in client.generate("Write a long story about a cat.", 400):
            seen.append(event)
            if event["type"] == "token" and event["index"] == 2:
                workers[1][0].proc.kill()

    with pytest.raises(EngineError, match=r"without an end event|broke"):
        read_and_kill_at_token_2()
    assert [e["type"] for e in seen[:4]] == ["start", "token", "token", "token"]
    assert seen[-1]["type"] == "token"
    # ggml's RPC client aborts the whole root process when a server vanishes.
    assert root.proc.wait(timeout=60) != 0
    # The reason is among the last lines, where the cluster looks for it.
    assert "Remote RPC server crashed" in "\n".join(root.text().splitlines()[-3:])


@pytest.mark.timeout(120)
def test_worker_exits_promptly_on_sigterm(nodes: Nodes) -> None:
    worker, _ = nodes.worker("worker")
    worker.proc.terminate()
    assert worker.proc.wait(timeout=10) == -15


@pytest.mark.timeout(300)
def test_root_with_an_unreachable_worker_exits_with_a_readable_error(
    model: Path, nodes: Nodes
) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(AssertionError, match="exited before it was ready"):
        nodes.root(model, [endpoint])
    root = nodes.started[-1]
    assert root.proc.wait(timeout=30) == 1
    assert f"worker {endpoint} is not reachable" in root.text()
