"""Sweep specs (parsing, limits, grid expansion, topology groups) and sweep state in SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from edgelab.catalog import Catalog
from edgelab.models import Run
from edgelab.models.db import session_scope
from edgelab.settings import Settings
from edgelab.store.store import Store
from edgelab.sweeps import SpecError, control, expand, load_spec_text, parse_spec
from edgelab.sweeps.spec import execution_order, group_by_topology, notes

SPEC_YAML = """
name: grid
model: tiny
nodes: [2, 3]
threads: 1
latency: ["0ms", "20ms", "10ms..30ms"]
max_tokens: 8
prompts: ["Hello", "Name three planets."]
repetitions: 2
"""


def test_yaml_and_json_give_the_same_spec() -> None:
    from_yaml = parse_spec(load_spec_text(SPEC_YAML), max_cells=1000)
    as_json = (
        '{"name": "grid", "model": "tiny", "nodes": [2, 3], "threads": 1, '
        '"latency": ["0ms", "20ms", "10ms..30ms"], "max_tokens": 8, '
        '"prompts": ["Hello", "Name three planets."], "repetitions": 2}'
    )
    assert parse_spec(load_spec_text(as_json), max_cells=1000) == from_yaml
    assert from_yaml.total_cells == 2 * 3 * 2 * 2


def test_full_grid_is_expanded_repetitions_outermost(tiny_catalog: Catalog) -> None:
    spec = parse_spec(load_spec_text(SPEC_YAML), max_cells=1000)
    cells = expand(spec, tiny_catalog)
    assert len(cells) == 24
    keys = {c.key for c in cells}
    assert len(keys) == 24  # every cell distinct: fingerprint + repetition
    assert [c.config.repetition for c in cells[:12]] == [0] * 12
    assert {c.config.latency.label for c in cells} == {"0ms", "20ms", "10ms..30ms"}
    assert {c.config.prompt for c in cells} == {"Hello", "Name three planets."}
    # the same configuration repeated shares a fingerprint (resume matches on it)
    assert cells[0].config.fingerprint() == cells[12].config.fingerprint()


def test_cells_group_by_topology_not_latency(tiny_catalog: Catalog) -> None:
    spec = parse_spec(load_spec_text(SPEC_YAML), max_cells=1000)
    groups = group_by_topology(expand(spec, tiny_catalog))
    assert len(groups) == 2  # nodes 2 and 3; latency, prompts and bandwidth share a cluster
    assert sorted(len(g) for g in groups) == [12, 12]
    assert {c.config.nodes for c in groups[0]} == {2}


def test_too_many_cells_is_refused_with_the_count_and_the_limit() -> None:
    data = {"prompts": ["x"], "nodes": [1, 2, 3], "latency": ["0ms", "5ms"], "repetitions": 5}
    with pytest.raises(SpecError) as info:
        parse_spec(data, max_cells=20)
    message = info.value.errors["spec"]
    assert "30 cells" in message
    assert "limit of 20" in message
    assert "EDGELAB_MAX_SWEEP_CELLS" in message
    assert parse_spec(data, max_cells=30).total_cells == 30


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"prompts": ["x"], "nodes": [1, 0]}, "nodes"),
        ({"prompts": ["x"], "latency": ["0ms", "fast"]}, "latency"),
        ({"prompts": ["x"], "max_tokens": 5000}, "max_tokens"),
        ({"prompts": ["x"], "model": "nope"}, "model"),
        ({"prompts": [""]}, "prompts"),
        ({"prompts": ["x"], "bandwidth": "lots"}, "bandwidth"),
        ({"prompts": ["x"], "nodes": 9}, "nodes"),  # more nodes than the model's 4 layers
    ],
)
def test_bad_values_are_reported_per_field(
    tiny_catalog: Catalog, data: dict[str, object], field: str
) -> None:
    # Values are checked by their field's rule when the spec is parsed; rules that join
    # fields (model and nodes) when the grid is expanded.
    with pytest.raises(SpecError) as info:
        expand(parse_spec({"model": "tiny", **data}, max_cells=1000), tiny_catalog)
    assert field in info.value.errors


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"nodes": [1]}, "prompts"),
        ({"prompts": ["x"], "repetitions": 0}, "repetitions"),
        ({"prompts": ["x"], "repetitions": "two"}, "repetitions"),
        ({"prompts": ["x"], "nodez": [1]}, "nodez"),
        ({"prompts": ["x"], "nodes": []}, "nodes"),
    ],
)
def test_bad_shapes_are_reported_per_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(data, max_cells=1000)
    assert field in info.value.errors


def test_spec_text_that_is_not_a_mapping_is_refused() -> None:
    for text in ("- 1\n- 2\n", "nodes: [1, 2", "just words"):
        with pytest.raises(SpecError):
            load_spec_text(text)


def _make_sweep(settings: Settings, catalog: Catalog) -> tuple[int, list[int]]:
    spec = parse_spec(
        {
            "model": "tiny",
            "nodes": 2,
            "prompts": ["x"],
            "latency": ["0ms", "20ms"],
            "repetitions": 2,
            "order": "grid",
        },
        max_cells=1000,
    )
    cells = expand(spec, catalog)
    with session_scope(settings.database_url) as s:
        sweep = control.create_sweep(s, spec, cells)
        ids = list(s.scalars(select(Run.id).where(Run.sweep_id == sweep.id).order_by(Run.id)))
        return sweep.id, ids


def _set(settings: Settings, run_id: int, status: str) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(Run).where(Run.id == run_id).values(status=status))


def test_progress_and_status_follow_the_cells(
    tiny_settings: Settings, tiny_catalog: Catalog
) -> None:
    store = Store(tiny_settings.database_url)
    sweep_id, ids = _make_sweep(tiny_settings, tiny_catalog)
    with session_scope(tiny_settings.database_url) as s:
        assert control.progress(s, sweep_id)["queued"] == 4
    assert store.refresh_sweep(sweep_id) == "queued"
    assert len(store.queued_groups(sweep_id)) == 1  # one topology
    _set(tiny_settings, ids[0], "succeeded")
    _set(tiny_settings, ids[1], "running")
    with session_scope(tiny_settings.database_url) as s:
        p = control.progress(s, sweep_id)
        assert (p["succeeded"], p["running"], p["queued"], p["done"]) == (1, 1, 2, 1)
    assert store.refresh_sweep(sweep_id) == "running"
    for rid in ids[1:]:
        _set(tiny_settings, rid, "succeeded")
    assert store.refresh_sweep(sweep_id) == "succeeded"
    assert store.get_sweep(sweep_id).finished_at is not None


def test_cancel_then_resume_requeues_only_missing_cells(
    tiny_settings: Settings, tiny_catalog: Catalog
) -> None:
    store = Store(tiny_settings.database_url)
    sweep_id, ids = _make_sweep(tiny_settings, tiny_catalog)
    _set(tiny_settings, ids[0], "succeeded")
    _set(tiny_settings, ids[1], "running")
    running = store.cancel_sweep(sweep_id)
    assert running == [ids[1]]  # the executing run is flagged, not flipped in the DB
    with session_scope(tiny_settings.database_url) as s:
        statuses = dict(s.execute(select(Run.id, Run.status).where(Run.sweep_id == sweep_id)).all())
    assert statuses == {
        ids[0]: "succeeded",
        ids[1]: "running",
        ids[2]: "cancelled",
        ids[3]: "cancelled",
    }
    assert store.get_sweep(sweep_id).status == "cancelled"
    assert store.end_cancelled(ids[1], "cancelled")  # what the executor does on the flag
    assert store.refresh_sweep(sweep_id) == "cancelled"
    result = control.resume(store, sweep_id, tiny_catalog, tiny_settings)
    assert len(result.created) == 3  # the succeeded cell is not run again
    assert sorted(result.requeue) == sorted(result.created)
    with session_scope(tiny_settings.database_url) as s:
        p = control.progress(s, sweep_id)
        assert (p["total"], p["succeeded"], p["queued"], p["cancelled"]) == (4, 1, 3, 0)
    assert store.get_sweep(sweep_id).status == "running"
    # a second resume creates nothing new: the cells are queued already
    again = control.resume(store, sweep_id, tiny_catalog, tiny_settings)
    assert again.created == []
    assert sorted(again.requeue) == sorted(result.created)


def test_model_loads_add_up(tiny_settings: Settings, tiny_catalog: Catalog) -> None:
    store = Store(tiny_settings.database_url)
    sweep_id, _ids = _make_sweep(tiny_settings, tiny_catalog)
    store.count_model_load(sweep_id)
    store.count_model_load(sweep_id)
    assert store.get_sweep(sweep_id).model_loads == 2


@pytest.fixture
def two_engine_catalog(
    tmp_path: Path, tiny_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> Catalog:
    """``tiny`` (GGUF) plus ``dl`` (a synthetic distributed-llama model), a fake dllama build."""
    from edgelab.engines.dllama.synthetic import write_synthetic_model

    for name in ("dllama", "dllama-api"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(tmp_path / "dllama"))
    monkeypatch.delenv("EDGELAB_DLLAMA_API_BIN", raising=False)
    model, _ = write_synthetic_model(tmp_path / "dl")
    tiny_catalog.add(model, name="dl")
    return tiny_catalog


ENGINES_SPEC = {
    "name": "engines",
    "engine": ["llamacpp", "dllama"],
    "model": {"llamacpp": "tiny", "dllama": "dl"},
    "nodes": 2,
    "latency": ["0ms", "20ms"],
    "prompts": ["Hello"],
    "repetitions": 2,
}


def test_engine_axis_gives_each_engine_its_model_and_its_own_topology_group(
    two_engine_catalog: Catalog,
) -> None:
    spec = parse_spec(ENGINES_SPEC, max_cells=1000)
    assert spec.total_cells == 2 * 2 * 2
    # The stored spec re-expands to the same sweep (resume).
    assert parse_spec(spec.to_dict(), max_cells=1000) == spec
    cells = expand(spec, two_engine_catalog)
    assert [(c.config.engine, c.config.model, c.config.latency.label) for c in cells[:4]] == [
        ("llamacpp", "tiny", "0ms"),
        ("llamacpp", "tiny", "20ms"),
        ("dllama", "dl", "0ms"),
        ("dllama", "dl", "20ms"),
    ]
    groups = group_by_topology(cells)
    assert [sorted({c.config.engine for c in g}) for g in groups] == [["llamacpp"], ["dllama"]]
    assert [len(g) for g in groups] == [4, 4]


def test_engine_axis_refuses_mismatched_models_naming_engine_and_fix(
    two_engine_catalog: Catalog,
) -> None:
    # A flat model list under two engines: every mismatched cell is refused, per field.
    flat = {**ENGINES_SPEC, "model": ["tiny", "dl"]}
    with pytest.raises(SpecError) as info:
        expand(parse_spec(flat, max_cells=1000), two_engine_catalog)
    assert info.value.errors == {
        "model": "engine llamacpp, dl: dl is a distributed-llama (.m) model, which engine "
        "llamacpp cannot run; run it with engine dllama (give each engine its model: "
        "model: {engine: model, ...})"
    }
    # A mapping that misses an engine or names one the sweep does not run.
    with pytest.raises(SpecError) as info:
        parse_spec({**ENGINES_SPEC, "model": {"llamacpp": "tiny", "vllm": "x"}}, max_cells=10)
    assert info.value.errors == {
        "model": "a model per engine (vllm not in the sweep's engines; no model for dllama): "
        "give one entry for each of llamacpp, dllama"
    }
    # The wrong model in the mapping: refused before anything starts, naming the engine.
    with pytest.raises(SpecError) as info:
        expand(
            parse_spec({**ENGINES_SPEC, "model": {"llamacpp": "dl", "dllama": "dl"}}, max_cells=10),
            two_engine_catalog,
        )
    assert info.value.errors["model"] == (
        "engine llamacpp: dl is a distributed-llama (.m) model, which engine llamacpp "
        "cannot run; run it with engine dllama"
    )


# --- issue 12 item 5: 1-node collapse, warm-ups, seeded order --------------------------


def test_one_node_cells_that_differ_only_in_latency_or_bandwidth_run_once(
    tiny_catalog: Catalog,
) -> None:
    spec = parse_spec(
        {
            "model": "tiny",
            "prompts": ["x"],
            "nodes": [1, 2],
            "latency": ["0ms", "5ms", "20ms"],
            "bandwidth": [None, "100mbit"],
            "repetitions": 2,
        },
        max_cells=1000,
    )

    cells = expand(spec, tiny_catalog)

    one = [c for c in cells if c.config.nodes == 1]
    assert len(one) == 2  # one configuration per repetition, not 6
    assert {c.config.latency.label for c in one} == {"0ms"}
    assert {c.config.latency.bandwidth_bps for c in one} == {None}
    assert len([c for c in cells if c.config.nodes == 2]) == 12
    assert any("1-node cells cannot differ" in n for n in notes(spec))


def test_cells_run_in_a_seeded_random_order_within_each_topology_and_repetition(
    tiny_catalog: Catalog,
) -> None:
    data = {
        "model": "tiny",
        "prompts": ["x"],
        "nodes": [2, 3],
        "latency": [f"{d}ms" for d in range(8)],
        "repetitions": 2,
    }
    spec = parse_spec(data, max_cells=1000)
    cells = expand(spec, tiny_catalog)

    order = execution_order(spec, cells)

    assert order == execution_order(parse_spec(data, max_cells=1000), cells)  # reproducible
    assert sorted(c.index for c in order) == [c.index for c in cells]
    nodes = [c.config.nodes for c in order]
    assert nodes == [2] * 16 + [3] * 16  # topology groups stay together
    reps = [c.config.repetition for c in order[:16]]
    assert reps == [0] * 8 + [1] * 8  # every repetition pass covers each cell once
    labels = [c.config.latency.label for c in order[:8]]
    assert sorted(labels) == sorted(f"{d}ms" for d in range(8))
    assert labels != [f"{d}ms" for d in range(8)]  # shuffled (fixed seed: not by chance)
    other_seed = parse_spec({**data, "order_seed": 7}, max_cells=1000)
    assert execution_order(other_seed, cells) != order
    grid = parse_spec({**data, "order": "grid"}, max_cells=1000)
    assert execution_order(grid, cells) == cells


def test_warmup_runs_come_first_in_their_group_and_are_not_cells(
    tiny_settings: Settings, tiny_catalog: Catalog
) -> None:
    spec = parse_spec(
        {
            "model": "tiny",
            "prompts": ["x"],
            "nodes": [2, 3],
            "latency": ["0ms", "5ms"],
            "warmup": 1,
        },
        max_cells=1000,
    )
    cells = expand(spec, tiny_catalog)
    with session_scope(tiny_settings.database_url) as s:
        sweep_id = control.create_sweep(s, spec, cells).id
    store = Store(tiny_settings.database_url)
    groups = store.queued_groups(sweep_id)
    with session_scope(tiny_settings.database_url) as s:
        warm = list(s.scalars(select(Run).where(Run.sweep_id == sweep_id, Run.warmup.is_(True))))
        p = control.progress(s, sweep_id)
        detail = control.sweep_detail(s, sweep_id)
    assert sorted(r.nodes for r in warm) == [2, 3]
    assert [g[0] for g in groups] == sorted(r.id for r in warm)  # each group starts warm
    assert [len(g) for g in groups] == [3, 3]
    assert p["total"] == 4
    assert len(detail["cells"]) == 4
    assert [w["nodes"] for w in detail["warmups"]] == [2, 3]
    assert any("warm-up" in n for n in detail["notes"])
    # Resume after a cancel: new warm-ups for the topologies that run again.
    store.cancel_sweep(sweep_id)
    result = control.resume(store, sweep_id, tiny_catalog, tiny_settings)
    with session_scope(tiny_settings.database_url) as s:
        warm_again = list(
            s.scalars(
                select(Run).where(
                    Run.sweep_id == sweep_id, Run.warmup.is_(True), Run.status == "queued"
                )
            )
        )
    assert len(result.created) == 4 + 2
    assert len(warm_again) == 2


def test_bad_sweep_hygiene_fields_are_named() -> None:
    for field, value in (("warmup", -1), ("warmup", 99), ("order", "sorted"), ("order_seed", "x")):
        with pytest.raises(SpecError) as info:
            parse_spec({"prompts": ["x"], field: value}, max_cells=1000)
        assert field in info.value.errors
