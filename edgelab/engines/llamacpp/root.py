"""A llama.cpp root node: loads the model across itself and its workers, serves the root API.

Run as ``python -m edgelab.engines.llamacpp.root --host H --port P --model M.gguf
--workers w1:p1,w2:p2 --threads T``. Every worker endpoint (in real runs the
address of the latency proxy in front of the worker) is registered as an RPC
device *before* the model loads; llama.cpp then places the offloaded layers on
those devices. ``nodes`` is 1 + the number of workers, and the layers are split
evenly over all nodes: the root keeps the first share (plus the input embeddings
and the output layer, which llama.cpp always keeps on the CPU) and each worker
gets a contiguous block, see :func:`plan_split`.

The prompt is wrapped in the model's chat template when the model has one and the
request asks for it (the default), since researchers submit questions; ``"chat":
false`` completes the raw prompt. Decoding is greedy at temperature 0. Every
llama.cpp/ggml log line goes to stderr (the cluster captures it into the node's
log file) and the root also reads it to record where each layer actually went.

If a worker disappears mid-generation, ggml's RPC client aborts the root process
(SIGABRT): the stream then ends without an ``end`` event and the client raises.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import ctypes
import re
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgelab.catalog.gguf_kv import block_count
from edgelab.engines.llamacpp.ggml import load_ggml
from edgelab.engines.rootapi import (
    GenerateRequest,
    Generation,
    Generator,
    RequestError,
    run_root,
)

ENGINE_NAME = "llamacpp"
DEFAULT_CTX = 2048

_LAYER_RE = re.compile(r"load_tensors: layer\s+(\d+) assigned to device (\w+)")
_BUFFER_RE = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB")
_USING_RE = re.compile(r"using device (\w+) \(([^)]*)\)")


@dataclass(frozen=True)
class SplitPlan:
    """How many repeating layers each node holds; index 0 is the root's CPU.

    llama.cpp numbers the output layer ``n_layers`` and offloads the *last*
    ``n_gpu_layers`` of the ``n_layers + 1`` layers, so whenever anything is
    offloaded the output layer goes with the last block: to the last worker.
    """

    n_layers: int
    counts: tuple[int, ...]

    @property
    def n_gpu_layers(self) -> int:
        """Everything after the root's block, output layer included."""
        return self.n_layers + 1 - self.counts[0] if len(self.counts) > 1 else 0

    @property
    def tensor_split(self) -> list[float] | None:
        """Proportions over the RPC devices in registration order (None: no workers).

        llama.cpp gives offloaded layer ``k`` (counted from the first offloaded one)
        to the first device whose cumulative share exceeds ``k / n_gpu_layers``, so
        the layer counts themselves, the last one plus the output layer, give
        exactly the planned blocks.
        """
        workers = list(self.counts[1:])
        if not workers:
            return None
        workers[-1] += 1
        return [float(c) for c in workers]

    def ranges(self) -> list[tuple[int, int]]:
        """First and last repeating layer index per node."""
        out = []
        first = 0
        for count in self.counts:
            out.append((first, first + count - 1))
            first += count
        return out


def plan_split(n_layers: int, nodes: int) -> SplitPlan:
    """Split ``n_layers`` repeating layers as evenly as possible over ``nodes``.

    Remainder layers go to the first nodes (root first): the last worker already
    carries the output layer, which in a small model costs several layers' work.
    """
    if nodes < 1:
        raise ValueError("nodes must be >= 1")
    if nodes > n_layers:
        raise ValueError(f"cannot split {n_layers} layers over {nodes} nodes")
    base, extra = divmod(n_layers, nodes)
    return SplitPlan(n_layers, tuple(base + (1 if i < extra else 0) for i in range(nodes)))


