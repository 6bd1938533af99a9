"""What both distributed-llama roots load and pass on: model files and common flags.

The warm root (``dllama-api``, :mod:`edgelab.engines.dllama.api`) and the per-run
root (``dllama inference``, :mod:`edgelab.engines.dllama.root`) read the same
model header and tokenizer, check them against each other and the cluster's
node count the same way, and hand dllama the same model, thread and worker
flags. Keeping that here means a rule about the files (a tokenizer that does
not match, a topology dllama cannot split) is written once and holds in both
modes, and ``/info`` describes the model with the same keys in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgelab.catalog.dllama import (
    DllamaHeader,
    DllamaTokenizer,
    default_tokenizer_path,
    read_dllama_header,
    read_dllama_tokenizer,
)
from edgelab.engines.base import EngineError
from edgelab.engines.dllama.prompt import PromptEncoder
from edgelab.engines.dllama.topology import validate_topology
from edgelab.engines.rootapi import Generator

#: The context a root runs with unless told otherwise (at most the model's own).
DEFAULT_CTX = 2048


def tensor_split(nodes: int, workers: list[str], n_layers: int) -> list[dict[str, Any]]:
    """Tensor parallelism: every node holds a 1/nodes slice of every layer."""
    return [
        {
            "node": "root" if i == 0 else f"worker{i}",
            "endpoint": None if i == 0 else workers[i - 1],
            "split": "tensor",
            "n_layers": n_layers,
            "slice": f"1/{nodes}",
        }
        for i in range(nodes)
    ]


def worker_flags(workers: list[str]) -> list[str]:
    """``--workers`` and the worker addresses (the cluster's proxies), or nothing.

    dllama reads worker addresses until the next ``--`` option, so these must be
    the last flags of a command line.
    """
    return ["--workers", *workers] if workers else []


@dataclass(frozen=True)
class DllamaModelFiles:
    """A dllama model as a root loads it: header, tokenizer and prompt encoder."""

    model_path: Path
    tokenizer_path: Path
    header: DllamaHeader
    tokenizer: DllamaTokenizer
    encoder: PromptEncoder

    @classmethod
    def load(cls, model_path: Path, tokenizer_path: Path | None, nodes: int) -> DllamaModelFiles:
        """Read and check the files for a cluster of ``nodes``; ``EngineError`` names a problem.

        The tokenizer is ``tokenizer_path``, else the ``.t`` file next to the model.
        """
        header = read_dllama_header(model_path)
        validate_topology(header, nodes)
        tok_path = tokenizer_path or default_tokenizer_path(model_path)
        if tok_path is None:
            raise EngineError(f"no tokenizer (.t) found next to {model_path}; pass --tokenizer")
        tokenizer = read_dllama_tokenizer(tok_path)
        if tokenizer.vocab_size != header.vocab_size:
            raise EngineError(
                f"tokenizer {tok_path} has {tokenizer.vocab_size} tokens, "
                f"model {model_path} expects {header.vocab_size}"
            )
        return cls(model_path, tok_path, header, tokenizer, PromptEncoder(tokenizer))

    @property
    def buffer_float_type(self) -> str:
        """The buffer type dllama wants for these weights (q80 for q40 weights)."""
        return "q80" if self.header.weight_type == "q40" else "f32"

    def seq_len(self, ctx: int) -> int:
        """The context a root runs with: ``ctx``, at most what the model was trained for."""
        return min(self.header.seq_len, ctx)

    def flags(self, threads: int, ctx: int, net_turbo: bool) -> list[str]:
        """The model, buffer, thread, context and net-turbo flags both roots pass."""
        return [
            "--model",
            str(self.model_path),
            "--tokenizer",
            str(self.tokenizer_path),
            "--buffer-float-type",
            self.buffer_float_type,
            "--nthreads",
            str(threads),
            "--max-seq-len",
            str(self.seq_len(ctx)),
            "--net-turbo",
            "1" if net_turbo else "0",
        ]

    def info(self, workers: list[str], threads: int, ctx: int, net_turbo: bool) -> dict[str, Any]:
        """The part of a root's ``/info`` that describes the model and the cluster."""
        nodes = 1 + len(workers)
        return {
            "model_path": str(self.model_path),
            "tokenizer_path": str(self.tokenizer_path),
            "n_layers": self.header.n_layers,
            "layer_split": tensor_split(nodes, workers, self.header.n_layers),
            "nodes": nodes,
            "workers": list(workers),
            "threads": threads,
            "n_ctx": self.seq_len(ctx),
            "net_turbo": net_turbo,
            "buffer_float_type": self.buffer_float_type,
            "model": self.header.to_dict(),
        }


class DllamaRoot(Generator):
    """What both roots are: a model on a cluster of ``1 + len(workers)`` nodes.

    ``workers`` are the cluster's proxy addresses. The subclass's ``load`` calls
    :meth:`load_files` and then starts its own dllama child.
    """

    def __init__(
        self,
        model_path: Path,
        workers: list[str],
        threads: int,
        tokenizer_path: Path | None = None,
        net_turbo: bool = False,
        ctx: int = DEFAULT_CTX,
        warmup: bool = True,
    ) -> None:
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.workers = workers
        self.threads = threads
        self.net_turbo = net_turbo
        self.ctx = ctx
        self.warmup = warmup
        self.files: DllamaModelFiles | None = None
        self.chat_kind: str | None = None
        self.warmup_detail: dict[str, Any] | None = None

    @property
    def nodes(self) -> int:
        return 1 + len(self.workers)

    @property
    def seq_len(self) -> int:
        assert self.files is not None
        return self.files.seq_len(self.ctx)

    def load_files(self) -> DllamaModelFiles:
        """Read and check the model files (``EngineError`` names a problem)."""
        self.files = DllamaModelFiles.load(self.model_path, self.tokenizer_path, self.nodes)
        self.tokenizer_path = self.files.tokenizer_path
        return self.files

    def model_flags(self) -> list[str]:
        """The model, thread, context and net-turbo flags of the dllama command line."""
        assert self.files is not None
        return self.files.flags(self.threads, self.ctx, self.net_turbo)

    def model_info(self) -> dict[str, Any]:
        """The model and cluster part of ``/info``."""
        assert self.files is not None
        return self.files.info(self.workers, self.threads, self.ctx, self.net_turbo)


__all__ = ["DEFAULT_CTX", "DllamaModelFiles", "DllamaRoot", "tensor_split", "worker_flags"]
