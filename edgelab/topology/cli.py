"""``edgelab devices ...``: list, add and remove device presets and named topologies."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgelab.cli import load_settings


def _path() -> Path:
    return load_settings().devices_path


@click.group("devices")
def devices_group() -> None:
    """Device presets (--device NODE=PRESET) and named topologies, in devices.yaml beside the
    model catalog. The shipped examples are NOT calibrated to real hardware."""


@devices_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print presets and topologies as JSON.")
def list_command(as_json: bool) -> None:
    """Show every preset and named topology."""
    from edgelab.topology.presets import NOT_CALIBRATED, load_book
    from edgelab.topology.spec import TopologyError

    try:
        book = load_book(_path())
    except TopologyError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            json.dumps(
                {"path": str(book.path), "presets": book.presets, "topologies": book.topologies},
                indent=2,
            )
        )
        return
    where = book.path if book.from_file else f"built-in examples ({book.path} does not exist yet)"
    click.echo(f"device presets from {where}:")
    for name, values in sorted(book.presets.items()):
        shown = ", ".join(f"{k}: {v}" for k, v in values.items())
        click.echo(f"  {name:<16} {shown}")
    click.echo("named topologies:")
    for name, devices in sorted(book.topologies.items()):
        shown = ", ".join(f"{k}={v}" for k, v in devices.items()) or "(every node the same)"
        click.echo(f"  {name:<16} {shown}")
    click.echo(NOT_CALIBRATED)


@devices_group.command("add")
@click.argument("name")
@click.argument("values")
@click.option(
    "--topology",
    "is_topology",
    is_flag=True,
    help="VALUES is a named topology: NODE=PRESET;NODE=key:value,... ",
)
def add_command(name: str, values: str, is_topology: bool) -> None:
    """Add or replace preset NAME, e.g. `edgelab devices add slow cpus:0.3,threads:1,mem:1g`.

    With --topology, NAME is a topology for the sweep axis `devices`, e.g.
    `edgelab devices add --topology two-slow "worker1=slow;worker2=slow"`.
    """
    import re

    from edgelab.netem.profile import LatencyProfile
    from edgelab.topology.presets import add_preset, add_topology, load_book
    from edgelab.topology.spec import parse_assignments, resolve_topology, split_items

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise click.ClickException(f"name {name!r}: letters, digits, '.', '_', '-' (at most 64)")
    path = _path()
    try:
        if is_topology:
            devices = parse_assignments([v for v in values.split(";") if v.strip()], "devices")
            book = load_book(path)
            nodes = 1 + max(
                (int(n[6:]) for n in devices if n.startswith("worker") and n[6:].isdigit()),
                default=0,
            )
            resolve_topology(
                devices=devices,
                links=None,
                nodes=nodes,
                threads=1,
                latency=LatencyProfile.parse("0ms"),
                presets=book.presets,
            )
            add_topology(path, name, devices)
        else:
            bare, pairs = split_items(values)
            if bare:
                raise ValueError(
                    f"give key:value pairs (threads, cpus, mem), got {', '.join(bare)}"
                )
            add_preset(path, name, pairs)
    except (ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"saved {'topology' if is_topology else 'preset'} {name} in {path}")


@devices_group.command("remove")
@click.argument("name")
def remove_command(name: str) -> None:
    """Remove a preset or named topology."""
    from edgelab.topology.presets import remove_preset

    path = _path()
    try:
        remove_preset(path, name)
    except KeyError:
        raise click.ClickException(
            f"no preset or topology named {name!r} (see `edgelab devices list`)"
        ) from None
    click.echo(f"removed {name} from {path}")
