"""The agent's allow-list with the real portal and the real agent.

A job outside what the server's administrator allowed ends as a failed job
classified refused_by_agent, whose error says what to run on the server, and
the agent reads and writes nothing for it.
"""

from __future__ import annotations

import shutil

import pytest

from catalog.choices import ErrorClass, JobState, Plugin
from catalog.models import Agent, Backup, Job
from catalog.services import jobs
from tests.e2e import scenario
from tests.e2e.conftest import scenario_allow_flags

pytestmark = pytest.mark.e2e


def run_and_refresh(agent_cli, job: Job) -> Job:
    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr[-3000:]  # the refusal itself was reported
    job.refresh_from_db()
    return job


def assert_refused(job: Job, fix: str) -> None:
    assert job.state == JobState.FAILED
    assert job.error_message.startswith("refused by agent: "), job.error_message
    assert job.error_message.endswith(f"to allow it, run on the server as root: backup-agent allow {fix}")
    assert job.error_class == ErrorClass.REFUSED_BY_AGENT


def test_backup_of_a_path_outside_the_allow_list_is_refused_and_stores_nothing(agent_cli, tmp_path):
    setup = scenario.build(tmp_path)
    allowed = tmp_path / "some-other-app"
    agent_cli.enrol(
        setup.token, scenario.HOSTNAME, ["--allow-path", str(allowed), "--allow-storage", str(setup.storage)]
    )
    setup.client.refresh_from_db()

    job = run_and_refresh(agent_cli, jobs.queue_backup(setup.client))

    assert_refused(job, f"--path {setup.source}")
    assert f"{setup.source} is not in this server's allow-list for backups" in job.error_message
    assert not Backup.objects.exists()
    assert list(setup.storage.iterdir()) == []  # no client folder, no .partial folder
    # The portal was told what the server allows, at every poll.
    assert Agent.objects.get(hostname=scenario.HOSTNAME).allow_list["paths"] == [str(allowed)]


def test_restore_into_a_root_outside_the_allow_list_is_refused_before_storage_is_read(agent_cli, tmp_path):
    setup = scenario.build(tmp_path)
    agent_cli.enrol(setup.token, scenario.HOSTNAME)
    setup.client.refresh_from_db()
    backup_job = run_and_refresh(agent_cli, jobs.queue_backup(setup.client))
    assert backup_job.state == JobState.SUCCEEDED, backup_job.error_message
    backup = Backup.objects.get(job=backup_job)
    # Damage the stored file: had the agent read it, the error would be "checksum mismatch".
    data_file = scenario.stored_data_file(setup.storage, backup)
    data_file.write_bytes(b"\0" * data_file.stat().st_size)
    target = tmp_path / "not-a-restore-root" / "copy"

    restore = jobs.queue_restore(backup, agent=backup_job.agent, target_location=str(target), overwrite=False)
    restore = run_and_refresh(agent_cli, restore)

    assert_refused(restore, f"--restore-root {target}")
    assert "allow-list for restores" in restore.error_message
    assert not target.parent.exists()


def test_command_program_outside_the_allow_list_is_never_run(agent_cli, tmp_path):
    marker = tmp_path / "the-program-ran"
    sh = shutil.which("sh")
    setup = scenario.build(
        tmp_path, plugin=Plugin.COMMAND, options={"backup_argv": [sh, "-c", f"touch {marker}; echo data"]}
    )
    agent_cli.enrol(setup.token, scenario.HOSTNAME, scenario_allow_flags(tmp_path))  # allows only Python
    setup.client.refresh_from_db()

    job = run_and_refresh(agent_cli, jobs.queue_backup(setup.client))

    assert_refused(job, f"--command {sh}")
    assert f"program {sh} is not in this server's allow-list for commands" in job.error_message
    assert not marker.exists()
    assert not Backup.objects.exists() and list(setup.storage.iterdir()) == []
