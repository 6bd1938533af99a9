"""The dllama binary must be configured, exist and be executable - with a fixable message."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgelab.engines import get_engine
from edgelab.engines.base import EngineError
from edgelab.engines.dllama import DllamaEngine, preflight
from edgelab.engines.dllama.binary import resolve_api_binary, resolve_binary
from edgelab.engines.dllama.synthetic import write_synthetic_model


def test_nothing_configured_says_how_to_provide_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGELAB_DLLAMA_BIN", raising=False)
    with pytest.raises(EngineError) as exc:
        get_engine("dllama").check_available()
    assert "EDGELAB_DLLAMA_BIN" in str(exc.value)
    assert "--dllama-bin" in str(exc.value)


def test_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(tmp_path / "nope" / "dllama"))
    with pytest.raises(EngineError, match=r"EDGELAB_DLLAMA_BIN points at .*does not exist"):
        resolve_binary()


def test_not_executable(tmp_path: Path) -> None:
    binary = tmp_path / "dllama"
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o644)
    with pytest.raises(EngineError, match=r"--dllama-bin points at .*not executable"):
        DllamaEngine(binary).check_available()


def test_directory_is_not_a_binary(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not a file"):
        resolve_binary(tmp_path)


def test_explicit_path_wins_over_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "dllama"
    binary.write_bytes(b"#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", "/definitely/missing")
    assert resolve_binary(binary) == binary.resolve()
    launch = DllamaEngine(binary).worker_launch("127.0.0.1", 4100, 2)
    assert launch.argv[:2] == ["-m", "edgelab.engines.dllama.worker"]
    assert str(binary.resolve()) in launch.argv
    assert launch.argv[-2:] == ["--net-turbo", "0"]
    root = DllamaEngine(binary, mode="inference").root_launch(
        "127.0.0.1", 4200, Path("/m.m"), ["127.0.0.1:1", "127.0.0.1:2"], 1
    )
    assert "127.0.0.1:1,127.0.0.1:2" in root.argv
    assert root.argv[root.argv.index("--mode") + 1] == "inference"
    # The per-run mode needs no dllama-api at all.
    assert "--dllama-api-bin" not in root.argv


def _executable(path: Path) -> Path:
    path.write_bytes(b"#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_api_mode_finds_dllama_api_beside_dllama(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("EDGELAB_DLLAMA_API_BIN", raising=False)
    binary = _executable(tmp_path / "dllama")
    engine = DllamaEngine(binary)
    assert engine.mode == "api"
    # Missing: the message says how to build it, where it was looked for, and the way out.
    with pytest.raises(EngineError) as info:
        engine.check_available()
    message = str(info.value)
    assert f"no dllama-api at {tmp_path / 'dllama-api'}" in message
    assert "make dllama-api" in message
    assert "dllama_mode: inference" in message
    api = _executable(tmp_path / "dllama-api")
    assert resolve_api_binary(None, binary) == api.resolve()
    root = engine.root_launch("127.0.0.1", 4200, Path("/m.m"), ["127.0.0.1:1"], 1)
    assert root.argv[root.argv.index("--mode") + 1] == "api"
    assert root.argv[root.argv.index("--dllama-api-bin") + 1] == str(api.resolve())


def test_api_binary_env_var_wins_over_the_sibling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = _executable(tmp_path / "dllama")
    _executable(tmp_path / "dllama-api")
    other = _executable(tmp_path / "elsewhere-dllama-api")
    monkeypatch.setenv("EDGELAB_DLLAMA_API_BIN", str(other))
    assert resolve_api_binary(None, binary) == other.resolve()
    monkeypatch.setenv("EDGELAB_DLLAMA_API_BIN", str(tmp_path / "missing"))
    with pytest.raises(EngineError, match="EDGELAB_DLLAMA_API_BIN"):
        resolve_api_binary(None, binary)


def test_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="dllama_mode must be one of api, inference"):
        DllamaEngine(tmp_path / "dllama", mode="warm")


def test_preflight_checks_binary_then_topology(tmp_path: Path) -> None:
    model, _ = write_synthetic_model(tmp_path / "m")
    binary = tmp_path / "dllama"
    binary.write_bytes(b"#!/bin/sh\n")
    os.chmod(binary, 0o755)
    preflight(model, 3, binary)
    with pytest.raises(EngineError, match=r"Valid node counts for this model: 1, 2, 3, 6"):
        preflight(model, 4, binary)
    with pytest.raises(EngineError, match=r"does not exist"):
        preflight(model, 3, tmp_path / "missing")
