"""The committed migrations build exactly the schema the models describe.

Run on SQLite and on the PostgreSQL server of this machine, because type and
constraint reflection differ between the two and each has surprised us before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, pool

from edgelab.cli import main
from edgelab.models import Base
from edgelab.models.db import alembic_config, upgrade

pytestmark = pytest.mark.integration

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
EXPECTED_TABLES = {"sweeps", "runs", "token_events", "node_samples", "link_stats"}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'edgelab.db'}"


@pytest.fixture
def postgres_url(throwaway_postgres: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A fresh, uniquely named database on the local server, dropped afterwards."""
    with throwaway_postgres("edgelab_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


def schema_diff(url: str) -> list[object]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_matches_models(database_url: str) -> None:
    upgrade(database_url)

    assert table_names(database_url) >= EXPECTED_TABLES
    assert schema_diff(database_url) == []


def test_empty_database_differs_from_models(database_url: str) -> None:
    # Guards the test above: the comparison must be able to see a difference.
    diff = schema_diff(database_url)

    added = {d[1].name for d in diff if isinstance(d, tuple) and d[0] == "add_table"}
    assert added == EXPECTED_TABLES


def test_downgrade_base_removes_everything(database_url: str) -> None:
    upgrade(database_url)
    command.downgrade(alembic_config(database_url), "base")

    assert table_names(database_url) <= {"alembic_version"}
    # And the history can be replayed on the emptied database.
    upgrade(database_url)
    assert schema_diff(database_url) == []


def test_single_head_with_date_prefixed_files() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))

    assert len(script.get_heads()) == 1
    for rev in script.walk_revisions():
        assert rev.path is not None
        assert Path(rev.path).name[:11].replace("_", "").isdigit(), rev.path


def test_autogenerate_writes_no_empty_revision(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    script = ScriptDirectory.from_config(alembic_config(sqlite_url))
    before = {rev.revision for rev in script.walk_revisions()}

    result = command.revision(alembic_config(sqlite_url), message="nothing", autogenerate=True)

    written = [r for r in (result if isinstance(result, list) else [result]) if r is not None]
    for script_file in written:  # never leave a stray revision in the source tree
        Path(script_file.path).unlink()
    assert written == []
    after = {rev.revision for rev in script.walk_revisions()}
    assert after == before


def test_cli_db_upgrade_creates_tables(database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"EDGELAB_DATABASE_URL": database_url, "EDGELAB_DATA_DIR": str(tmp_path)}

    result = runner.invoke(main, ["db", "upgrade"], env=env)

    assert result.exit_code == 0, result.output
    assert table_names(database_url) >= EXPECTED_TABLES
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        assert (
            current == ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
        )
    finally:
        engine.dispose()
