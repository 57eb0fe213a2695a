"""The self-service flow end to end: an owner asks for an in-place restore, the backup team
approves, the real agent restores, and the request shows completed with the original bytes."""

from __future__ import annotations

import shutil

import pytest

from catalog.models import Backup
from catalog.services import jobs
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.models import RestoreRequest
from tests import factories
from tests.e2e import scenario

pytestmark = pytest.mark.e2e


def test_owner_requests_admin_approves_agent_restores(agent_cli, tmp_path, backup_team_group):
    setup = scenario.build(tmp_path)
    owner = factories.UserFactory(username="shop-owner")
    setup.application.owners.add(owner)
    admin = factories.UserFactory(username="team-member", is_staff=True)
    admin.groups.add(backup_team_group)
    agent_cli.enrol(setup.token, scenario.HOSTNAME)
    setup.client.refresh_from_db()
    backup_job = jobs.queue_backup(setup.client)
    assert agent_cli.run_once().returncode == 0
    backup = Backup.objects.get(job=backup_job)
    original = scenario.tree(setup.source)

    shutil.rmtree(setup.source)  # the accident
    setup.source.mkdir()
    (setup.source / "garbage.txt").write_text("left behind by a bad deploy\n")
    request = services.submit_restore(
        actor=Actor.person(owner, Channel.WEB),
        backup=backup,
        target_agent=backup_job.agent,
        target_location="/",
        overwrite=True,
        reason="restore after the bad deploy",
    )
    assert request.status == RequestStatus.SUBMITTED  # overwriting in place needs a person
    services.approve(RestoreRequest, request.pk, actor=Actor.person(admin, Channel.ADMIN))
    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr[-3000:]

    request.refresh_from_db()
    assert request.status == RequestStatus.COMPLETED, (request.error, result.stderr[-3000:])
    restored = scenario.tree(setup.source)
    restored.pop(b"garbage.txt", None)  # a restore adds back what was lost; it does not delete
    assert restored == original
    actions = list(request.events.values_list("action", "actor_label"))
    assert actions == [
        ("submitted", "shop-owner"),
        ("approved", "team-member"),
        ("running", scenario.HOSTNAME),
        ("completed", scenario.HOSTNAME),
    ]
