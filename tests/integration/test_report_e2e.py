"""A real small sweep end to end, through the queue, to its report (issue 12 item 6).

Real Redis (``EDGELAB_TEST_REDIS_URL``), a real ``edgelab worker`` process, real
llama.cpp nodes on smollm2-135m behind the latency proxies: a 1,2 nodes x 0,5 ms x
2 repetitions x 8 tokens sweep submitted through the API, then ``edgelab report``
run as a subprocess (the command a researcher types) in both formats. The HTML
must parse, hold the results table and the figures, and refer to nothing outside
itself; the Markdown must reference PNG figures that exist beside it.

Nothing is timed here: the numbers vary with the host's load, so the assertions
are about structure and about values that follow from the sweep's design (n per
configuration, which configurations exist, that a fit and break-even table exist).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from edgelab.service import create_app
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINAL = ("succeeded", "failed", "cancelled")


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]


def _edgelab(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
    env.update(
        EDGELAB_DATA_DIR=str(settings.data_dir),
        EDGELAB_MODELS_DIR=str(settings.models_dir),
        EDGELAB_DATABASE_URL=settings.database_url,
    )
    return subprocess.run(
        [sys.executable, "-m", "edgelab", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_small_sweep_through_the_queue_to_its_report(
    queue_settings: Settings, queue_worker_factory: Callable[..., Any], tmp_path: Path
) -> None:
    queue_worker_factory(queue_settings)
    client = create_app(queue_settings, {"TESTING": True}).test_client()
    spec = {
        "name": "report-e2e",
        "nodes": [1, 2],
        "threads": 1,
        "latency": ["0ms", "5ms"],
        "repetitions": 2,
        "max_tokens": 8,
        "prompts": ["Name three planets."],
    }
    resp = client.post("/api/sweeps", json=spec)
    assert resp.status_code == 202, resp.get_json()
    sweep_id = resp.get_json()["id"]

    deadline = time.monotonic() + 300
    sweep = client.get(f"/api/sweeps/{sweep_id}").get_json()
    while sweep["status"] not in FINAL:
        assert time.monotonic() < deadline, f"sweep still {sweep['status']}: {sweep['progress']}"
        time.sleep(1.0)
        sweep = client.get(f"/api/sweeps/{sweep_id}").get_json()
    assert sweep["status"] == "succeeded", sweep["progress"]
    cells = sweep["progress"]["total"]

    # HTML: one self-contained file.
    done = _edgelab(queue_settings, "report", str(sweep_id), "-o", "report.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote report.html" in done.stdout
    html = (tmp_path / "report.html").read_text()
    parser = _Refs()
    parser.feed(html)
    parser.close()
    assert not re.search(r"https?://", html)
    assert "<script" not in html
    assert all(ref.startswith("#") for ref in parser.refs), parser.refs
    # speedup, tokens/s vs latency, per-token breakdown, model fit
    assert parser.tags.count("svg") == 4
    assert f"Sweep {sweep_id} · report-e2e" in html

    # The results table: 1 node is one configuration (its 2 latencies merged, unless
    # the sweep ran it once per repetition), and each 2-node latency has n = 2.
    table = html.split('id="results-table"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td class=\"n\">(\d+)</td>", table, re.S)
    labels = {re.sub(r"<[^>]+>|\s+\(.*?\)", "", label).strip(): int(n) for label, n in rows}
    assert labels["2 nodes × 1 thread · 0ms"] == 2
    assert labels["2 nodes × 1 thread · 5ms"] == 2
    one_node = labels["1 node × 1 thread · no links"]
    assert one_node in (2, 4)  # 2 when the 1-node cells are run once per repetition
    assert sum(labels.values()) == cells
    assert 'class="break-even-table"' in html
    # The breakdown from the link proxies: one row per configuration; on 2 nodes at
    # 5 ms every token pays at least one round trip of 2 x 5 ms of injected delay.
    breakdown = html.split('id="breakdown-table"', 1)[1].split("</table>", 1)[0]
    parts = {
        re.sub(r"<[^>]+>", "", row[0]).strip(): [re.sub(r"<[^>]+>", "", c).strip() for c in row]
        for row in (
            re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)
            for r in re.findall(r"<tr>(.*?)</tr>", breakdown, re.S)
        )
        if row
    }
    injected = float(parts["2 nodes × 1 thread · 5ms"][5].split()[0])
    assert injected >= 10.0, parts
    assert re.search(r'class="r2">[-0-9.]+<', html)
    assert 'id="hygiene"' in html

    # Markdown for a paper: figures as PNG (referenced) and SVG beside it.
    done = _edgelab(queue_settings, "report", str(sweep_id), "-o", "paper/r.md", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "paper" / "r.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(images) >= 3
    for image in images:
        png = tmp_path / "paper" / image
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert png.with_suffix(".svg").exists()
    assert "| configuration | n |" in md
