"""The run page's cluster picture (issue 15 item 5) in real headless Chromium.

A stored heterogeneous run (no cluster: the picture is drawn from what a run stores)
of four nodes: worker2 on a quarter of a core behind a lossy 30 ms link, worker3 a
``slow`` preset behind its own 20 mbit rate, worker1 and every other link on the
cluster-wide 10 ms with 1 % loss. The page must draw one node per node with its
device, one link per worker with its profile, loss and measured bytes and decode
round trips, fit a 1280 px window, and is saved as a screenshot for a reviewer.
The web app is the real one over HTTP (werkzeug in a thread) on SQLite.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from edgelab.models import LinkStat, NodeSample, TokenEvent
from edgelab.models.db import session_scope, upgrade
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import RunConfig
from edgelab.runs.executor import create_run
from edgelab.service import create_app
from edgelab.settings import Settings
from edgelab.store import RunStatus
from edgelab.topology import resolve_topology
from edgelab.topology.presets import EXAMPLE_PRESETS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
#: Per link: bytes up, bytes down, decode round trips (what the run measured).
MEASURED = {
    "root<->worker1": (600_000, 634_567, 16),
    "root<->worker2": (40_000, 8_000, 32),
    "root<->worker3": (2_000_000, 1_500_000, 48),
}


def _store_heterogeneous_run(settings: Settings) -> int:
    latency = LatencyProfile.parse("10ms", seed=0)
    topology = resolve_topology(
        devices={"worker2": "cpus:0.25", "worker3": "slow"},
        links={"worker2": "30ms,loss:2%", "worker3": "bandwidth:20mbit"},
        nodes=4,
        threads=1,
        latency=latency,
        presets=EXAMPLE_PRESETS,
        loss=1.0,
    )  # resolved here, so no backend is asked whether it can drop packets
    config = RunConfig(
        prompt="Name three planets.",
        model="smollm2-135m",
        nodes=4,
        threads=1,
        latency=latency,
        max_tokens=16,
        backend="docker",
        topology=topology,
    )
    with session_scope(settings.database_url) as s:
        run = create_run(s, config)
        run.status = RunStatus.SUCCEEDED
        run.ttft_ms, run.tpot_ms, run.output_tokens = 300.0, 120.0, 16
        run.node_limits = {
            "root": {"threads": 1, "cpus": 1.0, "mem": None},
            "worker1": {"threads": 1, "cpus": 1.0, "mem": None},
            "worker2": {"threads": 1, "cpus": 0.25, "mem": None},
            "worker3": {"threads": 1, "cpus": 0.3, "mem": 1 << 30},
        }
        for t in range(16):
            s.add(TokenEvent(run_id=run.id, index=t, offset_ms=300.0 + 120 * t, text=" w"))
        for k in range(5):
            for node, cpu in (
                ("root", 90.0),
                ("worker1", 60.0),
                ("worker2", 24.6),
                ("worker3", 29.0),
            ):
                s.add(
                    NodeSample(
                        run_id=run.id,
                        node=node,
                        role="root" if node == "root" else "worker",
                        offset_ms=400.0 * k,
                        cpu_percent=cpu - k,
                        rss_bytes=90_000_000,
                    )
                )
        for link, (up, down, trips) in MEASURED.items():
            s.add(
                LinkStat(
                    run_id=run.id, link=link, bytes_up=up, bytes_down=down, chunks_up=40,
                    chunks_down=30, delay_total_ms_up=400.0, delay_total_ms_down=300.0,
                    delay_max_ms=31.0, round_trips_decode=trips, retransmits=3,
                )
            )  # fmt: skip
        return run.id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cluster-browser")
    settings = Settings(data_dir=tmp / "data", models_dir=tmp / "models")
    upgrade(settings.database_url)
    run_id = _store_heterogeneous_run(settings)
    app = create_app(settings, {"TESTING": True})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_port}", "run": run_id}
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_run_page_draws_the_heterogeneous_cluster(browser: Any, site: dict[str, Any]) -> None:
    context = browser.new_context(base_url=site["url"], viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"/runs/{site['run']}")
        page.wait_for_selector("#cluster-svg")
        svg = page.locator("#cluster-svg")
        nodes = svg.locator("g.node").evaluate_all(
            "gs => gs.map(g => [g.dataset.node,"
            " Array.from(g.querySelectorAll('text')).map(t => t.textContent)])"
        )
        # One box per node, each with its device as stored (worker3: the preset's values).
        assert dict(nodes) == {
            "worker1": ["worker1", "1 thread", "applied: 1 CPU", "peak CPU 60 %"],
            "worker2": ["worker2", "1 thread, cpus 0.25", "applied: 0.25 CPU", "peak CPU 25 %"],
            "worker3": ["worker3", "slow: 1 thread, cpus 0.3, mem 1g", "applied: 0.3 CPU, 1.07 GB",
                        "peak CPU 29 %"],
            "root": ["root", "1 thread", "applied: 1 CPU", "peak CPU 90 %"],
        }  # fmt: skip
        links = svg.locator("g.link").evaluate_all(
            "gs => gs.map(g => [g.dataset.link,"
            " Array.from(g.querySelectorAll('text')).map(t => t.textContent)])"
        )
        # One line per worker: its profile and loss (own or the cluster-wide 1 %), then
        # the bytes it carried (up + down) and its decode round trips.
        assert links == [
            ["worker1", ["10ms, loss 1 %", "1.23 MB, 16 round trips"]],
            ["worker2", ["30ms, loss 2 %", "48.0 kB, 32 round trips"]],
            ["worker3", ["10ms@20mbit, loss 1 %", "3.50 MB, 48 round trips"]],
        ]
        # Every label is inside the picture, and the picture inside a 1280 px window.
        box = svg.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 1280
        for text in svg.locator("text").all():
            inner = text.bounding_box()
            assert inner is not None
            assert box["x"] - 1 <= inner["x"], text.text_content()
            assert inner["x"] + inner["width"] <= box["x"] + box["width"] + 1, text.text_content()
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        # ... and no two labels on top of each other (their glyph boxes, without the
        # white halo drawn around link labels).
        texts = svg.locator("text").evaluate_all(
            "ts => ts.map(t => { const b = t.getBBox();"
            " return [t.textContent, b.x, b.y, b.x + b.width, b.y + b.height]; })"
        )
        for i, (name_a, ax0, ay0, ax1, ay1) in enumerate(texts):
            for name_b, bx0, by0, bx1, by1 in texts[i + 1 :]:
                apart = ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
                assert apart, f"{name_a!r} overlaps {name_b!r}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "cluster-heterogeneous-run.png"), full_page=True)
        svg.screenshot(path=str(ARTIFACTS / "cluster-picture.png"))
    finally:
        context.close()
    assert not errors, errors
