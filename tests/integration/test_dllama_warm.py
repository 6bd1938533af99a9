"""Warm dllama clusters (issue 14), with the stand-in for distributed-llama's binaries.

Why a stand-in: no distributed-llama build exists where these tests run (see
tests/integration/test_dllama_standin.py). The stand-in's ``dllama-api`` keeps
its worker connections and streams the weights once, like the real server, and
its sync traffic per forward pass is fixed, so the link bytes a run must see
are known exactly. Sweeps run through ``run_group`` - the function a Celery
group task calls - on a real Redis (host lock, leases) without a Celery worker:
what is tested here is the cluster reuse, not the queue (tests/integration/
test_queue.py covers that).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select
from sweep_db import run_stored, store_sweep

from edgelab.analysis import group_records, load_records
from edgelab.catalog import Catalog
from edgelab.engines.dllama.synthetic import SyntheticShape, write_synthetic_model
from edgelab.models import LinkStat, Run, Sweep
from edgelab.models.db import session_scope, upgrade
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_nodes")]

# dim 128 / 8 heads / 4 KV heads: splits across 1, 2 and 4 nodes.
SHAPE = SyntheticShape(dim=128, hidden_dim=256, n_heads=8, n_kv_heads=4)
SYNC = 2048  # the stand-in's bytes per worker per forward pass (SYNC_BYTES)
MAX_TOKENS = 64  # the acceptance sweep: 4 nodes x 3 repetitions x 64 tokens
PROMPT = "Hello the world"


def link_bytes_per_run(nodes: int, prompt_words: int, tokens: int) -> int:
    """What every proxy together carries for one warm run on the stand-in.

    Per forward pass of ``n`` bytes, link i (root<->worker i) carries the root's
    ``T n`` message and its answer, plus the same for each worker j < i that
    reaches worker i through that link's proxy: i * (header + 2n). The prefill
    is one pass of (prompt positions - 1) * SYNC; the stand-in's dllama-api counts
    a message's words + 2 template positions. Then one pass per token.
    """
    links = sum(range(1, nodes))

    def one_pass(n: int) -> int:
        return links * (len(f"T {n}\n") + 2 * n)

    return one_pass(SYNC * (prompt_words + 2 - 1)) + tokens * one_pass(SYNC)


@pytest.fixture
def warm_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dllama_standin: Callable[[Path, str], Path],
    models_dir: Path,
) -> Settings:
    """Own data dir; the shared models dir (smollm2) plus a 4-node synthetic dllama model."""
    binary = dllama_standin(tmp_path / "bin", sys.executable)
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(binary))
    monkeypatch.delenv("EDGELAB_DLLAMA_API_BIN", raising=False)
    settings = Settings(
        data_dir=tmp_path / "data",
        models_dir=tmp_path / "models",
        keep_work_dirs="always",  # the root's log says how often the weights were loaded
    )
    upgrade(settings.database_url)
    model, _ = write_synthetic_model(settings.models_dir, SHAPE)
    Catalog(settings).add(model, name="tiny4")
    return settings


def run_sweep(
    settings: Settings, r: redis.Redis, data: dict[str, Any], catalog: Catalog | None = None
) -> tuple[int, list[list[int]]]:
    """Create the sweep and execute each topology group as a group task would."""
    catalog = catalog or Catalog(settings)
    sweep = store_sweep(settings, data, catalog)
    run_stored(settings, r, sweep, catalog)
    return sweep.id, sweep.groups


def runs_of(settings: Settings, sweep_id: int) -> list[Run]:
    with session_scope(settings.database_url) as s:
        runs = list(s.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.id)))
        s.expunge_all()
    return runs


def link_total(settings: Settings, run_id: int) -> int:
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(LinkStat).where(LinkStat.run_id == run_id))
        return int(sum(row.bytes_up + row.bytes_down for row in rows))


def test_warm_dllama_sweep_streams_weights_once_and_each_run_owns_its_load(
    warm_settings: Settings, test_redis: redis.Redis
) -> None:
    settings = warm_settings
    spec = {
        "name": "warm",
        "model": "tiny4",
        "engine": "dllama",
        "nodes": 4,
        "latency": "1ms",
        "bandwidth": "100mbit",
        "max_tokens": MAX_TOKENS,
        "prompts": [PROMPT],
        "repetitions": 3,
    }
    sweep_id, groups = run_sweep(settings, test_redis, spec)
    assert len(groups) == 1
    runs = runs_of(settings, sweep_id)
    assert [r.status for r in runs] == ["succeeded"] * 3, [r.error for r in runs]
    with session_scope(settings.database_url) as s:
        assert s.get_one(Sweep, sweep_id).model_loads == 1

    # The weights crossed the links once, at the cluster start: the root log shows
    # one load, and every run's link bytes are exactly its prefill and decode sync.
    logs = list((settings.data_dir / "clusters").glob("*/root.log"))
    assert len(logs) == 1
    assert logs[0].read_text().count("dllama-api: 💿 Weights loaded") == 1
    expected = link_bytes_per_run(4, len(PROMPT.split()), MAX_TOKENS)
    # (A weight slice, model size / 4 here, would show up on top of the sync bytes.)
    assert [link_total(settings, r.id) for r in runs] == [expected] * 3
    model_size = Catalog(settings).get("tiny4").path.stat().st_size

    # By phase (the link proxies' chunks against the root's clock): the weights are
    # the first run's load bytes (it started the cluster), runs 2 and 3 have none.
    # Where prefill ends (the first token) is a timestamp race of a few ms, so only
    # the sum of prefill and decode is exact.
    assert runs[0].net_load_bytes is not None
    assert runs[0].net_load_bytes > 3 * (model_size // 4)
    for run in runs:
        assert run.net_prefill_bytes is not None
        assert run.net_decode_bytes is not None
        assert run.net_prefill_bytes + run.net_decode_bytes == expected
    assert [r.net_load_bytes for r in runs[1:]] == [0, 0]
    # The root's own bytes, told apart by its addresses (read once per warm cluster,
    # again only when a proxy sees a new connection): link i also carries workers
    # 1..i-1's traffic to worker i, so the root's share of it is exactly 1/i, in
    # every run.
    with session_scope(settings.database_url) as s:
        for run in runs:
            rows = list(s.scalars(select(LinkStat).where(LinkStat.run_id == run.id)))
            assert len(rows) == 3
            for row in rows:
                i = int(row.link.rsplit("worker", 1)[1])
                own = row.timing["root_bytes"]
                assert sum(own.values()) * i == row.bytes_up + row.bytes_down, (run.id, row.link)
    # load_ms: the cluster start for the run it was started for, nothing after.
    first, *rest = runs
    assert first.measurement is not None
    cluster_startup = first.measurement["cluster"]["startup_ms"]
    assert first.load_ms == cluster_startup
    assert [r.load_ms for r in rest] == [None, None]
    for i, run in enumerate(runs):
        m = run.measurement
        assert m is not None
        assert m["mode"] == "api"
        assert m["per_token_split"] is None
        assert m["weights_streamed_per_run"] is False
        assert m["cluster"]["runs_before"] == i
        assert m["cluster"]["startup_ms"] == cluster_startup
        assert run.output_tokens == MAX_TOKENS
        assert run.engine_version is not None
        assert run.engine_version.startswith("dllama-api sha256:")
        # The counted prompt tokens come from the start event (llama3 template).
        assert run.prompt_tokens is not None
        assert run.prompt_tokens > len(PROMPT.split())


def test_per_run_inference_mode_streams_weights_every_run(
    warm_settings: Settings, test_redis: redis.Redis
) -> None:
    """The option users pick for dllama's own per-token split: a load per run, its own."""
    settings = warm_settings
    spec = {
        "name": "per-run",
        "model": "tiny4",
        "engine": "dllama",
        "nodes": 2,
        "latency": "1ms",
        "max_tokens": 4,
        "prompts": [PROMPT],
        "repetitions": 2,
        "options": {"dllama_mode": "inference"},
    }
    sweep_id, _ = run_sweep(settings, test_redis, spec)
    runs = runs_of(settings, sweep_id)
    assert [r.status for r in runs] == ["succeeded"] * 2, [r.error for r in runs]
    slice_size = Catalog(settings).get("tiny4").path.stat().st_size // 2
    for run in runs:
        assert run.measurement is not None
        assert run.measurement["mode"] == "inference"
        assert run.measurement["weights_streamed_per_run"] is True
        assert run.load_ms is not None
        # Its own inference's load, not the cluster's start-up copied.
        assert run.load_ms != run.measurement["cluster"]["startup_ms"]
        assert link_total(settings, run.id) > slice_size


