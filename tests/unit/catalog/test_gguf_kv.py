"""The early-stopping GGUF key reader agrees with the gguf package's full reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgelab.catalog import CatalogError, read_gguf
from edgelab.catalog.gguf_kv import block_count, read_kv

MakeGGUF = Callable[..., Path]


def test_block_count_matches_the_full_reader(make_gguf: MakeGGUF) -> None:
    for layers in (1, 7, 30):
        path = make_gguf(f"m{layers}.gguf", n_layers=layers)
        assert block_count(path) == read_gguf(path).n_layers == layers


def test_values_after_arrays_of_strings_and_numbers(tmp_path: Path) -> None:
    # Keys that come after the big arrays must still be found (values are skipped right).
    path = tmp_path / "late.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_token_list([f"tok{i}" for i in range(500)])
    writer.add_array("test.floats", [0.5] * 100)
    writer.add_string("test.name", "après")
    writer.add_block_count(12)
    writer.add_uint64("test.big", 2**40)
    writer.add_bool("test.flag", True)
    writer.add_tensor("blk.0.attn_q.weight", np.ones((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    found = read_kv(path, {"test.name", "llama.block_count", "test.big", "test.flag", "absent"})
    assert found == {
        "test.name": "après",
        "llama.block_count": 12,
        "test.big": 2**40,
        "test.flag": True,
    }
    assert block_count(path) == 12


def test_bad_files_are_catalog_errors(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    text = tmp_path / "hostname"
    text.write_text("not a model\n")
    with pytest.raises(CatalogError, match="bad magic"):
        block_count(text)
    good = make_gguf("cut.gguf", n_layers=3)
    cut = tmp_path / "cut-short.gguf"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CatalogError, match="truncated"):
        read_kv(cut, {"never.there"})
    with pytest.raises(CatalogError, match="cannot read"):
        block_count(tmp_path / "missing.gguf")
    no_layers = make_gguf("nolayers.gguf", n_layers=None)
    with pytest.raises(CatalogError, match="block_count"):
        block_count(no_layers)