class LoadLog:
    """llama.cpp's log callback: copy every line to stderr, remember the placement lines."""

    def __init__(self) -> None:
        self._partial = ""
        self.layer_device: dict[int, str] = {}
        # "RPC0" -> "127.0.0.1:50052", from "using device RPC0 (127.0.0.1:50052)".
        self.device_endpoint: dict[str, str] = {}
        # Keyed by endpoint for RPC buffers ("RPC0[host:port]"), by name otherwise.
        self.buffer_mib: dict[str, float] = {}
        self._lock = threading.Lock()

    def feed(self, text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._parse(line)

    def _parse(self, line: str) -> None:
        if m := _LAYER_RE.search(line):
            self.layer_device[int(m.group(1))] = m.group(2)
        elif m := _BUFFER_RE.search(line):
            name = m.group(1)
            key = name[name.index("[") + 1 : -1] if name.endswith("]") else name
            self.buffer_mib[key] = self.buffer_mib.get(key, 0.0) + float(m.group(2))
        elif m := _USING_RE.search(line):
            self.device_endpoint[m.group(1)] = m.group(2)


@contextlib.contextmanager
def _model_params(**fields: Any) -> Iterator[None]:
    """Set llama model parameters that ``Llama(...)`` has no argument for.

    ``Llama.__init__`` starts from ``llama_model_default_params()``; wrapping that
    function for the duration of the constructor is the only hook it offers.
    """
    import llama_cpp.llama_cpp as low

    original = low.llama_model_default_params

    def patched() -> Any:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    low.llama_model_default_params = patched
    try:
        yield
    finally:
        low.llama_model_default_params = original


def _check_reachable(endpoint: str, timeout_s: float = 10.0) -> None:
    # ggml_backend_rpc_add_server aborts the process when it cannot connect; a
    # plain connect first turns that into a readable error. The RPC server drops
    # a client that closes before its hello and keeps accepting.
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"worker {endpoint} is not reachable: {exc}") from exc