def test_engine_axis_groups_each_engine_with_the_same_latencies_and_prompts(
    warm_settings: Settings, test_redis: redis.Redis, smollm2: Any, models_dir: Path
) -> None:
    settings = warm_settings
    catalog = Catalog(settings)
    catalog.register(smollm2)
    spec = {
        "name": "engines",
        "engine": ["llamacpp", "dllama"],
        "model": {"llamacpp": "smollm2-135m", "dllama": "tiny4"},
        "nodes": 2,
        "latency": ["0ms", "5ms"],
        "max_tokens": 4,
        "prompts": ["Name three planets."],
    }
    sweep_id, groups = run_sweep(settings, test_redis, spec, catalog)
    runs = {r.id: r for r in runs_of(settings, sweep_id)}
    assert len(runs) == 4
    assert all(r.status == "succeeded" for r in runs.values()), [r.error for r in runs.values()]
    # One topology group (one cluster, one model load) per engine.
    assert len(groups) == 2
    assert [sorted({runs[i].engine for i in g}) for g in groups] == [["llamacpp"], ["dllama"]]
    with session_scope(settings.database_url) as s:
        assert s.get_one(Sweep, sweep_id).model_loads == 2
    # The same latency profiles and prompts for both engines.
    for engine, model in (("llamacpp", "smollm2-135m"), ("dllama", "tiny4")):
        mine = [r for r in runs.values() if r.engine == engine]
        assert {r.model for r in mine} == {model}
        assert sorted(r.latency_label for r in mine) == ["0ms", "5ms"]
        assert {r.prompt for r in mine} == {"Name three planets."}
        assert {r.measurement["mode"] for r in mine if r.measurement} == {
            "rpc" if engine == "llamacpp" else "api"
        }
    # The sweep's analysis puts the engines side by side: one group per engine and latency.
    with session_scope(settings.database_url) as s:
        records = load_records(s, sweep_id=sweep_id)
    groups_by_key = {(g.key.engine, g.key.latency) for g in group_records(records)}
    assert groups_by_key == {
        ("llamacpp", "0ms"),
        ("llamacpp", "5ms"),
        ("dllama", "0ms"),
        ("dllama", "5ms"),
    }
