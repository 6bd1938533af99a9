"""Issue 16 on the server side: what the pages show must be true and readable.

Each test names the thing a user met: a dllama model as the form's default, a cell
count that invented node values, history showing the sweep's creation time, raw
bytes, a "cancelling" banner that never left, link sums that read as latency.
Rows are inserted with the helpers of ``test_web``; no broker or model is needed.
"""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from test_web import MODEL, add_run, add_sweep

from edgelab.models import Run
from edgelab.models.base import utcnow
from edgelab.models.db import session_scope
from edgelab.settings import Settings

DLLAMA_FIRST = "dl"


@pytest.fixture
def web_catalog(db_settings: Settings) -> list[dict[str, Any]]:
    """A dllama model registered before the GGUF one (the order the user met)."""
    models_dir = db_settings.models_dir
    (models_dir / "tiny.gguf").write_bytes(b"GGUF")
    (models_dir / "dl.m").write_bytes(b"M")
    (models_dir / "dl.t").write_bytes(b"T")
    common = {"size_bytes": 4, "sha256": "0" * 64, "architecture": "llama", "n_layers": 8}
    return [
        {
            "name": DLLAMA_FIRST,
            "path": str(models_dir / "dl.m"),
            "quantization": "Q40",
            "format": "dllama",
            "extra": {"tokenizer": str(models_dir / "dl.t")},
            **common,
        },
        {"name": MODEL, "path": str(models_dir / "tiny.gguf"), "quantization": "Q4_1", **common},
    ]


def text(resp: Any) -> str:
    return unescape(str(resp.get_data(as_text=True)))


# --- run form: the default model is one the default engine runs ------------------


def test_default_model_is_one_the_default_engine_can_run(client: FlaskClient) -> None:
    html = text(client.get("/runs/new"))
    selected = re.findall(r'<option selected value="([^"]+)"', html)
    assert MODEL in selected
    assert DLLAMA_FIRST not in selected
    engines = json.loads(
        re.search(r'id="model-engines">(.*?)</script>', html, re.S).group(1)  # type: ignore[union-attr]
    )
    assert engines == {DLLAMA_FIRST: "dllama", MODEL: "llamacpp"}


def test_sweep_form_default_model_is_a_gguf(client: FlaskClient) -> None:
    html = text(client.get("/sweeps/new"))
    assert f'value="{MODEL}"' in html
    # The sweep's latency help describes its own field (a list of profiles), not min/max.
    help_text = re.search(r'id="latency".*?<small class="help">(.*?)</small>', html, re.S)
    assert help_text is not None
    assert "comma-separated" in help_text.group(1)
    assert "min/max" not in help_text.group(1)


# --- sweep form: the live cell count comes from the sweep parser -------------------

AXES = {
    "name": "s",
    "model": MODEL,
    "nodes": "1, 2",
    "threads": "1",
    "latency": "0ms, 20ms, 10ms..30ms",
    "bandwidth": "",
    "max_tokens": "8",
    "prompts": "Name three planets.",
    "repetitions": "2",
    "backend": "local",
    "engine": "llamacpp",
}


def count(client: FlaskClient, **changes: str) -> dict[str, Any]:
    resp = client.get("/sweeps/count", query_string=AXES | changes)
    assert resp.status_code == 200
    return dict(resp.get_json())


def test_cell_count_of_a_valid_form(client: FlaskClient) -> None:
    got = count(client)
    # (1 node: one cell whatever the latency + 2 nodes x 3 latency) x 2 repetitions
    assert got["cells"] == 8
    assert got["grid"] == 12
    assert got["axes"]["nodes"] == 2
    assert got["axes"]["latency"] == 3
    assert got["repetitions"] == 2
    assert got["errors"] == {}


def test_cell_count_on_bad_nodes_is_an_error_not_two_values(client: FlaskClient) -> None:
    got = count(client, nodes="0, abc")
    assert got["cells"] is None
    assert set(got["errors"]) == {"nodes"}
    assert got["axes"]["latency"] == 3  # the latency axis is still there


def test_cell_count_on_empty_required_axes(client: FlaskClient) -> None:
    got = count(client, prompts="", max_tokens="")
    assert got["cells"] is None
    assert {"prompts", "max_tokens"} <= set(got["errors"])


def test_cell_count_above_the_limit_is_counted(client: FlaskClient, app: Flask) -> None:
    got = count(client, nodes=",".join(str(n) for n in range(1, 9)), repetitions="100")
    assert got["cells"] == 8 * 3 * 100
    assert got["cells"] > got["max_cells"]


# --- history: repetition, and when the run ran -------------------------------------


