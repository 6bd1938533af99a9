"""The llama.cpp root's bookkeeping that needs no model: layer plan and log parsing.

The log lines are the ones llama-cpp-python 0.3.36 prints for a 3-node SmolLM2
load; if llama.cpp changes their wording, the integration tests catch it too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgelab.engines import get_engine
from edgelab.engines.llamacpp.root import LoadLog, plan_split
from edgelab.engines.llamacpp.worker import READY_MARKER


def assign(n_layers: int, n_gpu_layers: int, tensor_split: list[float] | None) -> list[int]:
    """llama.cpp's layer-to-device rule (0 = CPU, k = k-th RPC device), for n_layers + output."""
    start = n_layers + 1 - n_gpu_layers
    devices = []
    for layer in range(n_layers + 1):
        if layer < start or not tensor_split:
            devices.append(0)
            continue
        total = sum(tensor_split)
        cumulative = 0.0
        value = (layer - start) / n_gpu_layers
        for index, share in enumerate(tensor_split):
            cumulative += share
            if cumulative / total > value:
                devices.append(index + 1)
                break
    return devices


@pytest.mark.parametrize(
    ("n_layers", "nodes", "counts"),
    [
        (30, 1, (30,)),
        (30, 2, (15, 15)),
        (30, 3, (10, 10, 10)),
        (30, 4, (8, 8, 7, 7)),
        (30, 7, (5, 5, 4, 4, 4, 4, 4)),
        (30, 30, (1,) * 30),
    ],
)
def test_plan_split_is_even_and_matches_llama_cpp_placement(
    n_layers: int, nodes: int, counts: tuple[int, ...]
) -> None:
    plan = plan_split(n_layers, nodes)
    assert plan.counts == counts
    placed = assign(n_layers, plan.n_gpu_layers, plan.tensor_split)
    repeating = placed[:n_layers]
    assert [repeating.count(node) for node in range(nodes)] == list(counts)
    assert repeating == sorted(repeating), "every node holds one contiguous block"
    # The output layer sits on the root alone, otherwise with the last worker.
    assert placed[n_layers] == nodes - 1
    assert plan.ranges()[-1][1] == n_layers - 1


def test_single_node_offloads_nothing() -> None:
    plan = plan_split(30, 1)
    assert plan.n_gpu_layers == 0
    assert plan.tensor_split is None


@pytest.mark.parametrize(("n_layers", "nodes"), [(30, 0), (30, 31)])
def test_plan_split_rejects_impossible_topologies(n_layers: int, nodes: int) -> None:
    with pytest.raises(ValueError, match="nodes"):
        plan_split(n_layers, nodes)


LOG = """\
llama_prepare_model_devices: using device RPC0 (127.0.0.1:50921) (unknown id) - 24105 MiB free
llama_prepare_model_devices: using device RPC1 (127.0.0.1:50922) (unknown id) - 24105 MiB free
load_tensors: layer   9 assigned to device CPU, is_swa = 0
load_tensors: layer  10 assigned to device RPC0, is_swa = 0
load_tensors: layer  29 assigned to device RPC1, is_swa = 0
load_tensors: layer  30 assigned to device RPC1, is_swa = 0
load_tensors: offloaded 21/31 layers to GPU
load_tensors:   CPU_Mapped model buffer size =    91.57 MiB
load_tensors: RPC0[127.0.0.1:50921] model buffer size =    21.14 MiB
load_tensors: RPC0[127.0.0.1:50922] model buffer size =    49.83 MiB
llama_kv_cache: layer  11: dev = RPC0
"""


def test_load_log_copies_to_stderr_and_parses_placement(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = LoadLog()
    # llama.cpp hands over fragments, not whole lines.
    for i in range(0, len(LOG), 7):
        log.feed(LOG[i : i + 7])
    assert capsys.readouterr().err == LOG
    assert log.layer_device == {9: "CPU", 10: "RPC0", 29: "RPC1", 30: "RPC1"}
    assert log.device_endpoint == {"RPC0": "127.0.0.1:50921", "RPC1": "127.0.0.1:50922"}
    # RPC buffers are named after the device index *within* their server, so
    # they are keyed by endpoint.
    assert log.buffer_mib == {
        "CPU_Mapped": 91.57,
        "127.0.0.1:50921": 21.14,
        "127.0.0.1:50922": 49.83,
    }


def test_engine_launch_descriptions() -> None:
    engine = get_engine("llamacpp")
    worker = engine.worker_launch("127.0.0.1", 5001, 2)
    assert worker.argv == [
        "-m",
        "edgelab.engines.llamacpp.worker",
        "--host",
        "127.0.0.1",
        "--port",
        "5001",
        "--threads",
        "2",
    ]
    assert worker.ready_marker == READY_MARKER
    root = engine.root_launch("0.0.0.0", 8000, Path("/m.gguf"), ["a:1", "b:2"], 1)
    assert root.argv[:2] == ["-m", "edgelab.engines.llamacpp.root"]
    assert root.argv[root.argv.index("--workers") + 1] == "a:1,b:2"
    assert root.argv[root.argv.index("--model") + 1] == "/m.gguf"
    # The argv runs with any interpreter: nothing in it names one.
    assert sys.executable not in root.argv


def test_check_available_finds_the_rpc_build() -> None:
    get_engine("llamacpp").check_available()
