"""What a container backend mounts for dllama, and what the nodes inside are told.

The Docker backend itself is tested against the stand-in binary in
tests/integration/test_docker_dllama.py; these tests pin the mapping from host
files to container paths without a Docker engine.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from edgelab.catalog.dllama import describe_dllama
from edgelab.engines import get_engine
from edgelab.engines.base import EngineError
from edgelab.engines.dllama import CONTAINER_API_BINARY, CONTAINER_BINARY, DllamaEngine
from edgelab.engines.dllama.synthetic import write_synthetic_model

MODEL_TARGET = PurePosixPath("/models/dllama_model_synthetic.m")


@pytest.fixture
def binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake build: ``dllama`` and, beside it, the ``dllama-api`` warm roots run."""
    monkeypatch.delenv("EDGELAB_DLLAMA_API_BIN", raising=False)
    path = tmp_path / "bin" / "dllama"
    path.parent.mkdir()
    for name in ("dllama", "dllama-api"):
        (path.parent / name).write_text("#!/bin/sh\n")
        (path.parent / name).chmod(0o755)
    return path


def test_binary_goes_to_every_node_and_is_named_by_the_env_var(
    tmp_path: Path, binary: Path
) -> None:
    model, _ = write_synthetic_model(tmp_path / "models")
    inside, files = DllamaEngine(binary).for_containers(model, MODEL_TARGET)
    api = binary.parent / "dllama-api"
    assert [(f.source, f.target, f.roles, f.env) for f in files] == [
        (binary.resolve(), CONTAINER_BINARY, ("root", "worker"), "EDGELAB_DLLAMA_BIN"),
        # The warm root's dllama-api runs on the root only.
        (api.resolve(), CONTAINER_API_BINARY, ("root",), "EDGELAB_DLLAMA_API_BIN"),
    ]
    # A tokenizer next to the model is inside the mounted models directory already.
    argv = inside.root_launch("0.0.0.0", 8080, Path(MODEL_TARGET), ["w1:50052"], 1).argv
    assert argv[argv.index("--dllama-bin") + 1] == str(CONTAINER_BINARY)
    assert argv[argv.index("--dllama-api-bin") + 1] == str(CONTAINER_API_BINARY)
    assert argv[argv.index("--tokenizer") + 1] == "/models/dllama_tokenizer_synthetic.t"
    assert argv[argv.index("--model") + 1] == str(MODEL_TARGET)
    worker = inside.worker_launch("127.0.0.1", 50051, 1).argv
    assert worker[worker.index("--dllama-bin") + 1] == str(CONTAINER_BINARY)
    # The per-run mode mounts only dllama.
    _, files = DllamaEngine(binary, mode="inference").for_containers(model, MODEL_TARGET)
    assert [f.target for f in files] == [CONTAINER_BINARY]


def test_catalog_tokenizer_elsewhere_is_mounted_for_the_root_only(
    tmp_path: Path, binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(binary))
    model, tokenizer = write_synthetic_model(tmp_path / "models")
    moved = tmp_path / "tokenizers" / "tok.t"
    moved.parent.mkdir()
    tokenizer.rename(moved)
    info = describe_dllama(model, "synthetic", tokenizer=moved)
    engine = get_engine("dllama", info)
    assert isinstance(engine, DllamaEngine)
    inside, files = engine.for_containers(model, MODEL_TARGET)
    extra = [f for f in files if f.source == moved.resolve()]
    assert len(extra) == 1
    assert extra[0].roles == ("root",)
    argv = inside.root_launch("0.0.0.0", 8080, Path(MODEL_TARGET), [], 1).argv
    assert argv[argv.index("--tokenizer") + 1] == str(extra[0].target)


def test_missing_binary_or_tokenizer_fails_before_any_container(
    tmp_path: Path, binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGELAB_DLLAMA_BIN", raising=False)
    model, tokenizer = write_synthetic_model(tmp_path / "models")
    with pytest.raises(EngineError, match="EDGELAB_DLLAMA_BIN"):
        DllamaEngine().for_containers(model, MODEL_TARGET)
    tokenizer.unlink()
    with pytest.raises(EngineError, match=r"no tokenizer \(\.t\)"):
        DllamaEngine(binary).for_containers(model, MODEL_TARGET)


def test_llamacpp_needs_no_mounts(tmp_path: Path) -> None:
    engine = get_engine("llamacpp")
    assert engine.for_containers(tmp_path / "m.gguf", PurePosixPath("/models/m.gguf")) == (
        engine,
        [],
    )
