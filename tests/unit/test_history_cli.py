"""``edgelab runs list|show|compare|export`` and ``edgelab sweep list`` through Click's
runner, against a real SQLite database holding runs inserted here.

The CLI must select what the history page selects (same parser), write exports
byte-identical to the web download (same code), and show numbers with units.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edgelab.cli import main
from edgelab.models import LinkStat, NodeSample, Sweep
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
    tpot: float = 50.0,
    ttft: float = 100.0,
    created: datetime | None = None,
) -> int:
    """A stored run with metrics, node samples and a link like a finished one."""
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
        if status == "succeeded":
            run.ttft_ms, run.tpot_ms = ttft, tpot
            run.e2el_ms = ttft + 15 * tpot
            run.decode_tps = 1000.0 / tpot
            run.itl_p50_ms, run.itl_p99_ms = tpot - 1, tpot + 20
            run.output_tokens, run.prompt_tokens = 16, 5
            run.net_bytes_per_token = 12_345.0
            run.engine_version, run.host_cpu, run.host_cores = "llama.cpp test", "Test CPU", 2
            run.model_sha256 = "ab" * 32
            for node, role in (("root", "root"), ("worker1", "worker")):
                s.add(
                    NodeSample(
                        run_id=run.id,
                        node=node,
                        role=role,
                        offset_ms=0.0,
                        cpu_percent=97.0,
                        rss_bytes=150_000_000,
                    )
                )
            s.add(
                LinkStat(
                    run_id=run.id,
                    link="root<->worker1",
                    bytes_up=150_000,
                    bytes_down=2000,
                    chunks_up=10,
                    chunks_down=12,
                    delay_total_ms_up=100.0,
                    delay_total_ms_down=120.0,
                    delay_max_ms=10.0,
                )
            )
        return run.id


def add_sweep(settings: Settings, name: str = "grid", status: str = "succeeded") -> int:
    with session_scope(settings.database_url) as s:
        sweep = Sweep(name=name, spec={"nodes": [1, 2]}, status=status, total_cells=4)
        s.add(sweep)
        s.flush()
        return sweep.id


def cli(settings: Settings, *args: str) -> Result:
    env = {
        "EDGELAB_DATA_DIR": str(settings.data_dir),
        "EDGELAB_DATABASE_URL": settings.database_url,
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def ok(settings: Settings, *args: str) -> str:
    result = cli(settings, *args)
    assert result.exit_code == 0, result.output
    return result.output


def listed_ids(output: str) -> list[int]:
    """The run ids of a ``runs list`` table (first column, below the header rule)."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("--"))
    rows = [line.split() for line in lines[rule + 1 :]]
    return [int(r[0]) for r in rows if r and r[0].isdigit()]


# --- runs list ------------------------------------------------------------------


def test_runs_list_filters_like_the_history_api(db_settings: Settings) -> None:
    ids = [add_run(db_settings, nodes=n) for n in (1, 2, 2, 3)]
    failed = add_run(db_settings, nodes=2, status="failed")
    out = ok(db_settings, "runs", "list", "--nodes", "2", "--status", "succeeded", "--sort", "id")
    assert listed_ids(out) == [ids[1], ids[2]]
    assert "runs 1-2 of 2" in out

    # The same filter through the API gives the same runs, in the same JSON.
    client = create_app(db_settings, {"TESTING": True}).test_client()
    api = client.get("/api/runs?nodes=2&status=succeeded&sort=id").get_json()
    as_json = json.loads(
        ok(
            db_settings,
            "runs",
            "list",
            "--nodes",
            "2",
            "--status",
            "succeeded",
            "--sort",
            "id",
            "--json",
        )
    )
    assert as_json == api

    # Repeated --status means either; default order is newest first.
    out = ok(db_settings, "runs", "list", "--status", "failed", "--status", "succeeded")
    assert listed_ids(out) == [failed, *reversed(ids)]


def test_runs_list_table_has_units_and_pages(db_settings: Settings) -> None:
    for _ in range(3):
        add_run(db_settings, nodes=3, latency="20ms", tpot=123.4, ttft=15_000.0)
    out = ok(db_settings, "runs", "list", "--per-page", "2")
    header = out.splitlines()[0].split()
    assert header[:4] == ["id", "status", "sweep", "model"]
    assert "123 ms" in out  # TPOT
    assert "15.0 s" in out  # TTFT above 10 s reads in seconds
    assert "8.10 tok/s" in out  # 1000 / 123.4, three significant digits
    assert "runs 1-2 of 3; --page 2 for more" in out
    out = ok(db_settings, "runs", "list", "--per-page", "2", "--page", "2")
    assert "runs 3-3 of 3" in out
    assert ok(db_settings, "runs", "list", "--model", "nope").strip() == "no runs match"


