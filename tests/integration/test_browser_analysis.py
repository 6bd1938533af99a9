"""The sweep analysis section and the compare verdicts in real headless Chromium.

The data are synthetic stored sweeps (:mod:`edgelab.analysis.synthetic`): TPOT
follows a known model, so what the page must show is known exactly (a real
sweep's page is checked in ``test_browser.py``). The web app is the real one,
served over HTTP by werkzeug from a thread, on a real SQLite database; no broker
or worker is involved because these pages only read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from edgelab.analysis.synthetic import TrueModel, insert_synthetic_sweep
from edgelab.models import Run
from edgelab.models.db import session_scope, upgrade
from edgelab.service import create_app
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
TRUTH = TrueModel(base_ms=8.0, compute_ms=20.0, per_worker_ms=1.0, delay_factor=1.0)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("analysis-browser")
    settings = Settings(data_dir=tmp / "data", models_dir=tmp / "models")
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as s:
        # nodes 1,2,3 x 0/5/10/20 ms x 3 repetitions on a "2-core host": 3 nodes oversubscribed.
        full = insert_synthetic_sweep(
            s, name="known model", truth=TRUTH, noise=0.01, host_cores=2, breakdown=True
        )
        tiny = insert_synthetic_sweep(
            s, name="one cell", nodes=(2,), latencies_ms=(0.0,), repetitions=1, truth=TRUTH
        )
        batches = insert_synthetic_sweep(
            s, name="batches", nodes=(3,), latencies_ms=(0.0, 5.0), repetitions=5, truth=TRUTH
        )
        # The same configuration again, other noise: a second batch of the 0 ms cells.
        again = insert_synthetic_sweep(
            s, name="again", nodes=(3,), latencies_ms=(0.0,), repetitions=5, truth=TRUTH, seed=8
        )
    with session_scope(settings.database_url) as s:

        def ids(sweep_id: int, latency: str) -> list[int]:
            rows = s.query(Run).filter_by(sweep_id=sweep_id, latency_label=latency)
            return [r.id for r in rows]

        cells = {"0ms": ids(batches, "0ms"), "5ms": ids(batches, "5ms"), "again": ids(again, "0ms")}
    app = create_app(settings, {"TESTING": True})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "url": f"http://127.0.0.1:{server.server_port}",
            "full": full,
            "tiny": tiny,
            "cells": cells,
            "batches": batches,
        }
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def page(browser: Any, site: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(base_url=site["url"], viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sweep_analysis_section(page: Any, site: dict[str, Any]) -> None:
    page.goto(f"/sweeps/{site['full']}")
    page.wait_for_selector("body[data-analysis='1']")
    rows = page.locator("#results-table tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.nodes, r.dataset.latency, r.dataset.n,"
        " r.querySelector('.flags').innerText.trim()])"
    )
    # 1 node: one configuration over the 4 latencies (12 runs); 3 nodes x 1 thread on 2 cores.
    assert rows[0] == ["1", "", "12", ""]
    assert [r[:3] for r in rows[1:]] == [
        [str(n), lat, "3"] for n in (2, 3) for lat in ("0ms", "5ms", "10ms", "20ms")
    ]
    assert [r[3] for r in rows[1:]] == [""] * 4 + ["oversubscribed"] * 4
    tpot = page.locator("#results-table tbody tr").nth(0).locator("td[data-metric=tpot_ms]")
    assert "±" in tpot.inner_text()
    assert "95 % CI" in (tpot.get_attribute("title") or "")
    assert "are one configuration" in page.inner_text("#analysis-notes")

    # Heatmap: n and CI on hover (in the trace's hover text).
    page.wait_for_selector("#heatmap[data-rendered='1']")
    hover = page.evaluate("document.getElementById('heatmap').data[0].text.flat().join('|')")
    assert "n = 3" in hover
    assert "n = 12" in hover
    assert "95 % CI [" in hover

    # Speedup: only 1 and 2 nodes drawn; 3 nodes are oversubscribed and said so.
    page.wait_for_selector("#chart-speedup[data-rendered='1']")
    page.wait_for_selector("#chart-efficiency[data-rendered='1']")
    drawn = page.evaluate(
        "[...new Set(document.getElementById('chart-speedup').data"
        ".filter(t => t.name && t.name !== 'linear').flatMap(t => t.x))]"
    )
    assert sorted(drawn) == [1, 2]
    assert "compute speedup cannot be measured" in page.inner_text("#speedup-notes")
    page.wait_for_selector("#chart-tps-latency[data-rendered='1']")

    # The model: R² over the measured points, parameters, break-even per node count.
    page.wait_for_selector("#chart-model[data-rendered='1']")
    r2 = float(page.get_attribute("#model-r2", "data-r2") or 0)
    assert r2 > 0.99
    verdicts = page.locator("#model-details table.break-even tr[data-nodes]").evaluate_all(
        "rows => rows.map(r => [r.dataset.nodes, r.dataset.verdict])"
    )
    assert verdicts[:2] == [["2", "break-even"], ["3", "break-even"]]
    assert [v[0] for v in verdicts] == ["2", "3", "4", "6", "8"]
    assert page.locator("#model-details tr[data-term=delay_factor]").count() == 1
    # Stacked per-token breakdown (asked for after the page): one bar per configuration.
    page.wait_for_selector("#chart-breakdown[data-rendered='1']")
    bars = page.evaluate(
        "document.getElementById('chart-breakdown').data.filter(t => t.type === 'bar')"
        ".map(t => [t.name, t.x.length])"
    )
    assert bars == [
        [name, 9] for name in ("root compute", "worker compute", "injected delay", "transfer")
    ]
    shot(page, "20-sweep-analysis")
    # A run of it shows its own breakdown: 2 workers x 2 x 20 ms injected per token.
    page.click("#cells a.cell >> text=/^3n · 20ms · r0$/")
    page.wait_for_selector("#breakdown-bar")
    assert page.inner_text("#breakdown-table tr[data-part=injected] td.num") == "80.00"
    shot(page, "24-run-breakdown")


def test_charts_with_too_little_data_say_so(page: Any, site: dict[str, Any]) -> None:
    page.goto(f"/sweeps/{site['tiny']}")
    page.wait_for_selector("body[data-analysis='1']")
    assert page.locator("#results-table .flag-too-few").count() == 1
    assert "two or more node counts" in page.inner_text("#chart-speedup")
    assert "two or more latencies" in page.inner_text("#chart-tps-latency")
    assert "no model fitted" in page.inner_text("#chart-model")
    page.wait_for_selector("#chart-breakdown[data-loaded='1']")
    assert "no breakdown recorded" in page.inner_text("#chart-breakdown")
    shot(page, "21-sweep-analysis-one-cell")


def test_compare_verdict(page: Any, site: dict[str, Any]) -> None:
    fast = site["cells"]["0ms"]
    # Tick the ten runs of the sweep in the history and compare them.
    page.goto(f"/runs?sweep={site['batches']}")
    page.locator("input[name=ids]").evaluate_all("boxes => boxes.forEach(b => b.click())")
    page.click("#compare-button")
    page.wait_for_selector("#verdicts-table")
    groups = page.locator("#groups-table tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.group, r.cells[2].innerText])"
    )
    assert groups == [["A", "5"], ["B", "5"]]
    diff = page.locator("#config-diff tr.diff").evaluate_all("rs => rs.map(r => r.dataset.field)")
    assert diff == ["latency"]
    assert page.locator("#metrics-side tr.diff").count() == 0  # metrics are never "differs"
    row = page.locator("#verdicts-table tr[data-pair='B-A']")
    assert row.get_attribute("data-verdict") == "slower"
    assert "p = " in row.locator("td[data-metric=tpot_ms]").inner_text()
    shot(page, "22-compare-verdict")
    # Repetitions of one configuration only: nothing to test.
    page.goto("/compare?ids=" + ",".join(map(str, fast)))
    assert "repetitions of one configuration" in page.inner_text("#compare-summary")
    assert page.locator("#no-verdicts").count() == 1
    # Two batches (sweeps) of the same configuration: tested, no significant difference.
    page.goto("/compare?ids=" + ",".join(map(str, fast + site["cells"]["again"])))
    row = page.locator("#verdicts-table tr[data-pair='B-A']")
    assert row.get_attribute("data-verdict") == "no significant difference"
    assert "p = " in row.locator("td[data-metric=tpot_ms]").inner_text()
    assert row.locator("td").first.inner_text() == "sweep_id"
    shot(page, "23-compare-two-batches")
