"""Read what edgelab needs from a GGUF file's header: architecture, layers, quantization.

Only the header is parsed (the ``gguf`` package memory-maps the file), so this is
fast even for multi-gigabyte models. Any file a user hands us is untrusted input:
every failure becomes a :class:`CatalogError` that names the file and the problem.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, LlamaFileType, ReaderField

from edgelab.catalog.info import CatalogError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFHeader:
    architecture: str
    n_layers: int
    quantization: str
    # Shapes and sizes later issues need (layer splits, KV sizing): context and
    # embedding length, head counts, vocabulary size, parameter count, ...
    extra: dict[str, Any] = field(default_factory=dict)


def _scalar(field_: ReaderField | None) -> Any:
    if field_ is None or not field_.types:
        return None
    if field_.types[0] == GGUFValueType.ARRAY:
        return None
    return field_.contents()


def quantization_name(file_type: int | None, tensor_types: Counter[str]) -> str:
    """``general.file_type`` as llama.cpp names it (``Q4_1``), else the dominant tensor type.

    The file type is what the model's author chose; the dominant type of the weight
    matrices is a fair stand-in when the field is absent or from a removed format.
    """
    if file_type is not None:
        try:
            ft = LlamaFileType(file_type)
        except ValueError:
            ft = None
        if ft is not None and ft is not LlamaFileType.GUESSED:
            return ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    if tensor_types:
        return tensor_types.most_common(1)[0][0]
    return "unknown"


def _open(path: Path) -> tuple[GGUFReader, int]:
    if not path.exists():
        raise CatalogError(f"{path}: no such file")
    if not path.is_file():
        raise CatalogError(f"{path} is not a regular file, so not a GGUF model")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size == 0:
        raise CatalogError(f"{path} is empty, not a GGUF file")
    if magic != GGUF_MAGIC:
        raise CatalogError(
            f"{path} is not a GGUF file (bad magic {magic!r}, expected {GGUF_MAGIC!r})"
        )
    try:
        return GGUFReader(path), size
    # The reader parses untrusted bytes and fails in many ways (ValueError,
    # IndexError, KeyError, OverflowError, ...): each one means the file is damaged.
    except Exception as exc:
        raise CatalogError(
            f"{path} is a truncated or corrupt GGUF file ({type(exc).__name__}: {exc})"
        ) from exc


def read_gguf(path: Path | str) -> GGUFHeader:
    """Parse and sanity-check a GGUF model file; raise ``CatalogError`` if it is not usable."""
    path = Path(path)
    reader, size = _open(path)

    if not reader.tensors:
        raise CatalogError(f"{path} holds no tensors (a vocabulary-only GGUF?), not a model")
    end = max(t.data_offset + t.n_bytes for t in reader.tensors)
    if end > size:
        raise CatalogError(
            f"{path} is truncated: its header describes {end} bytes but the file has {size}"
        )

    arch = _scalar(reader.get_field("general.architecture"))
    if not isinstance(arch, str) or not arch:
        raise CatalogError(f"{path} has no general.architecture in its GGUF header")
    n_layers = _scalar(reader.get_field(f"{arch}.block_count"))
    if not isinstance(n_layers, int) or n_layers < 1:
        raise CatalogError(f"{path} has no valid {arch}.block_count (layer count) in its header")

    # Weighted by element count over the weight matrices: norms and biases are
    # 1-D F32 in every quantization and would otherwise dominate by number.
    tensor_types: Counter[str] = Counter()
    for t in reader.tensors:
        if len(t.shape) >= 2:
            tensor_types[GGMLQuantizationType(t.tensor_type).name] += t.n_elements
    file_type = _scalar(reader.get_field("general.file_type"))
    quantization = quantization_name(
        file_type if isinstance(file_type, int) else None, tensor_types
    )

    extra: dict[str, Any] = {
        "gguf_version": _scalar(reader.get_field("GGUF.version")),
        "n_tensors": len(reader.tensors),
        "n_params": sum(t.n_elements for t in reader.tensors),
    }
    for key, gguf_key in (
        ("general_name", "general.name"),
        ("file_type", "general.file_type"),
        ("context_length", f"{arch}.context_length"),
        ("embedding_length", f"{arch}.embedding_length"),
        ("feed_forward_length", f"{arch}.feed_forward_length"),
        ("head_count", f"{arch}.attention.head_count"),
        ("head_count_kv", f"{arch}.attention.head_count_kv"),
    ):
        value = _scalar(reader.get_field(gguf_key))
        if value is not None:
            extra[key] = value
    tokens = reader.get_field("tokenizer.ggml.tokens")
    if tokens is not None:
        extra["vocab_size"] = len(tokens.data)
    return GGUFHeader(architecture=arch, n_layers=n_layers, quantization=quantization, extra=extra)
