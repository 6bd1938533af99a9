"""Read distributed-llama's model (``.m``) and tokenizer (``.t``) headers.

distributed-llama does not use GGUF: its converter writes a small integer header
followed by raw weights, and a separate tokenizer file. edgelab reads both
headers (never the weights) so that a topology can be validated, and a catalog
entry described, before any process starts. The layouts below were read from
distributed-llama's ``src/llm.cpp``/``llm.hpp`` and ``src/tokenizer.cpp``/
``tokenizer.hpp`` (v0.16); they are re-described here, not copied.

``.m`` layout (little-endian int32 throughout)::

    magic 0x0A00ABCD | header_size (bytes, counting magic and itself) |
    (key, value) pairs ... | weights from offset header_size

``.t`` layout::

    magic 0x567124 | header_size (bytes, counting magic and itself) |
    (key, value) pairs | chat template bytes (length = CHAT_TEMPLATE value) |
    N_EOS_TOKENS int32 eos ids | per token: float32 score, int32 length, bytes

Files handed to us are untrusted: every problem becomes a :class:`CatalogError`
that names the file and what is wrong.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgelab.catalog.info import (
    CatalogError,
    ModelInfo,
    Progress,
    check_name,
    sha256_file,
)

MODEL_MAGIC = 0x0A00ABCD
OLD_MODEL_MAGICS = (0xABCD00, 0xABCD01)
TOKENIZER_MAGIC = 0x567124
OLD_TOKENIZER_MAGIC = 0x567123

# LlmHeaderKey in distributed-llama's src/llm.hpp.
MODEL_KEYS: dict[int, str] = {
    0: "version",
    1: "arch_type",
    2: "dim",
    3: "hidden_dim",
    4: "n_layers",
    5: "n_heads",
    6: "n_kv_heads",
    7: "n_experts",
    8: "n_active_experts",
    9: "vocab_size",
    10: "seq_len",
    11: "hidden_act",
    12: "rope_theta",
    13: "weight_float_type",
    14: "rope_scaling_factor",
    15: "rope_scaling_low_freq_factor",
    16: "rope_scaling_high_freq_factor",
    17: "rope_scaling_orig_max_seq_len",
    18: "rope_type",
    19: "head_dim",
    20: "norm_epsilon",
}
MODEL_KEY_IDS = {name: key for key, name in MODEL_KEYS.items()}

ARCH_NAMES = {0xABCD00: "llama", 0xABCD01: "qwen3", 0xABCD02: "qwen3_moe"}
# NnFloatType in distributed-llama's nn-quants.hpp.
FLOAT_TYPES = {0: "f32", 1: "f16", 2: "q40", 3: "q80"}
FLOAT_TYPE_IDS = {name: key for key, name in FLOAT_TYPES.items()}

# TokenizerHeaderKey in distributed-llama's src/tokenizer.hpp.
TOKENIZER_KEYS: dict[int, str] = {
    0: "version",
    1: "vocab_size",
    2: "max_token_length",
    3: "bos_id",
    4: "eos_id",
    5: "pad_id",
    6: "chat_eos_id",
    7: "chat_template",
    8: "chat_stop",
    9: "n_eos_tokens",
    10: "add_bos",
}
TOKENIZER_KEY_IDS = {name: key for key, name in TOKENIZER_KEYS.items()}

# Header sizes far beyond any real converter's output mean a damaged file.
MAX_HEADER_BYTES = 64 * 1024
MAX_TOKEN_BYTES = 1 << 16


@dataclass(frozen=True)
class DllamaHeader:
    """The shape of a distributed-llama model, as its ``.m`` header states it."""

    path: Path
    arch: str
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    weight_type: str
    head_dim: int
    header_size: int
    file_size: int
    n_experts: int = 0
    # Every key/value pair as read, including ones this edgelab does not know.
    raw: dict[str, int] = field(default_factory=dict)

    @property
    def q_dim(self) -> int:
        return self.head_dim * self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_kv_heads

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "dim": self.dim,
            "hidden_dim": self.hidden_dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "q_dim": self.q_dim,
            "kv_dim": self.kv_dim,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "weight_type": self.weight_type,
            "n_experts": self.n_experts,
        }


@dataclass(frozen=True)
class DllamaTokenizer:
    """A distributed-llama tokenizer: its vocabulary and special ids."""

    path: Path
    vocab: list[bytes]
    scores: list[float]
    bos_id: int
    eos_ids: list[int]
    # None: the file does not say (distributed-llama then leaves it undefined).
    add_bos: bool | None
    chat_template: str | None
    max_token_length: int

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def _read_prefix(path: Path, magic_name: str) -> bytes:
    if not path.exists():
        raise CatalogError(f"{path}: no such file")
    if not path.is_file():
        raise CatalogError(f"{path} is not a regular file, so not a {magic_name}")
    try:
        with path.open("rb") as f:
            return f.read(MAX_HEADER_BYTES + 8)
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _pairs(path: Path, data: bytes, header_size: int, what: str) -> list[tuple[int, int]]:
    if header_size < 8 or header_size > MAX_HEADER_BYTES or (header_size - 8) % 8:
        raise CatalogError(f"{path} has an invalid {what} header size {header_size}")
    if len(data) < header_size:
        raise CatalogError(f"{path} is truncated inside its {what} header")
    values = struct.unpack_from(f"<{(header_size - 8) // 4}i", data, 8)
    return list(zip(values[0::2], values[1::2], strict=True))


def read_dllama_header(path: Path | str) -> DllamaHeader:
    """Parse and sanity-check a ``.m`` header; raise ``CatalogError`` if it is unusable."""
    path = Path(path)
    data = _read_prefix(path, "distributed-llama model")
    if len(data) < 8:
        raise CatalogError(f"{path} is too short to be a distributed-llama model")
    magic, header_size = struct.unpack_from("<ii", data, 0)
    if magic in OLD_MODEL_MAGICS:
        raise CatalogError(
            f"{path} uses distributed-llama's old model format (magic {magic:#x}), which "
            "current dllama builds refuse; convert the model again"
        )
    if magic != MODEL_MAGIC:
        raise CatalogError(
            f"{path} is not a distributed-llama model (magic {magic & 0xFFFFFFFF:#x}, "
            f"expected {MODEL_MAGIC:#x})"
        )
    raw: dict[str, int] = {}
    for key, value in _pairs(path, data, header_size, "model"):
        raw[MODEL_KEYS.get(key, f"key_{key}")] = value

    def need(name: str) -> int:
        value = raw.get(name)
        if value is None or value <= 0:
            raise CatalogError(f"{path} has no valid {name} in its header (got {value!r})")
        return value

    dim = need("dim")
    n_heads = need("n_heads")
    weight_id = raw.get("weight_float_type")
    if weight_id is None:
        raise CatalogError(f"{path} does not say its weight type (weight_float_type)")
    arch_id = raw.get("arch_type", 0xABCD00)
    head_dim = raw.get("head_dim") or dim // n_heads
    file_size = path.stat().st_size
    if file_size <= header_size:
        raise CatalogError(f"{path} holds a header but no weights")
    return DllamaHeader(
        path=path,
        arch=ARCH_NAMES.get(arch_id, f"arch_{arch_id:#x}"),
        dim=dim,
        hidden_dim=need("hidden_dim"),
        n_layers=need("n_layers"),
        n_heads=n_heads,
        n_kv_heads=need("n_kv_heads"),
        vocab_size=need("vocab_size"),
        seq_len=need("seq_len"),
        weight_type=FLOAT_TYPES.get(weight_id, f"type_{weight_id}"),
        head_dim=head_dim,
        header_size=header_size,
        file_size=file_size,
        n_experts=raw.get("n_experts", 0),
        raw=raw,
    )


def read_dllama_tokenizer(path: Path | str) -> DllamaTokenizer:
    """Parse a ``.t`` file (whole vocabulary: these are a few MB at most)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: no such tokenizer file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) < 8:
        raise CatalogError(f"{path} is too short to be a distributed-llama tokenizer")
    magic, header_size = struct.unpack_from("<ii", data, 0)
    if magic == OLD_TOKENIZER_MAGIC:
        raise CatalogError(f"{path} uses the old tokenizer format; regenerate the tokenizer")
    if magic != TOKENIZER_MAGIC:
        raise CatalogError(
            f"{path} is not a distributed-llama tokenizer (magic {magic & 0xFFFFFFFF:#x}, "
            f"expected {TOKENIZER_MAGIC:#x})"
        )
    values: dict[str, int] = {}
    eos_ids: list[int] = []
    for key, value in _pairs(path, data, header_size, "tokenizer"):
        name = TOKENIZER_KEYS.get(key)
        if name is None:
            raise CatalogError(f"{path} has an unknown tokenizer header key {key}")
        if name in ("eos_id", "chat_eos_id"):
            eos_ids.append(value)
        values[name] = value
    if values.get("version") != 1:
        raise CatalogError(f"{path} has tokenizer version {values.get('version')}, expected 1")
    offset = header_size
    try:
        template = None
        if values.get("chat_stop", 0) > 0:
            offset += values["chat_stop"]
        if values.get("chat_template", 0) > 0:
            end = offset + values["chat_template"]
            template = data[offset:end].decode("utf-8", errors="replace")
            offset = end
        for _ in range(values.get("n_eos_tokens", 0)):
            eos_ids.append(struct.unpack_from("<i", data, offset)[0])
            offset += 4
        vocab_size = values.get("vocab_size", 0)
        if vocab_size <= 0:
            raise CatalogError(f"{path} has no vocab_size in its header")
        vocab: list[bytes] = []
        scores: list[float] = []
        for i in range(vocab_size):
            score, length = struct.unpack_from("<fi", data, offset)
            offset += 8
            if not 0 < length <= MAX_TOKEN_BYTES or offset + length > len(data):
                raise CatalogError(f"{path}: token {i} has an invalid length {length}")
            vocab.append(data[offset : offset + length])
            scores.append(score)
            offset += length
    except struct.error as exc:
        raise CatalogError(f"{path} is truncated ({exc})") from exc
    add_bos = values.get("add_bos")
    return DllamaTokenizer(
        path=path,
        vocab=vocab,
        scores=scores,
        bos_id=values.get("bos_id", -1),
        eos_ids=eos_ids,
        add_bos=None if add_bos is None else add_bos == 1,
        chat_template=template,
        max_token_length=values.get("max_token_length", 0),
    )


