"""Cluster-wide packet loss (issue 15 item 4): the ``loss`` run field and sweep axis.

``loss`` is every link's loss unless a link sets its own (as ``latency`` is every
link's profile): one rule for the value (0-50 %, per-field errors), part of the
topology and so of the fingerprint only when set, a sweep axis whose cells share a
warm cluster (a worker's nftables rules are replaced between runs), except that the
local backend keeps lossless and lossy cells apart (a local worker gets a namespace
only when its cluster starts lossy).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from edgelab.catalog import Catalog
from edgelab.cluster.spec import ClusterSpec
from edgelab.models.db import session_scope, upgrade
from edgelab.netem.loss import loss_problem, ruleset
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import ConfigError, RunConfig, parse_config
from edgelab.runs.executor import create_run
from edgelab.service import create_app
from edgelab.settings import Settings
from edgelab.sweeps.spec import expand, group_by_topology, notes, parse_spec
from edgelab.topology import Topology, resolve_topology
from edgelab.validation.fields import RUN_RULES
from edgelab.validation.values import FieldError

MODEL = "tiny-test"
LATENCY = LatencyProfile.parse("10ms", seed=0)


def resolve(**kw: object) -> Topology:
    args: dict[str, object] = {
        "devices": None,
        "links": None,
        "nodes": 3,
        "threads": 1,
        "latency": LATENCY,
    }
    args.update(kw)
    return resolve_topology(**args)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    s.models_dir.mkdir(parents=True)
    (s.models_dir / "tiny.gguf").write_bytes(b"GGUF")
    entry = {
        "name": MODEL,
        "path": str(s.models_dir / "tiny.gguf"),
        "size_bytes": 4,
        "sha256": "0" * 64,
        "architecture": "llama",
        "n_layers": 8,
        "quantization": "Q4_1",
    }
    (s.models_dir / "catalog.json").write_text(json.dumps({"version": 1, "models": [entry]}))
    upgrade(s.database_url)
    return s


@pytest.fixture
def needs_loss() -> None:
    problem = loss_problem()
    if problem is not None:
        pytest.skip(f"Docker loss is refused here before anything starts: {problem}")


def test_the_loss_rule_takes_text_and_numbers_and_names_what_is_wrong() -> None:
    rule = RUN_RULES["loss"]
    assert [rule.check(v) for v in ("2%", "0.5 %", "1", 1, 0.25, 0)] == [
        "2%", "0.5%", "1%", "1%", "0.25%", "0%",
    ]  # fmt: skip
    assert rule.from_text(" 1.5 % ") == "1.5%"
    for bad, words in (
        ("60%", "must be between 0 and 50 %, got 60 %"),
        (50.5, "must be between 0 and 50 %, got 50.5 %"),
        ("-1%", "must be a percentage between 0 and 50"),
        ("lots", "must be a percentage between 0 and 50 such as 1% or 0.5%, got 'lots'"),
        ("1%\x1c", "must be a percentage"),  # spaces only: what the OpenAPI pattern allows
        (0.001, "at most two decimals"),
        (True, "must be a number, got a boolean true"),
        (None, "must be a number, got"),
    ):
        with pytest.raises(FieldError) as info:
            rule.check(bad)
        assert words in str(info.value), bad
    schema = rule.schema()
    assert schema["type"] == ["string", "number"]
    assert re.fullmatch(schema["pattern"].strip("^$"), " 1.5 % ")
    assert (schema["minimum"], schema["maximum"], schema["default"]) == (0, 50.0, "0%")


def test_every_link_without_its_own_loss_gets_the_cluster_wide_one() -> None:
    t = resolve(loss=1.0, links={"worker1": "30ms", "worker2": "loss:0%"})
    assert t.loss_pct == 1.0
    assert not t.is_uniform
    assert t.link("worker1", LATENCY).loss_pct == 1.0  # its own delay, the cluster's loss
    assert t.link("worker2", LATENCY).loss_pct == 0.0  # turned off on this link
    assert (
        t.label == "loss 1% on every link; worker1 link: 30ms, loss 1%; worker2 link: 10ms, no loss"
    )
    # A link whose loss is the cluster-wide one is no link of its own (canonical form).
    assert resolve(loss=2.0, links={"worker1": "loss:2%"}) == resolve(loss=2.0)
    assert not resolve(loss=2.0).links
    # Edit & run gives it back: --loss 1% and only the link that differs says loss:.
    assert t.as_flags()[1] == ["worker1=30ms", "worker2=10ms,loss:0%"]
    assert Topology.from_dict(t.to_dict()) == t
    # One node has no links, so no loss: the same experiment as without it.
    assert resolve(loss=2.0, nodes=1) == Topology()


def test_loss_is_in_the_fingerprint_only_when_set() -> None:
    base = dict(prompt="p", model="m", nodes=3, threads=1, latency=LATENCY, max_tokens=8)
    old = RunConfig(**base)  # type: ignore[arg-type]
    assert RunConfig(**base, topology=resolve(loss=0.0)).fingerprint() == old.fingerprint()  # type: ignore[arg-type]
    one = RunConfig(**base, topology=resolve(loss=1.0))  # type: ignore[arg-type]
    two = RunConfig(**base, topology=resolve(loss=2.0))  # type: ignore[arg-type]
    assert len({old.fingerprint(), one.fingerprint(), two.fingerprint()}) == 3
    # A heterogeneous topology without cluster-wide loss keeps its fingerprint dict.
    assert "loss_pct" not in resolve(links={"worker1": "30ms"}).fingerprint_dict()


def test_loss_changes_on_a_warm_cluster_local_keeps_lossless_apart() -> None:
    keys: dict[str, set[str]] = {"docker": set(), "local": set()}
    for backend in keys:
        for loss in (0.0, 1.0, 2.0):
            spec = ClusterSpec("m", 3, 1, LATENCY, backend=backend, topology=resolve(loss=loss))
            keys[backend].add(spec.topology_key())
    assert len(keys["docker"]) == 1
    assert len(keys["local"]) == 2  # lossless, and lossy (1 % and 2 % share one)
    lossy = ClusterSpec("m", 3, 1, LATENCY, backend="docker", topology=resolve(loss=1.0))
    assert lossy.link(1).loss_pct == lossy.link(2).loss_pct == 1.0


def test_the_rules_replace_the_namespace_s_loss_in_one_transaction() -> None:
    two = ruleset(2.0, 50052)
    assert two.startswith("table inet edgelab_loss\ndelete table inet edgelab_loss\n")
    assert "tcp dport 50052 numgen random mod 10000 < 200 counter drop" in two
    assert ruleset(0.0, 50052) == "table inet edgelab_loss\ndelete table inet edgelab_loss\n"


def test_parse_config_names_the_loss_field(settings: Settings) -> None:
    raw = {"prompt": "p", "model": MODEL, "nodes": 3, "latency": "1ms", "max_tokens": 4}
    with pytest.raises(ConfigError) as info:
        parse_config({**raw, "loss": "70%"}, Catalog(settings))
    assert info.value.errors == {"loss": "must be between 0 and 50 %, got 70 %"}
    with pytest.raises(ConfigError) as info:
        parse_config({**raw, "loss": "1%", "links": {"worker1": "loss:90%"}}, Catalog(settings))
    assert "worker1: loss must be between 0 and 50 %, got 90 %" in info.value.errors["links"]


@pytest.mark.usefixtures("needs_loss")
def test_a_loss_sweep_groups_into_one_warm_docker_cluster(settings: Settings) -> None:
    spec = parse_spec(
        {
            "model": MODEL,
            "nodes": [1, 3],
            "backend": "docker",
            "latency": ["0ms", "10ms"],
            "loss": ["0%", "1%", "2%", "1"],
            "prompts": ["p"],
            "max_tokens": 4,
        },
        max_cells=100,
    )
    assert spec.axes["loss"] == ["0%", "1%", "2%"]  # "1" is 1%: one value, once
    cells = expand(spec, Catalog(settings))
    # 3 nodes: 2 latencies x 3 losses; 1 node: no links, so one cell.
    assert len(cells) == 2 * 3 + 1
    three = [c for c in cells if c.config.nodes == 3]
    assert sorted({c.config.topology.loss_pct for c in three}) == [0.0, 1.0, 2.0]
    assert len({c.config.fingerprint() for c in three}) == 6
    assert len(group_by_topology(three)) == 1  # one model load for every loss
    assert any("latency, bandwidth or loss" in note for note in notes(spec))


@pytest.mark.usefixtures("needs_loss")
def test_api_form_and_json_carry_the_loss(settings: Settings) -> None:
    app = create_app(settings, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    client: FlaskClient = app.test_client()
    raw = {"prompt": "p", "model": MODEL, "nodes": 3, "latency": "10ms", "max_tokens": 4}
    config, _ = parse_config(
        {**raw, "backend": "docker", "loss": "1%", "links": {"worker2": "loss:0%"}},
        Catalog(settings),
    )
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id
    api = client.get(f"/api/runs/{run_id}").get_json()
    assert api["config"]["loss"] == "1%"
    losses = {link["node"]: link["loss_pct"] for link in api["config"]["topology"]["links"]}
    assert losses == {"worker1": 1.0, "worker2": 0.0}
    listed = client.get("/api/runs?topology=loss+1%25").get_json()
    assert [r["id"] for r in listed["runs"]] == [run_id]
    form = client.get(f"/runs/new?from={run_id}").get_data(as_text=True)
    assert 'name="loss"' in form
    assert 'value="1%"' in form
    assert "worker2=10ms,loss:0%" in form
    # Compare has the loss as a configuration row of its own, highlighted when it differs.
    config_two, _ = parse_config({**raw, "backend": "docker", "loss": 2}, Catalog(settings))
    with session_scope(settings.database_url) as s:
        other = create_run(s, config_two).id
    html = client.get(f"/compare?ids={run_id}&ids={other}").get_data(as_text=True)
    row = html[html.index('data-field="loss"') - 30 :]
    row = row[: row.index("</tr>")]
    assert 'class="diff"' in row
    assert "<td>1%</td><td>2%</td>" in row
    # The sweep form's loss axis, counted by the same parser a submit uses.
    count = client.get(
        "/sweeps/count",
        query_string={
            "model": MODEL, "nodes": "3", "latency": "0ms", "loss": "0%, 1%, 2%",
            "max_tokens": "4", "prompts": "p", "backend": "docker", "engine": "llamacpp",
        },
    ).get_json()  # fmt: skip
    assert count["errors"] == {}
    assert (count["axes"]["loss"], count["cells"]) == (3, 3)
    bad = client.get(
        "/sweeps/count",
        query_string={"model": MODEL, "nodes": "3", "loss": "0%, 80%", "prompts": "p"},
    ).get_json()
    assert bad["errors"]["loss"] == "80%: must be between 0 and 50 %, got 80 %"
    # OpenAPI documents the run field and the sweep axis from the same rule.
    doc = client.get("/api/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    assert schemas["RunConfig"]["properties"]["loss"]["maximum"] == 50.0
    assert "loss" in schemas["SweepSpec"]["properties"]


def test_a_topology_file_gives_the_loss_and_the_flag_wins(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from edgelab.cli import main

    monkeypatch.setenv("EDGELAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EDGELAB_MODELS_DIR", str(settings.models_dir))
    lab = tmp_path / "lab.yaml"
    lab.write_text("nodes: 3\nloss: 70%\nlinks: {worker2: 30ms}\n")
    argv = ["run", "--model", MODEL, "--max-tokens", "4", "--topology", str(lab)]
    # Refused before anything starts, so which loss was read shows in the message.
    from_file = CliRunner().invoke(main, argv)
    assert from_file.exit_code != 0
    assert "--loss: must be between 0 and 50 %, got 70 %" in from_file.output
    flag = CliRunner().invoke(main, [*argv, "--loss", "60"])
    assert "--loss: must be between 0 and 50 %, got 60 %" in flag.output
