"""Choosing dllama in the web forms and in sweep specs, with and without a binary.

The form must say how to provide a binary when none is configured, and a
submission must come back with parse_config's field messages (400), never a 500.
Sweeps validate every cell through parse_config, so dllama's topology rules
apply per node count.
"""

from __future__ import annotations

import re
from dataclasses import replace
from html import unescape
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from edgelab.catalog import Catalog
from edgelab.engines.dllama.synthetic import write_synthetic_model
from edgelab.models.db import upgrade
from edgelab.service import create_app
from edgelab.settings import Settings
from edgelab.sweeps import SpecError, expand, parse_spec

RUN = {
    "prompt": "Name three planets.",
    "model": "synthetic",
    "nodes": "3",
    "threads": "1",
    "latency_min": "10",
    "latency_max": "",
    "latency_profile": "",
    "bandwidth": "",
    "max_tokens": "16",
    "backend": "local",
    "engine": "dllama",
    "seed": "0",
}
SWEEP = {
    "name": "dllama-grid",
    "model": "synthetic",
    "nodes": "1, 3",
    "threads": "1",
    "latency": "0ms, 20ms",
    "bandwidth": "",
    "max_tokens": "8",
    "prompts": "Hello",
    "repetitions": "1",
    "backend": "local",
    "engine": "dllama",
}


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


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A catalog with a synthetic dllama model; no binary configured unless a test sets one."""
    monkeypatch.delenv("EDGELAB_DLLAMA_BIN", raising=False)
    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    upgrade(s.database_url)
    model, _ = write_synthetic_model(s.models_dir)
    Catalog(s).add(model, name="synthetic")
    return s


@pytest.fixture
def client(settings: Settings) -> FlaskClient:
    app = create_app(settings, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    return app.test_client()


def engine_field(html: str) -> str:
    """The text of the form's engine field block (label, select, help, error)."""
    match = re.search(r'<div class="field[^"]*">\s*<label for="engine">.*?</div>', html, re.S)
    assert match, "no engine field on the page"
    return unescape(re.sub(r"<[^>]+>", " ", match.group(0)))


@pytest.mark.parametrize("page", ["/runs/new", "/sweeps/new"])
def test_form_offers_dllama_and_says_how_to_provide_a_binary(
    client: FlaskClient, page: str
) -> None:
    html = client.get(page).get_data(as_text=True)
    assert '<option value="dllama">dllama</option>' in html
    field = engine_field(html)
    assert "no dllama binary configured" in field
    assert "EDGELAB_DLLAMA_BIN=/path/to/dllama" in field


def test_form_names_the_configured_binary(
    client: FlaskClient, binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(binary))
    field = engine_field(client.get("/runs/new").get_data(as_text=True))
    assert str(binary.resolve()) in field
    assert "not usable" not in field


def test_submitting_dllama_without_a_binary_is_a_field_error(client: FlaskClient) -> None:
    resp = client.post("/runs/new", data=RUN)
    assert resp.status_code == 400
    field = engine_field(resp.get_data(as_text=True))
    assert "no dllama binary configured" in field
    assert "--dllama-bin" in field  # parse_config's own message, shown beside the field


def test_submitting_dllama_with_a_gguf_model_names_both_problems(
    client: FlaskClient, settings: Settings
) -> None:
    gguf = settings.models_dir / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    catalog = Catalog(settings)
    synthetic = catalog.get("synthetic")
    catalog.register(replace(synthetic, name="tiny", path=gguf, format="gguf", extra={}))
    html = client.post("/runs/new", data=RUN | {"model": "tiny"}).get_data(as_text=True)
    assert "no dllama binary configured" in engine_field(html)
    # The model field says which engine can run it.
    assert (
        "tiny is a GGUF (llama.cpp) model, which engine dllama cannot run; "
        "run it with engine llamacpp"
    ) in html


def test_dllama_topology_errors_beside_nodes_and_a_valid_run_passes_validation(
    client: FlaskClient, binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(binary))
    resp = client.post("/runs/new", data=RUN | {"nodes": "4"})
    assert resp.status_code == 400
    html = unescape(resp.get_data(as_text=True))
    assert "Valid node counts for this model: 1, 2, 3, 6" in html
    # Valid: it gets as far as the queue, which this test has none of (503, not 400).
    assert client.post("/runs/new", data=RUN).status_code == 503


def test_sweep_form_without_a_binary_is_a_field_error(client: FlaskClient) -> None:
    resp = client.post("/sweeps/new", data=SWEEP)
    assert resp.status_code == 400
    assert "no dllama binary configured" in engine_field(resp.get_data(as_text=True))


def test_sweep_spec_accepts_dllama_and_checks_every_cell(
    settings: Settings, binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_data = {
        "name": "grid",
        "engine": "dllama",
        "model": "synthetic",
        "nodes": [1, 3, 4],
        "latency": ["0ms", "20ms"],
        "max_tokens": 8,
        "prompts": ["Hello"],
    }
    catalog = Catalog(settings)
    with pytest.raises(SpecError) as no_binary:
        expand(parse_spec(spec_data, max_cells=100), catalog)
    assert "no dllama binary configured" in no_binary.value.errors["engine"]

    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(binary))
    with pytest.raises(SpecError) as bad_cell:
        expand(parse_spec(spec_data, max_cells=100), catalog)
    assert set(bad_cell.value.errors) == {"nodes"}
    assert bad_cell.value.errors["nodes"].startswith("4: distributed-llama cannot split")

    cells = expand(parse_spec(spec_data | {"nodes": [1, 3]}, max_cells=100), catalog)
    # One 1-node cell: a single node has no links, so its latencies cannot differ.
    assert [(c.config.engine, c.config.nodes) for c in cells] == [
        ("dllama", 1),
        ("dllama", 3),
        ("dllama", 3),
    ]