def test_runs_list_dates_and_sweep_filter(db_settings: Settings) -> None:
    sweep = add_sweep(db_settings)
    old = add_run(db_settings, created=datetime(2026, 1, 5, 12, tzinfo=UTC))
    new = add_run(db_settings, sweep_id=sweep, created=datetime(2026, 3, 1, tzinfo=UTC))
    assert listed_ids(ok(db_settings, "runs", "list", "--until", "2026-01-05")) == [old]
    assert listed_ids(ok(db_settings, "runs", "list", "--since", "2026-02-01")) == [new]
    assert listed_ids(ok(db_settings, "runs", "list", "--sweep", str(sweep))) == [new]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "many"], "--nodes: must be a whole number, got 'many'"),
        (["--status", "done"], "--status: unknown status done"),
        (["--since", "yesterday"], "--since: must be a date"),
        (["--sort", "color"], "--sort: must be one of id, created_at"),
    ],
)
def test_runs_list_bad_filters_name_the_option(
    db_settings: Settings, args: list[str], message: str
) -> None:
    result = cli(db_settings, "runs", "list", *args)
    assert result.exit_code == 1
    assert "invalid filter" in result.output
    assert message in result.output


# --- runs show ------------------------------------------------------------------


def test_runs_show_reads_like_a_report(db_settings: Settings) -> None:
    run_id = add_run(db_settings, nodes=2, latency="10ms", tpot=62.5)
    out = ok(db_settings, "runs", "show", str(run_id))
    assert out.startswith(f"run {run_id} succeeded")
    assert "2 node(s) x 1 thread(s) · latency 10ms · bandwidth unlimited" in out
    assert "TPOT 62.5 ms" in out
    assert "decode 16.0 tok/s" in out
    assert "network 12.3 kB/token" in out
    assert "root<->worker1: 150 kB up / 2.00 kB down" in out
    assert "injected" not in out.split("links")[1].split("nodes")[0]  # no delay sums
    assert "worker1: peak CPU 97 % · peak RSS 150 MB" in out
    assert "engine llama.cpp test" in out
    assert f"model sha256 {'ab' * 32}" in out

    data = json.loads(ok(db_settings, "runs", "show", str(run_id), "--json"))
    client = create_app(db_settings, {"TESTING": True}).test_client()
    assert data == client.get(f"/api/runs/{run_id}").get_json()


def test_runs_show_failed_run_with_node_logs(db_settings: Settings) -> None:
    from edgelab.models import Run

    run_id = add_run(db_settings, status="failed")
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.node_logs = {"worker1": [f"line {i}" for i in range(30)]}
    out = ok(db_settings, "runs", "show", str(run_id))
    assert f"run {run_id} failed" in out
    assert "  error: node worker1 exited with status 1" in out
    assert "log of worker1 (last lines)\n  line 20\n" in out
    assert "  line 29" in out
    assert "line 19" not in out


def test_runs_show_unknown_run(db_settings: Settings) -> None:
    result = cli(db_settings, "runs", "show", "999")
    assert result.exit_code == 1
    assert "run 999 not found" in result.output


# --- runs export ----------------------------------------------------------------


def test_runs_export_is_the_web_download(db_settings: Settings, tmp_path: Path) -> None:
    for n in (1, 2, 2, 3):
        add_run(db_settings, nodes=n)
    add_run(db_settings, nodes=2, status="failed")
    client = create_app(db_settings, {"TESTING": True}).test_client()
    for fmt in ("csv", "json"):
        web = client.get(f"/export/runs.{fmt}?nodes=2&sort=id").get_data(as_text=True)
        result = cli(db_settings, "runs", "export", "--format", fmt, "--nodes", "2", "--sort", "id")
        assert result.exit_code == 0, result.output
        assert result.stdout_bytes.decode() == web  # CSV keeps its \r\n line ends
        target = tmp_path / f"runs.{fmt}"
        result = cli(
            db_settings,
            "runs",
            "export",
            "--format",
            fmt,
            "--nodes",
            "2",
            "--sort",
            "id",
            "-o",
            str(target),
        )
        assert result.exit_code == 0, result.output
        assert target.read_bytes().decode() == web
        assert f"wrote 3 run(s) to {target}" in result.output
        assert not list(tmp_path.glob("*.part"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "failed"]
    assert json.loads((tmp_path / "runs.json").read_text())["total"] == 3


# --- sweep list -----------------------------------------------------------------


def test_sweep_list(db_settings: Settings) -> None:
    done = add_sweep(db_settings, "latency-scaling")
    for rep in range(2):
        for n in (1, 2):
            add_run(db_settings, nodes=n, sweep_id=done, repetition=rep)
    running = add_sweep(db_settings, "second", status="running")
    add_run(db_settings, sweep_id=running, status="queued")
    out = ok(db_settings, "sweep", "list")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "name", "status", "done"]
    assert lines[2].split()[:4] == [str(running), "second", "running", "0/1"]
    assert lines[3].split()[:5] == [str(done), "latency-scaling", "succeeded", "4/4", "4"]
    assert "sweeps 1-2 of 2" in out
    assert listed_ids(ok(db_settings, "sweep", "list", "--status", "succeeded")) == [done]
    assert listed_ids(ok(db_settings, "sweep", "list", "--name", "scal")) == [done]
    data = json.loads(ok(db_settings, "sweep", "list", "--json"))
    client = create_app(db_settings, {"TESTING": True}).test_client()
    assert data == client.get("/api/sweeps").get_json()
    bad = cli(db_settings, "sweep", "list", "--status", "done")
    assert bad.exit_code == 2
    assert "--status" in bad.output