def test_history_shows_repetition_and_when_the_run_ran(
    client: FlaskClient, web_settings: Settings
) -> None:
    sweep_id, ids = add_sweep(web_settings)
    started = utcnow().replace(year=2031, microsecond=0)
    with session_scope(web_settings.database_url) as s:
        run = s.get(Run, ids[-1])
        assert run is not None
        run.started_at = started
    html = text(client.get(f"/runs?sweep={sweep_id}&sort=-id"))
    assert "Ran (UTC)" in html
    assert "Created (UTC)" not in html
    row = re.search(rf'<tr data-run-id="{ids[-1]}">(.*?)</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert started.strftime("%Y-%m-%d %H:%M:%S") in cells[2]
    assert cells[9].strip() == "1"  # the last run of add_sweep is repetition 1
    # sortable by repetition
    assert client.get(f"/runs?sweep={sweep_id}&sort=-repetition").status_code == 200


# --- units a person reads -----------------------------------------------------------


def test_run_page_reads_bytes_per_token_in_kb(client: FlaskClient, web_settings: Settings) -> None:
    run_id = add_run(web_settings)
    with session_scope(web_settings.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.net_bytes_per_token = 259258.0
    html = text(client.get(f"/runs/{run_id}"))
    assert 'id="m-net_bytes_per_token">259<' in html
    assert 'id="u-net_bytes_per_token">kB<' in html
    assert "259,258" not in html.split('id="run-data"')[0]  # raw only in the JSON


def test_run_page_has_no_link_sums_and_explains_effective_delay(
    client: FlaskClient, web_settings: Settings
) -> None:
    run_id = add_run(web_settings)
    html = text(client.get(f"/runs/{run_id}"))
    table = html.split('id="links-table"')[1].split("</table>")[0]
    assert "injected" not in table
    assert "220" not in table  # delay_total_ms_up + _down of add_run: no sums shown
    assert "1.00 kB" in table
    assert "2.00 kB" in table
    assert "— / — / —" in table  # no per-message record for this run: said, not invented
    note = html.split('id="links-note"')[1].split("</p>")[0]
    assert "in order" in note
    assert "configured" in note


def test_compare_metrics_have_units(client: FlaskClient, web_settings: Settings) -> None:
    a, b = add_run(web_settings), add_run(web_settings, ttft=250.0)
    html = text(client.get(f"/compare?ids={a},{b}"))
    metrics = html.split('id="metrics-side"')[1].split("</table>")[0]
    assert "100 ms" in metrics
    assert "250 ms" in metrics
    assert "20.0 tok/s" in metrics


# --- cancel banner follows the state -------------------------------------------------


def test_cancel_of_a_running_run_flashes_a_pending_banner(
    client: FlaskClient, web_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = add_run(web_settings, status="running")
    # A stand-in for the broker (no Redis in unit tests); the page and the action are real.
    from edgelab.store.actions import WorkQueue

    flags: list[list[int]] = []
    monkeypatch.setattr(WorkQueue, "request_cancel", lambda _self, ids: flags.append(list(ids)))
    resp = client.post(f"/runs/{run_id}/cancel", follow_redirects=True)
    html = text(resp)
    assert flags == [[run_id]]
    assert re.search(r'class="flash flash-pending"[^>]*>run \d+: cancelling<', html)


# --- CLI: sweep status --wait on a finished sweep prints its summary once ----------


def test_sweep_status_wait_on_a_finished_sweep_prints_the_summary_once(
    web_settings: Settings,
) -> None:
    from edgelab.cli import main

    sweep_id, ids = add_sweep(web_settings)
    env = {
        "EDGELAB_DATA_DIR": str(web_settings.data_dir),
        "EDGELAB_DATABASE_URL": web_settings.database_url,
        "EDGELAB_MODELS_DIR": str(web_settings.models_dir),
    }
    result = CliRunner().invoke(main, ["sweep", "status", str(sweep_id), "--wait"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    summaries = [line for line in lines if line.startswith(f"sweep {sweep_id} ")]
    assert len(summaries) == 1, result.output
    assert lines[0] == summaries[0]  # first, on a line of its own
    assert sum(1 for line in lines if line.startswith("  run ")) == len(ids)


def test_run_page_shows_effective_delay_per_link_next_to_the_profile(
    client: FlaskClient, web_settings: Settings
) -> None:
    from sqlalchemy import select

    from edgelab.models import LinkStat

    run_id = add_run(web_settings, latency="10ms..30ms")
    with session_scope(web_settings.database_url) as s:
        link = s.scalars(select(LinkStat).where(LinkStat.run_id == run_id)).one()
        link.eff_delay_p50_ms_up, link.eff_delay_p99_ms_up, link.eff_delay_max_ms_up = (
            20.1,
            29.7,
            44.5,
        )
        link.eff_delay_p50_ms_down, link.eff_delay_p99_ms_down, link.eff_delay_max_ms_down = (
            19.8,
            30.2,
            76.0,
        )
    html = text(client.get(f"/runs/{run_id}"))
    row = html.split('id="links-table"')[1].split("</table>")[0].split("<tbody>")[1]
    cells = [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[4] == "10ms..30ms"
    assert cells[5] == "20.1 ms / 29.7 ms / 44.5 ms"
    assert cells[6] == "19.8 ms / 30.2 ms / 76.0 ms"
    assert re.search(r'id="links-pending"\s+hidden', html)
