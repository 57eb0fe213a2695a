"""The throw-away databases of the database plugins (plugins/_db.py), shared by mysql and postgresql."""

from __future__ import annotations

import re

import pytest

from backup_agent.context import JobContext
from backup_agent.plugins import _db
from backup_agent.plugins import mysql as mysql_plugin
from backup_agent.plugins import postgresql as postgresql_plugin

from .conftest import MARIADB, PG, mysql, psql


class Drops:
    """A drop function that records what it was asked to drop, and can fail."""

    def __init__(self, fail: bool = False) -> None:
        self.dropped: list[str] = []
        self.fail = fail

    def __call__(self, database: str) -> None:
        self.dropped.append(database)
        if self.fail:
            raise RuntimeError("server gone")


def test_scratch_name_has_the_job_id_a_random_part_and_is_a_valid_target():
    first, second = _db.scratch_name(42), _db.scratch_name(42)
    assert re.fullmatch(r"backup_agent_test_42_[0-9a-f]{8}", first)
    assert first != second
    assert _db.check_name(first, "target") == first


def test_scratch_database_is_dropped_after_use(ctx: JobContext):
    drops = Drops()
    with _db.scratch_database(drops, ctx) as name:
        assert name.startswith("backup_agent_test_42_") and drops.dropped == []
    assert drops.dropped == [name]


def test_scratch_database_is_dropped_when_the_restore_test_fails(ctx: JobContext):
    drops = Drops()
    with pytest.raises(ValueError, match="restore failed"), _db.scratch_database(drops, ctx) as name:
        raise ValueError("restore failed")
    assert drops.dropped == [name]


def test_a_failed_drop_is_noted_and_never_hides_the_original_error(ctx: JobContext):
    drops = Drops(fail=True)
    with pytest.raises(ValueError, match="restore failed"), _db.scratch_database(drops, ctx) as name:
        raise ValueError("restore failed")
    assert ctx.log.lines() == [f"backup-agent: could not drop database {name}: server gone"]


def test_a_restore_drops_the_database_only_when_it_created_it_and_failed(ctx: JobContext):
    drops = Drops()
    with _db.dropped_on_failure(drops, "made_here", ctx, created=True):
        pass
    with pytest.raises(KeyboardInterrupt), _db.dropped_on_failure(drops, "made_here", ctx, created=True):
        raise KeyboardInterrupt  # a cancel or a shutdown too, not only errors
    with pytest.raises(ValueError), _db.dropped_on_failure(drops, "was_there", ctx, created=False):
        raise ValueError
    assert drops.dropped == ["made_here"]


@pytest.mark.parametrize(
    ("plugin", "options", "exists"),
    [
        (
            postgresql_plugin,
            PG,
            lambda name: psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}';") == "1",  # noqa: S608
        ),
        (mysql_plugin, MARIADB, lambda name: mysql(f"SHOW DATABASES LIKE '{name}';") == name),
    ],
)
def test_each_plugin_drops_its_scratch_database_on_its_server(plugin, options, exists, ctx: JobContext):
    with plugin.scratch_target({"database": "unused", **options}, ctx) as name:
        assert name.startswith("backup_agent_test_42_")
        if plugin is postgresql_plugin:
            psql(f'CREATE DATABASE "{name}";')
        else:
            mysql(f"CREATE DATABASE `{name}`;")
        assert exists(name)
    assert not exists(name)
    assert ctx.log.lines() == []


@pytest.mark.parametrize("plugin", [postgresql_plugin, mysql_plugin])
def test_each_plugin_notes_a_scratch_database_it_could_not_drop(plugin, ctx: JobContext):
    with plugin.scratch_target({"database": "unused", "host": "127.0.0.1", "port": 1}, ctx) as name:
        pass
    [note] = [line for line in ctx.log.lines() if line.startswith("backup-agent:")]
    assert note.startswith(f"backup-agent: could not drop database {name}: ")
    assert "connection refused" in note.lower()
