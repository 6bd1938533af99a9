"""Reading GGUF headers, and refusing files that are not usable models."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest

from edgelab.catalog import CatalogError, read_gguf
from edgelab.catalog.header import quantization_name

MakeGGUF = Callable[..., Path]


def test_reads_architecture_layers_quantization_and_shape(make_gguf: MakeGGUF) -> None:
    header = read_gguf(make_gguf(n_layers=3))

    assert header.architecture == "llama"
    assert header.n_layers == 3
    assert header.quantization == "F16"
    assert header.extra["context_length"] == 128
    assert header.extra["embedding_length"] == 8
    assert header.extra["head_count"] == 2
    assert header.extra["vocab_size"] == 4
    assert header.extra["n_tensors"] == 4
    assert header.extra["n_params"] == 3 * 64 + 8
    assert header.extra["general_name"] == "tiny test model"


def test_block_count_is_read_under_the_files_own_architecture(make_gguf: MakeGGUF) -> None:
    header = read_gguf(make_gguf(arch="qwen2", n_layers=5))

    assert (header.architecture, header.n_layers) == ("qwen2", 5)


def test_without_file_type_the_dominant_weight_type_wins(make_gguf: MakeGGUF) -> None:
    # Five F32 norms against two F16 matrices: by count F32 would win, by weight size F16.
    header = read_gguf(make_gguf(file_type=None, n_norms=5))

    assert header.quantization == "F16"


@pytest.mark.parametrize(
    ("file_type", "expected"),
    [
        (gguf.LlamaFileType.MOSTLY_Q4_1, "Q4_1"),
        (gguf.LlamaFileType.MOSTLY_Q4_K_M, "Q4_K_M"),
        (gguf.LlamaFileType.ALL_F32, "F32"),
        (gguf.LlamaFileType.GUESSED, "Q8_0"),
        (4, "Q8_0"),  # a file type llama.cpp removed
        (None, "Q8_0"),
    ],
)
def test_quantization_name(file_type: int | None, expected: str) -> None:
    assert quantization_name(file_type, Counter({"Q8_0": 100, "F32": 10})) == expected


def test_quantization_unknown_without_any_evidence() -> None:
    assert quantization_name(None, Counter()) == "unknown"


def test_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "hostname"
    path.write_text("buildhost\n")

    with pytest.raises(CatalogError, match=r"hostname is not a GGUF file \(bad magic"):
        read_gguf(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.touch()

    with pytest.raises(CatalogError, match="is empty, not a GGUF file"):
        read_gguf(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"nope\.gguf: no such file"):
        read_gguf(tmp_path / "nope.gguf")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not a regular file"):
        read_gguf(tmp_path)


def test_truncated_tensor_data(make_gguf: MakeGGUF) -> None:
    path = make_gguf()
    data = path.read_bytes()
    path.write_bytes(data[:-16])

    with pytest.raises(CatalogError, match="truncated"):
        read_gguf(path)


@pytest.mark.parametrize("keep", [6, 40, 120])
def test_truncated_header(make_gguf: MakeGGUF, keep: int) -> None:
    path = make_gguf()
    path.write_bytes(path.read_bytes()[:keep])

    with pytest.raises(CatalogError, match="truncated or corrupt GGUF file"):
        read_gguf(path)


def test_missing_block_count(make_gguf: MakeGGUF) -> None:
    with pytest.raises(CatalogError, match=r"no valid llama\.block_count"):
        read_gguf(make_gguf(n_layers=None))


def test_vocabulary_only_file(make_gguf: MakeGGUF) -> None:
    with pytest.raises(CatalogError, match="holds no tensors"):
        read_gguf(make_gguf(with_tensors=False))
