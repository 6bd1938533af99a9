"""The ``edgelab`` command line. Each command group lives beside the code it drives."""

from __future__ import annotations

import importlib
from typing import Any

import click

from edgelab import __version__
from edgelab.settings import Settings, SettingsError


def load_settings() -> Settings:
    """Settings from the environment, or a clean exit naming the bad variable."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


class LazyGroup(click.Group):
    """A group whose commands are imported only when used.

    Each command lives beside the code it drives and imports ``load_settings``
    from here; importing them lazily keeps that from becoming an import cycle and
    keeps ``edgelab --help`` fast (no SQLAlchemy, Celery or llama.cpp import).
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


# Every command beyond `db`, as "module:attribute": one line per command.
COMMANDS = {
    "run": "edgelab.runs.cli:run_command",
    "models": "edgelab.catalog.cli:models",
    "devices": "edgelab.topology.cli:devices_group",
    "proxy": "edgelab.netem.cli:proxy_command",
    "images": "edgelab.cluster.images:images",
    "worker": "edgelab.tasks.cli:worker_command",
    "sweep": "edgelab.tasks.cli:sweep_group",
    "runs": "edgelab.runs.history_cli:runs_group",
    "report": "edgelab.reports.cli:report_command",
    "serve": "edgelab.service.cli:serve_command",
    "up": "edgelab.service.cli:up_command",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(__version__, prog_name="edgelab")
def main() -> None:
    """Run LLM-inference experiments on simulated clusters of edge devices."""


@main.group()
def db() -> None:
    """Manage the results database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision.")
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema of EDGELAB_DATABASE_URL."""
    from edgelab.models.db import upgrade

    settings = load_settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {settings.database_url} is at {revision}")
