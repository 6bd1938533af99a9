"""The analysis API and pages on synthetic stored sweeps (edgelab.analysis.synthetic).

The rows follow a known TPOT model, so the numbers the API and the pages show can
be checked against what went in.
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from edgelab.analysis.synthetic import TrueModel, insert_synthetic_sweep
from edgelab.models import Run
from edgelab.models.db import session_scope
from edgelab.service import create_app
from edgelab.settings import Settings

TRUTH = TrueModel(base_ms=8.0, compute_ms=20.0, per_worker_ms=1.0, delay_factor=1.0)


@pytest.fixture
def app(db_settings: Settings) -> Flask:
    return create_app(db_settings, {"TESTING": True, "WTF_CSRF_ENABLED": False})


def sweep(settings: Settings, **kw: object) -> int:
    with session_scope(settings.database_url) as s:
        return insert_synthetic_sweep(s, truth=TRUTH, **kw)  # type: ignore[arg-type]


def run_ids(settings: Settings, sweep_id: int, nodes: int, latency: str) -> list[int]:
    with session_scope(settings.database_url) as s:
        return [
            r.id
            for r in s.query(Run).filter_by(sweep_id=sweep_id, nodes=nodes, latency_label=latency)
        ]


def test_sweep_analysis_api(client: FlaskClient, db_settings: Settings) -> None:
    sweep_id = sweep(db_settings, noise=0.002)
    resp = client.get(f"/api/sweeps/{sweep_id}/analysis")
    assert resp.status_code == 200
    data = resp.get_json()
    assert data["sweep_id"] == sweep_id
    assert data["counts"] == {"runs": 36, "counted": 36, "not_succeeded": 0, "warmup": 0}
    # 1 node x 4 latencies is one configuration of 12 runs; 2 x 4 + 3 x 4 of 3 runs each.
    assert sorted(g["n"] for g in data["groups"]) == [3] * 8 + [12]
    assert [g["flags"] for g in data["groups"]] == [[]] * 9
    (fit,) = data["fits"]
    assert fit["r2"] > 0.99
    assert fit["params"]["delay_factor"] == pytest.approx(1.0, rel=0.02)
    be = {b["nodes"]: b for b in fit["break_even"]}
    # d*(3) = (TPOT(1) - TPOT(3, 0)) / (2 * 2) = (28 - (8 + 20/3 + 2)) / 4 = 2.83 ms
    assert be[3]["verdict"] == "break-even"
    assert be[3]["delay_ms"] == pytest.approx((28 - (10 + 20 / 3)) / 4, rel=0.05)
    series = data["scaling"]
    assert [s["latency"] for s in series] == ["0ms", "5ms", "10ms", "20ms"]
    assert series[0]["points"][2]["speedup"] == pytest.approx(28 / (10 + 20 / 3), rel=0.02)
    assert client.get("/api/sweeps/999/analysis").status_code == 404


def test_predict_api(client: FlaskClient, db_settings: Settings) -> None:
    sweep_id = sweep(db_settings, noise=0.002)
    resp = client.get(f"/api/sweeps/{sweep_id}/predict?nodes=8&delay_ms=1&bandwidth=")
    assert resp.status_code == 200
    (pred,) = resp.get_json()["predictions"]
    assert pred["tpot_ms"] == pytest.approx(TRUTH.tpot(8, 1.0), rel=0.02)
    assert pred["extrapolated"] is True
    bad = client.get(f"/api/sweeps/{sweep_id}/predict?nodes=0&delay_ms=x&bandwidth=9mbps")
    assert bad.status_code == 400
    assert set(bad.get_json()["errors"]) == {"nodes", "delay_ms", "bandwidth"}
    assert "required" in client.get(f"/api/sweeps/{sweep_id}/predict").get_json()["errors"]["nodes"]
    assert client.get("/api/sweeps/999/predict?nodes=2").status_code == 404


def test_compare_api_verdicts(client: FlaskClient, db_settings: Settings) -> None:
    sweep_id = sweep(db_settings, latencies_ms=(0.0, 5.0), repetitions=5, noise=0.01)
    fast = run_ids(db_settings, sweep_id, 3, "0ms")
    slow = run_ids(db_settings, sweep_id, 3, "5ms")
    resp = client.get("/api/compare?ids=" + ",".join(map(str, fast + slow)))
    assert resp.status_code == 200
    data = resp.get_json()
    assert [g["n"] for g in data["groups"]] == [5, 5]
    assert data["differing"] == ["latency"]
    (pair,) = data["comparisons"]
    assert (pair["a_letter"], pair["b_letter"], pair["verdict"]) == ("A", "B", "slower")
    assert pair["tests"]["tpot_ms"]["p_value"] < 1e-6
    same = client.get("/api/compare?ids=" + ",".join(map(str, fast))).get_json()
    assert same["comparisons"] == []
    assert same["differing"] == []
    assert client.get("/api/compare?ids=1").status_code == 400
    assert client.get("/api/compare?ids=1,x").get_json()["errors"]["ids"].startswith("run ids")
    huge = client.get("/api/compare?ids=1,99999999999999999999")
    assert huge.status_code == 400
    assert "between 1 and 2147483647" in huge.get_json()["errors"]["ids"]
    missing = client.get("/api/compare?ids=1,99999")
    assert missing.status_code == 404
    assert missing.get_json()["error"] == "no run with id 99999"


def test_compare_page_groups_and_verdicts(client: FlaskClient, db_settings: Settings) -> None:
    sweep_id = sweep(db_settings, latencies_ms=(0.0, 5.0), repetitions=3, noise=0.01)
    ids = run_ids(db_settings, sweep_id, 3, "0ms") + run_ids(db_settings, sweep_id, 3, "5ms")
    html = client.get("/compare?ids=" + ",".join(map(str, ids))).get_data(as_text=True)
    diff = set(re.findall(r'<tr class="diff" data-field="(\w+)"', html))
    assert diff == {"latency"}  # not repetition, not the metrics
    assert 'class="metric" data-field="tpot_ms"' in html
    assert re.findall(r'data-pair="B-A" data-verdict="([^"]+)"', html) == ["slower"]
    groups = re.findall(r'<tr data-group="(\w)">', html)
    assert groups == ["A", "B"]
    assert "differing in <b>latency</b>" in unescape(html)


def test_sweep_page_embeds_the_analysis(client: FlaskClient, db_settings: Settings) -> None:
    sweep_id = sweep(db_settings, noise=0.002)
    html = client.get(f"/sweeps/{sweep_id}").get_data(as_text=True)
    for part in ("results-table", "chart-speedup", "chart-efficiency", "chart-tps-latency"):
        assert f'id="{part}"' in html
    for part in ("chart-breakdown", "chart-model", "model-details"):
        assert f'id="{part}"' in html
    embedded = re.search(r'id="sweep-analysis">(.*?)</script>', html, re.S)
    assert embedded is not None
    data = json.loads(embedded.group(1))
    assert data["fits"][0]["r2"] > 0.99
    live = client.get(f"/sweeps/{sweep_id}/analysis").get_json()
    assert live["groups"] == data["groups"]
    assert client.get("/sweeps/999/analysis").status_code == 404


def test_breakdown_api_and_run_page(client: FlaskClient, db_settings: Settings) -> None:
    sweep_id = sweep(db_settings, nodes=(1, 3), latencies_ms=(0.0, 20.0), breakdown=True)
    data = client.get(f"/api/sweeps/{sweep_id}/breakdown").get_json()
    by_label = {b["label"]: b for b in data["breakdowns"]}
    three = by_label["3 nodes × 1 thread · 20ms"]
    parts = {p["name"]: p["ms"] for p in three["parts"]}
    # 2 workers x one round trip x 2 x 20 ms = 80 ms injected per token.
    assert parts["injected delay"] == pytest.approx(80.0)
    assert parts["worker compute"] == pytest.approx(2 * 20.0 / 3, abs=1e-3)  # 4 decimals
    assert sum(parts.values()) == pytest.approx(three["tpot_ms"], abs=1e-3)
    assert three["round_trips_per_token"] == pytest.approx(2.0)
    assert by_label["1 node × 1 thread · no links"]["parts"][0]["name"] == "root compute"
    assert client.get(f"/sweeps/{sweep_id}/breakdown").get_json() == data
    assert client.get("/api/sweeps/999/breakdown").status_code == 404
    # The analysis reads the measured round trips: R(N) = 1 per worker, measured.
    fit = client.get(f"/api/sweeps/{sweep_id}/analysis").get_json()["fits"][0]
    assert fit["round_trips_measured"] is True
    assert fit["round_trips_per_unit"] == pytest.approx(1.0)
    run_id = run_ids(db_settings, sweep_id, 3, "20ms")[0]
    html = client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert 'id="breakdown-bar"' in html
    assert re.search(
        r'data-part="injected"><td><span [^>]*></span>injected delay</td>'
        r'<td class="num">80.00</td>',
        html,
    )
    plain = sweep(db_settings, nodes=(2,), latencies_ms=(0.0,), repetitions=1)
    other = run_ids(db_settings, plain, 2, "0ms")[0]
    assert 'id="no-breakdown"' in client.get(f"/runs/{other}").get_data(as_text=True)
    assert client.get(f"/api/sweeps/{plain}/breakdown").get_json()["breakdowns"] == []


def test_remembered_analysis_follows_the_runs(client: FlaskClient, db_settings: Settings) -> None:
    """The per-process memo of a sweep's analysis is refreshed by any change to its runs."""
    from edgelab import analysis

    sweep_id = sweep(db_settings, nodes=(2,), latencies_ms=(0.0,), repetitions=3, noise=0.0)
    first = client.get(f"/api/sweeps/{sweep_id}/analysis").get_json()
    assert first["groups"][0]["n"] == 3
    assert client.get(f"/api/sweeps/{sweep_id}/analysis").get_json() == first  # remembered
    ids = run_ids(db_settings, sweep_id, 2, "0ms")
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, ids[0])
        assert run is not None
        run.tpot_ms = (run.tpot_ms or 0) + 30.0  # an edited metric
    edited = client.get(f"/api/sweeps/{sweep_id}/analysis").get_json()
    assert edited["groups"][0]["stats"]["tpot_ms"]["mean"] == pytest.approx(
        first["groups"][0]["stats"]["tpot_ms"]["mean"] + 10.0
    )
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, ids[1])
        assert run is not None
        run.status = "failed"  # a run executed again and failing
    failed = client.get(f"/api/sweeps/{sweep_id}/analysis").get_json()
    assert failed["groups"][0]["n"] == 2
    assert failed["counts"]["not_succeeded"] == 1
    page = client.get(f"/sweeps/{sweep_id}").get_data(as_text=True)
    embedded = re.search(r'id="sweep-analysis">(.*?)</script>', page, re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1))["counts"] == failed["counts"]
    analysis.clear_cache()
    assert client.get(f"/api/sweeps/{sweep_id}/analysis").get_json() == failed


