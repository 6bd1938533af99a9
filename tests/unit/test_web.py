"""The web viewer through Flask's test client, on SQLite rows inserted by the tests.

No broker, worker or model is needed: submitting is tested with a stand-in for
the broker and the queue, everything else reads rows made here. Every page and
export is fetched; bad input must give a 400 with messages, never a 500.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from edgelab.models import LinkStat, NodeSample, Run, Sweep, TokenEvent
from edgelab.models.db import session_scope
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import RunConfig
from edgelab.runs.executor import create_run
from edgelab.service import create_app
from edgelab.settings import Settings

MODEL = "tiny-test"


def add_run(
    settings: Settings,
    *,
    nodes: int = 2,
    latency: str = "10ms",
    status: str = "succeeded",
    sweep_id: int | None = None,
    repetition: int = 0,
    tokens: int = 6,
    ttft: float = 100.0,
    tps: float = 20.0,
    created: datetime | None = None,
    node_logs: dict[str, Any] | None = None,
) -> int:
    """A stored run with metrics, tokens, samples and link stats like a finished one."""
    config = RunConfig(
        prompt="Name three planets.",
        model=MODEL,
        nodes=nodes,
        threads=1,
        latency=LatencyProfile.parse(latency),
        max_tokens=16,
        repetition=repetition,
    )
    with session_scope(settings.database_url) as s:
        run = create_run(s, config, sweep_id=sweep_id)
        run.status = status
        if created is not None:
            run.created_at = created
        if status == "failed":
            run.error = "node worker1 exited with status 1"
            run.node_logs = node_logs
        if status == "succeeded":
            run.ttft_ms, run.e2el_ms, run.decode_tps = ttft, ttft + 50.0 * tokens, tps
            run.tpot_ms, run.itl_p50_ms, run.itl_p99_ms = 50.0, 48.0, 70.0
            run.output_tokens, run.prompt_tokens = tokens, 5
            run.output_text = "Mercury, Venus, Earth"
            run.engine_version, run.host_cpu, run.host_cores = "llama.cpp test", "Test CPU", 2
            run.layer_split = [
                {"device": "CPU", "layers": "0-3"},
                {"device": "RPC0", "layers": "4-7"},
            ]
            for i in range(tokens):
                s.add(TokenEvent(run_id=run.id, index=i, offset_ms=ttft + 50.0 * i, text=f" t{i}"))
            for k in range(5):
                for node, role in (("root", "root"), ("worker1", "worker")):
                    s.add(
                        NodeSample(
                            run_id=run.id,
                            node=node,
                            role=role,
                            offset_ms=100.0 * k,
                            cpu_percent=50.0 + k,
                            rss_bytes=100_000_000 + k,
                        )
                    )
            s.add(
                LinkStat(
                    run_id=run.id,
                    link="root<->worker1",
                    bytes_up=1000,
                    bytes_down=2000,
                    chunks_up=10,
                    chunks_down=12,
                    delay_total_ms_up=100.0,
                    delay_total_ms_down=120.0,
                    delay_max_ms=10.0,
                )
            )
        return run.id


def add_sweep(settings: Settings, status: str = "succeeded") -> tuple[int, list[int]]:
    """A finished 2 nodes x 2 latencies x 2 repetitions sweep."""
    with session_scope(settings.database_url) as s:
        sweep = Sweep(name="grid", spec={"nodes": [1, 2]}, status=status, total_cells=8)
        s.add(sweep)
        s.flush()
        sweep_id = sweep.id
    ids = [
        add_run(
            settings,
            nodes=n,
            latency=lat,
            sweep_id=sweep_id,
            repetition=rep,
            tps=30.0 / n + rep,
            ttft=80.0 * n,
        )
        for rep in range(2)
        for n in (1, 2)
        for lat in ("0ms", "20ms")
    ]
    return sweep_id, ids


def text(resp: Any) -> str:
    return str(resp.get_data(as_text=True))


def field_errors(html: str) -> dict[str, str]:
    """Messages shown beside fields: {field id: message}."""
    found = re.findall(r'<span class="error" id="([\w-]+)-error" role="alert">([^<]*)</span>', html)
    return {name: unescape(message) for name, message in found}


# --- pages ----------------------------------------------------------------------


def test_root_redirects_to_history(client: FlaskClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/runs")


def test_history_lists_filters_sorts_and_pages(client: FlaskClient, web_settings: Settings) -> None:
    now = datetime.now(UTC)
    old = add_run(web_settings, nodes=3, created=now - timedelta(days=10))
    for n in range(30):
        add_run(web_settings, nodes=1 + n % 2, latency="20ms" if n % 3 else "0ms")
    add_run(web_settings, status="failed")

    page = client.get("/runs")
    assert page.status_code == 200
    assert text(page).count('name="ids"') == 32

    filtered = text(client.get("/runs?nodes=3"))
    assert f'data-run-id="{old}"' in filtered
    assert filtered.count('name="ids"') == 1

    failed = text(client.get("/runs?status=failed"))
    assert failed.count('name="ids"') == 1

    latency = text(client.get("/runs?latency=0ms&per_page=25"))
    assert latency.count('name="ids"') == 10

    recent = text(client.get(f"/runs?since={(now - timedelta(days=1)).date().isoformat()}"))
    assert f'data-run-id="{old}"' not in recent

    paged = text(client.get("/runs?per_page=25&page=2&sort=nodes"))
    assert paged.count('name="ids"') == 7
    assert "page 2 of 2" in paged
    ordered = [int(x) for x in re.findall(r'data-run-id="(\d+)"', paged)]
    assert ordered[-1] == old  # the 3-node run sorts last ascending


def test_history_bad_filters_are_400_with_messages(client: FlaskClient) -> None:
    resp = client.get("/runs?status=bogus&nodes=x&since=yesterday&sort=evil&page=0")
    assert resp.status_code == 400
    html = text(resp)
    assert "unknown status bogus" in html
    assert "must be a whole number" in html
    assert "must be a date" in html
    assert 'value="x"' in html  # the input is kept


def test_run_page_shows_metrics_tokens_charts_and_provenance(
    client: FlaskClient, web_settings: Settings
) -> None:
    run_id = add_run(web_settings)
    html = text(client.get(f"/runs/{run_id}"))
    assert 'data-status="succeeded"' in html
    assert 'id="m-ttft_ms">100<' in html
    assert 'id="u-ttft_ms">ms<' in html
    assert '<span data-i="5"> t5</span>' in html
    for chart in ("chart-tokens", "chart-cpu", "chart-mem", "chart-links"):
        assert f'id="{chart}"' in html
    assert "root&lt;-&gt;worker1" in html
    assert "llama.cpp test" in html
    assert "RPC0" in html
    assert "/vendor/plotly.min.js" in html
    assert 'id="rerun"' in html
    data = json.loads(re.search(r'id="run-data">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    assert len(data["tokens"]) == 6
    assert len(data["samples"]) == 10


def test_run_page_says_how_the_run_was_measured(
    client: FlaskClient, web_settings: Settings
) -> None:
    run_id = add_run(web_settings)
    with session_scope(web_settings.database_url) as s:
        s.get_one(Run, run_id).measurement = {
            "mode": "api",
            "per_token_split": None,
            "token_events": "dllama-api stream chunks",
            "weights_streamed_per_run": False,
            "cluster": {"startup_ms": 4321.4, "root_load_ms": 4000.0, "runs_before": 2},
        }
    html = text(client.get(f"/runs/{run_id}"))
    row = re.search(r'<tr id="measured-by">(.*?)</tr>\s*<tr>(.*?)</tr>', html, re.S)
    assert row is not None
    assert "llamacpp api; per-token split from the link proxies" in row.group(1)
    assert "token events: dllama-api stream chunks" in row.group(1)
    assert "warm: 2 runs before this one, so no model load here" in row.group(2)
    assert "its start-up 4321 ms" in row.group(2)


def test_run_page_flags_contention_and_oversubscription(
    client: FlaskClient, web_settings: Settings
) -> None:
    run_id = add_run(web_settings)
    assert 'id="hygiene-flags"' not in text(client.get(f"/runs/{run_id}"))
    with session_scope(web_settings.database_url) as s:
        run = s.get_one(Run, run_id)
        run.contended = True
        run.oversubscribed = True
        run.host_contention = {"reasons": ["processes outside the cluster used 0.90 cores"]}
    html = text(client.get(f"/runs/{run_id}"))
    flags = re.search(r'<p class="sub" id="hygiene-flags">(.*?)</p>', html, re.S)
    assert flags is not None
    assert 'class="flag flag-contended">contended<' in flags.group(1)
    assert "used 0.90 cores" in flags.group(1)
    assert "oversubscribed" in flags.group(1)


def test_failed_run_page_shows_error_and_node_logs(
    client: FlaskClient, web_settings: Settings
) -> None:
    run_id = add_run(web_settings, status="failed", node_logs={"worker1": ["boom", "bye"]})
    html = text(client.get(f"/runs/{run_id}"))
    assert "node worker1 exited with status 1" in html
    assert 'id="node-logs"' in html
    assert "boom\nbye" in html


def test_run_data_and_unknown_run(client: FlaskClient, web_settings: Settings) -> None:
    run_id = add_run(web_settings)
    api = client.get(f"/api/runs/{run_id}").get_json()
    assert client.get(f"/runs/{run_id}/data").get_json() == api
    assert client.get("/runs/999").status_code == 404
    missing = client.get("/runs/999/data")
    assert missing.status_code == 404
    assert "not found" in missing.get_json()["error"]


def test_events_without_broker_is_a_clear_error(
    client: FlaskClient, web_settings: Settings
) -> None:
    run_id = add_run(web_settings, status="running")
    resp = client.get(f"/runs/{run_id}/events")
    assert resp.status_code == 503
    assert "broker" in resp.get_json()["error"]


def test_sweep_pages(client: FlaskClient, web_settings: Settings) -> None:
    sweep_id, _ids = add_sweep(web_settings)
    listing = text(client.get("/sweeps"))
    assert f'href="/sweeps/{sweep_id}"' in listing
    assert "grid" in listing
    page = client.get(f"/sweeps/{sweep_id}")
    assert page.status_code == 200
    html = text(page)
    assert 'aria-valuenow="100"' in html
    assert 'id="heatmap"' in html
    assert 'id="ttft-chart"' in html
    assert f'href="/sweeps/{sweep_id}"' in text(client.get("/sweeps?status=succeeded&name=gri"))
    assert f'href="/sweeps/{sweep_id}"' not in text(client.get("/sweeps?status=failed"))
    bad = client.get("/sweeps?status=bogus")
    assert bad.status_code == 400
    assert "unknown status" in text(bad)
    data = client.get(f"/sweeps/{sweep_id}/data").get_json()
    assert data["progress"]["succeeded"] == 8
    assert len(data["cells"]) == 8
    assert client.get("/sweeps/999").status_code == 404


def test_compare_highlights_only_differing_fields(
    client: FlaskClient, web_settings: Settings
) -> None:
    a = add_run(web_settings, nodes=2, latency="10ms")
    b = add_run(web_settings, nodes=3, latency="10ms")
    resp = client.get(f"/compare?ids={a}&ids={b}")
    assert resp.status_code == 200
    html = text(resp)
    diff = set(re.findall(r'<tr class="diff" data-field="(\w+)"', html))
    same = set(re.findall(r'<tr class="same" data-field="(\w+)"', html))
    assert "nodes" in diff
    assert {"model", "latency", "threads", "prompt"} <= same
    assert 'id="chart-overlay"' in html
    assert 'id="chart-itl"' in html
    assert 'id="chart-scaling"' not in html  # not one sweep


def test_compare_runs_of_one_sweep_has_scaling_chart(
    client: FlaskClient, web_settings: Settings
) -> None:
    _sweep_id, ids = add_sweep(web_settings)
    html = text(client.get("/compare?ids=" + ",".join(map(str, ids[:5]))))
    assert 'id="chart-scaling"' in html
    chart = json.loads(re.search(r'id="compare-data">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    first = chart["scaling"][0]
    assert first["nodes"] == [1, 2]
    assert first["speedup"][0] == 1.0


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ("ids=1", 400, "between 2 and 10"),
        ("ids=" + ",".join(str(i) for i in range(1, 12)), 400, "between 2 and 10"),
        ("ids=1,abc", 400, "whole numbers"),
        ("", 400, "between 2 and 10"),
        ("ids=998,999", 404, "no run with id 998, 999"),
    ],
)
def test_compare_bad_selection(client: FlaskClient, query: str, code: int, message: str) -> None:
    resp = client.get(f"/compare?{query}")
    assert resp.status_code == code
    assert message in text(resp)


def test_queue_panel(client: FlaskClient, web_settings: Settings) -> None:
    add_run(web_settings, status="queued")
    running = add_run(web_settings, status="running")
    html = text(client.get("/queue"))
    assert 'id="q-queued">1<' in html
    assert 'id="q-running">1<' in html
    assert f'href="/runs/{running}"' in html
    data = client.get("/queue/data").get_json()
    assert data["counts"] == {"queued": 1, "starting": 0, "running": 1}
    assert data["broker"] is False
    assert data["workers"] == []


def test_every_page_hands_the_store_statuses_to_its_scripts(
    client: FlaskClient, web_settings: Settings
) -> None:
    """The page scripts read the states from ``window.EDGELAB_STATUS`` (base.html), built
    from the enums, so a script never spells one; every page that loads them has it."""
    from edgelab.store.status import RunStatus, SweepStatus

    run_id = add_run(web_settings, status="running")
    pages = ["/runs", f"/runs/{run_id}", "/sweeps", "/queue", "/runs/new", "/sweeps/new"]
    for page in pages:
        html = client.get(page).get_data(as_text=True)
        found = re.search(r"<script>window\.EDGELAB_STATUS = (.*?);</script>", html)
        assert found, page
        statuses = json.loads(found.group(1))
        assert statuses["ALL"] == [s.value for s in RunStatus]
        assert {k: statuses[k] for k in RunStatus.__members__} == {
            s.name: s.value for s in RunStatus
        }
        assert statuses["OPEN"] == ["queued", "starting", "running"]
        assert statuses["TERMINAL"] == ["succeeded", "failed", "cancelled"]
        assert statuses["SWEEP"] == {s.name: s.value for s in SweepStatus}
        assert statuses["SWEEP_TERMINAL"] == ["succeeded", "failed", "cancelled"]
        # window.EDGELAB_STATUS comes before any page script that reads it.
        assert html.index("EDGELAB_STATUS") < html.index("format.js")


def test_plotly_is_served_locally(client: FlaskClient) -> None:
    resp = client.get("/vendor/plotly.min.js")
    assert resp.status_code == 200
    assert resp.mimetype == "text/javascript"
    assert b"plotly" in resp.data[:2000].lower()
    for page in ("/runs", "/runs/new", "/sweeps/new", "/queue"):
        assert not re.search(r'src="https?://', text(client.get(page)))


# --- exports --------------------------------------------------------------------


def test_export_json_matches_the_api(client: FlaskClient, web_settings: Settings) -> None:
    for n in (1, 2, 2, 3):
        add_run(web_settings, nodes=n)
    add_run(web_settings, nodes=2, status="failed")
    exported = client.get("/export/runs.json?nodes=2&status=succeeded&sort=id")
    assert exported.status_code == 200
    assert "attachment" in exported.headers["Content-Disposition"]
    body = json.loads(exported.get_data())
    api = client.get("/api/runs?nodes=2&status=succeeded&sort=id").get_json()
    assert body["runs"] == api["runs"]
    assert body["total"] == 2
    assert body["filter"]["nodes"] == "2"


def test_export_csv_uses_api_field_names(client: FlaskClient, web_settings: Settings) -> None:
    ids = [add_run(web_settings, nodes=n) for n in (1, 2, 3)]
    resp = client.get("/export/runs.csv?sort=id")
    assert resp.status_code == 200
    assert resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(text(resp))))
    assert [int(r["id"]) for r in rows] == ids
    api = client.get(f"/api/runs/{ids[0]}").get_json()
    for group in ("config", "metrics", "provenance"):
        for key in api[group]:
            assert key in rows[0], key
    assert float(rows[0]["ttft_ms"]) == api["metrics"]["ttft_ms"]
    assert rows[0]["latency"] == api["config"]["latency"] == "10ms"
    assert json.loads(rows[0]["latency_profile"]) == api["config"]["latency_profile"]


def test_export_bad_filter_is_400(client: FlaskClient) -> None:
    resp = client.get("/export/runs.csv?nodes=many")
    assert resp.status_code == 400
    assert "nodes" in text(resp)


def test_export_sweep(client: FlaskClient, web_settings: Settings) -> None:
    sweep_id, ids = add_sweep(web_settings)
    add_run(web_settings)  # not in the sweep
    body = json.loads(client.get(f"/export/sweeps/{sweep_id}.json").get_data())
    assert body["sweep"]["id"] == sweep_id
    assert body["sweep"]["progress"]["succeeded"] == 8
    assert [r["id"] for r in body["runs"]] == ids
    rows = list(csv.DictReader(io.StringIO(text(client.get(f"/export/sweeps/{sweep_id}.csv")))))
    assert len(rows) == 8
    assert {r["sweep_id"] for r in rows} == {str(sweep_id)}
    assert client.get("/export/sweeps/999.csv").status_code == 404


# --- forms ----------------------------------------------------------------------


@pytest.fixture
def fake_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """A reachable broker and a queue that records what was put on it."""
    from edgelab.store.actions import WorkQueue

    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(WorkQueue, "check", lambda _self: object())
    monkeypatch.setattr(WorkQueue, "send_run", lambda _self, run_id: sent.append(("run", run_id)))
    monkeypatch.setattr(
        WorkQueue,
        "send_group",
        lambda _self, ids, sweep_id: sent.append(("group", sweep_id, len(ids))),
    )
    return sent


GOOD_RUN = {
    "prompt": "Name three planets.",
    "model": MODEL,
    "nodes": "3",
    "threads": "1",
    "latency_min": "10",
    "latency_max": "30",
    "latency_profile": "",
    "bandwidth": "",
    "max_tokens": "16",
    "backend": "local",
    "engine": "llamacpp",
    "seed": "0",
}


def test_new_run_form_renders_catalog_and_help(client: FlaskClient) -> None:
    html = text(client.get("/runs/new"))
    assert re.search(rf'<option [^>]*value="{MODEL}"', html)
    assert "10ms..50ms" in html  # the latency help names the profile syntax
    assert 'name="max_tokens"' in html
    assert 'name="bandwidth"' in html


def test_new_run_invalid_fields_are_400_with_messages_and_input_kept(
    client: FlaskClient,
) -> None:
    bad = GOOD_RUN | {
        "prompt": "  ",
        "nodes": "9",
        "threads": "0",
        "max_tokens": "5000",
        "bandwidth": "10mbps",
        "latency_min": "abc",
    }
    resp = client.post("/runs/new", data=bad)
    assert resp.status_code == 400
    html = text(resp)
    errors = field_errors(html)
    assert errors["prompt"] == "must not be empty"
    assert "at most 8" in errors["nodes"]
    assert f"between 1 and {os.cpu_count()}" in errors["threads"]  # this host's cores
    assert "between 1 and 1024" in errors["max_tokens"]
    assert "ambiguous" in errors["bandwidth"]
    assert "number of milliseconds" in errors["latency_min"]
    assert 'value="9"' in html
    assert 'value="5000"' in html
    assert 'value="10mbps"' in html


def test_new_run_bad_profile_and_unknown_model(client: FlaskClient) -> None:
    resp = client.post(
        "/runs/new", data=GOOD_RUN | {"latency_profile": "fast", "model": "no-such-model"}
    )
    assert resp.status_code == 400
    errors = field_errors(text(resp))
    assert "cannot parse delay" in errors["latency_profile"]
    assert "no model named 'no-such-model'" in errors["model"]
    assert 'value="fast"' in text(resp)


def test_new_run_max_below_min(client: FlaskClient) -> None:
    resp = client.post("/runs/new", data=GOOD_RUN | {"latency_min": "50", "latency_max": "10"})
    assert resp.status_code == 400
    assert "at least the minimum" in field_errors(text(resp))["latency_max"]


def test_new_run_without_broker_is_503_and_keeps_input(client: FlaskClient) -> None:
    resp = client.post("/runs/new", data=GOOD_RUN)
    assert resp.status_code == 503
    assert "no broker" in text(resp)
    assert "Name three planets." in text(resp)


def test_new_run_submits_and_redirects(
    client: FlaskClient, web_settings: Settings, fake_queue: list[tuple[Any, ...]]
) -> None:
    resp = client.post("/runs/new", data=GOOD_RUN)
    assert resp.status_code == 303
    run_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    assert fake_queue == [("run", run_id)]
    with session_scope(web_settings.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert (run.status, run.nodes, run.latency_label, run.max_tokens) == (
            "queued",
            3,
            "10ms..30ms",
            16,
        )


def test_new_run_prefilled_from_an_old_run(client: FlaskClient, web_settings: Settings) -> None:
    run_id = add_run(web_settings, nodes=3, latency="25ms")
    html = text(client.get(f"/runs/new?from={run_id}"))
    assert 'value="25ms"' in html
    assert 'value="3"' in html


def test_rerun_and_cancel(
    client: FlaskClient, web_settings: Settings, fake_queue: list[tuple[Any, ...]]
) -> None:
    old = add_run(web_settings, nodes=2, latency="20ms")
    resp = client.post(f"/runs/{old}/rerun")
    assert resp.status_code == 303
    new = int(resp.headers["Location"].rsplit("/", 1)[1])
    assert new != old
    assert fake_queue == [("run", new)]
    with session_scope(web_settings.database_url) as s:
        a, b = s.get(Run, old), s.get(Run, new)
        assert a is not None
        assert b is not None
        assert a.fingerprint == b.fingerprint
        assert b.status == "queued"
    cancelled = client.post(f"/runs/{new}/cancel", follow_redirects=True)
    assert cancelled.status_code == 200
    assert 'data-status="cancelled"' in text(cancelled)
    again = client.post(f"/runs/{new}/cancel", follow_redirects=True)
    assert "already cancelled" in text(again)
    assert client.post("/runs/999/cancel").status_code == 404


def test_new_sweep_form_and_invalid_axes(client: FlaskClient) -> None:
    assert 'id="cell-count"' in text(client.get("/sweeps/new"))
    resp = client.post(
        "/sweeps/new",
        data={
            "name": "bad",
            "model": MODEL,
            "nodes": "1, x",
            "threads": "1",
            "latency": "0ms, soon",
            "bandwidth": "",
            "max_tokens": "",
            "prompts": "",
            "repetitions": "0",
            "backend": "local",
            "engine": "llamacpp",
        },
    )
    assert resp.status_code == 400
    errors = field_errors(text(resp))
    assert "max_tokens" in errors
    assert "prompts" in errors
    assert "repetitions" in errors
    assert 'value="1, x"' in text(resp)
    assert 'value="0ms, soon"' in text(resp)


def test_new_sweep_reports_bad_values_per_axis(client: FlaskClient) -> None:
    data = {
        "name": "bad",
        "model": MODEL,
        "nodes": "1, 99",
        "threads": "1",
        "latency": "0ms, soon",
        "max_tokens": "8",
        "prompts": "Hi",
        "repetitions": "1",
        "backend": "local",
        "engine": "llamacpp",
    }
    resp = client.post("/sweeps/new", data=data)
    assert resp.status_code == 400
    errors = field_errors(text(resp))
    assert errors["nodes"].startswith("99:")
    assert errors["latency"].startswith("soon:")


def test_new_sweep_too_many_cells(client: FlaskClient) -> None:
    data = {
        "model": MODEL,
        "nodes": "1,2,3,4,5,6,7,8",
        "latency": ",".join(f"{i}ms" for i in range(50)),
        "max_tokens": "8",
        "prompts": "Hi",
        "repetitions": "3",
    }
    resp = client.post("/sweeps/new", data=data)
    assert resp.status_code == 400
    assert "more than the limit of 1000" in text(resp)


def test_new_sweep_submits(
    client: FlaskClient, web_settings: Settings, fake_queue: list[tuple[Any, ...]]
) -> None:
    data = {
        "name": "2x2",
        "model": MODEL,
        "nodes": "1, 2",
        "threads": "1",
        "latency": "0ms; 20ms",
        "max_tokens": "8",
        "prompts": "Name three planets.",
        "repetitions": "2",
        "backend": "local",
        "engine": "llamacpp",
    }
    resp = client.post("/sweeps/new", data=data)
    assert resp.status_code == 303
    sweep_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    # 2 topologies; the 1-node cells collapse across latency: one per repetition.
    assert fake_queue == [("group", sweep_id, 2), ("group", sweep_id, 4)]
    detail = client.get(f"/sweeps/{sweep_id}/data").get_json()
    assert detail["total_cells"] == 6  # the 1-node cells collapse: one per repetition
    assert detail["progress"]["queued"] == 6


def test_sweep_cancel_and_resume_buttons(
    client: FlaskClient, web_settings: Settings, fake_queue: list[tuple[Any, ...]]
) -> None:
    with session_scope(web_settings.database_url) as s:
        sweep = Sweep(
            name="s",
            spec={"model": MODEL, "nodes": [1], "latency": ["0ms"], "prompts": ["Hi"]},
            status="queued",
            total_cells=1,
        )
        s.add(sweep)
        s.flush()
        sweep_id = sweep.id
    add_run(web_settings, nodes=1, latency="0ms", status="queued", sweep_id=sweep_id)
    resp = client.post(f"/sweeps/{sweep_id}/cancel", follow_redirects=True)
    assert resp.status_code == 200
    assert "cancel requested" in text(resp)
    assert client.get(f"/sweeps/{sweep_id}/data").get_json()["status"] == "cancelled"
    resumed = client.post(f"/sweeps/{sweep_id}/resume", follow_redirects=True)
    assert resumed.status_code == 200
    assert "resume requested" in text(resumed)
    assert fake_queue == [("group", sweep_id, 1)]  # the cancelled cell, as a new run
    assert client.post("/sweeps/999/resume").status_code == 404


# --- CSRF and access --------------------------------------------------------------


def csrf_token_of(page: str) -> str:
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token is not None
    return token.group(1)


def form_error(page: str) -> str:
    found = re.search(
        r'<div class="flash flash-error" role="alert" id="form-error">([^<]*)</div>', page
    )
    assert found is not None, page
    return html.unescape(found.group(1))


def test_forms_need_a_csrf_token(web_settings: Settings) -> None:
    app = create_app(web_settings, {"TESTING": True})
    client = app.test_client()
    resp = client.post("/runs/new", data=GOOD_RUN)
    assert resp.status_code == 400
    assert "Name three planets." in text(resp)
    assert client.post("/runs/1/cancel").status_code == 400
    token = csrf_token_of(text(client.get("/runs/new")))
    resp = client.post("/runs/new", data=GOOD_RUN | {"csrf_token": token})
    assert resp.status_code == 503  # past CSRF and validation; no broker in unit tests


KEPT = (
    "Your input is kept below and the form has a fresh token: check it and submit again "
    "(allow cookies for this site if they are blocked)."
)


def test_a_refused_form_token_says_what_happened_and_what_to_do(web_settings: Settings) -> None:
    """Not just "form expired": why the token was refused, that nothing was submitted,
    that the input is still there, and that submitting the re-rendered form works."""
    app = create_app(web_settings, {"TESTING": True})
    client = app.test_client()
    resp = client.post("/runs/new", data=GOOD_RUN)
    assert resp.status_code == 400
    assert form_error(text(resp)) == (
        "Nothing was submitted: the form arrived without its security token, so it was "
        "not sent by this page. " + KEPT
    )
    assert "Name three planets." in text(resp)
    # The page it answers with is the fix: its fresh token gets the same input through.
    again = client.post("/runs/new", data=GOOD_RUN | {"csrf_token": csrf_token_of(text(resp))})
    assert again.status_code == 503  # past CSRF and validation; no broker in unit tests

    # A token of a session this browser no longer has (here: another browser's).
    other = app.test_client()
    foreign = csrf_token_of(text(other.get("/runs/new")))
    resp = client.post("/runs/new", data=GOOD_RUN | {"csrf_token": foreign})
    assert form_error(text(resp)) == (
        "Nothing was submitted: the page was loaded in a session your browser no longer "
        "has (a login since then, cleared cookies, or cookies blocked for this site). " + KEPT
    )
    # The same on the sweep form, from a browser without any session cookie.
    resp = app.test_client().post("/sweeps/new", data={"prompts": "Kept?", "csrf_token": foreign})
    assert resp.status_code == 400
    assert form_error(text(resp)).startswith(
        "Nothing was submitted: the page was loaded in a session your browser no longer has"
    )
    assert "Kept?" in text(resp)
    # An action button has no input to keep: reload and press again.
    resp = client.post("/runs/1/cancel")
    assert resp.status_code == 400
    assert (
        "Nothing was changed: the form arrived without its security token, so it was not "
        "sent by this page. Reload the page (it gets a fresh token) and press the button again."
    ) in html.unescape(text(resp))


def test_token_protects_pages_and_data(web_settings: Settings) -> None:
    settings = web_settings.with_overrides(api_token="s3cret")
    app = create_app(settings, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    run_id = add_run(settings)

    resp = client.get("/runs?nodes=2")
    assert resp.status_code == 302
    assert "/login?next=/runs?nodes%3D2" in resp.headers["Location"]
    assert client.get(f"/runs/{run_id}/data").status_code == 401
    assert client.get("/export/runs.csv").status_code == 401
    assert client.get("/api/runs").status_code == 401

    assert client.get("/runs", headers={"X-Edgelab-Token": "s3cret"}).status_code == 200
    bearer = {"Authorization": "Bearer s3cret"}
    assert client.get(f"/runs/{run_id}/data", headers=bearer).status_code == 200

    wrong = client.post("/login", data={"token": "nope", "next": "/runs"})
    assert wrong.status_code == 401
    assert "wrong token" in text(wrong)
    ok = client.post("/login", data={"token": "s3cret", "next": "/queue"})
    assert ok.status_code == 302
    assert ok.headers["Location"] == "/queue"
    assert client.get("/runs").status_code == 200
    assert client.get(f"/runs/{run_id}/data").status_code == 200
    client.post("/logout")
    assert client.get("/runs").status_code == 302


def test_a_login_with_a_refused_form_token_says_so(web_settings: Settings) -> None:
    """CSRF on, as in production: the login page said nothing at all before."""
    client = create_app(
        web_settings.with_overrides(api_token="s3cret"), {"TESTING": True}
    ).test_client()
    resp = client.post("/login", data={"token": "s3cret", "next": "/runs"})
    assert resp.status_code == 400
    assert form_error(text(resp)) == (
        "Not logged in: the form arrived without its security token, so it was not sent "
        "by this page. Type the token again: the form has a fresh token."
    )
    again = client.post(
        "/login", data={"token": "s3cret", "next": "/runs", "csrf_token": csrf_token_of(text(resp))}
    )
    assert again.status_code == 302
    assert again.headers["Location"] == "/runs"


def test_login_refuses_open_redirects(web_settings: Settings) -> None:
    settings = web_settings.with_overrides(api_token="s3cret")
    client = create_app(settings, {"TESTING": True, "WTF_CSRF_ENABLED": False}).test_client()
    for target in ("https://evil.example/", "//evil.example/x"):
        resp = client.post("/login", data={"token": "s3cret", "next": target})
        assert resp.headers["Location"] == "/runs"


def test_without_token_login_is_not_needed(client: FlaskClient) -> None:
    resp = client.get("/login?next=/sweeps")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/sweeps"


def test_secret_key_is_kept_in_the_data_dir(web_settings: Settings) -> None:
    first = create_app(web_settings).config["SECRET_KEY"]
    second = create_app(web_settings).config["SECRET_KEY"]
    assert first == second
    assert len(first) == 64
    secret = Path(web_settings.data_dir) / "web-secret"
    assert secret.stat().st_mode & 0o077 == 0
