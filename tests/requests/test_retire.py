"""Retiring a client (issue #18, decommission): the owner asks, another person of the team approves.

Approved: the client is retired, its queued backups cancelled, and the host's agent revoked
when no client of any application uses it any more; backups are not touched.
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from catalog.choices import AgentAction, BackupStatus, ClientStatus, JobKind, JobState
from catalog.models import AgentEvent, BackupClient, Job
from catalog.services import jobs
from core.errors import MfaRequired
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, ClientAction, RequestStatus
from requests_app.errors import FourEyesViolation, InvalidRequest
from requests_app.models import AuditEvent, ClientRequest, WebhookDelivery, WebhookSubscription
from requests_app.webhooks import Event
from tests import factories
from tests.helpers import agent_client
from tests.requests.factories import submit_restore

pytestmark = pytest.mark.django_db


def retire_url(client) -> str:
    return reverse("requests:retire", args=[client.pk])


def submit(owner_client, client, **fields):
    body = {"justification": "The server is decommissioned.", "confirm_hostname": client.hostname, **fields}
    return owner_client.post(retire_url(client), body)


def approve(request, by, channel=Channel.ADMIN):
    return services.approve(ClientRequest, request.pk, actor=Actor.person(by, channel))


def test_the_client_page_offers_retire_and_the_form_says_what_happens(owner_client, mine):
    page = owner_client.get(reverse("catalog:client", args=[mine.client.pk]))
    assert retire_url(mine.client) in page.text

    form = owner_client.get(retire_url(mine.client))

    assert form.status_code == 200
    assert "No new backups" in form.text
    assert "Nothing is deleted now." in form.text
    assert "data-agent-revoked" in form.text  # its only client: the agent goes
    assert mine.client.hostname in form.text


def test_owner_submits_another_person_approves_client_retired_jobs_cancelled_agent_revoked(
    owner, owner_client, backup_admin, mine
):
    api, _token = agent_client(mine.agent)
    assert api.post("/api/agent/v1/poll", {}, format="json").status_code == 200
    queued = jobs.queue_backup(mine.client)

    response = submit(owner_client, mine.client, external_ref="CHG0001")

    request = ClientRequest.objects.get(action=ClientAction.RETIRE)
    assert response.status_code == 302 and response["Location"] == request.get_absolute_url()
    assert (request.status, request.needs_approval, request.client) == (
        RequestStatus.SUBMITTED, True, mine.client
    )
    assert (request.application, request.hostname, request.name) == (
        mine.client.application, mine.client.hostname, mine.client.name
    )
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.ACTIVE  # not before approval

    approve(request, backup_admin)

    request.refresh_from_db()
    client = BackupClient.objects.get(pk=mine.client.pk)
    assert request.status == RequestStatus.COMPLETED
    assert (client.status, client.next_backup_at) == (ClientStatus.RETIRED, None)
    assert Job.objects.get(pk=queued.pk).state == JobState.CANCELLED
    mine.agent.refresh_from_db()
    assert mine.agent.revoked_at is not None
    assert api.post("/api/agent/v1/poll", {}, format="json").status_code == 401
    revoked = AgentEvent.objects.get(agent=mine.agent, action=AgentAction.REVOKED)
    assert revoked.actor_user == backup_admin
    events = list(AuditEvent.objects.filter(client_request=request).values_list("action", "to_status"))
    assert events == [("submitted", "submitted"), ("approved", "approved"), ("retired", "completed")]
    retired = AuditEvent.objects.get(client_request=request, action="retired")
    assert f"Cancelled 1 queued job(s): #{queued.pk}." in retired.message
    assert f"The agent on {mine.agent.hostname} is revoked" in retired.message
    # Backups are not touched: still available, and restorable onto another server of the application.
    assert mine.backup.__class__.objects.get(pk=mine.backup.pk).status == BackupStatus.AVAILABLE
    other_server = factories.AgentFactory(applications=[mine.client.application])
    restore = submit_restore(owner, backup=mine.backup, target_agent=other_server, overwrite=False)
    assert restore.status == RequestStatus.APPROVED and restore.job_id
    # The page tells the owner what happened.
    page = owner_client.get(request.get_absolute_url())
    assert "is retired" in page.text and "backup-agent uninstall" in page.text
    assert "Retire this client" not in owner_client.get(reverse("catalog:client", args=[client.pk])).text


def test_a_shared_host_keeps_its_agent(owner, backup_admin, mine, other_app):
    # The same host serves another application, whose client stays active.
    mine.agent.applications.add(other_app)
    factories.BackupClientFactory(
        application=other_app, agent=mine.agent, hostname=mine.agent.hostname, status=ClientStatus.ACTIVE
    )
    request = services.submit_retire(actor=Actor.person(owner), client=mine.client)

    approve(request, backup_admin)

    mine.agent.refresh_from_db()
    assert mine.agent.revoked_at is None
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.RETIRED
    message = AuditEvent.objects.get(client_request=request, action="retired").message
    assert "stays: other clients still use it" in message


def test_a_running_backup_is_asked_to_stop_and_restores_are_left_alone(owner, backup_admin, mine):
    running = jobs.queue_backup(mine.client)
    Job.objects.filter(pk=running.pk).update(state=JobState.RUNNING, lease_expires_at=running.created_at)
    request = services.submit_retire(actor=Actor.person(owner), client=mine.client)

    approve(request, backup_admin)

    running.refresh_from_db()
    assert running.state == JobState.RUNNING and running.cancel_requested_at is not None
    assert not Job.objects.filter(client=mine.client, kind=JobKind.BACKUP, state=JobState.QUEUED).exists()


def test_the_requester_cannot_approve_their_own(backup_admin, second_admin, mine):
    mine.client.application.owners.add(backup_admin)
    request = services.submit_retire(actor=Actor.person(backup_admin), client=mine.client)

    with pytest.raises(FourEyesViolation):
        approve(request, backup_admin)

    assert ClientRequest.objects.get(pk=request.pk).status == RequestStatus.SUBMITTED
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.ACTIVE
    approve(request, second_admin)
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.RETIRED


def test_the_admin_approves_through_the_same_queue(client, backup_admin, owner, mine):
    request = services.submit_retire(actor=Actor.person(owner), client=mine.client)
    client.force_login(backup_admin)

    listing = client.get(reverse("admin:requests_app_clientrequest_changelist"))
    assert listing.status_code == 200 and "retire" in listing.text
    response = client.post(reverse("admin:requests_app_clientrequest_approve", args=[request.pk]))

    assert response.status_code == 302
    assert ClientRequest.objects.get(pk=request.pk).status == RequestStatus.COMPLETED
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.RETIRED


def test_another_applications_owner_gets_404(other_client, mine):
    assert other_client.get(retire_url(mine.client)).status_code == 404
    assert submit(other_client, mine.client).status_code == 404
    assert not ClientRequest.objects.filter(action=ClientAction.RETIRE).exists()


def test_the_confirmation_must_name_the_host(owner_client, mine):
    response = submit(owner_client, mine.client, confirm_hostname="other.example.com")

    assert response.status_code == 200
    assert f"Type {mine.client.hostname} to confirm" in response.text
    assert not ClientRequest.objects.filter(action=ClientAction.RETIRE).exists()


def test_one_open_retire_request_per_client(owner, owner_client, backup_admin, mine):
    first = services.submit_retire(actor=Actor.person(owner), client=mine.client)

    with pytest.raises(InvalidRequest, match="already open"):
        services.submit_retire(actor=Actor.person(owner), client=mine.client)
    page = owner_client.get(retire_url(mine.client))
    assert page.status_code == 302 and page["Location"] == first.get_absolute_url()
    # Cancelled, a new one may be asked; the database keeps one open whatever the code does.
    services.cancel(ClientRequest, first.pk, actor=Actor.person(owner))
    second = services.submit_retire(actor=Actor.person(owner), client=mine.client)
    assert second.status == RequestStatus.SUBMITTED
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.ACTIVE  # cancel touches nothing


def test_only_an_active_or_paused_client_can_be_retired(owner, app):
    pending = factories.BackupClientFactory(
        application=app, agent=None, status=ClientStatus.PENDING_ENROLMENT
    )
    retired = factories.BackupClientFactory(application=app, status=ClientStatus.RETIRED)

    with pytest.raises(InvalidRequest, match="cancel the request that asked for it"):
        services.submit_retire(actor=Actor.person(owner), client=pending)
    with pytest.raises(InvalidRequest, match="already retired"):
        services.submit_retire(actor=Actor.person(owner), client=retired)


def test_the_form_sends_a_client_that_cannot_be_retired_back_to_its_page(owner_client, app):
    pending = factories.BackupClientFactory(
        application=app, agent=None, status=ClientStatus.PENDING_ENROLMENT
    )
    retired = factories.BackupClientFactory(application=app, status=ClientStatus.RETIRED)

    for client, why in ((pending, "cancel the request that asked for it"), (retired, "already retired")):
        page = owner_client.get(retire_url(client), follow=True)
        assert page.redirect_chain[0][0] == reverse("catalog:client", args=[client.pk])
        assert why in page.text
        assert submit(owner_client, client).status_code == 302
    assert not ClientRequest.objects.filter(action=ClientAction.RETIRE).exists()


def test_webhooks_announce_each_transition(owner, backup_admin, mine, django_capture_on_commit_callbacks):
    WebhookSubscription.objects.create(
        name="ITSM",
        url="http://127.0.0.1:9/hooks",
        secret="s3cret",
        event_types=[Event.CLIENT_REQUEST_CHANGED],
    )
    with django_capture_on_commit_callbacks(execute=True):
        request = services.submit_retire(actor=Actor.person(owner), client=mine.client)
    with django_capture_on_commit_callbacks(execute=True):
        approve(request, backup_admin)

    bodies = [json.loads(d.body) for d in WebhookDelivery.objects.order_by("created_at", "pk")]
    assert [(b["previous_status"], b["status"]) for b in bodies] == [
        (None, "submitted"),
        ("submitted", "approved"),
        ("approved", "completed"),
    ]
    assert {(b["object"]["action"], b["object"]["client"]) for b in bodies} == {("retire", mine.client.pk)}


def test_a_paused_client_can_be_retired_too(owner, backup_admin, mine):
    BackupClient.objects.filter(pk=mine.client.pk).update(status=ClientStatus.PAUSED, next_backup_at=None)
    request = services.submit_retire(actor=Actor.person(owner), client=mine.client)

    approve(request, backup_admin)

    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.RETIRED


def test_approving_needs_mfa_where_approvals_need_it(settings, owner, backup_admin, mine):
    settings.PORTAL_MFA_FOR_APPROVALS = True
    request = services.submit_retire(actor=Actor.person(owner), client=mine.client)

    with pytest.raises(MfaRequired):
        approve(request, backup_admin)  # a session that did not pass MFA

    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.ACTIVE
    services.approve(
        ClientRequest, request.pk, actor=Actor.person(backup_admin, Channel.ADMIN, mfa=True)
    )
    assert BackupClient.objects.get(pk=mine.client.pk).status == ClientStatus.RETIRED


def test_after_the_agent_is_revoked_no_job_waits_for_it(owner, backup_admin, mine):
    """A revoked agent claims nothing: its queued restores are cancelled, and a retired client's
    backups that expire later get no removal job (they would stand in the queue's backlog for good)."""
    from datetime import timedelta

    from django.utils import timezone

    from catalog.services import retention

    backup = factories.BackupFactory(client=mine.client, expires_at=timezone.now() + timedelta(days=3))
    restore = jobs.queue_restore(backup, agent=mine.agent, target_location="/srv/restore", overwrite=False)
    request = services.submit_retire(actor=Actor.person(owner), client=mine.client)
    approve(request, backup_admin)
    mine.agent.refresh_from_db()
    assert mine.agent.revoked_at is not None

    restore.refresh_from_db()
    assert restore.state == JobState.CANCELLED
    assert not Job.objects.filter(agent=mine.agent, state=JobState.QUEUED).exists()

    retention.expire_due(now=timezone.now() + timedelta(days=4))

    backup.refresh_from_db()
    assert backup.status == BackupStatus.EXPIRED  # expired as its retention says, kept for a person to see
    assert not Job.objects.filter(backup=backup, kind=JobKind.EXPIRE).exists()
