"""No way in from another site (issue 13): a Host allowlist, and Origin checked against it.

DNS rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1
reaches the loopback port with ``Host: evil.example:8093`` and, being same-origin
with itself, ``Origin: http://evil.example:8093``. Browser-free: Flask's test client
sends exactly those headers. CSRF stays enabled here, as in production.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from edgelab.catalog import Catalog
from edgelab.models import Run
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run
from edgelab.service import create_app
from edgelab.settings import Settings, SettingsError, default_allowed_hosts
from edgelab.store.store import Store
from edgelab.sweeps import expand, parse_spec

EVIL = {"Host": "evil.example:8093", "Origin": "http://evil.example:8093"}
RUN = {"prompt": "hi", "model": "tiny", "nodes": 1}


@pytest.fixture
def settings(tiny_settings: Settings) -> Settings:
    return tiny_settings


@pytest.fixture
def app(settings: Settings) -> Flask:
    """CSRF on, as in production."""
    return create_app(settings, {"TESTING": True})


def _runs(settings: Settings) -> int:
    with session_scope(settings.database_url) as s:
        return int(s.scalar(select(func.count(Run.id))) or 0)


def _sweep(settings: Settings) -> int:
    spec = parse_spec({"model": "tiny", "prompts": ["x"]}, max_cells=10)
    cells = expand(spec, Catalog(settings))
    store = Store(settings.database_url)
    sweep_id = store.create_sweep(spec, cells).id
    store.cancel_sweep(sweep_id)
    return sweep_id


def test_spoofed_host_cannot_submit_a_run(client: FlaskClient, settings: Settings) -> None:
    resp = client.post("/api/runs", json=RUN, headers=EVIL)
    assert resp.status_code == 400
    assert "evil.example" in resp.get_json()["error"]
    assert "Host" in resp.get_json()["errors"]
    assert _runs(settings) == 0


def test_spoofed_host_cannot_resume_a_sweep(client: FlaskClient, settings: Settings) -> None:
    sweep_id = _sweep(settings)
    resp = client.post(f"/api/sweeps/{sweep_id}/resume", headers=EVIL)
    assert resp.status_code == 400
    with session_scope(settings.database_url) as s:
        assert {r.status for r in s.scalars(select(Run))} == {"cancelled"}


def test_spoofed_host_gets_no_form_token_and_cannot_post_the_form(
    client: FlaskClient, settings: Settings
) -> None:
    page = client.get("/runs/new", headers={"Host": EVIL["Host"]})
    assert page.status_code == 400
    assert b"csrf_token" not in page.data
    # Even with a token fetched through an allowed name, the spoofed host is refused.
    good = client.get("/runs/new").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', good)
    assert token is not None
    form = {"csrf_token": token.group(1), "prompt": "hi", "model": "tiny", "nodes": "1"}
    form |= {"threads": "1", "max_tokens": "8", "backend": "local", "engine": "llamacpp"}
    assert client.post("/runs/new", data=form, headers=EVIL).status_code == 400
    assert _runs(settings) == 0


def test_origin_is_checked_against_the_allowlist_not_the_host(
    client: FlaskClient, settings: Settings
) -> None:
    # An allowed Host with another site's Origin: the old check compared the two.
    foreign = {"Host": "localhost:8093", "Origin": "http://evil.example:8093"}
    resp = client.post("/api/runs", json=RUN, headers=foreign)
    assert resp.status_code == 403
    assert "Origin" in resp.get_json()["errors"]
    assert client.post("/api/runs", json=RUN, headers={"Origin": "null"}).status_code == 403
    # Loopback names are allowed by default; no broker here, so the answer is 503.
    for host in ("localhost:8093", "127.0.0.1:8080", "[::1]:8080"):
        same = {"Host": host, "Origin": f"http://{host}"}
        assert client.post("/api/runs", json=RUN, headers=same).status_code == 503, host
    assert _runs(settings) == 0


def test_the_allowlist_follows_the_bind_address_and_the_setting(settings: Settings) -> None:
    assert default_allowed_hosts("127.0.0.1:8080") == ("localhost", "127.0.0.1", "::1")
    assert default_allowed_hosts("0.0.0.0:8080") == ("localhost", "127.0.0.1", "::1")
    assert default_allowed_hosts("192.168.1.5:80")[-1] == "192.168.1.5"
    env = {"EDGELAB_ALLOWED_HOSTS": "Lab.Example.org, 10.0.0.2", "EDGELAB_DATA_DIR": "var"}
    assert Settings.from_env(env).allowed_hosts == ("lab.example.org", "10.0.0.2")
    with pytest.raises(SettingsError, match="EDGELAB_ALLOWED_HOSTS"):
        Settings.from_env({"EDGELAB_ALLOWED_HOSTS": "evil.example/x"})
    lab = create_app(settings.with_overrides(allowed_hosts=("lab.example.org",)), {"TESTING": True})
    ok = lab.test_client().get("/api/runs", headers={"Host": "lab.example.org:8080"})
    assert ok.status_code == 200
    assert lab.test_client().get("/api/runs").status_code == 400  # localhost not listed


def test_images_come_from_settings_never_from_a_request(settings: Settings) -> None:
    run_options = {"options": {"worker_image": "attacker/image:latest"}}
    with pytest.raises(ValueError, match="worker_image"):
        parse_config(RUN | run_options, Catalog(settings))
    env = {"EDGELAB_ROOT_IMAGE": "lab/root:1", "EDGELAB_WORKER_IMAGE": "lab/worker:1"}
    from_env = Settings.from_env(env)
    assert (from_env.root_image, from_env.worker_image) == ("lab/root:1", "lab/worker:1")


def test_cancel_needs_an_allowed_host_too(client: FlaskClient, settings: Settings) -> None:
    config, _ = parse_config(RUN, Catalog(settings))
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id
    assert client.post(f"/api/runs/{run_id}/cancel", headers=EVIL).status_code == 400
    with session_scope(settings.database_url) as s:
        assert s.get(Run, run_id).status == "queued"  # type: ignore[union-attr]


def test_default_images_are_the_ones_edgelab_builds() -> None:
    from edgelab.cluster.images import ROOT_IMAGE, WORKER_IMAGE

    assert (Settings().root_image, Settings().worker_image) == (ROOT_IMAGE, WORKER_IMAGE)


def test_dllama_modes_in_the_field_rules_are_the_engine_s() -> None:
    from edgelab.engines.dllama import MODE_OPTION, MODES
    from edgelab.validation.fields import OPTION_RULES

    assert OPTION_RULES[MODE_OPTION].choices == MODES
