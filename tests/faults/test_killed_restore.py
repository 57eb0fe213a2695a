"""A restore killed half-way (SIGKILL): the restarted agent sweeps its staging; a new restore succeeds."""

from __future__ import annotations

import os
import signal
import time

import pytest

from catalog.choices import JobState
from catalog.models import Backup
from catalog.services import jobs
from tests.e2e import scenario
from tests.faults import harness

pytestmark = pytest.mark.e2e


def test_killed_overwrite_restore_leaves_no_staging_after_restart(tmp_path, live_server):
    setup = scenario.build(tmp_path)
    bulk = setup.source / "bulk"  # enough to unpack that the restore can be caught half-way
    bulk.mkdir()
    for i in range(1500):
        (bulk / f"f{i:04}.bin").write_bytes(os.urandom(4096))
    (setup.source / "big.bin").write_bytes(os.urandom(24 << 20))
    agent = harness.Agent(tmp_path / "agent", live_server.url)
    agent.enrol(setup.token, scenario.HOSTNAME, harness.allow_flags(tmp_path))
    backup_job = jobs.queue_backup(setup.client)
    assert agent.run_once().returncode == 0
    backup = Backup.objects.get(job=backup_job)
    target = tmp_path / "restore-target"
    target.mkdir()

    jobs.queue_restore(backup, agent=backup_job.agent, target_location=str(target), overwrite=True)
    process = agent.start(once=True)
    caught = False
    while process.poll() is None:
        if any(p.name.startswith(".restore-") for p in target.iterdir()):
            process.send_signal(signal.SIGKILL)
            caught = True
            break
        time.sleep(0.002)
    process.wait(timeout=10)
    assert caught, "the restore finished before it could be killed half-way; make the source bigger"
    assert harness.leftovers(target), "the killed restore should have left its staging behind"

    agent.run_once()  # the restart
    assert harness.leftovers(target) == [], "the restarted agent must sweep the stale staging"

    restore = jobs.queue_restore(backup, agent=backup_job.agent, target_location=str(target), overwrite=True)
    result = agent.run_once()

    restore.refresh_from_db()
    assert restore.state == JobState.SUCCEEDED, (restore.error_message, result.stderr[-3000:])
    assert scenario.tree(target / str(setup.source).lstrip("/")) == scenario.tree(setup.source)
    assert harness.leftovers(target) == []
