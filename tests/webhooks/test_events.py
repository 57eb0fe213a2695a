"""Which changes become which deliveries: requests, jobs and alerts, event filters and tenancy."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from catalog.api.serializers import AlertSerializer, JobSerializer
from catalog.choices import AlertKind, AlertSeverity, JobState
from catalog.services import alerts, jobs
from requests_app import services
from requests_app.actors import Actor
from requests_app.api.serializers import ClientRequestSerializer, RestoreRequestSerializer
from requests_app.choices import Channel, RequestStatus
from requests_app.models import ApiKey, ClientRequest, DeliveryStatus, RestoreRequest, WebhookDelivery
from requests_app.webhooks import Event, dispatch
from tests import factories
from tests.requests.factories import submit_client, submit_restore

# The webhook's object is the API's representation: the same fields, in the same order.
RESTORE_REQUEST_FIELDS = list(RestoreRequestSerializer.Meta.fields)
CLIENT_REQUEST_FIELDS = list(ClientRequestSerializer.Meta.fields)
JOB_FIELDS = list(JobSerializer.Meta.fields)
ALERT_FIELDS = list(AlertSerializer.Meta.fields)


@pytest.fixture
def backup(app):
    return factories.BackupFactory(client=factories.BackupClientFactory(application=app))


@pytest.fixture
def other_backup(other_app):
    return factories.BackupFactory(client=factories.BackupClientFactory(application=other_app))


@pytest.fixture
def owner_key(owner):
    key, _ = ApiKey.issue(user=owner, name="ServiceNow (orders team)")
    return key


def bodies(receiver, event: str | None = None) -> list[dict]:
    """What the receiver got, parsed, in arrival order."""
    return [
        json.loads(r.body) for r in receiver.received if event is None or r.headers["X-Portal-Event"] == event
    ]


def transitions(receiver, event: str) -> list[tuple[str | None, str]]:
    return [(b["previous_status"], b["status"]) for b in bodies(receiver, event)]


def approve(request, by):
    return services.approve(type(request), request.pk, actor=Actor.person(by, Channel.ADMIN))


# --- Requests ------------------------------------------------------------------------------


def test_submit_and_approve_send_restore_request_changed_for_each_transition(
    owner, backup, backup_admin, subscribe, receiver, django_capture_on_commit_callbacks
):
    subscribe(receiver.url, event_types=[Event.RESTORE_REQUEST_CHANGED])
    with django_capture_on_commit_callbacks(execute=True):
        request = submit_restore(owner, backup=backup, external_ref="INC0012345")
    with django_capture_on_commit_callbacks(execute=True):
        approve(request, backup_admin)

    assert transitions(receiver, Event.RESTORE_REQUEST_CHANGED) == [
        (None, RequestStatus.SUBMITTED),
        (RequestStatus.SUBMITTED, RequestStatus.APPROVED),
    ]
    submitted, approved = bodies(receiver)
    assert submitted["event"] == "restore_request.changed"
    assert submitted["object"]["id"] == approved["object"]["id"] == request.pk
    assert submitted["object"]["external_ref"] == "INC0012345"
    assert approved["object"]["status"] == RequestStatus.APPROVED
    assert approved["object"]["job"] == RestoreRequest.objects.get(pk=request.pk).job_id
    # The filter held: approval also queued a job, and its job.changed went nowhere.
    assert WebhookDelivery.objects.count() == 2
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}


def test_a_restore_request_follows_its_job_in_webhooks(
    owner, backup, team_subscription, receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        # A new location on its own host: approved by the system at once.
        request = submit_restore(owner, backup=backup, overwrite=False, target_location="/restore/here")
    agent = backup.client.agent
    with django_capture_on_commit_callbacks(execute=True):
        jobs.claim(agent)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.complete_success(agent, RestoreRequest.objects.get(pk=request.pk).job_id, report=None)

    assert transitions(receiver, Event.RESTORE_REQUEST_CHANGED) == [
        (None, RequestStatus.SUBMITTED),
        (RequestStatus.SUBMITTED, RequestStatus.APPROVED),
        (RequestStatus.APPROVED, RequestStatus.RUNNING),
        (RequestStatus.RUNNING, RequestStatus.COMPLETED),
    ]
    assert transitions(receiver, Event.JOB_CHANGED) == [
        (None, JobState.QUEUED),
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.RUNNING, JobState.SUCCEEDED),
    ]


def test_restore_request_object_is_the_contract_representation(
    owner, backup, team_subscription, receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        request = submit_restore(owner, backup=backup, reason="bad deploy", external_ref="INC1")
    request.refresh_from_db()

    [body] = bodies(receiver, Event.RESTORE_REQUEST_CHANGED)
    assert list(body) == ["event", "object", "previous_status", "status", "occurred_at"]
    assert list(body["object"]) == RESTORE_REQUEST_FIELDS
    assert body["object"] == {
        "id": request.pk,
        "status": "submitted",
        "needs_approval": True,
        "approval_rule": "Overwriting existing data needs the backup team's approval.",
        "backup": backup.pk,
        "target_agent": backup.client.agent.hostname,
        "target_location": "/srv/data",
        "overwrite": True,
        "paths": [],
        "reason": "bad deploy",
        "external_ref": "INC1",
        "job": None,
        "error": "",
        "created_at": request.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": request.updated_at.isoformat().replace("+00:00", "Z"),
    }
    assert body["occurred_at"].endswith("Z")


def test_client_request_object_is_the_contract_representation_and_holds_no_token(
    owner, app, backup_admin, team_subscription, receiver, django_capture_on_commit_callbacks
):
    policy = factories.ProtectionPolicyFactory(name="Gold", auto_approve_clients=False)
    with django_capture_on_commit_callbacks(execute=True):
        request = submit_client(
            owner,
            application=app,
            policy=policy,
            hostname="new01.example.com",
            options={"paths": ["/srv/orders"]},
            justification="go-live",
            external_ref="RITM0042",
        )
    with django_capture_on_commit_callbacks(execute=True):
        approve(request, backup_admin)  # no agent on the host yet: it waits for the requester's token
    with django_capture_on_commit_callbacks(execute=True):
        _, token = services.issue_enrolment(request.pk, actor=Actor.person(owner))
    request = ClientRequest.objects.get(pk=request.pk)

    submitted, approved = bodies(receiver, Event.CLIENT_REQUEST_CHANGED)
    assert list(approved["object"]) == CLIENT_REQUEST_FIELDS
    assert approved["object"] | {"created_at": None, "updated_at": None} == {
        "id": request.pk,
        "action": "protect",
        "status": "approved",
        "needs_approval": True,
        "approval_rule": "New clients on Gold need the backup team's approval.",
        "application": "orders",
        "hostname": "new01.example.com",
        "name": request.name,
        "plugin": "files",
        "options": {"paths": ["/srv/orders"]},
        "policy": "Gold",
        "justification": "go-live",
        "external_ref": "RITM0042",
        "client": None,  # created, but not live until the agent enrols
        "error": "",
        "created_at": None,
        "updated_at": None,
    }
    assert (approved["previous_status"], approved["status"]) == ("submitted", "approved")
    assert all(token not in r.body.decode() for r in receiver.received)


def test_client_request_names_its_client_once_provisioned(
    owner, app, team_subscription, receiver, django_capture_on_commit_callbacks
):
    agent = factories.AgentFactory(hostname="db01.example.com", applications=[app])
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    with django_capture_on_commit_callbacks(execute=True):
        # An automatic policy and the application's agent on the host: approved and provisioned at once.
        request = submit_client(owner, application=app, policy=policy, hostname=agent.hostname)

    assert transitions(receiver, Event.CLIENT_REQUEST_CHANGED) == [
        (None, RequestStatus.SUBMITTED),
        (RequestStatus.SUBMITTED, RequestStatus.APPROVED),
        (RequestStatus.APPROVED, RequestStatus.PROVISIONED),
    ]
    provisioned = bodies(receiver, Event.CLIENT_REQUEST_CHANGED)[-1]["object"]
    assert provisioned["client"] == ClientRequest.objects.get(pk=request.pk).client_id is not None


def test_every_request_an_enrolment_activates_is_announced_provisioned(
    owner, app, team_subscription, receiver, django_capture_on_commit_callbacks
):
    from catalog.services import agents

    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    with django_capture_on_commit_callbacks(execute=True):
        first = submit_client(owner, application=app, policy=policy, hostname="new09.example.com", name="a")
        second = submit_client(owner, application=app, policy=policy, hostname="new09.example.com", name="b")
        _, token = services.issue_enrolment(second.pk, actor=Actor.person(owner))
    with django_capture_on_commit_callbacks(execute=True):
        agents.enrol(token=token, hostname="new09.example.com", version="1", plugins=["files"])

    provisioned = [
        body["object"]
        for body in bodies(receiver, Event.CLIENT_REQUEST_CHANGED)
        if body["status"] == RequestStatus.PROVISIONED
    ]
    assert sorted(obj["id"] for obj in provisioned) == [first.pk, second.pk]
    assert all(obj["client"] is not None for obj in provisioned)


# --- Jobs and alerts -------------------------------------------------------------------------


def test_job_changes_send_job_changed(app, subscribe, receiver, django_capture_on_commit_callbacks):
    subscribe(receiver.url, event_types=[Event.JOB_CHANGED])
    client = factories.BackupClientFactory(application=app)
    with django_capture_on_commit_callbacks(execute=True):
        job = jobs.queue_backup(client)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.claim(client.agent)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.complete_failure(client.agent, job.pk, error="tar: /srv/data: Permission denied")

    about_job = [b for b in bodies(receiver) if b["object"]["id"] == job.pk]
    assert [(b["previous_status"], b["status"]) for b in about_job] == [
        (None, JobState.QUEUED),
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.RUNNING, JobState.FAILED),
    ]
    failed = about_job[-1]["object"]
    assert list(failed) == JOB_FIELDS
    assert (failed["state"], failed["client"], failed["error_class"]) == (
        "failed",
        client.pk,
        "permission_denied",
    )
    assert failed["error"] == "tar: /srv/data: Permission denied"
    assert failed["finished_at"].endswith("Z")


def test_raised_alert_sends_alert_raised(app, subscribe, receiver, django_capture_on_commit_callbacks):
    subscribe(receiver.url, event_types=[Event.ALERT_RAISED])
    client = factories.BackupClientFactory(application=app)
    with django_capture_on_commit_callbacks(execute=True):
        alert = alerts.raise_alert(
            kind=AlertKind.RPO_BREACHED,
            severity=AlertSeverity.CRITICAL,
            key=alerts.client_key(AlertKind.RPO_BREACHED, client.pk),
            message="No backup for 30 hours",
            application=app,
            client=client,
            agent=client.agent,
        )

    [body] = bodies(receiver)
    assert (body["event"], body["previous_status"], body["status"]) == ("alert.raised", None, "open")
    assert body["occurred_at"] == body["object"]["created_at"]
    assert body["object"] == {
        "id": alert.pk,
        "kind": "rpo_breached",
        "severity": "critical",
        "message": "No backup for 30 hours",
        "application": "orders",
        "client": client.pk,
        "agent": client.agent.hostname,
        "job": None,
        "created_at": alert.created_at.isoformat().replace("+00:00", "Z"),
        "resolved_at": None,
        "acknowledged_at": None,
    }
    assert list(body["object"]) == ALERT_FIELDS


def test_nobody_subscribed_costs_the_job_path_no_task(app, monkeypatch, django_capture_on_commit_callbacks):
    from requests_app.webhooks import receivers

    enqueued = []
    monkeypatch.setattr(receivers, "enqueue", lambda *args: enqueued.append(args))
    client = factories.BackupClientFactory(application=app)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.queue_backup(client)
    assert enqueued == []
    assert not WebhookDelivery.objects.exists()


# --- Who gets what -----------------------------------------------------------------------------


def test_subscription_gets_only_the_events_it_asked_for(
    owner, backup, subscribe, receiver, django_capture_on_commit_callbacks
):
    alerts_only = subscribe(receiver.url, name="alerts", event_types=[Event.ALERT_RAISED])
    everything = subscribe(receiver.url, name="everything", event_types=[])
    inactive = subscribe(receiver.url, name="paused", active=False)
    with django_capture_on_commit_callbacks(execute=True):
        submit_restore(owner, backup=backup)

    assert not alerts_only.deliveries.exists()
    assert not inactive.deliveries.exists()
    assert list(everything.deliveries.values_list("event", flat=True)) == [Event.RESTORE_REQUEST_CHANGED]


def test_deliveries_of_one_event_share_the_body_under_their_own_ids(
    owner, backup, subscribe, receiver, django_capture_on_commit_callbacks
):
    subscribe(receiver.url, name="one")
    subscribe(receiver.url, name="two")
    with django_capture_on_commit_callbacks(execute=True):
        submit_restore(owner, backup=backup)

    first, second = receiver.received
    assert first.body == second.body
    assert first.delivery_id != second.delivery_id
    assert {first.delivery_id, second.delivery_id} == {
        str(d) for d in WebhookDelivery.objects.values_list("delivery_id", flat=True)
    }


def test_an_owners_integration_hears_nothing_about_another_application(
    owner,
    other_owner,
    backup,
    other_backup,
    owner_key,
    subscribe,
    receiver,
    django_capture_on_commit_callbacks,
):
    owners = subscribe(receiver.url, name="owner's ServiceNow", api_key=owner_key)
    team = subscribe(receiver.url, name="backup team")
    with django_capture_on_commit_callbacks(execute=True):
        mine = submit_restore(owner, backup=backup)
        theirs = submit_restore(other_owner, backup=other_backup)
    with django_capture_on_commit_callbacks(execute=True):
        alerts.raise_alert(
            kind=AlertKind.JOB_FAILED,
            severity=AlertSeverity.WARNING,
            key="theirs",
            message="failed",
            application=other_backup.client.application,
            client=other_backup.client,
        )
        jobs.queue_backup(other_backup.client)

    def objects(subscription):
        return sorted((d.event, json.loads(d.body)["object"]["id"]) for d in subscription.deliveries.all())

    assert objects(owners) == [(Event.RESTORE_REQUEST_CHANGED, mine.pk)]
    assert [event for event, _ in objects(team)] == sorted(
        [Event.RESTORE_REQUEST_CHANGED] * 2 + [Event.ALERT_RAISED, Event.JOB_CHANGED]
    )
    assert (Event.RESTORE_REQUEST_CHANGED, theirs.pk) in objects(team)


def test_a_revoked_integration_hears_nothing(
    owner, backup, owner_key, subscribe, receiver, django_capture_on_commit_callbacks
):
    ApiKey.objects.filter(pk=owner_key.pk).update(revoked_at=timezone.now())
    subscription = subscribe(receiver.url, api_key=owner_key)
    with django_capture_on_commit_callbacks(execute=True):
        submit_restore(owner, backup=backup)
    assert not subscription.deliveries.exists()
    assert receiver.received == []


def test_dispatch_about_an_object_that_is_gone_does_nothing(team_subscription):
    assert dispatch.dispatch(Event.JOB_CHANGED, 987654, previous=None, status="queued") == []
    assert dispatch.alert_raised(987654) == []
    assert not WebhookDelivery.objects.exists()
