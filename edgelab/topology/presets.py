"""Device presets and named topologies: a user-editable YAML file beside the model catalog.

The file is ``<models dir>/devices.yaml`` (``Settings.devices_path``)::

    presets:                       # --device worker2=slow
      slow: {cpus: 0.3, threads: 1, mem: 1g}
    topologies:                    # devices: one-slow-worker (a sweep axis value)
      uniform: {}
      one-slow-worker: {worker1: slow}

Until a user changes it, edgelab uses the examples below (``edgelab devices add``
writes the file, starting from them). The examples are NOT calibrated to any real
hardware: they are round numbers to start from; measure your devices and edit them.
A run stores the values a preset had when it was submitted, not the preset's name
alone, so editing the file never changes a stored run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgelab.topology.spec import DEVICE_KEYS, TopologyError, _device

NOT_CALIBRATED = (
    "These example presets are NOT calibrated to real hardware: they are round numbers "
    "to start from. Measure your devices and edit them."
)

EXAMPLE_PRESETS: dict[str, dict[str, Any]] = {
    "slow": {"cpus": 0.3, "threads": 1, "mem": "1g"},
    "quarter-core": {"cpus": 0.25, "threads": 1},
    "half-core": {"cpus": 0.5, "threads": 1, "mem": "2g"},
    "one-core": {"cpus": 1.0, "threads": 1, "mem": "4g"},
}
EXAMPLE_TOPOLOGIES: dict[str, dict[str, Any]] = {
    "uniform": {},
    "one-slow-worker": {"worker1": "slow"},
}


@dataclass(frozen=True)
class DeviceBook:
    """The presets and named topologies in effect, and where they come from."""

    path: Path
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    topologies: dict[str, dict[str, Any]] = field(default_factory=dict)
    from_file: bool = False


def load_book(path: Path) -> DeviceBook:
    """The file's presets and topologies, or the examples when there is no file."""
    if not path.exists():
        return DeviceBook(path, dict(EXAMPLE_PRESETS), dict(EXAMPLE_TOPOLOGIES))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(
            {"devices": f"the device presets file {path} cannot be read: {exc}"}
        ) from None
    if not isinstance(data, dict):
        raise TopologyError({"devices": f"{path} must map presets: and topologies:"})
    presets = data.get("presets") or {}
    topologies = data.get("topologies") or {}
    if not isinstance(presets, dict) or not isinstance(topologies, dict):
        raise TopologyError({"devices": f"{path}: presets and topologies must be mappings"})
    return DeviceBook(
        path,
        {str(k): dict(v or {}) for k, v in presets.items()},
        {str(k): dict(v or {}) for k, v in topologies.items()},
        True,
    )


def _save(book: DeviceBook) -> None:
    book.path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# edgelab device presets (--device NODE=PRESET) and named topologies (devices: NAME).\n"
        f"# {NOT_CALIBRATED}\n"
        + yaml.safe_dump({"presets": book.presets, "topologies": book.topologies}, sort_keys=True)
    )
    fd, tmp = tempfile.mkstemp(dir=book.path.parent, prefix=".devices-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, book.path)


def check_preset(values: Mapping[str, Any]) -> dict[str, Any]:
    """A preset's values, checked like a node's device (ValueError otherwise)."""
    unknown = sorted(set(values) - set(DEVICE_KEYS))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)}; a preset has {', '.join(DEVICE_KEYS)}"
        )
    if not values:
        raise ValueError(f"a preset needs at least one of {', '.join(DEVICE_KEYS)}")
    device = _device("preset", dict(values), {}, threads_default=0)
    return device.values()


def add_preset(path: Path, name: str, values: Mapping[str, Any]) -> DeviceBook:
    book = load_book(path)
    book.presets[name] = check_preset(values)
    _save(book)
    return book


def remove_preset(path: Path, name: str) -> DeviceBook:
    book = load_book(path)
    if name in book.presets:
        del book.presets[name]
    elif name in book.topologies:
        del book.topologies[name]
    else:
        raise KeyError(name)
    _save(book)
    return book


def add_topology(path: Path, name: str, devices: Mapping[str, Any]) -> DeviceBook:
    book = load_book(path)
    book.topologies[name] = dict(devices)
    _save(book)
    return book
