"""Ransomware end to end with the real agent: a tree backed up several times with small changes,
then most files overwritten with random bytes (same sizes), backed up again. The portal's check,
run when the backup is recorded, raises the alert with the evidence, flags the point, and the
restore page points to the point before as the last known clean one."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog import anomaly
from catalog.choices import AlertKind, JobState
from catalog.models import Alert, Backup
from catalog.services import anomalies, jobs
from tests import factories
from tests.e2e import scenario

pytestmark = pytest.mark.e2e

FILES = 300


def back_up(agent_cli, client) -> Backup:
    job = jobs.queue_backup(client)
    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr[-3000:]
    backup = Backup.objects.get(job=job)
    assert backup.job.state == JobState.SUCCEEDED, backup.job.log_tail
    return backup


def test_files_overwritten_with_random_bytes_raise_the_alert_and_flag_the_point(agent_cli, tmp_path, client):
    setup = scenario.build(tmp_path)
    data = setup.source / "data"
    for i in range(FILES):
        folder = data / f"d{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file-{i:03d}.txt").write_bytes(b"ordinary text, line after line\n" * (10 + i % 40))
    agent_cli.enrol(setup.token, scenario.HOSTNAME)
    setup.client.refresh_from_db()
    files = sorted(data.rglob("*.txt"))

    # A history of normal days: a few files edited each day. Each point is dated a day apart
    # once taken (the agent takes them seconds apart), as a nightly schedule would.
    normal = anomaly.MIN_HISTORY + 1
    points = []
    for day in range(normal):
        for path in files[day * 3 : day * 3 + 3]:
            path.write_bytes(path.read_bytes() + b"one more line\n")
        point = back_up(agent_cli, setup.client)
        assert point.has_file_list and point.anomaly_checked_at is not None
        assert not point.suspicious, point.anomaly
        Backup.objects.filter(pk=point.pk).update(taken_at=timezone.now() - timedelta(days=normal - day))
        points.append(point)
    assert not Alert.objects.filter(kind=AlertKind.ANOMALY_DETECTED).exists()

    # Encrypted: 90 % of the files overwritten with random bytes of the same size.
    for path in files[: FILES * 9 // 10]:
        path.write_bytes(os.urandom(path.stat().st_size))
    encrypted = back_up(agent_cli, setup.client)

    assert encrypted.suspicious, encrypted.anomaly
    assert encrypted.anomaly["rules"] == ["changed_burst"]
    assert encrypted.files_changed >= FILES * 9 // 10
    assert encrypted.anomaly["compared_with"] == [p.pk for p in points]
    alert = Alert.objects.get(kind=AlertKind.ANOMALY_DETECTED)
    assert alert.key == anomalies.alert_key(setup.client.pk) and alert.job_id == encrypted.job_id
    assert f"{encrypted.files_changed:,} of" in alert.message and "usually" in alert.message
    assert anomalies.last_known_clean(setup.client) == points[-1]

    owner = factories.UserFactory(username="shop-owner")
    setup.application.owners.add(owner)
    client.force_login(owner)
    page = client.get(f"/backups/{encrypted.pk}/restore/").content.decode()
    assert "data-anomaly-warning" in page
    assert f'data-last-known-clean="{points[-1].pk}"' in page
