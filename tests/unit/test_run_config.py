"""Run configuration: every bad field reported at once; fingerprints group repeats."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from edgelab.catalog import Catalog
from edgelab.runs.config import ConfigError, parse_config


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(4)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for i in range(4):
        writer.add_tensor(f"blk.{i}.attn_q.weight", np.ones((8, 8), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    cat = Catalog(path=tmp_path / "catalog.json", models_dir=tmp_path)
    cat.add(path, name="tiny")
    return cat


GOOD = {"prompt": "hi", "model": "tiny", "nodes": 3, "threads": 2, "latency": "10ms..30ms"}


def test_good_input_parses(catalog: Catalog) -> None:
    config, model = parse_config({**GOOD, "max_tokens": 16, "bandwidth": "100mbit"}, catalog)
    assert model.name == "tiny"
    assert (config.nodes, config.threads, config.max_tokens) == (3, 2, 16)
    assert config.latency.label.startswith("10ms..30ms")
    assert config.latency.bandwidth_bps == 100_000_000
    assert config.cluster_spec.workers == 2


def test_every_bad_field_is_reported(catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "prompt": "  ",
                "model": "nope",
                "nodes": 0,
                "threads": 0,
                "max_tokens": 1025,
                "latency": "fast",
                "bandwidth": "lots",
                "engine": "vllm",
                "backend": "cloud",
            },
            catalog,
        )
    errors = info.value.errors
    assert set(errors) == {
        "prompt",
        "model",
        "nodes",
        "threads",
        "max_tokens",
        "latency",
        "bandwidth",
        "engine",
        "backend",
    }
    assert "1024" in errors["max_tokens"]
    assert "tiny" in errors["model"]  # the message lists the known models


def test_nodes_are_limited_by_the_model_layers(catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, "nodes": 5}, catalog)
    assert "at most 4" in info.value.errors["nodes"]
    config, _ = parse_config({**GOOD, "nodes": 4}, catalog)
    assert config.nodes == 4


@pytest.mark.parametrize("value", ["three", 2.5, True, None])
def test_non_integers_are_refused(catalog: Catalog, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, "max_tokens": value}, catalog)
    assert "max_tokens" in info.value.errors


def test_max_tokens_bounds(catalog: Catalog) -> None:
    assert parse_config({**GOOD, "max_tokens": 1}, catalog)[0].max_tokens == 1
    assert parse_config({**GOOD, "max_tokens": 1024}, catalog)[0].max_tokens == 1024
    with pytest.raises(ConfigError):
        parse_config({**GOOD, "max_tokens": 0}, catalog)


def test_fingerprint_ignores_repetition_only(catalog: Catalog) -> None:
    a, _ = parse_config({**GOOD, "repetition": 0}, catalog)
    b, _ = parse_config({**GOOD, "repetition": 3}, catalog)
    c, _ = parse_config({**GOOD, "latency": "20ms"}, catalog)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.cluster_spec.topology_key() == c.cluster_spec.topology_key()


def test_latency_round_trips_through_its_label(catalog: Catalog) -> None:
    config, _ = parse_config({**GOOD, "latency": "20ms~5ms", "seed": 7}, catalog)
    again, _ = parse_config({**GOOD, "latency": config.latency.label, "seed": 7}, catalog)
    assert again.latency == config.latency
    assert again.fingerprint() == config.fingerprint()


def test_dllama_without_binary_and_bad_topology_fail_before_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgelab.engines.dllama.synthetic import write_synthetic_model

    monkeypatch.delenv("EDGELAB_DLLAMA_BIN", raising=False)
    model_path, _tokenizer = write_synthetic_model(tmp_path / "dl")
    cat = Catalog(path=tmp_path / "catalog.json", models_dir=tmp_path)
    cat.add(model_path, name="synthetic")
    base = {"prompt": "hi", "model": "synthetic", "engine": "dllama", "latency": "5ms"}
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "nodes": 5}, cat)
    assert "EDGELAB_DLLAMA_BIN" in info.value.errors["engine"]
    assert "Valid node counts" in info.value.errors["nodes"]

    binary = tmp_path / "dllama"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(binary))
    monkeypatch.delenv("EDGELAB_DLLAMA_API_BIN", raising=False)
    # The default (warm) mode also needs dllama-api; the per-run mode does not.
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "nodes": 2}, cat)
    assert "no dllama-api at" in info.value.errors["engine"]
    config, _ = parse_config({**base, "nodes": 2, "options": {"dllama_mode": "inference"}}, cat)
    assert config.options == {"dllama_mode": "inference"}
    api = tmp_path / "dllama-api"
    api.write_text("#!/bin/sh\n")
    api.chmod(0o755)
    config, _ = parse_config({**base, "nodes": 2}, cat)
    assert config.engine == "dllama"
    # The default mode spelled out is the same experiment (same fingerprint).
    explicit, _ = parse_config({**base, "nodes": 2, "options": {"dllama_mode": "api"}}, cat)
    assert explicit.options == {}
    assert explicit.fingerprint() == config.fingerprint()
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "nodes": 2, "options": {"dllama_mode": "warm"}}, cat)
    assert info.value.errors == {
        "options": "dllama_mode: must be one of api, inference, got a string 'warm'"
    }


def test_engine_and_model_format_must_match(catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, "engine": "dllama"}, catalog)
    # The model field names the engine that can run the model.
    assert info.value.errors["model"] == (
        "tiny is a GGUF (llama.cpp) model, which engine dllama cannot run; "
        "run it with engine llamacpp"
    )
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, "options": {"dllama_mode": "api"}}, catalog)
    assert info.value.errors == {
        "options": "dllama_mode applies only to engine dllama, not llamacpp"
    }


def test_dllama_model_under_llamacpp_names_dllama(tmp_path: Path) -> None:
    from edgelab.engines.dllama.synthetic import write_synthetic_model

    model_path, _tokenizer = write_synthetic_model(tmp_path / "dl")
    cat = Catalog(path=tmp_path / "catalog.json", models_dir=tmp_path)
    cat.add(model_path, name="synthetic")
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, "model": "synthetic", "engine": "llamacpp"}, cat)
    assert info.value.errors == {
        "model": "synthetic is a distributed-llama (.m) model, which engine llamacpp "
        "cannot run; run it with engine dllama"
    }


def test_a_memory_limit_below_what_docker_accepts_is_refused_naming_the_field(
    catalog: Catalog,
) -> None:
    """Docker refuses a container under 6 MB ("Minimum memory limit allowed is 6MB");
    validation says so before anything starts, for the option and for a device."""
    floor = "must be at least 6m (the smallest memory limit Docker accepts)"
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, "backend": "docker", "options": {"mem": "5m"}}, catalog)
    assert info.value.errors == {"options": f"mem: {floor}, got '5m'"}
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, "devices": {"worker1": {"mem": "6291455"}}}, catalog)
    assert info.value.errors["devices"] == f"worker1: mem {floor}, got '6291455'"
    config, _ = parse_config(
        {**GOOD, "options": {"mem": "6m"}, "devices": {"worker1": {"mem": "6291456"}}}, catalog
    )
    assert config.options["mem"] == "6m"
    assert config.cluster_spec.device("worker1").mem == "6291456"
