"""The sweep report on synthetic runs with known answers, through a real SQLite database.

Runs are generated from a known performance model (TPOT = base + compute/N +
per_worker*(N-1) + (N-1)*2d, plus small seeded noise), so the report's fit must
recover R² close to 1 and the break-even latencies the model implies. The HTML
must be one self-contained file: it parses, holds the tables and inline SVG
figures, and refers to nothing outside itself (no http(s), no src=, no external
href). The Markdown must reference PNG figures that exist beside it.
"""

from __future__ import annotations

import io
import itertools
import random
import re
import zipfile
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgelab.analysis.groups import NOISE_TITLES
from edgelab.cli import main
from edgelab.models import LinkStat, Sweep, TokenEvent
from edgelab.models.db import session_scope, upgrade
from edgelab.netem.profile import LatencyProfile
from edgelab.reports import build_report, render_html
from edgelab.runs.config import RunConfig
from edgelab.runs.executor import create_run
from edgelab.service import create_app
from edgelab.settings import Settings

BASE, COMPUTE, PER_WORKER = 5.0, 40.0, 1.0  # ms per token
TOKENS = 6  # token events per synthetic run: 5 decode intervals
WORKER_MS, TRANSFER_MS = 3.0, 0.5  # per link per token, in the synthetic link timing


def true_tpot(nodes: int, delay_ms: float) -> float:
    """The model the synthetic runs follow: llama.cpp-like, one round trip per worker."""
    return BASE + COMPUTE / nodes + PER_WORKER * (nodes - 1) + (nodes - 1) * 2 * delay_ms


def add_synthetic_sweep(
    settings: Settings,
    nodes: tuple[int, ...] = (1, 2, 3),
    delays: tuple[int, ...] = (0, 5, 10),
    repetitions: int = 3,
    noise: float = 0.01,
    failed: int = 0,
    timing: bool = True,
    prompts: tuple[str, ...] = ("Name three planets.",),
    bandwidth: str | None = None,
) -> int:
    """A finished sweep whose runs' TPOT follows :func:`true_tpot` with relative noise."""
    rng = random.Random(7)
    with session_scope(settings.database_url) as s:
        sweep = Sweep(
            name="synthetic",
            spec={"nodes": list(nodes), "latency": [f"{d}ms" for d in delays]},
            status="succeeded",
            total_cells=len(nodes) * len(delays) * repetitions,
        )
        s.add(sweep)
        s.flush()
        for rep, n, d, prompt in itertools.product(range(repetitions), nodes, delays, prompts):
            config = RunConfig(
                prompt=prompt,
                model="tiny-test",
                nodes=n,
                threads=1,
                latency=LatencyProfile.parse(f"{d}ms", bandwidth=bandwidth),
                max_tokens=16,
                repetition=rep,
            )
            run = create_run(s, config, sweep_id=sweep.id)
            if failed and rep == 0 and n == nodes[-1] and d == delays[0]:
                failed -= 1
                run.status, run.error = "failed", "node worker1 exited with status 1"
                continue
            tpot = true_tpot(n, d) * (1 + rng.gauss(0, noise))
            run.status = "succeeded"
            run.tpot_ms = tpot
            run.ttft_ms = 80.0 + 2 * (n - 1) * d + rng.gauss(0, 0.5)
            run.e2el_ms = run.ttft_ms + 15 * tpot
            run.itl_p50_ms, run.itl_p99_ms = tpot * 0.98, tpot * 1.3
            run.decode_tps = 1000.0 / tpot
            run.output_tokens, run.prompt_tokens = 16, 5
            run.host_cpu, run.host_cores = "Test CPU", 8
            run.engine_version = "llama.cpp test"
            if timing:
                add_timing(s, run.id, n, d, tpot)
        return sweep.id


def add_timing(session: Any, run_id: int, nodes: int, delay_ms: float, tpot: float) -> None:
    """Token events every ``tpot`` ms and, per link, the proxies' per-token series:
    each worker computes WORKER_MS, each round trip waits 2 x delay, transfer
    TRANSFER_MS. So per token: injected = (N-1) * 2d, root = TPOT - the links' sum."""
    for i in range(TOKENS):
        session.add(TokenEvent(run_id=run_id, index=i, offset_ms=100.0 + tpot * i, text="x"))
    steps = TOKENS - 1
    for w in range(1, nodes):
        per_token = {
            "worker_ms": [WORKER_MS] * steps,
            "injected_ms": [2.0 * delay_ms] * steps,
            "transfer_ms": [TRANSFER_MS] * steps,
            "round_trips": [1.0] * steps,
            "bytes": [4096.0] * steps,
        }
        session.add(
            LinkStat(
                run_id=run_id,
                link=f"root<->worker{w}",
                bytes_up=1000,
                bytes_down=1000,
                chunks_up=10,
                chunks_down=10,
                delay_total_ms_up=steps * delay_ms,
                delay_total_ms_down=steps * delay_ms,
                delay_max_ms=delay_ms,
                timing={"source": "proxy", "complete": True, "per_token": per_token},
            )
        )


