"""Write a tiny random-weight distributed-llama model (``.m`` + ``.t``) for tests.

The integration tests need a model a real ``dllama`` binary accepts, small
enough to run on two shared cores. The layout follows distributed-llama's
``loadLlmNetWeight`` (llama architecture, F32 weights): embedding, then per
layer q, k, v, wo, w1, w2, w3, norm_0, norm_1, then the final norm and the
classifier. The default shape splits across 1, 2, 3 and 6 nodes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelab.catalog.dllama import (
    FLOAT_TYPE_IDS,
    MODEL_KEY_IDS,
    MODEL_MAGIC,
    TOKENIZER_KEY_IDS,
    TOKENIZER_MAGIC,
)

LLAMA_ARCH = 0xABCD00


@dataclass(frozen=True)
class SyntheticShape:
    dim: int = 96
    hidden_dim: int = 192
    n_layers: int = 2
    n_heads: int = 6
    n_kv_heads: int = 6
    seq_len: int = 256
    weight_type: str = "f32"


def synthetic_vocab() -> list[bytes]:
    """Printable ASCII, newline, tab and a few merges; BOS/EOS last (120 tokens)."""
    regular = [bytes([c]) for c in range(32, 127)] + [b"\n", b"\t"]
    merges = [b"he", b"ll", b"llo", b"Hello", b"the", b"in", b"er", b"an", b"on", b" t"]
    merges += [b"\n\n", b"~~", b"or", b"at", b"en", b"is", b"it", b"es", b"ed", b"to"]
    merges += [b"ou"]
    vocab = regular + merges
    return [*vocab, b"<s>", b"</s>"]


def write_model_header(path: Path, values: dict[str, int]) -> None:
    """Only a header (tests of the reader)."""
    pairs = [(MODEL_KEY_IDS[k], v) for k, v in values.items()]
    size = 8 + 8 * len(pairs)
    with path.open("wb") as f:
        f.write(struct.pack("<ii", MODEL_MAGIC, size))
        for key, value in pairs:
            f.write(struct.pack("<ii", key, value))


def write_tokenizer(
    path: Path,
    vocab: list[bytes],
    bos_id: int,
    eos_ids: list[int],
    chat_template: str | None = None,
    add_bos: bool | None = True,
) -> None:
    scores = [float(len(t)) for t in vocab]  # longer merges win, like BPE ranks
    pairs: list[tuple[int, int]] = [
        (TOKENIZER_KEY_IDS["version"], 1),
        (TOKENIZER_KEY_IDS["vocab_size"], len(vocab)),
        (TOKENIZER_KEY_IDS["max_token_length"], max(len(t) for t in vocab)),
        (TOKENIZER_KEY_IDS["bos_id"], bos_id),
        (TOKENIZER_KEY_IDS["n_eos_tokens"], len(eos_ids)),
    ]
    template = chat_template.encode() if chat_template else b""
    if template:
        pairs.append((TOKENIZER_KEY_IDS["chat_template"], len(template)))
    if add_bos is not None:
        pairs.append((TOKENIZER_KEY_IDS["add_bos"], 1 if add_bos else 0))
    with path.open("wb") as f:
        f.write(struct.pack("<ii", TOKENIZER_MAGIC, 8 + 8 * len(pairs)))
        for key, value in pairs:
            f.write(struct.pack("<ii", key, value))
        f.write(template)
        for eos in eos_ids:
            f.write(struct.pack("<i", eos))
        for token, score in zip(vocab, scores, strict=True):
            f.write(struct.pack("<fi", score, len(token)))
            f.write(token)


def write_synthetic_model(
    directory: Path, shape: SyntheticShape | None = None, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``dllama_model_synthetic.m`` and ``dllama_tokenizer_synthetic.t``."""
    shape = shape or SyntheticShape()
    if shape.weight_type != "f32":
        raise ValueError("the synthetic writer only writes F32 weights")
    directory.mkdir(parents=True, exist_ok=True)
    vocab = synthetic_vocab()
    n_vocab = len(vocab)
    head_dim = shape.dim // shape.n_heads
    q_dim = head_dim * shape.n_heads
    kv_dim = head_dim * shape.n_kv_heads
    model = directory / "dllama_model_synthetic.m"
    tokenizer = directory / "dllama_tokenizer_synthetic.t"
    values = {
        "version": 0,
        "arch_type": LLAMA_ARCH,
        "dim": shape.dim,
        "hidden_dim": shape.hidden_dim,
        "n_layers": shape.n_layers,
        "n_heads": shape.n_heads,
        "n_kv_heads": shape.n_kv_heads,
        "n_experts": 0,
        "n_active_experts": 0,
        "vocab_size": n_vocab,
        "seq_len": shape.seq_len,
        "hidden_act": 1,
        "rope_theta": 10000,
        "weight_float_type": FLOAT_TYPE_IDS["f32"],
    }
    write_model_header(model, values)
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> bytes:
        values = rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(cols**0.5)
        return bytes(values.astype("<f4").tobytes())

    def ones(n: int) -> bytes:
        return np.ones(n, dtype="<f4").tobytes()

    with model.open("ab") as f:
        f.write(matrix(n_vocab, shape.dim))  # embedding
        for _ in range(shape.n_layers):
            f.write(matrix(q_dim, shape.dim))  # q
            f.write(matrix(kv_dim, shape.dim))  # k
            f.write(matrix(kv_dim, shape.dim))  # v
            f.write(matrix(shape.dim, q_dim))  # wo
            f.write(matrix(shape.hidden_dim, shape.dim))  # w1
            f.write(matrix(shape.dim, shape.hidden_dim))  # w2
            f.write(matrix(shape.hidden_dim, shape.dim))  # w3
            f.write(ones(shape.dim))  # norm_0
            f.write(ones(shape.dim))  # norm_1
        f.write(ones(shape.dim))  # final norm
        f.write(matrix(n_vocab, shape.dim))  # classifier
    write_tokenizer(tokenizer, vocab, bos_id=n_vocab - 2, eos_ids=[n_vocab - 1])
    return model, tokenizer


__all__ = [
    "SyntheticShape",
    "synthetic_vocab",
    "write_model_header",
    "write_synthetic_model",
    "write_tokenizer",
]
