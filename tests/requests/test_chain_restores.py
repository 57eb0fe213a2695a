"""Issue #15: restores and restore tests of chains.

A point restores only with its whole chain (``restorable()``) and on an agent that can
rebuild one (protocol 4); a refusal names the member that breaks the chain and the newest
point that does restore. A restore or restore test of an incremental that fails its
checksum marks it failed verification: the later points of its chain stop being
restorable, and the next backup is a full.
"""

from __future__ import annotations

import pytest

from catalog.choices import AlertKind, BackupLevel, ErrorClass, JobKind, JobState, Verification
from catalog.errors import InvalidTransition
from catalog.models import Alert, Backup, Job
from catalog.services import jobs, restore_tests
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.errors import InvalidRequest
from tests import factories
from tests.helpers import agent_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def protected(app):
    """``owner``'s files client on an incremental policy, on a protocol-4 agent."""
    agent = factories.AgentFactory(protocol=4, applications=[app])
    return factories.incremental_client(application=app, agent=agent)


@pytest.fixture
def chain(protected):
    """A full and three incrementals of ``protected``, oldest first."""
    return factories.build_chain(protected, 4)


def restore(owner, backup, *, target_agent=None, overwrite: bool = False):
    return services.submit_restore(
        actor=Actor.person(owner, Channel.WEB),
        backup=backup,
        target_agent=target_agent or backup.client.agent,
        target_location="/restore",
        overwrite=overwrite,
    )


def fail_with_checksum_mismatch(job: Job) -> None:
    jobs.claim(job.agent, limit=100)
    error = "checksum mismatch: a chain member's data file"
    jobs.complete_failure(job.agent, job.pk, error=error, error_class=ErrorClass.CHECKSUM_MISMATCH)


def describe(backup: Backup) -> str:
    return f"#{backup.pk} of {backup.taken_at:%Y-%m-%d %H:%M} UTC"


# --- Submitting ---------------------------------------------------------------------------------


def test_an_incremental_with_its_whole_chain_is_restored_with_it(owner, chain):
    *bases, last = chain
    request = restore(owner, last)
    assert request.status == RequestStatus.APPROVED

    api, _ = agent_client(last.client.agent)
    (payload,) = api.post("/api/agent/v1/poll", {"protocol": 4}, format="json").json()["jobs"]
    assert payload["id"] == request.job_id
    assert [member["id"] for member in payload["chain"]] == [base.pk for base in bases]


def test_a_point_whose_base_failed_verification_is_refused_naming_it(owner, chain):
    full, first, second, third = chain
    Backup.objects.filter(pk=first.pk).update(verification=Verification.FAILED)

    with pytest.raises(InvalidRequest) as refused:
        restore(owner, third)

    message = refused.value.errors["backup"]
    assert f"Backup {describe(third)} cannot be restored: it is an incremental" in message
    assert f"{describe(first)}, in the chain it builds on, failed verification" in message
    assert f"The newest restorable recovery point is {describe(full)}." in message
    assert not Job.objects.filter(kind=JobKind.RESTORE).exists()
    assert restore(owner, full).pk  # the point offered is accepted


def test_a_damaged_point_itself_points_to_the_newest_restorable_one(owner, chain):
    full, first, second, third = chain
    Backup.objects.filter(pk=second.pk).update(verification=Verification.FAILED)
    second.refresh_from_db()
    with pytest.raises(InvalidRequest) as refused:
        restore(owner, second)
    assert "damaged" in refused.value.errors["backup"]
    assert f"The newest restorable recovery point is {describe(first)}." in refused.value.errors["backup"]


def test_an_incremental_is_refused_for_an_agent_too_old_to_restore_chains(owner, app, chain):
    full, *_, last = chain
    old = factories.AgentFactory(protocol=3, hostname="old.example.com", applications=[app])

    with pytest.raises(InvalidRequest) as refused:
        restore(owner, last, target_agent=old)

    message = refused.value.errors["target_agent"]
    assert "old.example.com is too old to restore an incremental" in message
    assert "protocol 3; 4 is needed" in message
    assert f"The newest restorable full recovery point is {describe(full)}." in message
    assert restore(owner, full, target_agent=old).pk  # a full it restores as ever


def test_approval_is_refused_once_the_chain_broke_meanwhile(owner, chain, backup_admin):
    *_, second, third = chain
    request = restore(owner, third, overwrite=True)
    assert request.status == RequestStatus.SUBMITTED
    Backup.objects.filter(pk=second.pk).update(verification=Verification.FAILED)

    with pytest.raises(InvalidTransition, match=f"backup {second.pk}, in its chain, failed verification"):
        services.approve(type(request), request.pk, actor=Actor.person(backup_admin, Channel.WEB))
    request.refresh_from_db()
    assert request.status == RequestStatus.SUBMITTED