@pytest.fixture
def db_settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    upgrade(s.database_url)
    return s


class _Doc(HTMLParser):
    """Collects what a self-containment check needs: tags, ids, references, text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href", "xlink:href", "srcset", "action", "data") and value:
                self.refs.append((tag, name, value))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Doc:
    doc = _Doc()
    doc.feed(html)
    doc.close()
    return doc


def _row_cells(html: str, marker: str) -> list[list[str]]:
    """Cell texts of the first table whose id or class is ``marker``."""
    match = re.search(rf'<table (?:id|class)="{marker}"', html)
    assert match, f"no table {marker}"
    body = html[match.end() :].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)
        ]
        for r in rows
        if "<td" in r
    ]


def test_report_html_is_self_contained_and_has_every_section(db_settings: Settings) -> None:
    sweep_id = add_synthetic_sweep(db_settings)
    with session_scope(db_settings.database_url) as s:
        data = build_report(s, sweep_id)
    html = render_html(data)
    doc = parse(html)

    # Self-contained: nothing to fetch when it is opened.
    assert not re.search(r"https?:", html, re.I)
    assert "<script" not in html
    assert "@import" not in html
    assert not re.search(r"url\(\s*['\"]?(?!#)", html)  # only url(#clip) of the SVGs
    for tag, attr, value in doc.refs:
        assert value.startswith("#"), (tag, attr, value)  # only in-page anchors
    for _tag, _attr, value in doc.refs:
        assert value[1:] in doc.ids, value

    # One results row per configuration: 1 node is one configuration over 3 latencies.
    assert {"results", "scaling", "throughput", "breakdown", "model", "hygiene"} <= doc.ids
    results = _row_cells(html, "results-table")
    assert len(results) == 1 + 2 * 3
    assert results[0][0].startswith("1 node × 1 thread")
    assert [row[1] for row in results] == ["9"] + ["3"] * 6  # n: 1 node merges 3 latencies
    assert "±" in results[1][3]  # TPOT mean ± CI
    # Figures inline as SVG: speedup, throughput, breakdown, model.
    assert doc.tags.count("svg") == 4
    assert "Not recorded" not in html

    # The breakdown: injected delay = (N-1) x 2d per token, the rest root compute.
    breakdown = {row[0]: row for row in _row_cells(html, "breakdown-table")}
    head = re.search(r'<table id="breakdown-table">\s*<thead><tr>(.*?)</tr>', html, re.S)
    assert head is not None
    columns = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<th[^>]*>(.*?)</th>", head.group(1))]
    assert columns == [
        "configuration", "n", "TPOT", "root compute", "worker compute", "injected delay",
        "transfer", "round trips/token", "bytes/token",
    ]  # fmt: skip
    three = breakdown["3 nodes × 1 thread · 10ms"]
    assert three[1] == "3"
    assert three[5].startswith("40.0 ms")  # 2 links x 2 x 10 ms
    assert three[4].startswith("6.00 ms")  # 2 workers x WORKER_MS
    assert three[6].startswith("1.00 ms")  # 2 links x TRANSFER_MS
    assert three[7] == "2.00"
    one = breakdown["1 node × 1 thread · no links"]
    assert one[4].startswith("0.00 ms")  # no workers: all of it is root compute
    assert one[5].startswith("0.00 ms")
    bar = next(b for b in data.breakdowns if b.label == "3 nodes × 1 thread · 10ms")
    assert sum(bar.parts.values()) == pytest.approx(bar.tpot_ms, rel=1e-3)

    # The fit recovers the generating model.
    fit = data.analysis.fits[0]
    assert fit.r2 is not None
    assert fit.r2 > 0.99
    r2_text = re.search(r'class="r2">([0-9.]+)<', html)
    assert r2_text is not None
    assert float(r2_text.group(1)) == pytest.approx(fit.r2, abs=5e-4)
    # The headline R² is the one over configuration means (what the model explains).
    means_text = re.search(r'class="r2-means">([0-9.]+)<', html)
    assert means_text is not None
    assert fit.r2_means is not None
    assert float(means_text.group(1)) == pytest.approx(fit.r2_means, abs=5e-4)
    # Break-even for 2 nodes: TPOT(2, d) = TPOT(1) -> 5+20+1+2d = 45 -> d* = 9.5 ms.
    breaks = _row_cells(html, "break-even-table")
    two = next(row for row in breaks if row[0] == "2")
    assert two[1] == "break-even"
    assert float(two[2].split()[0]) == pytest.approx(9.5, rel=0.05)
    # Hold-out: refitted without the 5 ms cells (the only interior delay), the model
    # predicts them within the noise (1 %).
    holdout = _row_cells(html, "holdout-table")
    assert [(row[0], row[2]) for row in holdout] == [("5ms", "2"), ("5ms", "3")]
    for row in holdout:
        assert abs(float(row[6].split()[0])) < 3.0, row
    # Its R² column says which R² is which: over the refit's configuration means, then runs.
    (refit,) = data.holdouts[0]
    assert refit.r2_means is not None
    assert refit.r2 is not None
    assert holdout[0][1] == f"{refit.r2_means:.3f} · {refit.r2:.3f}"
    assert "refit R² means · runs" in html
    # Hygiene: nothing flagged on clean synthetic data.
    assert "clean" in html


def test_report_flags_and_left_out_runs(db_settings: Settings) -> None:
    sweep_id = add_synthetic_sweep(db_settings, repetitions=2, noise=0.2, failed=1)
    with session_scope(db_settings.database_url) as s:
        data = build_report(s, sweep_id)
    html = render_html(data)
    assert data.hygiene.excluded == {"failed runs": 1}
    assert "1 failed runs left out" in html
    assert set(data.hygiene.flagged_groups) >= {"too few", "noisy"}
    hygiene = _row_cells(html, "hygiene-table")
    flags = {row[0]: int(row[1]) for row in hygiene}
    assert flags["too few"] == 6  # 2 runs each; 1 node merges its 3 latencies (6 runs)
    assert "(1 left out)" in html
    # A noisy configuration names the metrics over 5 % (the CV column is TPOT's only).
    results = _row_cells(html, "results-table")
    for group, row in zip(data.analysis.groups, results, strict=True):
        if "noisy" in group.flags:
            titles = ", ".join(NOISE_TITLES[m] for m in group.noisy_metrics)
            assert f"noisy ({titles})" in row[-1]


def test_report_of_a_sweep_without_results(db_settings: Settings) -> None:
    with session_scope(db_settings.database_url) as s:
        sweep = Sweep(name="empty", spec={}, status="queued", total_cells=0)
        s.add(sweep)
        s.flush()
        sweep_id = sweep.id
    with session_scope(db_settings.database_url) as s:
        html = render_html(build_report(s, sweep_id))
    assert "No model was fitted" in html
    assert "This sweep is still queued (0 of 0 cells done)" in html
    assert "<svg" not in html
    with session_scope(db_settings.database_url) as s, pytest.raises(LookupError):
        build_report(s, 999)


def _cli(settings: Settings, *args: str) -> Any:
    env = {
        "EDGELAB_DATA_DIR": str(settings.data_dir),
        "EDGELAB_DATABASE_URL": settings.database_url,
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_report_command_html_and_markdown(
    db_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep_id = add_synthetic_sweep(db_settings)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = _cli(db_settings, "report", str(sweep_id))
    assert result.exit_code == 0, result.output
    assert [p.name for p in cwd.iterdir()] == [f"sweep-{sweep_id}-report.html"]
    assert f"wrote sweep-{sweep_id}-report.html" in result.output

    out = tmp_path / "paper" / "results.md"
    result = _cli(db_settings, "report", str(sweep_id), "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith(f"# Sweep {sweep_id} · synthetic")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images == [
        "results-figures/speedup.png",
        "results-figures/throughput.png",
        "results-figures/breakdown.png",
        "results-figures/model-1.png",
    ]
    for image in images:
        png = out.parent / image
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    assert "| configuration | n |" in text
    assert "R² over configuration means = **" in text
    assert not list(out.parent.rglob("*.part"))

    missing = CliRunner().invoke(
        main, ["report", "999"], env={"EDGELAB_DATABASE_URL": db_settings.database_url}
    )
    assert missing.exit_code == 1
    assert "sweep 999 not found" in missing.output


def test_report_downloads_from_the_sweep_page(db_settings: Settings) -> None:
    sweep_id = add_synthetic_sweep(db_settings)
    client = create_app(db_settings, {"TESTING": True}).test_client()
    page = client.get(f"/sweeps/{sweep_id}").get_data(as_text=True)
    assert f'href="/sweeps/{sweep_id}/report"' in page
    resp = client.get(f"/sweeps/{sweep_id}/report")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    assert f"edgelab-sweep-{sweep_id}-report.html" in resp.headers["Content-Disposition"]
    html = resp.get_data(as_text=True)
    assert 'id="results-table"' in html
    assert html.count("<svg") == 4

    resp = client.get(f"/sweeps/{sweep_id}/report?format=md")
    assert resp.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.get_data())) as zf:
        names = sorted(zf.namelist())
        md = zf.read(f"edgelab-sweep-{sweep_id}-report.md").decode()
    assert f"edgelab-sweep-{sweep_id}-report-figures/speedup.png" in names
    assert f"edgelab-sweep-{sweep_id}-report-figures/speedup.svg" in names
    assert f"](edgelab-sweep-{sweep_id}-report-figures/speedup.png)" in md

    # The report's numbers are the analysis API's (one analysis, two renderings).
    api = client.get(f"/api/sweeps/{sweep_id}/analysis").get_json()
    with session_scope(db_settings.database_url) as s:
        data = build_report(s, sweep_id)
    assert data.analysis.fits[0].r2 == pytest.approx(api["fits"][0]["r2"], rel=1e-12)
    assert [g.n for g in data.analysis.groups] == [g["n"] for g in api["groups"]]

    assert client.get("/sweeps/999/report").status_code == 404
    bad = client.get(f"/sweeps/{sweep_id}/report?format=pdf")
    assert bad.status_code == 400
    assert "format" in bad.get_data(as_text=True)


def test_mean_ci_never_mixes_units() -> None:
    from edgelab.units import fmt_mean_ci

    assert fmt_mean_ci(50.24, 0.694, "ms") == "50.2 ± 0.69 ms"
    assert fmt_mean_ci(15_000.0, 300.0, "ms") == "15.0 ± 0.30 s"
    assert fmt_mean_ci(19.9, 0.28, "tok/s") == "19.9 ± 0.28 tok/s"
    assert fmt_mean_ci(44.8, None, "ms") == "44.8 ms"
    assert fmt_mean_ci(None, 1.0, "ms") == "—"


def test_rows_of_a_multi_prompt_sweep_name_their_prompt(db_settings: Settings) -> None:
    sweep_id = add_synthetic_sweep(
        db_settings, nodes=(1, 2), delays=(0, 5), repetitions=2, prompts=("Hi.", "Name ten rivers.")
    )
    with session_scope(db_settings.database_url) as s:
        data = build_report(s, sweep_id)
    html = render_html(data)
    assert data.varying == ("nodes", "latency", "prompt")
    labels = [row[0] for row in _row_cells(html, "results-table")]
    assert len(labels) == len(set(labels)) == 2 * 3  # (1 node + 2 latencies) x 2 prompts
    assert "1 node × 1 thread · no links · prompt 'Hi.'" in labels
    assert "2 nodes × 1 thread · 5ms · prompt 'Name ten rivers.'" in labels


def test_command_modules_import_no_plotting_or_statistics() -> None:
    """``edgelab --help`` imports every command module to print its summary: the
    report and history commands must not pull in matplotlib, scipy or SQLAlchemy."""
    import subprocess
    import sys

    code = (
        "import sys, edgelab.reports.cli, edgelab.runs.history_cli; "
        "print(sorted(m for m in ('matplotlib', 'scipy', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_of_a_capped_only_sweep_is_drawn_at_its_cap(db_settings: Settings) -> None:
    sweep_id = add_synthetic_sweep(db_settings, bandwidth="100mbit")
    with session_scope(db_settings.database_url) as s:
        data = build_report(s, sweep_id)
    assert data.analysis.fits[0].bandwidths_tried == (100_000_000,)
    html = render_html(data)
    assert "Predicted TPOT (links capped at 100 Mbit/s)" in html
    assert "Break-even latency d*(N) (links capped at 100 Mbit/s)" in html
    assert "links capped at 100 Mbit/s: points measured" in html  # the figure's title