def default_tokenizer_path(model_path: Path) -> Path | None:
    """The tokenizer next to a model, by distributed-llama's naming habit.

    Its downloads name files ``dllama_model_X.m`` and ``dllama_tokenizer_X.t``;
    otherwise a ``.t`` with the same stem, otherwise the only ``.t`` in the folder.
    """
    candidates = []
    name = model_path.name
    if name.startswith("dllama_model_"):
        candidates.append(model_path.with_name("dllama_tokenizer_" + name[13:-2] + ".t"))
    candidates.append(model_path.with_suffix(".t"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    others = sorted(model_path.parent.glob("*.t"))
    return others[0] if len(others) == 1 else None


def describe_dllama(
    path: Path | str,
    name: str | None = None,
    *,
    tokenizer: Path | str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
) -> ModelInfo:
    """A catalog entry for a ``.m`` + ``.t`` pair: headers first, hashing last."""
    path = Path(path).expanduser().resolve()
    header = read_dllama_header(path)
    tok_path = (
        Path(tokenizer).expanduser().resolve()
        if tokenizer is not None
        else default_tokenizer_path(path)
    )
    if tok_path is None:
        raise CatalogError(
            f"no tokenizer found for {path}: put its .t file next to it "
            "(dllama_tokenizer_<name>.t or <stem>.t) or name it explicitly"
        )
    tok = read_dllama_tokenizer(tok_path)
    if tok.vocab_size != header.vocab_size:
        raise CatalogError(
            f"tokenizer {tok_path} has {tok.vocab_size} tokens but model {path} "
            f"expects {header.vocab_size}"
        )
    stem = path.name[:-2] if path.name.endswith(".m") else path.stem
    stem = stem.removeprefix("dllama_model_") or "model"
    return ModelInfo(
        name=check_name(name) if name is not None else check_name(_clean(stem)),
        path=path,
        size_bytes=header.file_size,
        sha256=sha256 or sha256_file(path, progress),
        architecture=header.arch,
        n_layers=header.n_layers,
        quantization=header.weight_type.upper(),
        format="dllama",
        extra={"tokenizer": str(tok_path), "dllama_header": header.to_dict()},
    )


def _clean(stem: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:200] or "model"


__all__ = [
    "DllamaHeader",
    "DllamaTokenizer",
    "default_tokenizer_path",
    "describe_dllama",
    "read_dllama_header",
    "read_dllama_tokenizer",
]
