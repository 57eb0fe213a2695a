"""The request workflow: every legal and illegal transition, four eyes, the approval rules, the audit."""

from __future__ import annotations

import pytest
from django.core import mail

from catalog.choices import ClientStatus, JobKind, JobState, Plugin
from catalog.models import Agent, BackupClient, EnrolmentToken, Job
from catalog.services import agents as agent_services
from catalog.services import jobs
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.errors import (
    FourEyesViolation,
    InvalidRequest,
    InvalidTransition,
    NotPermitted,
    ReasonRequired,
)
from requests_app.models import AuditEvent, ClientRequest, RestoreRequest
from tests import factories


@pytest.fixture
def backup(app):
    client = factories.BackupClientFactory(application=app)
    return factories.BackupFactory(client=client)


@pytest.fixture
def second_admin(backup_team_group):
    user = factories.UserFactory(username="second_admin", is_staff=True, email="second@example.com")
    user.groups.add(backup_team_group)
    return user


def web(user) -> Actor:
    return Actor.person(user, Channel.WEB)


def submit_overwrite(owner, backup) -> RestoreRequest:
    return services.submit_restore(
        actor=web(owner),
        backup=backup,
        target_agent=backup.client.agent,
        target_location="/srv/data",
        overwrite=True,
        reason="roll back a bad deploy",
    )


def events(request) -> list[tuple[str, str, str, str]]:
    return [(e.action, e.from_status, e.to_status, e.actor_label) for e in request.events.all()]


# --- approval rules -----------------------------------------------------------------------


def test_restore_to_a_new_location_on_own_agent_is_approved_by_the_system(owner, backup):
    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location="/restore/here"
    )
    request.refresh_from_db()
    assert (request.status, request.needs_approval, request.decided_by) == (
        RequestStatus.APPROVED,
        False,
        None,
    )
    assert request.job.kind == JobKind.RESTORE
    assert (request.job.agent, request.job.target_location, request.job.overwrite) == (
        backup.client.agent,
        "/restore/here",
        False,
    )
    assert events(request) == [
        ("submitted", "", "submitted", "owner"),
        ("approved", "submitted", "approved", "system"),
    ]


def test_overwrite_needs_the_backup_team(owner, backup):
    request = submit_overwrite(owner, backup)
    assert (request.status, request.needs_approval, request.job) == (RequestStatus.SUBMITTED, True, None)
    assert "Overwriting" in request.approval_rule
    assert not Job.objects.filter(kind=JobKind.RESTORE).exists()


def test_restore_onto_an_agent_of_another_application_needs_the_backup_team(owner, backup, other_app):
    foreign_agent = factories.AgentFactory(applications=[other_app])
    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=foreign_agent, target_location="/restore"
    )
    assert (request.status, request.needs_approval) == (RequestStatus.SUBMITTED, True)
    assert foreign_agent.hostname in request.approval_rule


def test_client_request_on_an_automatic_policy_registers_the_host_and_waits_for_its_agent(owner, app):
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    request = services.submit_client(
        actor=web(owner),
        application=app,
        hostname="DB09.example.com",
        name="db09-orders",
        plugin=Plugin.POSTGRESQL,
        options={"database": "orders"},
        policy=policy,
    )
    request.refresh_from_db()
    assert (request.status, request.needs_approval) == (RequestStatus.APPROVED, False)
    assert request.client.status == ClientStatus.PENDING_ENROLMENT
    assert request.client.hostname == "db09.example.com"
    # The host is the application's from now on; no token exists until the requester asks for one.
    assert list(Agent.objects.get(hostname="db09.example.com").applications.all()) == [app]
    assert request.enrolment is None and not EnrolmentToken.objects.exists()


def test_client_request_on_a_manual_policy_waits_for_the_backup_team(owner, app):
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=False)
    request = services.submit_client(
        actor=web(owner),
        application=app,
        hostname="web09.example.com",
        name="web09",
        plugin=Plugin.FILES,
        options={"paths": ["/srv/www"]},
        policy=policy,
    )
    assert (request.status, request.client) == (RequestStatus.SUBMITTED, None)
    assert not Agent.objects.filter(hostname="web09.example.com").exists()


