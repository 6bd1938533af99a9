"""What does edgelab cost? ``edgelab run`` at 0 ms versus a bare llama-cpp-python script.

Both sides use the same model, the same RPC worker processes setup (nodes, threads)
and greedy decoding; they are alternated in one invocation so that machine noise
hits both alike. The bare side registers the workers directly (no proxies, no root
API, no database) and times tokens as llama-cpp-python yields them.

Printed: decode tokens/s of each side per round, the median ratio edgelab/bare
(target >= 0.97), and start-up: cluster start (workers + proxies + root + model
load) versus the bare model load.

    .venv/bin/python bench/overhead_bench.py [--nodes 3] [--threads 1] [--tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_workers(n: int, threads: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    procs, endpoints = [], []
    for _ in range(n):
        port = _free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgelab.engines.llamacpp.worker",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--threads",
                    str(threads),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        endpoints.append(f"127.0.0.1:{port}")
    for ep in endpoints:
        host, port = ep.split(":")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
    return procs, endpoints


def bare(model: str, nodes: int, threads: int, tokens: int) -> dict[str, Any]:
    """Runs in its own process: registers RPC devices for good once loaded."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    procs, endpoints = _start_workers(nodes - 1, threads)
    try:
        lib = Path(llama_cpp.__file__).parent / "lib"
        ggml = ctypes.CDLL(str(lib / "libggml.so.0"), mode=ctypes.RTLD_GLOBAL)
        rpc = ctypes.CDLL(str(lib / "libggml-rpc.so.0"), mode=ctypes.RTLD_GLOBAL)
        rpc.ggml_backend_rpc_add_server.restype = ctypes.c_void_p
        rpc.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_register.argtypes = [ctypes.c_void_p]
        for ep in endpoints:
            ggml.ggml_backend_register(rpc.ggml_backend_rpc_add_server(ep.encode()))
        n_layers = 30
        offload = round(n_layers * (nodes - 1) / nodes)
        original = low.llama_model_default_params

        def params() -> Any:
            p = original()
            p.use_extra_bufts = False  # same setting as edgelab's root (see engines/llamacpp)
            return p

        low.llama_model_default_params = params
        t0 = time.monotonic()
        llm = llama_cpp.Llama(
            model_path=model,
            n_gpu_layers=offload,
            tensor_split=[1.0] * (nodes - 1) if nodes > 1 else None,
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=2048,
            seed=0,
            verbose=False,
        )
        load_ms = (time.monotonic() - t0) * 1000
        low.llama_model_default_params = original
        stamps: list[float] = []
        t0 = time.monotonic()
        for _chunk in llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=tokens,
            temperature=0.0,
            stream=True,
            seed=0,
        ):
            stamps.append((time.monotonic() - t0) * 1000)
        # The first chunk is the role header, not a token.
        stamps = stamps[1:]
        stamps = stamps[: len(stamps) - 1] if len(stamps) > tokens else stamps
        llm.close()
        return {
            "load_ms": load_ms,
            "tokens": len(stamps),
            "decode_tps": (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000),
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(10)


def edgelab_round(
    model_name: str, nodes: int, threads: int, tokens: int, env: dict[str, str]
) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgelab",
            "run",
            "--prompt",
            PROMPT,
            "--model",
            model_name,
            "--nodes",
            str(nodes),
            "--threads",
            str(threads),
            "--latency",
            "0ms",
            "--max-tokens",
            str(tokens),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    run = json.loads(out.stdout)
    m = run["metrics"]
    return {"load_ms": m["load_ms"], "tokens": m["output_tokens"], "decode_tps": m["decode_tps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare-json", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from edgelab.catalog import Catalog
    from edgelab.settings import Settings

    settings = Settings.from_env()
    model = Catalog(settings).get("smollm2-135m")
    if args.bare_json:
        print(json.dumps(bare(str(model.path), args.nodes, args.threads, args.tokens)))
        return

    data_dir = tempfile.mkdtemp(prefix="edgelab-bench-")
    env = dict(os.environ, EDGELAB_DATA_DIR=data_dir, EDGELAB_MODELS_DIR=str(settings.models_dir))
    rows = []
    for r in range(args.rounds):
        e = edgelab_round(model.name, args.nodes, args.threads, args.tokens, env)
        b = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--nodes",
                    str(args.nodes),
                    "--threads",
                    str(args.threads),
                    "--tokens",
                    str(args.tokens),
                    "--bare-json",
                    "1",
                ],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        rows.append((e, b))
        print(
            f"round {r + 1}: edgelab {e['decode_tps']:.2f} tok/s ({e['tokens']} tokens, "
            f"start-up {e['load_ms']:.0f} ms) | bare {b['decode_tps']:.2f} tok/s "
            f"({b['tokens']} tokens, load {b['load_ms']:.0f} ms) | ratio "
            f"{e['decode_tps'] / b['decode_tps']:.3f}",
            flush=True,
        )
    ratio = statistics.median(e["decode_tps"] / b["decode_tps"] for e, b in rows)
    startup = statistics.median(e["load_ms"] for e, _ in rows)
    load = statistics.median(b["load_ms"] for _, b in rows)
    print(f"nodes={args.nodes} threads={args.threads} tokens={args.tokens} rounds={args.rounds}")
    print(f"median decode ratio edgelab/bare: {ratio:.3f} (target >= 0.97)")
    print(
        f"median cluster start-up {startup:.0f} ms vs bare model load {load:.0f} ms "
        f"(bare load excludes starting workers)"
    )


if __name__ == "__main__":
    main()