def _embedded(html: str, element_id: str) -> dict[str, object]:
    found = re.search(rf'id="{element_id}">(.*?)</script>', html, re.S)
    assert found is not None, element_id
    data: dict[str, object] = json.loads(found.group(1))
    return data


def test_remembered_sweep_page_follows_runs_and_sweep(
    client: FlaskClient, db_settings: Settings
) -> None:
    """The sweep page's serialised cells and analysis are remembered per process; a
    change the analysis does not read (a run moving queued -> running) and a change
    of the sweep's own row must still show on the next view."""
    from edgelab.models import Sweep
    from edgelab.service.web import sweeps as sweeps_web
    from edgelab.service.web.sweeps import clear_page_cache

    sweep_id = sweep(db_settings, nodes=(2,), latencies_ms=(0.0,), repetitions=3, noise=0.0)
    ids = run_ids(db_settings, sweep_id, 2, "0ms")
    with session_scope(db_settings.database_url) as s:
        for rid in ids[1:]:
            run = s.get(Run, rid)
            assert run is not None
            run.status, run.finished_at = "queued", None
    first = client.get(f"/sweeps/{sweep_id}").get_data(as_text=True)
    cells = _embedded(first, "sweep-data")["cells"]
    assert isinstance(cells, list)
    assert [c["status"] for c in cells] == ["succeeded", "queued", "queued"]
    assert client.get(f"/sweeps/{sweep_id}").get_data(as_text=True) == first  # remembered
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, ids[1])
        assert run is not None
        run.status = "running"  # no metric, no finished_at: invisible to the analysis memo
    second = client.get(f"/sweeps/{sweep_id}").get_data(as_text=True)
    cells = _embedded(second, "sweep-data")["cells"]
    assert isinstance(cells, list)
    assert [c["status"] for c in cells] == ["succeeded", "running", "queued"]
    assert 'data-count="running">1<' in second
    with session_scope(db_settings.database_url) as s:
        row = s.get(Sweep, sweep_id)
        assert row is not None
        row.status, row.model_loads = "cancelled", 7
    third = client.get(f"/sweeps/{sweep_id}").get_data(as_text=True)
    assert _embedded(third, "sweep-data")["status"] == "cancelled"
    assert '<span id="model-loads">7</span>' in third
    # One remembered page per sweep: its latest version.
    mine = [k for k in sweeps_web._pages if k[0] == db_settings.database_url]
    assert [k[1] for k in mine] == [sweep_id]
    # The same bytes as a page built from nothing.
    clear_page_cache()
    assert client.get(f"/sweeps/{sweep_id}").get_data(as_text=True) == third
    assert client.get("/sweeps/999").status_code == 404


