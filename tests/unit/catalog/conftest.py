"""Tiny but real GGUF files, written with the ``gguf`` package's own writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

MakeGGUF = Callable[..., Path]


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    n_layers: int | None = 2,
    file_type: int | None = gguf.LlamaFileType.MOSTLY_F16,
    weight_dtype: type[np.floating] = np.float16,
    n_norms: int = 1,
    with_tensors: bool = True,
) -> Path:
    """A GGUF with ``n_layers`` 8x8 weight matrices and ``n_norms`` 1-D F32 norms."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name("tiny test model")
    if n_layers is not None:
        writer.add_block_count(n_layers)
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_token_list(["<s>", "</s>", "a", "b"])
    if with_tensors:
        for i in range(n_layers or 1):
            writer.add_tensor(f"blk.{i}.attn_q.weight", np.ones((8, 8), dtype=weight_dtype))
        for i in range(n_norms):
            writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def make_gguf(tmp_path: Path) -> MakeGGUF:
    def make(name: str = "tiny.gguf", **kwargs: object) -> Path:
        return write_gguf(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make