def test_client_request_for_a_host_of_the_same_application_attaches_the_client_at_once(owner, app):
    agent = factories.AgentFactory(hostname="shared01.example.com", applications=[app])
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    request = services.submit_client(
        actor=web(owner),
        application=app,
        hostname="shared01.example.com",
        name="shared",
        plugin=Plugin.FILES,
        options={"paths": ["/srv"]},
        policy=policy,
    )
    request.refresh_from_db()
    assert request.status == RequestStatus.PROVISIONED
    assert (request.client.agent, request.client.status) == (agent, ClientStatus.ACTIVE)
    assert agent.applications.filter(pk=app.pk).exists()
    assert request.enrolment is None


def test_enrolment_with_the_requests_token_marks_it_provisioned(
    owner, app, django_capture_on_commit_callbacks
):
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    request = services.submit_client(
        actor=web(owner),
        application=app,
        hostname="db10.example.com",
        name="db10",
        plugin=Plugin.MYSQL,
        options={"database": "shop"},
        policy=policy,
    )
    _, secret = services.issue_enrolment(request.pk, actor=web(owner))
    with django_capture_on_commit_callbacks(execute=True):
        agent_services.enrol(token=secret, hostname="db10.example.com", version="0.1.0", plugins=["mysql"])
    request.refresh_from_db()
    assert request.status == RequestStatus.PROVISIONED
    assert request.enrolment.used_at is not None
    assert request.client.status == ClientStatus.ACTIVE
    assert events(request)[-1] == ("provisioned", "approved", "provisioned", "db10.example.com")


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["relative/path", "/srv/../etc", "", "/ok\x00"])
def test_restore_target_must_be_an_absolute_path_without_dotdot(owner, backup, location):
    with pytest.raises(InvalidRequest) as excinfo:
        services.submit_restore(
            actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location=location
        )
    assert "target_location" in excinfo.value.errors
    assert not RestoreRequest.objects.exists()


def test_database_restore_target_must_be_a_database_name(owner, app):
    client = factories.BackupClientFactory(
        application=app, plugin=Plugin.POSTGRESQL, options={"database": "x"}
    )
    backup = factories.BackupFactory(client=client)
    with pytest.raises(InvalidRequest):
        services.submit_restore(
            actor=web(owner), backup=backup, target_agent=client.agent, target_location="x; DROP DATABASE y"
        )
    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=client.agent, target_location="orders_restored"
    )
    assert request.status == RequestStatus.APPROVED


def test_restore_of_an_expired_backup_is_refused(owner, app):
    backup = factories.BackupFactory(client=factories.BackupClientFactory(application=app), status="expired")
    with pytest.raises(InvalidRequest):
        services.submit_restore(
            actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location="/r"
        )


def test_client_request_with_bad_options_changes_nothing(owner, app):
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    with pytest.raises(InvalidRequest) as excinfo:
        services.submit_client(
            actor=web(owner),
            application=app,
            hostname="h.example.com",
            name="h",
            plugin=Plugin.FILES,
            options={"paths": ["relative"]},
            policy=policy,
        )
    assert "paths" in excinfo.value.errors
    assert not ClientRequest.objects.exists()
    assert not BackupClient.objects.filter(name="h").exists()


# --- decisions ----------------------------------------------------------------------------


def test_backup_team_approves_and_a_restore_job_is_queued(owner, backup, backup_admin):
    request = submit_overwrite(owner, backup)
    services.approve(RestoreRequest, request.pk, actor=Actor.person(backup_admin, Channel.ADMIN))
    request.refresh_from_db()
    assert (request.status, request.decided_by) == (RequestStatus.APPROVED, backup_admin)
    assert (request.job.overwrite, request.job.state) == (True, JobState.QUEUED)
    last = request.events.last()
    assert (last.action, last.channel, last.actor_user) == ("approved", Channel.ADMIN, backup_admin)


def test_owner_cannot_approve(owner, backup):
    request = submit_overwrite(owner, backup)
    with pytest.raises(NotPermitted):
        services.approve(RestoreRequest, request.pk, actor=web(owner))
    request.refresh_from_db()
    assert request.status == RequestStatus.SUBMITTED


