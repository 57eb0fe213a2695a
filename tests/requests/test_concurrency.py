"""Twenty approvers press the button at once: one transition, one job, one audit event."""

from __future__ import annotations

import pytest

from catalog.choices import JobKind
from catalog.models import Job
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.errors import InvalidTransition
from requests_app.models import AuditEvent, RestoreRequest
from tests import factories
from tests.helpers import run_at_once

APPROVERS = 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_approvals_make_one_transition(backup_team_group):
    owner = factories.UserFactory(username="requester")
    app = factories.ApplicationFactory(owners=[owner])
    backup = factories.BackupFactory(client=factories.BackupClientFactory(application=app))
    request = services.submit_restore(
        actor=Actor.person(owner), backup=backup, target_agent=backup.client.agent,
        target_location="/srv/data", overwrite=True,
    )
    approvers = []
    for n in range(APPROVERS):
        user = factories.UserFactory(username=f"approver{n}", is_staff=True)
        user.groups.add(backup_team_group)
        approvers.append(user)

    def approve(user):
        def press():
            services.approve(RestoreRequest, request.pk, actor=Actor.person(user, Channel.ADMIN))
            return "approved"

        return press

    # InvalidTransition is the expected refusal; anything else is a bug and fails the comparison.
    outcomes = [
        "refused" if isinstance(result, InvalidTransition) else result
        for result in run_at_once([approve(user) for user in approvers])
    ]

    assert sorted(outcomes) == ["approved"] + ["refused"] * (APPROVERS - 1)
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED
    assert Job.objects.filter(kind=JobKind.RESTORE).count() == 1
    assert AuditEvent.objects.filter(restore_request=request, action="approved").count() == 1
