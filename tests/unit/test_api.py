"""The JSON API on SQLite with Flask's test client, without a broker.

Everything that needs no queue is checked here: validation (400 with a message per
field), unknown ids (404), history filters, sort and pages, cancelling queued
work, the OpenAPI document, and that submitting without a broker is a clean 503.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from edgelab.catalog import Catalog
from edgelab.models import Run
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run
from edgelab.service import create_app
from edgelab.settings import Settings


@pytest.fixture
def app(tiny_settings: Settings) -> Flask:
    """SQLite, no broker, and a catalog entry that needs no model file."""
    return create_app(tiny_settings, {"TESTING": True})


def _add_run(settings: Settings, **fields: Any) -> int:
    raw: dict[str, Any] = {"prompt": "hi", "model": "tiny", "nodes": 1, "latency": "0ms"}
    status = fields.pop("status", "queued")
    raw.update(fields)
    config, _ = parse_config(raw, Catalog(settings))
    with session_scope(settings.database_url) as s:
        run = create_run(s, config)
        s.execute(update(Run).where(Run.id == run.id).values(status=status))
        return run.id


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"prompt": "", "nodes": 0}, {"prompt", "nodes"}),
        ({"prompt": "x", "model": "tiny", "max_tokens": 0}, {"max_tokens"}),
        ({"prompt": "x", "model": "tiny", "latency": "soon"}, {"latency"}),
        ({"prompt": "x", "model": "nope"}, {"model"}),
        ({"prompt": "x", "model": "tiny", "nodes": "three", "threads": -1}, {"nodes", "threads"}),
        ({"prompt": "x", "model": "tiny", "nodes": 5}, {"nodes"}),
        ({"prompt": "x", "model": "tiny", "temperature": "hot"}, {"temperature"}),
        ({"prompt": "x", "model": "tiny", "options": [1]}, {"options"}),
    ],
)
def test_invalid_run_is_400_with_a_message_per_field(
    client: FlaskClient, body: dict[str, Any], fields: set[str]
) -> None:
    resp = client.post("/api/runs", json=body)
    assert resp.status_code == 400
    errors = resp.get_json()["errors"]
    assert fields <= set(errors)
    assert all(isinstance(m, str) and m for m in errors.values())


@pytest.mark.parametrize("data", ["not json", "[1, 2]", "null", "{"])
def test_body_that_is_not_an_object_is_400(client: FlaskClient, data: str) -> None:
    resp = client.post("/api/runs", data=data, content_type="application/json")
    assert resp.status_code == 400
    assert "body" in resp.get_json()["errors"]


def test_valid_run_without_a_broker_is_503_and_stores_nothing(
    client: FlaskClient, tiny_settings: Settings
) -> None:
    resp = client.post("/api/runs", json={"prompt": "x", "model": "tiny"})
    assert resp.status_code == 503
    assert "EDGELAB_REDIS_URL" in resp.get_json()["error"]
    assert client.get("/api/runs").get_json()["total"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/runs/999"),
        ("get", "/api/runs/999/events"),
        ("post", "/api/runs/999/cancel"),
        ("get", "/api/sweeps/999"),
        ("post", "/api/sweeps/999/cancel"),
        ("post", "/api/sweeps/999/resume"),
        ("get", "/api/nothing-here"),
    ],
)
def test_unknown_ids_are_json_404(client: FlaskClient, method: str, path: str) -> None:
    resp = getattr(client, method)(path)
    assert resp.status_code == 404
    assert "error" in resp.get_json()


def test_wrong_method_is_json_405(client: FlaskClient) -> None:
    resp = client.delete("/api/runs")
    assert resp.status_code == 405
    assert "error" in resp.get_json()


def test_history_filters_sorts_and_pages(client: FlaskClient, tiny_settings: Settings) -> None:
    a = _add_run(tiny_settings, nodes=1, status="succeeded")
    b = _add_run(tiny_settings, nodes=2, status="failed")
    c = _add_run(tiny_settings, nodes=2, status="succeeded")
    data = client.get("/api/runs").get_json()
    assert [r["id"] for r in data["runs"]] == [c, b, a]  # newest first by default
    assert data["total"] == 3

    data = client.get("/api/runs?status=succeeded&sort=id").get_json()
    assert [r["id"] for r in data["runs"]] == [a, c]
    data = client.get("/api/runs?status=succeeded,failed&nodes=2&sort=-id").get_json()
    assert [r["id"] for r in data["runs"]] == [c, b]
    assert client.get("/api/runs?model=other").get_json()["total"] == 0

    page2 = client.get("/api/runs?per_page=2&page=2&sort=id").get_json()
    assert [r["id"] for r in page2["runs"]] == [c]
    assert page2["total"] == 3

    assert client.get("/api/runs?since=2000-01-01").get_json()["total"] == 3
    assert client.get("/api/runs?until=2000-01-01").get_json()["total"] == 0
    run = client.get(f"/api/runs/{a}").get_json()
    assert run["config"]["model"] == "tiny"
    assert run["tokens"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("nodes=two", "nodes"),
        ("sort=prompt", "sort"),
        ("page=0", "page"),
        ("per_page=100000", "per_page"),
        ("since=yesterday", "since"),
        ("sweep=-1", "sweep"),
    ],
)
def test_bad_history_query_is_400(client: FlaskClient, query: str, field: str) -> None:
    resp = client.get(f"/api/runs?{query}")
    assert resp.status_code == 400
    assert field in resp.get_json()["errors"]


def test_cancel_a_queued_run_then_it_is_409(client: FlaskClient, tiny_settings: Settings) -> None:
    rid = _add_run(tiny_settings)
    resp = client.post(f"/api/runs/{rid}/cancel")
    assert resp.status_code == 202
    assert client.get(f"/api/runs/{rid}").get_json()["status"] == "cancelled"
    again = client.post(f"/api/runs/{rid}/cancel")
    assert again.status_code == 409


def test_sweep_validation_and_limit(client: FlaskClient, tiny_settings: Settings) -> None:
    resp = client.post("/api/sweeps", json={"model": "tiny", "nodes": [1, 0], "prompts": ["x"]})
    assert resp.status_code == 400
    assert "nodes" in resp.get_json()["errors"]

    big = {"model": "tiny", "prompts": ["x"], "max_tokens": list(range(1, 41)), "repetitions": 30}
    resp = client.post("/api/sweeps", json=big)
    assert resp.status_code == 400
    assert "1200 cells" in resp.get_json()["errors"]["spec"]

    yaml_body = "model: tiny\nprompts: [x]\nlatency: [0ms, nope]\n"
    resp = client.post("/api/sweeps", data=yaml_body, content_type="application/yaml")
    assert resp.status_code == 400
    assert "latency" in resp.get_json()["errors"]

    resp = client.post("/api/sweeps", data="- a list", content_type="application/yaml")
    assert resp.status_code == 400


def test_health_without_broker_is_503_with_reasons(client: FlaskClient) -> None:
    resp = client.get("/api/health")
    assert resp.status_code == 503
    data = resp.get_json()
    assert data["database"]["ok"] is True
    assert data["broker"]["ok"] is False
    assert data["workers"] == []


def test_models_lists_the_catalog(client: FlaskClient) -> None:
    names = [m["name"] for m in client.get("/api/models").get_json()["models"]]
    assert names == ["tiny"]


def test_openapi_describes_exactly_the_api_routes(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    routed.add((path, method))
    assert described == routed


def test_api_token_is_required_when_set(tiny_settings: Settings) -> None:
    app = create_app(tiny_settings.with_overrides(api_token="s3cret"), {"TESTING": True})
    client = app.test_client()
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/runs", headers={"X-Edgelab-Token": "wrong"}).status_code == 401
    assert client.get("/api/runs", headers={"X-Edgelab-Token": "s3cret"}).status_code == 200
    ok = client.get("/api/runs", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_cross_site_writes_are_refused(client: FlaskClient, tiny_settings: Settings) -> None:
    rid = _add_run(tiny_settings)
    # What a form on another site can send: text/plain, with that site's Origin.
    body = '{"prompt": "hi", "model": "tiny", "nodes": 1}'
    plain = client.post("/api/runs", data=body, content_type="text/plain")
    assert plain.status_code == 415
    assert "Content-Type" in plain.get_json()["errors"]
    foreign = client.post(f"/api/runs/{rid}/cancel", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert client.get(f"/api/runs/{rid}").get_json()["status"] == "queued"
    same = client.post(f"/api/runs/{rid}/cancel", headers={"Origin": "http://localhost"})
    assert same.status_code == 202


def test_until_date_includes_that_whole_day(client: FlaskClient, tiny_settings: Settings) -> None:
    from datetime import UTC, datetime, timedelta

    rid = _add_run(tiny_settings)
    today = datetime.now(UTC).date()
    ids = [r["id"] for r in client.get(f"/api/runs?until={today}").get_json()["runs"]]
    assert rid in ids
    before = today - timedelta(days=1)
    assert client.get(f"/api/runs?until={before}").get_json()["runs"] == []


def test_cancel_of_a_finished_sweep_is_409_and_it_stays_as_it_ended(
    client: FlaskClient, tiny_settings: Settings
) -> None:
    from edgelab.models import Sweep

    with session_scope(tiny_settings.database_url) as s:
        sweep = Sweep(name="done", spec={}, status="succeeded", total_cells=2)
        s.add(sweep)
        s.flush()
        sweep_id = sweep.id
    for _ in range(2):
        _add_run(tiny_settings, status="succeeded")
    with session_scope(tiny_settings.database_url) as s:
        s.execute(update(Run).values(sweep_id=sweep_id))
    resp = client.post(f"/api/sweeps/{sweep_id}/cancel")
    assert resp.status_code == 409
    assert resp.get_json()["status"] == "succeeded"
    assert client.get(f"/api/sweeps/{sweep_id}").get_json()["status"] == "succeeded"
    assert client.post("/api/sweeps/999/cancel").status_code == 404


def test_a_configured_broker_that_does_not_answer_is_503_broker_unreachable(
    tiny_settings: Settings,
) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused (a real outage).
    settings = tiny_settings.with_overrides(redis_url="redis://127.0.0.1:1/0")
    client = create_app(settings, {"TESTING": True}).test_client()
    body = {"prompt": "x", "model": "tiny", "nodes": 1, "latency": "0ms"}
    resp = client.post("/api/runs", json=body)
    assert resp.status_code == 503
    assert resp.get_json()["error"].startswith("broker unreachable")
    resp = client.post("/api/sweeps", json={"model": "tiny", "prompts": ["x"]})
    assert resp.status_code == 503
    assert resp.get_json()["error"].startswith("broker unreachable")
    # Refused before anything was written: no run waits for a message that never comes.
    with session_scope(settings.database_url) as s:
        assert s.query(Run).count() == 0


def test_no_broker_configured_is_503_saying_so(client: FlaskClient) -> None:
    resp = client.post("/api/runs", json={"prompt": "x", "model": "tiny", "latency": "0ms"})
    assert resp.status_code == 503
    assert resp.get_json()["error"].startswith("no broker configured")


def test_a_message_that_cannot_be_sent_fails_its_runs_instead_of_leaving_them_queued(
    client: FlaskClient, tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker answers the check, then goes away before the send (a stub: the
    window is milliseconds wide and cannot be hit reliably with a real server)."""
    import redis

    from edgelab.store.actions import WorkQueue

    sent: list[list[int]] = []

    def send_group(_self: object, ids: list[int], _sweep_id: int | None) -> None:
        if sent:
            raise redis.ConnectionError("Connection refused")
        sent.append(ids)

    def send_run(_self: object, _run_id: int) -> None:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(WorkQueue, "check", lambda _self: object())
    monkeypatch.setattr(WorkQueue, "send_run", send_run)
    monkeypatch.setattr(WorkQueue, "send_group", send_group)

    resp = client.post("/api/runs", json={"prompt": "x", "model": "tiny", "latency": "0ms"})
    assert resp.status_code == 503
    (rid,) = resp.get_json()["ids"]
    run = client.get(f"/api/runs/{rid}").get_json()
    assert run["status"] == "failed"
    assert run["error"] == "could not be queued: Connection refused"

    spec = {"model": "tiny", "prompts": ["x"], "nodes": [2, 3], "latency": ["0ms", "5ms"]}
    resp = client.post("/api/sweeps", json=spec)
    assert resp.status_code == 503
    unsent = resp.get_json()["ids"]
    assert len(sent) == 1
    assert len(sent[0]) == len(unsent) == 2  # one topology sent, the other not
    with session_scope(tiny_settings.database_url) as s:
        statuses = {r.id: r.status for r in s.query(Run).filter(Run.sweep_id.is_not(None))}
    assert {statuses[i] for i in sent[0]} == {"queued"}  # its message is on the queue
    assert {statuses[i] for i in unsent} == {"failed"}
