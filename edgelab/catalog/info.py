"""What the catalog knows about one model, and the error every catalog operation raises."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (phase, bytes done, bytes total): lets the CLI draw progress without the catalog
# knowing about terminals.
Progress = Callable[[str, int, int], None]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
FORMATS = ("gguf", "dllama")


class CatalogError(Exception):
    """A model file or catalog entry is unusable; the message says which and why."""


def check_name(name: str) -> str:
    """Reject names that would not survive a shell, a URL or the ``runs.model`` column."""
    if not NAME_RE.match(name):
        raise CatalogError(
            f"invalid model name {name!r}: use 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def default_name(path: Path) -> str:
    """The file name without ``.gguf``, with characters a name cannot hold replaced."""
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:200]
    return cleaned or "model"


def sha256_file(path: Path, progress: Progress | None = None, phase: str = "hash") -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large models need no memory."""
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(phase, done, total)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """One registered model file.

    ``format`` says which engine family can load it: ``gguf`` for llama.cpp,
    ``dllama`` for distributed-llama's ``.m`` files (their tokenizer path goes in
    ``extra["tokenizer"]``).
    """

    name: str
    path: Path
    size_bytes: int
    sha256: str
    architecture: str
    n_layers: int
    quantization: str
    format: str = "gguf"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "architecture": self.architecture,
            "n_layers": self.n_layers,
            "quantization": self.quantization,
            "format": self.format,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Rebuild an entry, refusing hand-edited ones that would break a run later."""
        where = f"catalog entry {data.get('name')!r}"
        types: dict[str, type] = {
            "name": str,
            "path": str,
            "size_bytes": int,
            "sha256": str,
            "architecture": str,
            "n_layers": int,
            "quantization": str,
        }
        for key, expected in types.items():
            value = data.get(key)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise CatalogError(f"{where}: {key!r} must be a {expected.__name__}, got {value!r}")
        fmt = data.get("format", "gguf")
        if fmt not in FORMATS:
            raise CatalogError(f"{where}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise CatalogError(f"{where}: 'extra' must be an object, got {extra!r}")
        return cls(
            name=check_name(data["name"]),
            path=Path(data["path"]),
            size_bytes=data["size_bytes"],
            sha256=data["sha256"],
            architecture=data["architecture"],
            n_layers=data["n_layers"],
            quantization=data["quantization"],
            format=fmt,
            extra=dict(extra),
        )