def test_backup_team_member_cannot_approve_own_request(backup_admin, second_admin, app):
    app.owners.add(backup_admin)
    backup = factories.BackupFactory(client=factories.BackupClientFactory(application=app))
    request = submit_overwrite(backup_admin, backup)
    with pytest.raises(FourEyesViolation):
        services.approve(RestoreRequest, request.pk, actor=Actor.person(backup_admin, Channel.ADMIN))
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.SUBMITTED
    services.approve(RestoreRequest, request.pk, actor=Actor.person(second_admin, Channel.ADMIN))
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_rejection_without_reason_is_refused(owner, backup, backup_admin, reason):
    request = submit_overwrite(owner, backup)
    with pytest.raises(ReasonRequired):
        services.reject(RestoreRequest, request.pk, actor=web(backup_admin), reason=reason)
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.SUBMITTED


def test_rejection_with_reason_is_recorded_and_audited(owner, backup, backup_admin):
    request = submit_overwrite(owner, backup)
    services.reject(RestoreRequest, request.pk, actor=web(backup_admin), reason=" Use a new location. ")
    request.refresh_from_db()
    assert (request.status, request.decision_reason) == (RequestStatus.REJECTED, "Use a new location.")
    assert events(request)[-1] == ("rejected", "submitted", "rejected", "backup_admin")


@pytest.mark.parametrize("action", ["approve", "reject", "cancel"])
def test_decided_requests_do_not_move_again(owner, backup, backup_admin, action):
    request = submit_overwrite(owner, backup)
    services.reject(RestoreRequest, request.pk, actor=web(backup_admin), reason="no")
    kwargs = {"reason": "again"} if action == "reject" else {}
    actor = web(owner) if action == "cancel" else web(backup_admin)
    with pytest.raises(InvalidTransition):
        getattr(services, action)(RestoreRequest, request.pk, actor=actor, **kwargs)
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.REJECTED


def test_requester_cancels_an_approved_restore_before_it_starts(owner, backup):
    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location="/r"
    )
    services.cancel(RestoreRequest, request.pk, actor=web(owner))
    request.refresh_from_db()
    assert request.status == RequestStatus.CANCELLED
    assert request.job.state == JobState.CANCELLED


def test_running_restore_cannot_be_cancelled(owner, backup):
    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location="/r"
    )
    jobs.claim(backup.client.agent)
    with pytest.raises(InvalidTransition):
        services.cancel(RestoreRequest, request.pk, actor=web(owner))


def test_another_owner_cannot_cancel(owner, other_owner, backup):
    request = submit_overwrite(owner, backup)
    with pytest.raises(NotPermitted):
        services.cancel(RestoreRequest, request.pk, actor=web(other_owner))


def test_cancelling_a_client_request_retires_the_pending_client_and_kills_the_token(owner, app):
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    request = services.submit_client(
        actor=web(owner),
        application=app,
        hostname="h1.example.com",
        name="h1",
        plugin=Plugin.FILES,
        options={"paths": ["/srv"]},
        policy=policy,
    )
    _, secret = services.issue_enrolment(request.pk, actor=web(owner))
    services.cancel(ClientRequest, request.pk, actor=web(owner))
    request.refresh_from_db()
    assert request.status == RequestStatus.CANCELLED
    assert request.client.status == ClientStatus.RETIRED
    from catalog.errors import InvalidEnrolment

    with pytest.raises(InvalidEnrolment):
        agent_services.enrol(token=secret, hostname="h1.example.com", version="", plugins=[])
    # The host is free again: it was held for this request only and never enrolled.
    assert not Agent.objects.get(hostname="h1.example.com").applications.exists()
    assert EnrolmentToken.objects.get().used_at is None


# --- following the job ----------------------------------------------------------------------


def test_request_follows_its_job_to_completion(owner, backup, django_capture_on_commit_callbacks):
    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location="/r"
    )
    agent = backup.client.agent
    with django_capture_on_commit_callbacks(execute=True):
        jobs.claim(agent)
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.RUNNING
    with django_capture_on_commit_callbacks(execute=True):
        jobs.complete_success(agent, request.job_id, report=None)
    request.refresh_from_db()
    assert request.status == RequestStatus.COMPLETED
    assert [e[:3] for e in events(request)][-2:] == [
        ("running", "approved", "running"),
        ("completed", "running", "completed"),
    ]


