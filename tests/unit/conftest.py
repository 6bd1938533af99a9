"""Fixtures of the unit tests that use the Flask app: settings, catalogs, ``app``, ``client``.

As in Flask's tutorial: ``app`` is the application for the test's settings and
``client`` its test client. Each test gets its own data directory and SQLite
database (schema applied). The catalogs are made up (no model file is read):

* ``web_settings``: the pages' catalog, the entries of ``web_catalog`` (by default
  one GGUF model ``tiny-test`` with 8 layers); a module overrides ``web_catalog``
  to show the pages other models.
* ``tiny_settings``: the API's catalog, one registered model ``tiny`` with 4 layers
  and no file at all (runs validate and queue; none could execute).

``app`` serves ``web_settings`` with CSRF off (forms are posted without a token);
modules that test CSRF or serve ``tiny_settings`` override ``app``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from edgelab.catalog import Catalog, ModelInfo
from edgelab.models.db import upgrade
from edgelab.service import create_app
from edgelab.settings import Settings


@pytest.fixture
def db_settings(tmp_path: Path) -> Settings:
    """Own data and models dirs, a fresh SQLite database, no catalog."""
    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    s.models_dir.mkdir(parents=True)
    upgrade(s.database_url)
    return s


@pytest.fixture
def web_catalog(db_settings: Settings) -> list[dict[str, Any]]:
    """Catalog entries for ``web_settings``: one made-up GGUF model (name and layers)."""
    gguf = db_settings.models_dir / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    return [
        {
            "name": "tiny-test",
            "path": str(gguf),
            "size_bytes": 4,
            "sha256": "0" * 64,
            "architecture": "llama",
            "n_layers": 8,
            "quantization": "Q4_1",
        }
    ]


@pytest.fixture
def web_settings(db_settings: Settings, web_catalog: list[dict[str, Any]]) -> Settings:
    catalog = {"version": 1, "models": web_catalog}
    (db_settings.models_dir / "catalog.json").write_text(json.dumps(catalog))
    return db_settings


@pytest.fixture
def tiny_settings(db_settings: Settings) -> Settings:
    """A catalog entry that needs no model file: ``tiny``, 4 layers."""
    Catalog(db_settings).register(
        ModelInfo(
            name="tiny",
            path=db_settings.models_dir.resolve() / "tiny.gguf",
            size_bytes=1,
            sha256="0" * 64,
            architecture="llama",
            n_layers=4,
            quantization="Q4_1",
        )
    )
    return db_settings


@pytest.fixture
def tiny_catalog(tiny_settings: Settings) -> Catalog:
    """The catalog of ``tiny_settings`` (specs are validated against it, never run)."""
    return Catalog(tiny_settings)


@pytest.fixture
def app(web_settings: Settings) -> Flask:
    return create_app(web_settings, {"TESTING": True, "WTF_CSRF_ENABLED": False})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
