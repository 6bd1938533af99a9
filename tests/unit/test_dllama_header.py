"""Reading and validating distributed-llama .m/.t headers, and topology rules."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from edgelab.catalog.dllama import (
    DllamaHeader,
    describe_dllama,
    read_dllama_header,
    read_dllama_tokenizer,
)
from edgelab.catalog.info import CatalogError
from edgelab.engines.base import EngineError
from edgelab.engines.dllama.prompt import PromptEncoder, apply_chat, chat_template_kind
from edgelab.engines.dllama.synthetic import (
    synthetic_vocab,
    write_model_header,
    write_synthetic_model,
    write_tokenizer,
)
from edgelab.engines.dllama.topology import (
    topology_problems,
    valid_node_counts,
    validate_topology,
)

LLAMA3_8B = {
    "version": 0,
    "arch_type": 0xABCD00,
    "dim": 4096,
    "hidden_dim": 14336,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": 8,
    "vocab_size": 128256,
    "seq_len": 8192,
    "weight_float_type": 2,
}


def header_file(tmp_path: Path, **changes: int) -> Path:
    path = tmp_path / "m.m"
    write_model_header(path, {**LLAMA3_8B, **changes})
    with path.open("ab") as f:
        f.write(b"\0" * 64)  # some "weights"
    return path


def test_reads_a_llama3_8b_q40_header(tmp_path: Path) -> None:
    h = read_dllama_header(header_file(tmp_path))
    assert (h.arch, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads) == (
        "llama",
        4096,
        14336,
        32,
        32,
        8,
    )
    assert (h.vocab_size, h.weight_type, h.head_dim, h.kv_dim) == (128256, "q40", 128, 1024)


def test_rejects_gguf_and_old_format_and_missing_fields(tmp_path: Path) -> None:
    gguf = tmp_path / "x.m"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(CatalogError, match="not a distributed-llama model"):
        read_dllama_header(gguf)
    old = tmp_path / "old.m"
    old.write_bytes(struct.pack("<i", 0xABCD00) + b"\0" * 60)
    with pytest.raises(CatalogError, match="old model format"):
        read_dllama_header(old)
    no_type = tmp_path / "nt.m"
    write_model_header(no_type, {k: v for k, v in LLAMA3_8B.items() if k != "weight_float_type"})
    with no_type.open("ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(CatalogError, match="weight type"):
        read_dllama_header(no_type)
    trunc = tmp_path / "t.m"
    trunc.write_bytes(struct.pack("<ii", 0x0A00ABCD, 800) + b"\0" * 10)
    with pytest.raises(CatalogError, match="truncated"):
        read_dllama_header(trunc)
    with pytest.raises(CatalogError, match="no such file"):
        read_dllama_header(tmp_path / "missing.m")


def test_topology_rules_name_the_rule_and_the_valid_counts(tmp_path: Path) -> None:
    h = read_dllama_header(header_file(tmp_path))
    assert valid_node_counts(h) == [1, 2, 4, 8]
    validate_topology(h, 4)
    with pytest.raises(EngineError) as exc:
        validate_topology(h, 3)
    message = str(exc.value)
    assert "heads (32) must be divisible by nodes (3)" in message
    assert "Valid node counts for this model: 1, 2, 4, 8" in message
    with pytest.raises(EngineError, match=r"must not exceed the model's KV heads \(8\)"):
        validate_topology(h, 16)


def test_q40_block_rule(tmp_path: Path) -> None:
    # 8 heads of 16 dims: Q dim 128 splits into 64 per node for 2 nodes (ok), but 32
    # for 4 nodes and 16 for 8 nodes; the hidden dim 320 / 4 = 80 is not a multiple of 32.
    h = read_dllama_header(
        header_file(tmp_path, dim=128, n_heads=8, n_kv_heads=8, hidden_dim=320, vocab_size=256)
    )
    problems = topology_problems(h, 4)
    assert any("hidden dim slice (320 / 4 = 80) must be a multiple of 32" in p for p in problems)
    assert valid_node_counts(h) == [1, 2]


def test_synthetic_model_reads_back_and_registers(tmp_path: Path) -> None:
    model, tok = write_synthetic_model(tmp_path)
    h = read_dllama_header(model)
    assert isinstance(h, DllamaHeader)
    assert valid_node_counts(h) == [1, 2, 3, 6]
    t = read_dllama_tokenizer(tok)
    assert t.vocab_size == h.vocab_size == 120
    info = describe_dllama(model)
    assert info.format == "dllama"
    assert info.extra["tokenizer"] == str(tok.resolve())
    assert info.name == "synthetic"
    assert info.quantization == "F32"


def test_tokenizer_with_template_and_encoder(tmp_path: Path) -> None:
    # Special tokens are those from BOS on, so put the chat markers after it.
    vocab = [*synthetic_vocab()[:-2], b"<s>", b"</s>", b"<|im_start|>", b"<|im_end|>"]
    bos = len(vocab) - 4
    path = tmp_path / "t.t"
    write_tokenizer(path, vocab, bos_id=bos, eos_ids=[bos + 1], chat_template="<|im_start|>...")
    t = read_dllama_tokenizer(path)
    assert t.chat_template == "<|im_start|>..."
    assert chat_template_kind(t.chat_template) == "chatml"
    enc = PromptEncoder(t)
    ids = enc.encode(apply_chat("Hello", "chatml"))
    assert ids[0] == bos
    assert ids[1] == vocab.index(b"<|im_start|>")
    assert b"".join(vocab[i] for i in ids[1:]) == apply_chat("Hello", "chatml").encode()
    # Merges happen by score: "Hello" ends as "H", "e", "llo" (no "He" entry).
    plain = enc.encode("Hello")[1:]
    assert [vocab[i] for i in plain] == [b"H", b"e", b"llo"]


def test_tokenizer_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.t"
    bad.write_bytes(b"\x00" * 32)
    with pytest.raises(CatalogError, match="not a distributed-llama tokenizer"):
        read_dllama_tokenizer(bad)


def test_catalog_add_registers_a_dllama_pair(tmp_path: Path) -> None:
    from edgelab.catalog import Catalog

    model, tok = write_synthetic_model(tmp_path / "models")
    catalog = Catalog(path=tmp_path / "catalog.json", models_dir=tmp_path / "models")
    info = catalog.add(model, name="tiny-dllama")
    stored = catalog.get("tiny-dllama")
    assert stored.format == info.format == "dllama"
    assert stored.extra["tokenizer"] == str(tok.resolve())
    assert stored.extra["dllama_header"]["n_kv_heads"] == 6
