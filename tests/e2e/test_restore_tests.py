"""Automated restore tests with the real agent: pass on a good backup, fail loudly on a bad one,
never touch the original, always clean up the scratch copy."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from catalog.choices import AlertKind, JobKind, JobState, Plugin, Verification
from catalog.models import Alert, Backup, Job
from catalog.services import restore_tests
from tests.e2e import scenario
from tests.e2e.scenario import backed_up, psql

pytestmark = pytest.mark.e2e
def run_restore_test(agent_cli) -> Job:
    assert restore_tests.schedule() == 1
    job = Job.objects.get(kind=JobKind.RESTORE_TEST, state=JobState.QUEUED)
    agent_cli.run_once()
    job.refresh_from_db()
    return job


def test_files_restore_test_passes_then_catches_a_corrupted_backup(agent_cli, tmp_path):
    setup, backup = backed_up(agent_cli, tmp_path)
    original = scenario.tree(setup.source)

    passed = run_restore_test(agent_cli)
    backup.refresh_from_db()
    assert passed.state == JobState.SUCCEEDED, passed.error_message
    assert (backup.verification, backup.verification_job) == (Verification.PASSED, passed)

    data = scenario.stored_data_file(setup.storage, backup)
    data.write_bytes(data.read_bytes()[:-4096] + b"\0" * 4096)
    Job.objects.filter(pk=passed.pk).update(finished_at=passed.finished_at.replace(year=2000))
    failed = run_restore_test(agent_cli)

    backup.refresh_from_db()
    assert failed.state == JobState.FAILED
    assert backup.verification == Verification.FAILED
    alert = Alert.objects.get(kind=AlertKind.RESTORE_TEST_FAILED)
    assert alert.severity == "critical" and "checksum" in alert.message.lower()
    assert scenario.tree(setup.source) == original  # the original location is untouched
    assert list(agent_cli.scratch.iterdir()) == []  # scratch copies removed both times


def test_postgresql_restore_test_fails_on_a_truncated_dump_and_drops_its_scratch_database(
    agent_cli, tmp_path
):
    database = f"e2e_rt_{uuid.uuid4().hex[:8]}"
    psql(f"CREATE DATABASE {database}")
    try:
        psql(
            "CREATE TABLE orders (id int primary key, item text);"
            "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 5000) g;",
            database,
        )
        setup, backup = backed_up(
            agent_cli,
            tmp_path,
            plugin=Plugin.POSTGRESQL,
            options={"database": database, "host": "127.0.0.1", "user": "postgres"},
        )
        passed = run_restore_test(agent_cli)
        assert passed.state == JobState.SUCCEEDED, passed.error_message

        # A dump cut short before it was hashed: the checksum matches, pg_restore must fail.
        data = scenario.stored_data_file(setup.storage, backup)
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
        digest = hashlib.sha256(data.read_bytes()).hexdigest()
        Backup.objects.filter(pk=backup.pk).update(sha256=digest, stored_size_bytes=data.stat().st_size)
        Job.objects.filter(pk=passed.pk).update(finished_at=passed.finished_at.replace(year=2000))
        failed = run_restore_test(agent_cli)

        assert failed.state == JobState.FAILED, "a truncated dump must not pass its restore test"
        assert Backup.objects.get(pk=backup.pk).verification == Verification.FAILED
        assert Alert.objects.filter(kind=AlertKind.RESTORE_TEST_FAILED).count() == 1
        assert psql("SELECT count(*) FROM orders", database).strip() == "5000"  # original untouched
        leftovers = psql("SELECT datname FROM pg_database WHERE datname LIKE 'backup_agent_test_%'")
        assert leftovers.strip() == ""
    finally:
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