class LlamaCppGenerator(Generator):
    """One GGUF model loaded with llama-cpp-python over the root CPU and RPC workers."""

    def __init__(
        self, model_path: Path, workers: list[str], threads: int, n_ctx: int = DEFAULT_CTX
    ) -> None:
        self.model_path = model_path
        self.workers = workers
        self.threads = threads
        self.n_ctx = n_ctx
        self.log = LoadLog()
        self._llm: Any = None
        self._plan: SplitPlan | None = None
        self._chat_template: str | None = None
        self._callback: Any = None

    @property
    def nodes(self) -> int:
        return 1 + len(self.workers)

    def _install_log(self) -> None:
        import llama_cpp

        def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            self.log.feed(text.decode("utf-8", errors="replace"))

        # Keep a reference: ctypes callbacks that are garbage collected crash the process.
        self._callback = llama_cpp.llama_log_callback(on_log)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def load(self) -> None:
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model {self.model_path} not found")
        # The split must be known before llama.cpp loads: read the GGUF header first.
        n_layers = block_count(self.model_path)
        self._plan = plan_split(n_layers, self.nodes)
        ggml = load_ggml()
        for endpoint in self.workers:
            _check_reachable(endpoint)
            ggml.add_rpc_server(endpoint)

        import llama_cpp

        self._install_log()
        # Repacked weight buffers (AMX on this host) make llama_decode segfault with
        # llama-cpp-python 0.3.36, and RPC workers never use them: plain CPU buffers
        # on the root keep it working and every node computing the same way.
        with _model_params(use_extra_bufts=False):
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_gpu_layers=self._plan.n_gpu_layers,
                tensor_split=self._plan.tensor_split,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                n_ctx=self.n_ctx,
                seed=0,
                verbose=True,
            )
        self._chat_template = self._llm.metadata.get("tokenizer.chat_template")
        loaded_layers = int(llama_cpp.llama_model_n_layer(self._llm.model))
        if loaded_layers != n_layers:
            raise RuntimeError(f"GGUF says {n_layers} layers, llama.cpp loaded {loaded_layers}")
        self._check_split()

    def layer_split(self) -> list[dict[str, Any]]:
        """Where each node's layers are, as llama.cpp logged it (as planned if it did not)."""
        assert self._plan is not None
        logged = bool(self.log.layer_device)
        split = []
        for node, (first, last) in enumerate(self._plan.ranges()):
            device = "CPU" if node == 0 else f"RPC{node - 1}"
            endpoint = None if node == 0 else self.workers[node - 1]
            if logged:
                layers = sorted(
                    i
                    for i, dev in self.log.layer_device.items()
                    if dev == device and i < self._plan.n_layers
                )
                output = self.log.layer_device.get(self._plan.n_layers) == device
            else:
                layers = list(range(first, last + 1))
                output = node == len(self._plan.counts) - 1
            if node == 0:
                buffer = sum(
                    mib for key, mib in self.log.buffer_mib.items() if key not in self.workers
                )
            else:
                buffer = self.log.buffer_mib.get(str(endpoint), 0.0)
            split.append(
                {
                    "node": "root" if node == 0 else f"worker{node}",
                    "device": device,
                    "endpoint": endpoint,
                    "n_layers": len(layers),
                    "first_layer": layers[0] if layers else None,
                    "last_layer": layers[-1] if layers else None,
                    "output_layer": output,
                    "model_buffer_mib": round(buffer, 2),
                }
            )
        return split

    def _check_split(self) -> None:
        # The plan relies on how llama.cpp maps n_gpu_layers and tensor_split to
        # devices; say so loudly in the node log if a llama.cpp update changed it.
        assert self._plan is not None
        planned = list(self._plan.counts)
        observed = [entry["n_layers"] for entry in self.layer_split()]
        if self.log.layer_device and observed != planned:
            print(
                f"edgelab: WARNING layer split {observed} differs from the plan {planned}",
                file=sys.stderr,
                flush=True,
            )
        for device, endpoint in self.log.device_endpoint.items():
            index = int(device.removeprefix("RPC"))
            if index >= len(self.workers) or self.workers[index] != endpoint:
                raise RuntimeError(f"llama.cpp device {device} is {endpoint}, not the worker")

    def info(self) -> dict[str, Any]:
        import llama_cpp

        assert self._plan is not None
        return {
            "engine": ENGINE_NAME,
            "engine_version": f"llama-cpp-python {llama_cpp.__version__}",
            # One loaded model for the cluster's life; RPC workers keep their tensors.
            "mode": "rpc",
            "per_token_split": None,
            "token_events": "llama.cpp tokens",
            "model_path": str(self.model_path),
            "n_layers": self._plan.n_layers,
            "n_gpu_layers": self._plan.n_gpu_layers,
            "layer_split": self.layer_split(),
            "rpc_devices": dict(self.log.device_endpoint),
            "nodes": self.nodes,
            "workers": list(self.workers),
            "threads": self.threads,
            "n_ctx": self.n_ctx,
            "chat_template": self._chat_template is not None,
        }

    def _prompt_tokens(self, request: GenerateRequest) -> list[int]:
        llm = self._llm
        if request.chat and self._chat_template is not None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() != -1 else ""
            bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() != -1 else ""
            formatted = Jinja2ChatFormatter(self._chat_template, eos, bos)(
                messages=[{"role": "user", "content": request.prompt}]
            )
            tokens: list[int] = llm.tokenize(formatted.prompt.encode(), add_bos=True, special=True)
        else:
            tokens = llm.tokenize(request.prompt.encode(), add_bos=True, special=False)
        return tokens

    def generate(self, request: GenerateRequest) -> Generation:
        if self._llm is None:
            raise RuntimeError("model not loaded")
        tokens = self._prompt_tokens(request)
        if len(tokens) + request.max_tokens > self.n_ctx:
            raise RequestError(
                f"prompt ({len(tokens)} tokens) + max_tokens ({request.max_tokens}) "
                f"exceeds the context of {self.n_ctx} tokens"
            )
        generation = Generation(prompt_tokens=len(tokens), pieces=iter(()))
        generation.pieces = self._pieces(tokens, request, generation)
        return generation

    def _pieces(
        self, tokens: list[int], request: GenerateRequest, generation: Generation
    ) -> Iterator[str]:
        import llama_cpp

        llm = self._llm
        # Forget the previous run's KV cache: llama-cpp-python would otherwise reuse
        # a matching prefix and skip the prefill, which would fake the TTFT.
        llm.reset()
        llm.set_seed(request.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stream = llm.generate(tokens, temp=request.temperature, repeat_penalty=1.0, reset=True)
        produced = 0
        try:
            for token in stream:
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    generation.stop_reason = "stop"
                    return
                produced += 1
                yield decoder.decode(llm.detokenize([token]))
                if produced >= request.max_tokens:
                    return
        finally:
            stream.close()

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--workers", default="", help="comma-separated host:port list")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=DEFAULT_CTX)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    workers = [w.strip() for w in args.workers.split(",") if w.strip()]
    generator = LlamaCppGenerator(args.model, workers, args.threads, args.ctx)
    return run_root(generator, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
