"""Issue 13's "Found" list, one request each: a documented 4xx naming the field, no run.

Every request here once gave a 500 or was accepted. The app runs on SQLite without
a broker, so even a request that slipped through validation could not start a
cluster; each test also checks that no run or sweep row was created.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from edgelab.models import Run, Sweep
from edgelab.models.db import session_scope
from edgelab.service import create_app
from edgelab.settings import Settings
from edgelab.sweeps import SpecError, load_spec_text
from edgelab.validation.documents import MAX_BODY_BYTES, MAX_DEPTH

BIG = 164625121184  # above PostgreSQL's integer range
GOOD = {"prompt": "hi", "model": "tiny", "nodes": 1}


@pytest.fixture
def settings(tiny_settings: Settings) -> Settings:
    return tiny_settings


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings, {"TESTING": True, "WTF_CSRF_ENABLED": False})


@pytest.fixture
def client(app: Flask, settings: Settings) -> Any:
    client = app.test_client()
    yield client
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(Run.id))) == 0, "a hostile request created a run"
        assert s.scalar(select(func.count(Sweep.id))) == 0, "a hostile request created a sweep"


def errors_of(resp: Any) -> dict[str, str]:
    body = resp.get_json()
    assert isinstance(body, dict), resp.data[:200]
    return dict(body.get("errors") or {})


# --- integer overflow and digits -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", f"/api/runs/{BIG}", "run_id"),
        ("GET", f"/api/runs/{BIG}/events", "run_id"),
        ("POST", f"/api/runs/{BIG}/cancel", "run_id"),
        ("GET", f"/api/sweeps/{BIG}", "sweep_id"),
        ("POST", f"/api/sweeps/{BIG}/cancel", "sweep_id"),
        ("POST", f"/api/sweeps/{BIG}/resume", "sweep_id"),
        ("GET", "/api/runs/0", "run_id"),
    ],
)
def test_ids_outside_the_database_range_are_400_naming_the_id(
    client: FlaskClient, method: str, path: str, field: str
) -> None:
    resp = client.open(path, method=method)
    assert resp.status_code == 400
    assert "between 1 and 2147483647" in errors_of(resp)[field]


def test_non_ascii_digits_in_a_path_are_not_an_id(client: FlaskClient) -> None:
    # Arabic-Indic one used to match <int:run_id> as run 1.
    assert client.get("/api/runs/\u0661").status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=3516446761441110365476749312", "page"),
        ("nodes=184858311522", "nodes"),
        ("nodes=\u0661", "nodes"),
        ("nodes=\u00b2", "nodes"),
        ("page=0", "page"),
        ("per_page=abc", "per_page"),
        ("per_page=501", "per_page"),
        ("sweep=99999999999", "sweep"),
        ("model=a%00b", "model"),
        ("until=9999-12-31", "until"),
    ],
)
def test_bad_history_arguments_are_400_not_the_default(
    client: FlaskClient, query: str, field: str
) -> None:
    resp = client.get(f"/api/runs?{query}")
    assert resp.status_code == 400
    assert field in errors_of(resp)


def test_sweep_list_paging_is_checked(client: FlaskClient) -> None:
    resp = client.get("/api/sweeps?page=99999999999999999999")
    assert resp.status_code == 400
    assert "page" in errors_of(resp)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"seed": 2**31}, "seed"),
        ({"seed": -1}, "seed"),
        ({"threads": 2**31}, "threads"),
        ({"threads": 100_000}, "threads"),
        ({"repetition": 2**31}, "repetition"),
        ({"nodes": 184858311522}, "nodes"),
    ],
)
def test_numbers_out_of_bounds_are_400(
    client: FlaskClient, changes: dict[str, Any], field: str
) -> None:
    resp = client.post("/api/runs", json=GOOD | changes)
    assert resp.status_code == 400
    assert field in errors_of(resp)
    assert len(resp.data) < 2000


def test_a_5000_digit_number_is_400(client: FlaskClient) -> None:
    body = '{"prompt": "x", "model": "tiny", "nodes": ' + "9" * 5000 + "}"
    resp = client.post("/api/runs", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert "more than 60 digits" in errors_of(resp)["nodes"]


def test_the_form_refuses_overflowing_and_non_ascii_numbers(client: FlaskClient) -> None:
    form = {
        "prompt": "hi",
        "model": "tiny",
        "nodes": "\u0661",
        "threads": "2147483648",
        "seed": "2147483648",
        "max_tokens": "9" * 5000,
        "latency_min": "nan",
        "latency_max": "1e400",
        "backend": "local",
        "engine": "llamacpp",
    }
    resp = client.post("/runs/new", data=form)
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    for field in ("nodes", "threads", "seed", "max_tokens", "latency_min", "latency_max"):
        assert f'id="{field}-error"' in html, field
    # The input is kept as typed; the message quotes a short prefix only.
    message = html.split('id="max_tokens-error"')[1].split("</span>")[0]
    assert "9" * 41 not in message


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-5"])
def test_run_form_latency_must_be_a_finite_delay(client: FlaskClient, value: str) -> None:
    form = {"prompt": "hi", "model": "tiny", "nodes": "1", "latency_min": value}
    resp = client.post("/runs/new", data=form)
    assert resp.status_code == 400
    assert 'id="latency_min-error"' in resp.get_data(as_text=True)


def test_sweep_form_refuses_huge_and_non_ascii_node_counts(client: FlaskClient) -> None:
    for nodes in ("9" * 5000, "\u0661", "1, \u00b2"):
        form = {"name": "s", "nodes": nodes, "max_tokens": "8", "prompts": "hi", "model": "tiny"}
        resp = client.post("/sweeps/new", data=form)
        assert resp.status_code == 400, nodes
        assert 'id="nodes-error"' in resp.get_data(as_text=True)


def test_unicode_digits_in_page_arguments_do_not_crash(client: FlaskClient) -> None:
    assert client.get("/runs/new?from=\u00b2").status_code == 200
    resp = client.get("/compare?ids=\u00b2,1")
    assert resp.status_code == 400
    assert "whole numbers" in resp.get_data(as_text=True)
    assert client.get("/sweeps?page=\u00b2").status_code == 400


# --- structure ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/runs", "/api/sweeps"])
@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 50_000])
def test_deeply_nested_json_is_400(client: FlaskClient, path: str, levels: int) -> None:
    body = '{"prompt": ' + "[" * levels + "]" * levels + "}"
    resp = client.post(path, data=body, content_type="application/json")
    assert resp.status_code == 400
    assert "nested deeper" in errors_of(resp)["body"]


def test_nul_and_control_characters_are_refused(client: FlaskClient) -> None:
    resp = client.post("/api/runs", json=GOOD | {"prompt": "a\x00b"})
    assert resp.status_code == 400
    assert "control characters" in errors_of(resp)["prompt"]
    resp = client.post("/api/sweeps", json={"prompts": ["x"], "name": "a\x1bb"})
    assert resp.status_code == 400
    assert "control characters" in errors_of(resp)["name"]
    # Tabs and newlines are text.
    assert client.post("/api/runs", json=GOOD | {"prompt": "a\tb\nc"}).status_code == 503


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_json_numbers_are_400(client: FlaskClient, constant: str) -> None:
    body = '{"prompt": "x", "model": "tiny", "temperature": ' + constant + "}"
    resp = client.post("/api/runs", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert "finite" in errors_of(resp)["body"]


# --- accepted when they should not have been -----------------------------------------


def test_unknown_fields_are_refused_with_the_known_ones(client: FlaskClient) -> None:
    resp = client.post("/api/runs", json=GOOD | {"colour": "blue", "max_token": 32})
    assert resp.status_code == 400
    errors = errors_of(resp)
    assert set(errors) == {"colour", "max_token"}
    assert "known fields: prompt, model, nodes" in errors["max_token"]
    assert "max_tokens" in errors["max_token"]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"temperature": False}, "temperature", "must be a number, got a boolean false"),
        ({"max_tokens": "32"}, "max_tokens", "must be a whole number, got a string '32'"),
        ({"prompt": 123}, "prompt", "must be a string, got a number 123"),
        ({"nodes": None}, "nodes", "must be a whole number, got null"),
        ({"nodes": True}, "nodes", "must be a whole number, got a boolean true"),
        ({"seed": -1}, "seed", "must be between 0 and 2147483647, got -1"),
        ({"latency": "1000000s"}, "latency", "above the maximum of 10000 ms"),
        ({"latency": "20ms~20000ms"}, "latency", "above the maximum of 10000 ms"),
        ({"bandwidth": "1bit"}, "bandwidth", "outside 100 kbit/s"),
        ({"latency": "5ms@1bit"}, "latency", "outside 100 kbit/s"),
        ({"options": {"root_image": "evil/image"}}, "options", "root_image: unknown field"),
        ({"options": {"cpus": True}}, "options", "cpus: must be a number"),
    ],
)
def test_wrong_types_and_values_are_named(
    client: FlaskClient, changes: dict[str, Any], field: str, message: str
) -> None:
    resp = client.post("/api/runs", json=GOOD | changes)
    assert resp.status_code == 400
    assert message in errors_of(resp)[field]


def test_every_error_of_a_request_comes_at_once(client: FlaskClient) -> None:
    body = {"prompt": "", "model": "tiny", "nodes": 0, "threads": "2", "seed": -1}
    body |= {"engine": "x", "oops": 1}
    resp = client.post("/api/runs", json=body)
    assert resp.status_code == 400
    assert set(errors_of(resp)) == {"prompt", "nodes", "threads", "seed", "engine", "oops"}


def test_a_huge_prompt_is_refused_before_anything_starts(client: FlaskClient) -> None:
    resp = client.post("/api/runs", json=GOOD | {"prompt": "x" * 70_000})
    assert resp.status_code == 400
    assert "at most 65536 characters" in errors_of(resp)["prompt"]
    assert len(resp.data) < 2000


def test_request_bodies_are_limited(client: FlaskClient) -> None:
    body = json.dumps(GOOD | {"prompt": "x" * (MAX_BODY_BYTES + 10)})
    resp = client.post("/api/runs", data=body, content_type="application/json")
    assert resp.status_code == 413
    assert "body" in errors_of(resp)
    form = {"prompt": "x" * (MAX_BODY_BYTES + 10), "model": "tiny"}
    assert client.post("/runs/new", data=form).status_code == 413


def test_a_long_bad_value_is_quoted_short(client: FlaskClient) -> None:
    resp = client.post("/api/runs", json=GOOD | {"model": "m" * 100_000})
    assert resp.status_code == 400
    assert "model" in errors_of(resp)
    assert len(resp.data) < 2000


# --- schema and protocol ------------------------------------------------------------


def test_405_says_which_methods_are_allowed(client: FlaskClient) -> None:
    resp = client.delete("/api/runs")
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert resp.is_json
    page = client.put("/runs/new")
    assert page.status_code == 405
    assert "GET" in page.headers["Allow"]


def test_a_configured_broker_that_is_down_is_not_called_missing(settings: Settings) -> None:
    down = create_app(settings.with_overrides(redis_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    resp = down.test_client().post("/api/runs", json=GOOD)
    assert resp.status_code == 503
    assert "unreachable" in resp.get_json()["error"]
    assert resp.headers["Retry-After"]
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(Run.id))) == 0


def test_an_empty_prompt_list_is_refused_by_the_schema_too(client: FlaskClient) -> None:
    resp = client.post("/api/sweeps", json={"prompts": []})
    assert resp.status_code == 400
    schema = client.get("/api/openapi.json").get_json()["components"]["schemas"]["SweepSpec"]
    prompts = schema["properties"]["prompts"]["anyOf"]
    assert any(s.get("minItems") == 1 for s in prompts)


# --- YAML ---------------------------------------------------------------------------

BOMB = """
a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
prompts: [*e]
"""


def test_yaml_alias_expansion_is_bounded(client: FlaskClient) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(BOMB)
    assert "expands to more than" in info.value.errors["spec"]
    resp = client.post("/api/sweeps", data=BOMB, content_type="application/yaml")
    assert resp.status_code == 400
    assert len(resp.data) < 1000


def test_yaml_types_json_lacks_are_refused() -> None:
    for text in ("prompts: [x]\nname: 2026-01-01\n", "prompts: [x]\nseed: .inf\n"):
        with pytest.raises(SpecError):
            load_spec_text(text)


# --- trust boundaries ----------------------------------------------------------------


def test_models_are_shown_relative_to_the_models_dir(client: FlaskClient) -> None:
    models = client.get("/api/models").get_json()["models"]
    assert [m["path"] for m in models] == ["tiny.gguf"]