# --- runs compare ---------------------------------------------------------------


def test_runs_compare_groups_repetitions_and_gives_verdicts(db_settings: Settings) -> None:
    fast = [
        add_run(db_settings, nodes=3, latency="0ms", repetition=i, tpot=t)
        for i, t in enumerate((50.0, 51.0, 49.5, 50.5, 50.2))
    ]
    slow = [
        add_run(db_settings, nodes=3, latency="5ms", repetition=i, tpot=t)
        for i, t in enumerate((60.0, 61.2, 59.1, 60.4, 60.8))
    ]
    out = ok(db_settings, "runs", "compare", *map(str, fast + slow))
    assert out.startswith("2 configuration(s) from 10 run(s); differing: latency\n")
    rows = [line for line in out.splitlines() if line[:2] in ("A ", "B ")]
    assert rows[0].split()[:2] == ["A", "3"]  # group A: 3 nodes ...
    assert ",".join(map(str, fast)) in rows[0]
    assert ",".join(map(str, slow)) in rows[1]
    assert "50.2 ± 0.69 ms" in rows[0]  # mean ± t(4) * sd / sqrt(5)
    assert "  B vs A (latency differ): slower" in out
    tpot_line = next(line for line in out.splitlines() if line.strip().startswith("TPOT:"))
    assert tpot_line.strip().startswith("TPOT: slower by 10.1 ms (+20.0 %, 95 % CI of B-A [")
    assert "p < 0.001" in tpot_line
    assert "g = +" in tpot_line

    data = json.loads(ok(db_settings, "runs", "compare", "--json", *map(str, fast + slow)))
    assert data["differing"] == ["latency"]
    assert [g["n"] for g in data["groups"]] == [5, 5]
    (pair,) = data["comparisons"]
    assert pair["verdict"] == "slower"
    assert pair["tests"]["tpot_ms"]["p_value"] < 0.001

    # Two batches of one configuration are one group: nothing to compare.
    out = ok(db_settings, "runs", "compare", *map(str, fast))
    assert out.startswith("1 configuration(s) from 5 run(s)\n")
    assert "nothing to compare (its runs are repetitions)" in out


def test_runs_compare_too_few_and_unknown(db_settings: Settings) -> None:
    a = add_run(db_settings, nodes=2, latency="0ms")
    b = add_run(db_settings, nodes=2, latency="20ms", tpot=90.0)
    out = ok(db_settings, "runs", "compare", str(a), str(b))
    assert "B vs A (latency differ): too few runs" in out
    assert "too few runs (1 vs 1; a test needs 2 on each side)" in out
    missing = cli(db_settings, "runs", "compare", str(a), "998", "999")
    assert missing.exit_code == 1
    assert "no run with id 998, 999" in missing.output
    single = cli(db_settings, "runs", "compare", str(a))
    assert single.exit_code == 2
    assert "at least two run ids" in single.output


def test_runs_show_breakdown_and_hygiene_flags(db_settings: Settings) -> None:
    from sqlalchemy import select

    from edgelab.models import Run, TokenEvent

    run_id = add_run(db_settings, nodes=2, latency="10ms", tpot=30.0)
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.contended, run.oversubscribed = True, False
        run.host_contention = {
            "cores": 2,
            "other_cpu_cores": 0.85,
            "steal_percent": 0.0,
            "load_avg_1m": 1.6,
            "reasons": ["processes outside the cluster used 0.85 cores on average"],
        }
        for i in range(5):  # 4 decode intervals of 30 ms
            s.add(TokenEvent(run_id=run_id, index=i, offset_ms=100.0 + 30.0 * i, text="x"))
        link = s.scalars(select(LinkStat).where(LinkStat.run_id == run_id)).one()
        link.timing = {
            "source": "proxy",
            "complete": True,
            "per_token": {
                "worker_ms": [4.0] * 4,
                "injected_ms": [20.0] * 4,
                "transfer_ms": [1.0] * 4,
                "round_trips": [1.0] * 4,
                "bytes": [5000.0] * 4,
            },
        }
    out = ok(db_settings, "runs", "show", str(run_id))
    assert "  flags: contended (processes outside the cluster used 0.85 cores on average)" in out
    assert "  host during generation: other processes 0.85 cores · steal 0.0 % · load 1.6" in out
    assert "time per decode token: 30.0 ms over 4 tokens (from the link proxies" in out
    assert "  root compute 5.00 ms (17 %)" in out
    assert "  worker1 compute 4.00 ms (13 %)" in out
    assert "  injected delay 20.0 ms (67 %)" in out
    assert "  transfer 1.00 ms (3 %)" in out
    assert "  1.00 round trips and 5.00 kB per token over all links" in out