def test_failed_restore_explains_the_error_in_words(owner, backup, django_capture_on_commit_callbacks):
    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location="/r"
    )
    agent = backup.client.agent
    with django_capture_on_commit_callbacks(execute=True):
        jobs.claim(agent)
        jobs.complete_failure(agent, request.job_id, error="checksum mismatch: expected ab.., got cd..")
    request.refresh_from_db()
    assert request.status == RequestStatus.FAILED
    assert "integrity check" in request.error
    assert not Job.objects.filter(retry_of=request.job_id).exists()  # restores are not retried blindly


def test_reconcile_catches_up_a_request_whose_follower_missed_the_job(owner, backup):
    from requests_app.tasks import reconcile_requests

    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location="/r"
    )
    jobs.claim(backup.client.agent)  # on_commit never ran: the follower missed it
    jobs.complete_success(backup.client.agent, request.job_id, report=None)
    assert reconcile_requests() == 1
    assert RestoreRequest.objects.get(pk=request.pk).status == RequestStatus.COMPLETED
    assert reconcile_requests() == 0


# --- audit and mail -------------------------------------------------------------------------------


def test_audit_events_cannot_be_changed_or_deleted(owner, backup):
    submit_overwrite(owner, backup)
    event = AuditEvent.objects.get()
    event.message = "tampered"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().update(message="tampered")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get().message == ""


def test_mail_goes_to_the_requester_and_to_the_team_when_it_waits(
    owner, backup, backup_admin, django_capture_on_commit_callbacks
):
    owner.email = "owner@example.com"
    owner.save()
    with django_capture_on_commit_callbacks(execute=True):
        request = submit_overwrite(owner, backup)
    recipients = sorted(tuple(m.to) for m in mail.outbox)
    assert ("owner@example.com",) in recipients
    team_mail = next(m for m in mail.outbox if "Waiting for approval" in m.subject)
    assert "backup-team@localhost" in team_mail.to and backup_admin.email in team_mail.to
    assert f"/admin/requests_app/restorerequest/{request.pk}/change/" in team_mail.body
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        services.reject(RestoreRequest, request.pk, actor=web(backup_admin), reason="Use a new location")
    (rejected,) = mail.outbox
    assert rejected.to == ["owner@example.com"]
    assert "Use a new location" in rejected.body


def test_a_second_open_request_for_the_same_client_name_is_refused(owner, app):
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=False)
    fields = {
        "actor": web(owner),
        "application": app,
        "hostname": "h2.example.com",
        "name": "h2",
        "plugin": Plugin.FILES,
        "options": {"paths": ["/srv"]},
        "policy": policy,
    }
    services.submit_client(**fields)
    with pytest.raises(InvalidRequest) as excinfo:
        services.submit_client(**fields)
    assert "already open" in excinfo.value.errors["name"]
    assert ClientRequest.objects.count() == 1


def test_a_restore_the_target_agent_refused_says_who_can_allow_it(
    owner, backup, django_capture_on_commit_callbacks
):
    request = services.submit_restore(
        actor=web(owner), backup=backup, target_agent=backup.client.agent, target_location="/r"
    )
    agent = backup.client.agent
    refusal = (
        "refused by agent: /r is not in this server's allow-list for restores; to allow it, "
        "run on the server as root: backup-agent allow --restore-root /r"
    )
    with django_capture_on_commit_callbacks(execute=True):
        jobs.claim(agent)
        jobs.complete_failure(agent, request.job_id, error=refusal, error_class="refused_by_agent")
    request.refresh_from_db()
    assert request.status == RequestStatus.FAILED
    assert "allow-list" in request.error and "backup-agent allow --restore-root /r" in request.error


def test_the_approval_mail_tells_the_requester_to_get_the_enrol_command(
    owner, app, django_capture_on_commit_callbacks
):
    owner.email = "owner@example.com"
    owner.save()
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.submit_client(
            actor=web(owner),
            application=app,
            hostname="new07.example.com",
            name="new07",
            plugin=Plugin.FILES,
            options={"paths": ["/srv"]},
            policy=policy,
        )
    approved = [m for m in mail.outbox if "approved" in m.subject]
    assert approved and "Get the one-time enrol command on the request page" in approved[0].body