def test_the_catalog_refuses_to_queue_what_cannot_be_rebuilt(chain):
    full, first, _, third = chain
    old = factories.AgentFactory(protocol=3)
    with pytest.raises(InvalidTransition, match="too old to restore one"):
        jobs.queue_restore(third, agent=old, target_location="/r", overwrite=False)
    Backup.objects.filter(pk=full.pk).update(verification=Verification.FAILED)
    with pytest.raises(InvalidTransition, match=f"backup {full.pk}, in its chain, failed verification"):
        jobs.queue_restore(first, agent=third.client.agent, target_location="/r", overwrite=False)


# --- A damaged chain found by a restore or a restore test --------------------------------------


def test_a_restore_failing_its_checksum_breaks_the_chain_and_forces_a_full(owner, chain):
    full, first, second, third = chain
    request = restore(owner, second)

    fail_with_checksum_mismatch(request.job)

    second.refresh_from_db()
    assert second.verification == Verification.FAILED
    restorable = set(Backup.objects.restorable().values_list("pk", flat=True))
    assert restorable == {full.pk, first.pk}  # the later points of the chain went with it
    backup = factories.JobFactory(client=second.client)
    jobs.claim(backup.agent)
    backup.refresh_from_db()
    assert (backup.level, backup.base) == (BackupLevel.FULL, None)
    assert backup.level_reason == (
        f"backup {second.pk}, in the chain of backup {third.pk}, failed verification"
    )


def test_a_restore_test_of_an_incremental_failing_its_checksum_does_the_same(chain):
    *_, third = chain
    job = factories.JobFactory(kind=JobKind.RESTORE_TEST, client=third.client, backup=third)

    fail_with_checksum_mismatch(job)

    third.refresh_from_db()
    assert third.verification == Verification.FAILED
    backup = factories.JobFactory(client=third.client)
    jobs.claim(backup.agent)
    backup.refresh_from_db()
    assert backup.level_reason == f"backup {third.pk} failed verification"


def report_failure(job: Job, **extra):
    api, _ = agent_client(job.agent)
    jobs.claim(job.agent, limit=100)
    body = {"status": "failed", "error": "checksum mismatch", "error_class": "checksum_mismatch", **extra}
    return api.post(f"/api/agent/v1/jobs/{job.pk}/complete", body, format="json")


def test_the_damaged_members_the_agent_names_are_marked_and_their_chain_with_them(owner, chain):
    full, first, second, third = chain
    request = restore(owner, second)

    response = report_failure(request.job, damaged=[full.location])

    assert response.status_code == 200, response.content
    verdicts = dict(Backup.objects.values_list("pk", "verification"))
    assert verdicts == {full.pk: Verification.FAILED, first.pk: "", second.pk: "", third.pk: ""}
    assert not Backup.objects.restorable().exists()  # every point of the chain stands on the full
    alert = Alert.objects.get(kind=AlertKind.RESTORE_TEST_FAILED)
    assert f"(backup {second.pk}; damaged: backup {full.pk})" in alert.message
    backup = factories.JobFactory(client=full.client)
    jobs.claim(backup.agent)
    backup.refresh_from_db()
    assert backup.level_reason == f"backup {full.pk}, in the chain of backup {third.pk}, failed verification"


def test_a_restore_test_may_name_several_damaged_members(chain):
    full, first, second, third = chain
    job = factories.JobFactory(kind=JobKind.RESTORE_TEST, client=third.client, backup=third)
    assert report_failure(job, damaged=[first.location, third.location]).status_code == 200
    failed = set(Backup.objects.filter(verification=Verification.FAILED).values_list("pk", flat=True))
    assert failed == {first.pk, third.pk}


@pytest.mark.parametrize("damaged", [["elsewhere/other/job-9"], "not a list", [7], None])
def test_damaged_names_outside_the_chain_or_malformed_mark_the_point_as_before(chain, damaged):
    full, first, _, _ = chain
    other = factories.BackupFactory()  # another client's point: never marked from this job
    job = factories.JobFactory(kind=JobKind.RESTORE_TEST, client=first.client, backup=first)
    names = [other.location] if damaged == ["elsewhere/other/job-9"] else damaged

    assert report_failure(job, damaged=names).status_code == 200

    failed = set(Backup.objects.filter(verification=Verification.FAILED).values_list("pk", flat=True))
    assert failed == {first.pk}


# --- Which point a restore test takes -------------------------------------------------------------


def scheduled_test(client) -> Job:
    assert restore_tests.schedule() == 1
    return Job.objects.get(kind=JobKind.RESTORE_TEST, client=client, state=JobState.QUEUED)


def test_the_newest_point_of_a_whole_chain_is_tested_with_its_chain(chain):
    *_, third = chain
    assert scheduled_test(third.client).backup == third


def test_no_test_of_a_point_whose_base_is_damaged(chain):
    full, first, second, third = chain
    Backup.objects.filter(pk=second.pk).update(verification=Verification.FAILED)
    # The third cannot be rebuilt; the damaged point itself may be tried again (a pass clears it).
    assert scheduled_test(third.client).backup == second


def test_an_agent_too_old_for_chains_tests_fulls_only(protected, chain):
    full, *_ = chain
    protected.agent.protocol = 3
    protected.agent.save()
    assert scheduled_test(protected).backup == full
