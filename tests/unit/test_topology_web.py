"""The viewer and the API with heterogeneous runs: picture, filters, forms, JSON."""

from __future__ import annotations

from flask.testing import FlaskClient

from edgelab.catalog import Catalog
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run
from edgelab.settings import Settings

MODEL = "tiny-test"


def _store(settings: Settings, **fields: object) -> int:
    raw = {"prompt": "p", "model": MODEL, "nodes": 3, "latency": "10ms", "max_tokens": 4}
    config, _ = parse_config({**raw, **fields}, Catalog(settings))
    with session_scope(settings.database_url) as s:
        return create_run(s, config).id


def test_run_page_history_and_api_know_the_topology(
    client: FlaskClient, web_settings: Settings
) -> None:
    uniform = _store(web_settings)
    slow = _store(web_settings, devices={"worker2": "threads:2"}, links={"worker2": "30ms"})
    page = client.get(f"/runs/{slow}").get_data(as_text=True)
    assert 'id="cluster-svg"' in page
    assert page.count('class="link"') == 2
    assert ">30ms<" in page
    api = client.get(f"/api/runs/{slow}").get_json()
    links = {link["node"]: link["latency"] for link in api["config"]["topology"]["links"]}
    assert links == {"worker1": "10ms", "worker2": "30ms"}
    assert api["config"]["topology"]["nodes"][2]["threads"] == 2
    listed = client.get("/api/runs?topology=uniform").get_json()
    assert [r["id"] for r in listed["runs"]] == [uniform]
    listed = client.get("/api/runs?topology=worker2+link").get_json()
    assert [r["id"] for r in listed["runs"]] == [slow]
    # Edit & run starts from the same devices and links.
    form = client.get(f"/runs/new?from={slow}").get_data(as_text=True)
    assert "worker2=threads:2" in form
    assert "worker2=30ms" in form


def test_run_form_shows_topology_errors_beside_their_fields(client: FlaskClient) -> None:
    resp = client.post(
        "/runs/new",
        data={
            "prompt": "p",
            "model": MODEL,
            "nodes": "3",
            "threads": "1",
            "max_tokens": "4",
            "backend": "local",
            "engine": "llamacpp",
            "devices": "worker7=slow",
            "links": "worker1=loss:70%",
        },
    )
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "worker7 does not exist" in html
    assert "loss must be between 0 and 50 %" in html
