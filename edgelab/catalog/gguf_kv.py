"""Read a few metadata values from a GGUF file's key/value section, and stop.

The ``gguf`` package's reader parses every key, including the tokenizer arrays of
tens of thousands of strings, which takes about 1.6 s for a 135M model. A root node
needs two scalars (architecture and block count) before llama.cpp loads, and they
come first in the file, so this reader scans key by key, seeks past values it does
not want and returns as soon as it has them. Standard library only: it runs on the
start-up path of every root node.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from edgelab.catalog.info import CatalogError

_MAGIC = b"GGUF"
# GGUF value types -> (struct format, size); 8 = string and 9 = array are variable.
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING = 8
_ARRAY = 9


def _read(f: BinaryIO, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CatalogError(f"{path} is truncated: its GGUF header ends early")
    return data


def _u64(f: BinaryIO, path: Path) -> int:
    return int(struct.unpack("<Q", _read(f, 8, path))[0])


def _string(f: BinaryIO, path: Path) -> str:
    return _read(f, _u64(f, path), path).decode("utf-8", errors="replace")


def _skip_value(f: BinaryIO, vtype: int, path: Path) -> None:
    if vtype in _SCALARS:
        f.seek(_SCALARS[vtype][1], 1)
    elif vtype == _STRING:
        f.seek(_u64(f, path), 1)
    elif vtype == _ARRAY:
        etype = int(struct.unpack("<I", _read(f, 4, path))[0])
        count = _u64(f, path)
        if etype in _SCALARS:
            f.seek(_SCALARS[etype][1] * count, 1)
        else:
            for _ in range(count):
                _skip_value(f, etype, path)
    else:
        raise CatalogError(f"{path} has an unknown GGUF value type {vtype}")


def read_kv(path: Path | str, wanted: set[str]) -> dict[str, Any]:
    """The scalar values of the ``wanted`` keys that the file has (strings and numbers).

    Stops at the first moment every wanted key was seen; keys the file lacks are
    simply absent from the result.
    """
    path = Path(path)
    found: dict[str, Any] = {}
    try:
        with path.open("rb") as f:
            if _read(f, 4, path) != _MAGIC:
                raise CatalogError(f"{path} is not a GGUF file (bad magic)")
            version = int(struct.unpack("<I", _read(f, 4, path))[0])
            if version < 2:
                raise CatalogError(f"{path} is GGUF version {version}; version 2 or later needed")
            _u64(f, path)  # tensor count
            for _ in range(_u64(f, path)):
                key = _string(f, path)
                vtype = int(struct.unpack("<I", _read(f, 4, path))[0])
                if key in wanted and vtype in _SCALARS:
                    fmt, size = _SCALARS[vtype]
                    found[key] = struct.unpack(fmt, _read(f, size, path))[0]
                elif key in wanted and vtype == _STRING:
                    found[key] = _string(f, path)
                else:
                    _skip_value(f, vtype, path)
                if wanted <= found.keys():
                    break
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return found


def block_count(path: Path | str) -> int:
    """The number of transformer layers (``{architecture}.block_count``)."""
    arch = read_kv(path, {"general.architecture"}).get("general.architecture")
    if not isinstance(arch, str):
        raise CatalogError(f"{path} has no general.architecture in its GGUF header")
    key = f"{arch}.block_count"
    layers = read_kv(path, {key}).get(key)
    if not isinstance(layers, int):
        raise CatalogError(f"{path} has no {key} in its GGUF header")
    return layers
