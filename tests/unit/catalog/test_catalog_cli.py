"""``edgelab models ...`` as a user types it."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgelab.catalog.cli import ProgressLine, human_size
from edgelab.cli import main

MakeGGUF = Callable[..., Path]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"EDGELAB_DATA_DIR": str(tmp_path / "var"), "EDGELAB_MODELS_DIR": ""}


def catalog_file(env: dict[str, str]) -> Path:
    return Path(env["EDGELAB_DATA_DIR"]) / "models" / "catalog.json"


def test_add_then_list_shows_every_column(env: dict[str, str], make_gguf: MakeGGUF) -> None:
    runner = CliRunner()
    path = make_gguf("tiny.gguf", n_layers=3)

    added = runner.invoke(main, ["models", "add", str(path), "--name", "tiny"], env=env)
    listed = runner.invoke(main, ["models", "list"], env=env)

    assert added.exit_code == 0, added.output
    assert "registered tiny: llama, 3 layers, F16" in added.output
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split() == ["NAME", "QUANT", "LAYERS", "ARCH", "SIZE", "SHA256", "FILE"]
    sha = json.loads(catalog_file(env).read_text())["models"][0]["sha256"]
    assert row.split()[:4] == ["tiny", "F16", "3", "llama"]
    assert sha in row.split()
    assert row.endswith(str(path))


def test_list_short_and_json(env: dict[str, str], make_gguf: MakeGGUF) -> None:
    runner = CliRunner()
    runner.invoke(main, ["models", "add", str(make_gguf()), "--name", "tiny"], env=env)

    short = runner.invoke(main, ["models", "list", "--short"], env=env)
    as_json = runner.invoke(main, ["models", "list", "--json"], env=env)

    entries = json.loads(as_json.output)
    assert [e["name"] for e in entries] == ["tiny"]
    assert entries[0]["n_layers"] == 2
    assert entries[0]["sha256"][:12] in short.output
    assert entries[0]["sha256"] not in short.output


def test_list_empty_catalog_says_how_to_fill_it(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["models", "list"], env=env)

    assert result.exit_code == 0
    assert "no models registered yet" in result.output
    assert "smollm2-135m" in result.output


def test_add_non_gguf_fails_and_leaves_catalog_unchanged(
    env: dict[str, str], make_gguf: MakeGGUF, tmp_path: Path
) -> None:
    runner = CliRunner()
    runner.invoke(main, ["models", "add", str(make_gguf()), "--name", "tiny"], env=env)
    before = catalog_file(env).read_bytes()
    hostname = tmp_path / "hostname"
    hostname.write_text("buildhost\n")

    result = runner.invoke(main, ["models", "add", str(hostname)], env=env)

    assert result.exit_code != 0
    assert "is not a GGUF file" in result.output
    assert catalog_file(env).read_bytes() == before


@pytest.mark.skipif(not Path("/etc/hostname").is_file(), reason="no /etc/hostname here")
def test_add_etc_hostname_fails(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["models", "add", "/etc/hostname"], env=env)

    assert result.exit_code == 1
    assert "/etc/hostname is not a GGUF file" in result.output
    assert not catalog_file(env).exists()


def test_fetch_unknown_model_fails_clearly(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["models", "fetch", "nope"], env=env)

    assert result.exit_code == 1
    assert "no downloadable model named 'nope'; known: smollm2-135m" in result.output


def test_remove(env: dict[str, str], make_gguf: MakeGGUF) -> None:
    runner = CliRunner()
    runner.invoke(main, ["models", "add", str(make_gguf()), "--name", "tiny"], env=env)

    assert runner.invoke(main, ["models", "remove", "tiny"], env=env).exit_code == 0
    assert json.loads(catalog_file(env).read_text())["models"] == []
    assert runner.invoke(main, ["models", "remove", "tiny"], env=env).exit_code == 1


def test_every_models_command_has_help() -> None:
    runner = CliRunner()
    for args in (["models"], ["models", "list"], ["models", "add"], ["models", "fetch"]):
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0
        assert "Usage:" in result.output


def test_human_size() -> None:
    assert human_size(512) == "512 B"
    assert human_size(98_362_432) == "93.8 MiB"
    assert human_size(3 * 1024**3) == "3.0 GiB"


def test_progress_line_without_terminal_prints_one_line_per_phase() -> None:
    out = io.StringIO()
    progress = ProgressLine(out)

    for done in range(0, 101, 10):
        progress("download", done * 1024 * 1024, 100 * 1024 * 1024)
    progress("verify", 1, 1)
    progress.end()

    assert out.getvalue() == "download 100.0 MiB...\nverify 1 B...\n"
