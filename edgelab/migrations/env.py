"""Alembic environment: how a migration reaches the database.

The URL always comes from the Alembic config (``edgelab.models.db.alembic_config``
sets ``sqlalchemy.url``), so there is no ``alembic.ini``. A caller may instead hand
over an open connection in ``config.attributes["connection"]``; tests use that to
migrate and inspect inside one connection.

The models' metadata is imported here only so ``alembic revision --autogenerate``
and the no-diff test can compare against it; revision files never import models,
because a migration must keep meaning what it meant when it was written.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.operations.ops import MigrationScript
from sqlalchemy import Connection, create_engine, pool

from edgelab.models import Base

config = context.config
target_metadata = Base.metadata


def _drop_empty_autogenerate(ctx: Any, revision: Any, directives: list[MigrationScript]) -> None:
    """Produce no revision file when autogenerate finds nothing to do.

    An empty revision is noise in the history and hides the fact that the models
    and the schema already agree.
    """
    # Alembic only runs env.py for a revision when autogenerating (we never set
    # ``revision_environment``), so a plain ``revision -m`` for a hand-written
    # migration never reaches this hook; cmd_opts is None when called via the API.
    if config.cmd_opts is not None and not getattr(config.cmd_opts, "autogenerate", False):
        return
    script = directives[0]
    if script.upgrade_ops is not None and script.upgrade_ops.is_empty():
        directives[:] = []


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        process_revision_directives=_drop_empty_autogenerate,
    )


def run_migrations_offline() -> None:
    """Emit SQL (``--sql``) instead of executing it, for a DBA to review."""
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=bool(url and url.startswith("sqlite")),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        _configure(given)
        with context.begin_transaction():
            context.run_migrations()
        return

    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database URL: build the Alembic config with "
            "edgelab.models.db.alembic_config(url) or run `edgelab db upgrade`"
        )
    # A plain engine, not edgelab's runtime one: SQLite must migrate with foreign
    # keys off, or a batch table rebuild would cascade-delete child rows. NullPool
    # so no connection outlives the migration (PostgreSQL can then drop the DB).
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
