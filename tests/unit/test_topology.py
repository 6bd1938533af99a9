"""The topology description: parsing, canonical form, fingerprints, presets, traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgelab.cluster.spec import ClusterSpec
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import RunConfig
from edgelab.topology import Topology, TopologyError, resolve_topology
from edgelab.topology.linktrace import parse_trace
from edgelab.topology.netns import netns_problem
from edgelab.topology.presets import EXAMPLE_PRESETS, add_preset, load_book, remove_preset
from edgelab.topology.spec import parse_assignments
from edgelab.topology.support import topology_problems


def resolve(**kw: object) -> Topology:
    args: dict[str, object] = {
        "devices": None,
        "links": None,
        "nodes": 3,
        "threads": 1,
        "latency": LatencyProfile.parse("10ms", seed=0),
        "presets": EXAMPLE_PRESETS,
    }
    args.update(kw)
    return resolve_topology(**args)  # type: ignore[arg-type]


def test_cli_syntax_and_json_give_the_same_topology() -> None:
    text = resolve(
        devices={"worker2": "cpus:0.25,threads:1"},
        links={"worker2": "30ms,bandwidth:20mbit", "worker1": "1ms"},
    )
    obj = resolve(
        devices={"worker2": {"cpus": 0.25}},
        links={
            "worker2": {"latency": "30ms", "bandwidth": "20mbit"},
            "worker1": {"latency": "1ms"},
        },
    )
    assert text == obj
    assert list(text.links) == ["worker1", "worker2"]
    assert text.links["worker2"].profile.label == "30ms@20mbit"
    assert text.devices["worker2"].values() == {"cpus": 0.25}  # threads 1 = the default


def test_link_without_profile_takes_the_cluster_latency() -> None:
    t = resolve(links={"worker1": "bandwidth:5mbit"}, latency=LatencyProfile.parse("20ms@1mbit"))
    assert t.links["worker1"].profile.label == "20ms@5mbit"
    t = resolve(links={"worker1": "5ms"}, latency=LatencyProfile.parse("20ms", bandwidth="1mbit"))
    assert t.links["worker1"].profile.label == "5ms@1mbit"  # the cluster-wide rate stays


def test_defaults_spelled_out_are_the_uniform_cluster_with_its_old_fingerprint() -> None:
    t = resolve(devices={"worker1": {"threads": 1}}, links={"worker1": "10ms"})
    assert t.is_uniform
    base = dict(
        prompt="p",
        model="m",
        nodes=3,
        threads=1,
        latency=LatencyProfile.parse("10ms", seed=0),
        max_tokens=8,
    )
    old = RunConfig(**base)  # type: ignore[arg-type]
    assert RunConfig(**base, topology=t).fingerprint() == old.fingerprint()  # type: ignore[arg-type]
    # Pinned: the fingerprint a uniform cluster had before topologies existed.
    assert old.fingerprint() == "e620964e8c3ca59bf98354d1d9876ae6088128c826d759a9204928391086f999"
    other = RunConfig(**base, topology=resolve(devices={"worker2": "slow"}))  # type: ignore[arg-type]
    assert other.fingerprint() != old.fingerprint()


def test_bad_input_is_named_per_field() -> None:
    with pytest.raises(TopologyError) as info:
        resolve(
            devices={"worker5": "slow", "gpu": "cpus:1", "root": "cpus:999", "worker1": "fast"},
            links={"root": "1ms", "worker2": "loss:60%", "worker1": "1ms,speed:2"},
        )
    devices, links = info.value.errors["devices"], info.value.errors["links"]
    assert "worker5 does not exist" in devices
    assert "root, worker1, worker2" in devices
    assert "unknown node name 'gpu'" in devices
    assert "cpus 999 is above this host's" in devices
    assert "unknown device preset 'fast'" in devices
    assert "root has no link" in links
    assert "loss must be between 0 and 50 %, got 60 %" in links
    assert "unknown key(s) speed" in links


def test_trace_errors_name_the_line(tmp_path: Path) -> None:
    good = parse_trace("offset_s,delay_ms,bandwidth\n0,10,20mbit\n0.5,30\n")
    assert [p.delay_ms for p in good] == [10.0, 30.0]
    with pytest.raises(ValueError, match="line 3: offset and delay must be numbers"):
        parse_trace("0,10\n# comment\n1,abc\n")
    bad = tmp_path / "t.csv"
    bad.write_text("0,10\n0.5,5\n0.2,7\n")
    with pytest.raises(TopologyError, match="line 3: offsets must increase"):
        resolve(links={"worker1": f"trace:{bad}"})


def test_loss_on_the_local_backend_is_refused_exactly_when_namespaces_cannot_be_made() -> None:
    # Both refusals (not root, no nft) are run for real in tests/unit/test_netns.py.
    t = resolve(links={"worker1": "loss:2%"})
    assert t.links["worker1"].loss_pct == 2.0
    problem = netns_problem()
    found = topology_problems(t, "local")
    if problem is None:
        assert found == {}
    else:
        assert found["links"].startswith("worker1: packet loss cannot be applied")
        assert problem in found["links"]
        assert "--backend docker" in found["links"]


def test_a_node_given_twice_on_the_command_line_gets_both_values() -> None:
    links = parse_assignments(["worker2=30ms", "worker1=1ms", "worker1=loss:2%"], "link")
    assert links == {"worker2": "30ms", "worker1": "1ms,loss:2%"}
    merged = resolve(links=links)
    assert merged.links["worker1"].loss_pct == 2.0
    assert merged.links["worker1"].profile.delay_ms == 1.0
    assert parse_assignments(["worker2=slow", "worker2=cpus:0.25"], "device") == {
        "worker2": "slow,cpus:0.25"
    }
    with pytest.raises(TopologyError) as info:
        parse_assignments(["worker1=1ms", "worker1=5ms"], "link")
    assert info.value.errors == {
        "link": "worker1 is given twice with a profile (1ms and 5ms); give one"
    }
    with pytest.raises(TopologyError) as info:
        parse_assignments(["worker1=loss:1%", "worker1=5ms,loss:2%"], "link")
    assert info.value.errors == {"link": "worker1: loss is given twice (1% and 2%); give one"}


def test_cluster_key_ignores_link_delays_but_not_devices() -> None:
    lat = LatencyProfile.parse("0ms", seed=0)
    a = ClusterSpec("m", 3, 1, lat, topology=resolve(links={"worker1": "1ms"}))
    b = ClusterSpec("m", 3, 1, lat, topology=resolve(links={"worker1": "30ms"}))
    c = ClusterSpec("m", 3, 1, lat, topology=resolve(devices={"worker1": "slow"}))
    assert a.topology_key() == b.topology_key() != c.topology_key()
    assert a.link_profile(1).delay_ms == 1.0
    assert a.link_profile(2).delay_ms == 0.0
    assert a.link_profile(1).seed != a.link_profile(2).seed


def test_topology_round_trips_through_its_dict() -> None:
    t = resolve(devices={"worker2": "slow"}, links={"worker1": "5ms/1ms"})
    assert Topology.from_dict(t.to_dict()) == t
    assert Topology.from_dict(t.to_dict()).devices["worker2"].preset == "slow"


def test_presets_file_add_remove(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    assert not load_book(path).from_file
    assert "slow" in load_book(path).presets
    add_preset(path, "pi", {"cpus": "0.5", "threads": "1", "mem": "1g"})
    book = load_book(path)
    assert book.from_file
    assert book.presets["pi"] == {"cpus": 0.5, "threads": 1, "mem": "1g"}
    assert "NOT calibrated" in path.read_text()
    remove_preset(path, "pi")
    assert "pi" not in load_book(path).presets
    with pytest.raises(ValueError, match="unknown key"):
        add_preset(path, "x", {"speed": 3})


def test_run_page_picture_draws_every_node_and_link() -> None:
    from edgelab.service.web.cluster_svg import cluster_svg
    from edgelab.topology.spec import cluster_view

    latency = LatencyProfile.parse("10ms", seed=0)
    t = resolve(devices={"worker2": "cpus:0.25"}, links={"worker2": "30ms,loss:2%"})
    run = {
        "config": {"topology": cluster_view(3, 1, latency, t)},
        "provenance": {"node_limits": {"worker2": {"threads": 1, "cpus": 0.25, "mem": None}}},
        "links": [
            {"link": "root<->worker2", "bytes_up": 1000, "bytes_down": 24, "round_trips_decode": 7}
        ],
        "samples": [{"node": "worker2", "cpu_percent": 24.6}],
    }
    svg = str(cluster_svg(run))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    for node in ("root", "worker1", "worker2"):
        assert f'data-node="{node}"' in svg
    assert svg.count('class="link"') == 2
    assert "30ms, loss 2 %" in svg
    assert ">10ms<" in svg
    assert "applied: 0.25 CPU" in svg
    assert "peak CPU 25 %" in svg
    assert "7 round trips" in svg


def test_devices_links_and_backend_are_sweep_axes(tmp_path: Path) -> None:
    from edgelab.catalog import Catalog
    from edgelab.catalog.info import ModelInfo
    from edgelab.sweeps.spec import SpecError, expand, group_by_topology, parse_spec

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    catalog = Catalog(path=tmp_path / "catalog.json", models_dir=tmp_path)
    catalog.register(
        ModelInfo(
            name="m",
            path=gguf,
            size_bytes=1,
            sha256="0" * 64,
            architecture="llama",
            n_layers=30,
            quantization="q4",
            format="gguf",
        )
    )
    spec = parse_spec(
        {
            "model": "m",
            "nodes": 3,
            "devices": ["uniform", "one-slow-worker", {"worker2": "cpus:0.5"}],
            "latency": ["0ms", "10ms"],
            "links": [None, {"worker2": "30ms"}],
            "backend": ["local", "docker"],
            "prompts": ["p"],
            "max_tokens": 4,
        },
        max_cells=100,
    )
    cells = expand(spec, catalog)
    assert len(cells) == 3 * 2 * 2 * 2
    # Link delays and the latency change on a warm cluster; devices and backends do not.
    assert len(group_by_topology(cells)) == 3 * 2
    assert {c.config.topology.name for c in cells} == {"uniform", "one-slow-worker", None}
    slow = next(c for c in cells if c.config.topology.name == "one-slow-worker")
    assert slow.config.topology.devices["worker1"].cpus == 0.3
    assert len({c.config.fingerprint() for c in cells}) == len(cells)
    with pytest.raises(SpecError) as info:
        expand(
            parse_spec(
                {"model": "m", "nodes": 2, "devices": {"worker2": "slow"}, "prompts": ["p"]},
                max_cells=10,
            ),
            catalog,
        )
    assert "worker2 does not exist" in info.value.errors["devices"]


def test_devices_cli_lists_adds_and_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from edgelab.cli import main

    monkeypatch.setenv("EDGELAB_MODELS_DIR", str(tmp_path))
    runner = CliRunner()
    listed = runner.invoke(main, ["devices", "list"])
    assert listed.exit_code == 0, listed.output
    assert "slow" in listed.output
    assert "NOT calibrated" in listed.output
    added = runner.invoke(main, ["devices", "add", "pi", "cpus:0.5,threads:1,mem:1g"])
    assert added.exit_code == 0, added.output
    assert load_book(tmp_path / "devices.yaml").presets["pi"]["cpus"] == 0.5
    bad = runner.invoke(main, ["devices", "add", "x", "cpus:99"])
    assert bad.exit_code != 0
    assert "above this host's" in bad.output
    topo = runner.invoke(main, ["devices", "add", "--topology", "two-pi", "worker1=pi;worker2=pi"])
    assert topo.exit_code == 0, topo.output
    assert load_book(tmp_path / "devices.yaml").topologies["two-pi"] == {
        "worker1": "pi",
        "worker2": "pi",
    }
    assert runner.invoke(main, ["devices", "remove", "pi"]).exit_code == 0
    assert runner.invoke(main, ["devices", "remove", "pi"]).exit_code != 0


def test_run_cli_topology_file_and_flags_merge(tmp_path: Path) -> None:
    from edgelab.runs.cli import topology_options

    (tmp_path / "t.csv").write_text("0,10\n")
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        "nodes: 3\ndevices: {worker1: slow, worker2: 'cpus:0.5'}\n"
        "links: {worker2: '30ms,trace:t.csv'}\n"
    )
    out = topology_options(("worker2=cpus:0.25",), ("worker1=1ms",), lab)
    assert out["nodes"] == 3
    assert out["devices"] == {"worker1": "slow", "worker2": "cpus:0.25"}
    assert out["links"]["worker1"] == "1ms"
    assert out["links"]["worker2"] == f"30ms,trace:{tmp_path / 't.csv'}"
    with pytest.raises(TopologyError, match="expected NODE=VALUE"):
        topology_options(("worker2",), (), None)


def test_a_named_topology_leaves_out_nodes_the_cluster_does_not_have() -> None:
    named = {"one-slow-worker": {"worker1": "slow"}}
    alone = resolve(devices="one-slow-worker", nodes=1, topologies=named)
    assert alone.is_uniform
    assert alone.name == "one-slow-worker"
    assert (
        resolve(devices="one-slow-worker", nodes=2, topologies=named).devices["worker1"].cpus == 0.3
    )
    with pytest.raises(TopologyError, match="worker1 does not exist"):
        resolve(devices={"worker1": "slow"}, nodes=1)  # an explicit map stays strict
