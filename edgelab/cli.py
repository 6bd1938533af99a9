"""The ``edgelab`` command line. Each command group lives beside the code it drives."""

from __future__ import annotations

import sys

import click

from edgelab import __version__
from edgelab.settings import Settings, SettingsError


def load_settings() -> Settings:
    """Settings from the environment, or a clean exit naming the bad variable."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
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


# --- command groups registered by their own modules (one line each) ---
from edgelab.netem.cli import proxy_command  # noqa: E402

main.add_command(proxy_command)
from edgelab.runs.cli import run_command  # noqa: E402

main.add_command(run_command)

from edgelab.catalog.cli import models as models_group  # noqa: E402

main.add_command(models_group)

from edgelab.cluster.images import images as images_group  # noqa: E402

main.add_command(images_group)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