def test_history_flags_contended_oversubscribed_and_warmup(
    client: FlaskClient, db_settings: Settings
) -> None:
    """The history list shows a run's hygiene flags as badges, with the run page's words
    as their titles; a clean run has none."""
    sweep_id = sweep(db_settings, nodes=(3,), latencies_ms=(0.0,), repetitions=4, noise=0.0)
    ids = run_ids(db_settings, sweep_id, 3, "0ms")
    reason = "processes outside the cluster used 1.20 cores on average (threshold 0.5)"
    with session_scope(db_settings.database_url) as s:
        runs = [s.get(Run, rid) for rid in ids]
        assert all(runs)
        clean, contended, over, warm = runs  # type: ignore[misc]
        contended.contended = True
        contended.host_contention = {"reasons": [reason]}
        over.oversubscribed, over.host_cores = True, 2
        warm.warmup = True
        clean.contended = clean.oversubscribed = False
    html = client.get(f"/runs?sweep={sweep_id}&per_page=25").get_data(as_text=True)
    assert '<th title="measurement hygiene:' in html

    def row(rid: int) -> str:
        found = re.search(rf'<tr data-run-id="{rid}">(.*?)</tr>', html, re.S)
        assert found is not None, rid
        return unescape(found.group(1))

    flags = {rid: re.findall(r'class="flag flag-(\w+)" title="([^"]*)"', row(rid)) for rid in ids}
    assert flags[ids[0]] == []
    assert flags[ids[1]] == [("contended", f"contended: {reason}")]
    assert flags[ids[2]] == [
        (
            "oversubscribed",
            "oversubscribed: 3 nodes × 1 threads on 2 cores: a speedup from more nodes "
            "cannot be measured on this host",
        )
    ]
    assert flags[ids[3]] == [
        ("warmup", "a sweep's warm-up run: stored, never counted in statistics")
    ]
    # The run page says the same words.
    run_page = unescape(client.get(f"/runs/{ids[2]}").get_data(as_text=True))
    assert (
        "3 nodes × 1 threads on 2 cores: a speedup from more nodes cannot be measured on "
        "this host" in " ".join(run_page.split())
    )
    assert reason in unescape(client.get(f"/runs/{ids[1]}").get_data(as_text=True))


def test_served_app_freezes_its_start_up_heap(tmp_path: Path) -> None:
    """The gunicorn entry point keeps its start-up objects out of full GC collections
    (a full collection over them set the sweep page's p95): in a fresh process,
    importing it leaves the frozen generation holding them, and nothing tracked."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
    env["EDGELAB_DATA_DIR"] = str(tmp_path / "data")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc, edgelab.service.wsgi; print(gc.get_freeze_count(), len(gc.get_objects()))",
        ],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    frozen, tracked = int(out[0]), int(out[1])
    assert frozen > 50_000  # Flask, SQLAlchemy, numpy, the app: ~150k here
    assert tracked < frozen / 100
