"""Corruption found by a restore: checksum_mismatch, the backup failed verification, restores refused."""

from __future__ import annotations

import pytest

from catalog.choices import AlertSeverity, ErrorClass, JobKind, JobState, Verification
from catalog.models import Alert, Backup, Job
from catalog.services import jobs
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel
from requests_app.errors import InvalidRequest
from requests_app.models import RestoreRequest
from tests import factories
from tests.e2e import scenario
from tests.faults import harness

pytestmark = pytest.mark.e2e


def test_restore_finding_corruption_marks_the_backup_and_refuses_further_restores(tmp_path, live_server):
    setup = scenario.build(tmp_path)
    agent = harness.Agent(tmp_path / "agent", live_server.url)
    agent.enrol(setup.token, scenario.HOSTNAME, harness.allow_flags(tmp_path))
    job = jobs.queue_backup(setup.client)
    assert agent.run_once().returncode == 0
    backup = Backup.objects.get(job=job)
    data_file = scenario.stored_data_file(setup.storage, backup)
    scenario.flip_middle_byte(data_file)
    target = tmp_path / "restore-target"
    target.mkdir()
    (target / "keep.txt").write_text("existing data\n")
    before = scenario.tree(target)

    restore = jobs.queue_restore(backup, agent=job.agent, target_location=str(target), overwrite=True)
    agent.run_once()

    restore.refresh_from_db()
    assert (restore.state, restore.error_class) == (JobState.FAILED, ErrorClass.CHECKSUM_MISMATCH), (
        restore.error_message
    )
    assert "checksum mismatch" in restore.error_message
    assert scenario.tree(target) == before
    assert harness.leftovers(target) == []

    backup.refresh_from_db()
    assert backup.verification == Verification.FAILED, (
        "a restore that found corruption fails the backup's verification"
    )
    alerts = Alert.objects.filter(
        client=setup.client, severity=AlertSeverity.CRITICAL, resolved_at__isnull=True
    )
    assert alerts.exists(), list(Alert.objects.values_list("kind", "severity", "message"))
    assert any("checksum" in a.message.lower() for a in alerts), [a.message for a in alerts]

    owner = factories.UserFactory(username="shop-owner")
    setup.application.owners.add(owner)
    with pytest.raises(InvalidRequest, match="failed verification"):
        services.submit_restore(
            actor=Actor.person(owner, Channel.WEB),
            backup=backup,
            target_agent=job.agent,
            target_location=str(target),
            overwrite=True,
            reason="try again",
        )
    assert not RestoreRequest.objects.exists()
    assert Job.objects.filter(kind=JobKind.RESTORE).count() == 1
