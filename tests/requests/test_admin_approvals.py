"""The backup team's approval queue in the admin: it decides through the services and edits nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from catalog.choices import JobKind, JobState
from catalog.models import Agent, Job
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import ActorKind, Channel, RequestStatus
from requests_app.models import AuditEvent, ClientRequest, RestoreRequest
from tests import factories
from tests.requests.factories import (
    ClientRequestFactory,
    RestoreRequestFactory,
    submit_client,
    submit_restore,
)

FOUR_EYES = "Nobody approves their own request: another member of the team must."


def changelist_url(model) -> str:
    return reverse(f"admin:requests_app_{model._meta.model_name}_changelist")


def change_url(obj) -> str:
    return reverse(f"admin:requests_app_{obj._meta.model_name}_change", args=[obj.pk])


def approve_url(obj) -> str:
    return reverse(f"admin:requests_app_{obj._meta.model_name}_approve", args=[obj.pk])


def reject_url(obj) -> str:
    return reverse(f"admin:requests_app_{obj._meta.model_name}_reject", args=[obj.pk])


def approved(obj, by):
    """Set-up: approve through the service, so no message waits in the session for the next page."""
    return services.approve(type(obj), obj.pk, actor=Actor.person(by, Channel.ADMIN))


def page_text(response) -> str:
    # Columns keep "backup team" and "2d 3h ago" on one line with no-break spaces.
    return response.text.replace("\N{NO-BREAK SPACE}", " ")


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def refreshed(obj):
    return type(obj).objects.get(pk=obj.pk)


@pytest.fixture
def teammate(backup_team_group):
    """A second member of the backup team, for four eyes: the one who asks cannot approve."""
    user = factories.UserFactory(username="teammate", is_staff=True)
    user.groups.add(backup_team_group)
    return user


@pytest.fixture
def backup(app):
    return factories.BackupFactory(client__application=app, client__name="orders-db")


@pytest.fixture
def restore(owner, backup):
    """The owner asks to overwrite their data in place: it waits for the backup team."""
    return submit_restore(owner, backup=backup, overwrite=True, external_ref="INC0012345")


@pytest.fixture
def client_request(owner, app):
    return submit_client(owner, application=app, name="orders-files", hostname="web01.example.com")


# --- Pages ------------------------------------------------------------------------------


def test_restore_queue_lists_the_request(team_client, restore):
    response = team_client.get(changelist_url(RestoreRequest))
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [restore]
    text = page_text(response)
    assert "orders/orders-db" in text
    assert restore.target_agent.hostname in text and "/srv/data" in text
    assert "overwrites existing data" in text and "backup team" in text
    assert "INC0012345" in text and "owner" in text


def test_client_queue_lists_the_request(team_client, client_request):
    response = team_client.get(changelist_url(ClientRequest))
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [client_request]
    assert "orders/orders-files on web01.example.com" in response.text
    assert client_request.policy.name in response.text


@pytest.mark.parametrize("fixture", ["restore", "client_request"])
def test_change_page_shows_the_request_its_history_and_the_decision(team_client, request, fixture):
    obj = request.getfixturevalue(fixture)
    response = team_client.get(change_url(obj))
    assert response.status_code == 200
    assert escape(obj.approval_rule) in response.text
    assert approve_url(obj) in response.text and reject_url(obj) in response.text
    assert 'name="_save"' not in response.text  # read-only: the workflow moves requests
    inline = response.context["inline_admin_formsets"][0]
    assert [form.original.action for form in inline] == ["submitted"]


def test_decision_is_not_offered_once_decided(team_client, restore, teammate):
    approved(restore, teammate)
    response = team_client.get(change_url(restore))
    assert response.status_code == 200
    assert approve_url(restore) not in response.text


def test_own_request_offers_no_approve_button(client, teammate, backup):
    own = submit_restore(teammate, backup=backup)
    client.force_login(teammate)
    response = client.get(change_url(own))
    assert "another member of the backup team must approve it" in response.text
    assert 'name="_approve"' not in response.text
    assert reject_url(own) in response.text


def test_pending_requests_come_first_then_the_newest(team_client, owner, backup):
    now = timezone.now()
    old_pending = RestoreRequestFactory(backup=backup, requester=owner, created_at=now - timedelta(days=3))
    new_done = RestoreRequestFactory(
        backup=backup, requester=owner, status=RequestStatus.COMPLETED, created_at=now - timedelta(hours=1)
    )
    new_pending = RestoreRequestFactory(backup=backup, requester=owner, created_at=now - timedelta(days=1))
    old_done = RestoreRequestFactory(
        backup=backup, requester=owner, status=RequestStatus.REJECTED, created_at=now - timedelta(days=9)
    )

    listed = list(team_client.get(changelist_url(RestoreRequest)).context["cl"].result_list)
    assert listed == [new_pending, old_pending, new_done, old_done]


def test_age_is_human_readable(team_client, owner, backup):
    created_at = timezone.now() - timedelta(days=2, hours=3)
    RestoreRequestFactory(backup=backup, requester=owner, created_at=created_at)
    assert "2d 3h ago" in page_text(team_client.get(changelist_url(RestoreRequest)))


def test_waiting_for_me_leaves_out_decided_automatic_and_own(team_client, owner, backup_admin, backup):
    waiting = RestoreRequestFactory(backup=backup, requester=owner)
    RestoreRequestFactory(backup=backup, requester=owner, status=RequestStatus.APPROVED)
    RestoreRequestFactory(backup=backup, requester=owner, needs_approval=False)
    RestoreRequestFactory(backup=backup, requester=backup_admin)

    response = team_client.get(changelist_url(RestoreRequest), {"queue": "me"})
    assert list(response.context["cl"].result_list) == [waiting]


def test_restore_requests_filter_by_application(team_client, owner, app, other_app, backup):
    mine = RestoreRequestFactory(backup=backup, requester=owner)
    RestoreRequestFactory(backup__client__application=other_app)
    response = team_client.get(
        changelist_url(RestoreRequest), {"backup__client__application__id__exact": app.pk}
    )
    assert list(response.context["cl"].result_list) == [mine]


@pytest.mark.parametrize("model", [ClientRequest, RestoreRequest])
def test_queue_queries_do_not_grow_with_rows(team_client, model):
    make = ClientRequestFactory if model is ClientRequest else RestoreRequestFactory
    url = changelist_url(model)
    make.create_batch(2)
    team_client.get(url)  # warm caches (content types, session) outside the measurement
    with CaptureQueriesContext(connection) as few:
        assert team_client.get(url).status_code == 200
    make.create_batch(4)
    with CaptureQueriesContext(connection) as many:
        response = team_client.get(url)
    assert len(response.context["cl"].result_list) == 6
    assert len(many) == len(few), "\n".join(q["sql"] for q in many.captured_queries)


def test_audit_event_list_queries_do_not_grow_with_rows(root_client, owner):
    url = changelist_url(AuditEvent)
    submit_restore(owner)
    root_client.get(url)
    with CaptureQueriesContext(connection) as few:
        assert root_client.get(url).status_code == 200
    submit_restore(owner)
    submit_client(owner)
    submit_client(owner)
    with CaptureQueriesContext(connection) as many:
        response = root_client.get(url)
    assert len(response.context["cl"].result_list) == 4
    assert len(many) == len(few), "\n".join(q["sql"] for q in many.captured_queries)


# --- Approve ------------------------------------------------------------------------------


def test_approve_button_approves_queues_the_restore_and_audits(team_client, backup_admin, restore):
    response = team_client.post(approve_url(restore), follow=True)

    assert response.redirect_chain[-1][0] == change_url(restore)
    restore.refresh_from_db()
    assert restore.status == RequestStatus.APPROVED
    assert restore.decided_by == backup_admin
    job = Job.objects.get(pk=restore.job_id)
    assert (job.kind, job.state, job.target_location, job.overwrite) == (
        JobKind.RESTORE, JobState.QUEUED, "/srv/data", True
    )
    event = AuditEvent.objects.get(restore_request=restore, action="approved")
    assert (event.channel, event.actor_kind, event.actor_user, event.actor_label) == (
        Channel.ADMIN, ActorKind.USER, backup_admin, "backup_admin"
    )
    assert (event.from_status, event.to_status) == (RequestStatus.SUBMITTED, RequestStatus.APPROVED)
    assert messages_of(response) == [
        f"Restore request #{restore.pk} is approved. Restore job #{job.pk} is queued."
    ]


def test_second_approve_is_refused_with_a_message(team_client, backup_admin, restore):
    approved(restore, backup_admin)
    before = (refreshed(restore).updated_at, AuditEvent.objects.count(), Job.objects.count())

    response = team_client.post(approve_url(restore), follow=True)

    assert response.status_code == 200
    assert messages_of(response) == [
        f"Restore request #{restore.pk} is approved; it cannot be approved."
    ]
    after = refreshed(restore)
    assert (after.updated_at, AuditEvent.objects.count(), Job.objects.count()) == before


def test_approve_is_post_only(team_client, restore):
    assert team_client.get(approve_url(restore)).status_code == 405
    assert refreshed(restore).status == RequestStatus.SUBMITTED


def test_approve_needs_the_csrf_token(backup_admin, restore):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(backup_admin)
    assert strict.post(approve_url(restore)).status_code == 403
    assert refreshed(restore).status == RequestStatus.SUBMITTED


def test_approving_a_client_request_registers_the_host_and_issues_no_token(team_client, client_request):
    response = team_client.post(approve_url(client_request), follow=True)

    client_request.refresh_from_db()
    assert client_request.status == RequestStatus.APPROVED
    assert client_request.client is not None and client_request.enrolment is None
    assert messages_of(response) == [f"Client request #{client_request.pk} is approved."]
    agent = Agent.objects.get(hostname=client_request.hostname)
    assert list(agent.applications.all()) == [client_request.application]


def test_approval_mails_the_requester(team_client, restore, django_capture_on_commit_callbacks):
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        team_client.post(approve_url(restore))

    to_requester = [m for m in mail.outbox if m.to == ["owner@example.com"]]
    assert [m.subject for m in to_requester] == [f"[Backup Portal] Restore request #{restore.pk}: approved"]


# --- Four eyes ---------------------------------------------------------------------------


def test_team_member_cannot_approve_own_request_with_the_button(client, teammate, backup):
    own = submit_restore(teammate, backup=backup)
    client.force_login(teammate)

    response = client.post(approve_url(own), follow=True)

    assert messages_of(response) == [
        f"Restore request #{own.pk}: {FOUR_EYES}"
    ]
    assert refreshed(own).status == RequestStatus.SUBMITTED
    assert not AuditEvent.objects.filter(restore_request=own, action="approved").exists()


def test_team_member_cannot_approve_own_request_in_bulk(client, teammate, backup):
    own = submit_client(teammate)
    client.force_login(teammate)

    response = client.post(
        changelist_url(ClientRequest),
        {"action": "approve_selected", "_selected_action": [own.pk]},
        follow=True,
    )

    assert messages_of(response) == [
        f"Client request #{own.pk}: {FOUR_EYES}"
    ]
    assert refreshed(own).status == RequestStatus.SUBMITTED


def test_another_team_member_approves_it(client, teammate, backup_admin, backup):
    theirs = submit_restore(teammate, backup=backup)
    client.force_login(backup_admin)
    client.post(approve_url(theirs))
    assert refreshed(theirs).status == RequestStatus.APPROVED


# --- Bulk approve ---------------------------------------------------------------------


def test_bulk_approve_reports_each_result(team_client, owner, backup_admin, backup, restore):
    own = submit_restore(backup_admin, backup=backup)
    second = submit_restore(owner, backup=backup, target_location="/srv/elsewhere")
    done = approved(submit_restore(owner, backup=backup, target_location="/srv/done"), backup_admin)

    response = team_client.post(
        changelist_url(RestoreRequest),
        {"action": "approve_selected", "_selected_action": [restore.pk, own.pk, second.pk, done.pk]},
        follow=True,
    )

    shown = messages_of(response)
    assert f"Approved 2 request(s): #{second.pk}, #{restore.pk}." in shown
    assert f"Restore request #{own.pk}: {FOUR_EYES}" in shown
    assert f"Restore request #{done.pk} is approved; it cannot be approved." in shown
    assert len(shown) == 3
    statuses = dict(RestoreRequest.objects.values_list("pk", "status"))
    assert statuses == {
        restore.pk: RequestStatus.APPROVED,
        own.pk: RequestStatus.SUBMITTED,
        second.pk: RequestStatus.APPROVED,
        done.pk: RequestStatus.APPROVED,
    }
    assert Job.objects.filter(kind=JobKind.RESTORE).count() == 3


# --- Reject --------------------------------------------------------------------------------


def test_reject_page_asks_for_a_reason(team_client, restore):
    response = team_client.get(reject_url(restore))
    assert response.status_code == 200
    assert 'name="reason"' in response.text
    assert str(restore) in response.text


def test_reject_without_a_reason_is_a_form_error_and_changes_nothing(team_client, restore):
    response = team_client.post(reject_url(restore), {"reason": "   "})

    assert response.status_code == 200
    assert response.context["form"].errors["reason"] == [
        "Say why the request is rejected: the requester reads it."
    ]
    assert refreshed(restore).status == RequestStatus.SUBMITTED
    assert not AuditEvent.objects.filter(action="rejected").exists()


def test_reject_with_a_reason_rejects_and_audits(team_client, backup_admin, restore):
    reason = "Restore to a new folder instead."
    response = team_client.post(reject_url(restore), {"reason": reason}, follow=True)

    assert response.redirect_chain[-1][0] == change_url(restore)
    assert messages_of(response) == [f"Restore request #{restore.pk} is rejected."]
    restore.refresh_from_db()
    assert (restore.status, restore.decision_reason, restore.decided_by) == (
        RequestStatus.REJECTED, reason, backup_admin
    )
    event = AuditEvent.objects.get(restore_request=restore, action="rejected")
    assert (event.channel, event.actor_user, event.message) == (
        Channel.ADMIN, backup_admin, reason
    )
    assert restore.job_id is None


def test_rejecting_a_decided_request_is_an_error_message(team_client, backup_admin, restore):
    approved(restore, backup_admin)
    response = team_client.post(reject_url(restore), {"reason": "Too late."}, follow=True)
    assert messages_of(response) == [f"Restore request #{restore.pk} is approved; it cannot be rejected."]
    assert refreshed(restore).status == RequestStatus.APPROVED


def test_bulk_reject_shows_the_reason_page_first(team_client, restore):
    response = team_client.post(
        changelist_url(RestoreRequest), {"action": "reject_selected", "_selected_action": [restore.pk]}
    )
    assert response.status_code == 200
    assert response.templates[0].name == "admin/requests_app/reject.html"
    assert not response.context["form"].is_bound
    assert refreshed(restore).status == RequestStatus.SUBMITTED


def test_bulk_reject_without_a_reason_changes_nothing(team_client, restore):
    response = team_client.post(
        changelist_url(RestoreRequest),
        {"action": "reject_selected", "_selected_action": [restore.pk], "post": "yes", "reason": ""},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    assert refreshed(restore).status == RequestStatus.SUBMITTED


def test_bulk_reject_with_a_reason_rejects_submitted_ones(team_client, owner, backup_admin, backup, restore):
    other = submit_restore(owner, backup=backup, target_location="/srv/other")
    done = approved(submit_restore(owner, backup=backup, target_location="/srv/done"), backup_admin)

    response = team_client.post(
        changelist_url(RestoreRequest),
        {
            "action": "reject_selected",
            "_selected_action": [restore.pk, other.pk, done.pk],
            "post": "yes",
            "reason": "Duplicate of INC0012300.",
        },
        follow=True,
    )

    shown = messages_of(response)
    assert f"Rejected 2 request(s): #{other.pk}, #{restore.pk}." in shown
    assert f"Restore request #{done.pk} is approved; it cannot be rejected." in shown
    for obj in (restore, other):
        obj.refresh_from_db()
        assert (obj.status, obj.decision_reason) == (RequestStatus.REJECTED, "Duplicate of INC0012300.")
    assert AuditEvent.objects.filter(action="rejected", channel=Channel.ADMIN).count() == 2
    assert refreshed(done).status == RequestStatus.APPROVED


# --- Records, not forms --------------------------------------------------------------------


@pytest.mark.parametrize("model", [ClientRequest, RestoreRequest])
def test_requests_cannot_be_added_or_deleted_even_by_a_superuser(root_client, restore, client_request, model):
    obj = restore if model is RestoreRequest else client_request
    assert root_client.get(reverse(f"admin:requests_app_{model._meta.model_name}_add")).status_code == 403
    delete_url = reverse(f"admin:requests_app_{model._meta.model_name}_delete", args=[obj.pk])
    assert root_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()
    assert "delete_selected" not in root_client.get(changelist_url(model)).text


def test_request_change_form_does_not_edit(root_client, restore):
    response = root_client.post(change_url(restore), {"status": RequestStatus.APPROVED, "overwrite": ""})
    assert response.status_code == 403
    after = refreshed(restore)
    assert (after.status, after.overwrite) == (RequestStatus.SUBMITTED, True)


def test_audit_events_cannot_be_added_changed_or_deleted_even_by_a_superuser(root_client, restore):
    event = AuditEvent.objects.get(restore_request=restore)
    url = change_url(event)

    assert root_client.get(reverse("admin:requests_app_auditevent_add")).status_code == 403
    delete_url = reverse("admin:requests_app_auditevent_delete", args=[event.pk])
    assert root_client.get(delete_url).status_code == 403
    assert root_client.post(delete_url, {"post": "yes"}).status_code == 403
    page = root_client.get(url)
    assert page.status_code == 200
    assert 'name="action"' not in page.text and 'name="_save"' not in page.text
    assert root_client.post(url, {"action": "approved", "actor_label": "mallory"}).status_code == 403
    after = AuditEvent.objects.get(pk=event.pk)
    assert (after.action, after.actor_label) == ("submitted", "owner")
    assert "delete_selected" not in root_client.get(changelist_url(AuditEvent)).text


def test_audit_event_list_filters_and_searches(team_client, owner, backup_admin, restore):
    approved(restore, backup_admin)
    url = changelist_url(AuditEvent)

    def listed(**params):
        return [(e.actor_label, e.action) for e in team_client.get(url, params).context["cl"].result_list]

    assert listed(channel=Channel.ADMIN) == [("backup_admin", "approved")]
    assert listed(action="submitted") == [("owner", "submitted")]
    assert listed(actor_kind=ActorKind.USER, q="owner") == [("owner", "submitted")]
    text = page_text(team_client.get(url))
    assert f"Restore #{restore.pk}" in text and "Submitted → Approved" in text


def test_history_inline_shows_every_event_in_order(team_client, backup_admin, restore):
    actor = Actor.person(backup_admin, Channel.ADMIN)
    services.reject(RestoreRequest, restore.pk, actor=actor, reason="Wrong backup.")
    response = team_client.get(change_url(restore))
    inline = response.context["inline_admin_formsets"][0]
    assert [(f.original.action, f.original.channel) for f in inline] == [
        ("submitted", Channel.WEB),
        ("rejected", Channel.ADMIN),
    ]
    assert "Wrong backup." in response.text
    assert not inline.has_add_permission and not inline.has_delete_permission


# --- Who reaches it --------------------------------------------------------------------


def test_owner_is_sent_to_the_login_page(client, owner, restore):
    client.force_login(owner)
    responses = [
        client.get(changelist_url(RestoreRequest)),
        client.get(change_url(restore)),
        client.post(approve_url(restore)),
        client.post(reject_url(restore), {"reason": "Not needed."}),
    ]
    for response in responses:
        assert response.status_code == 302
        assert response.url.startswith(reverse("admin:login"))
    assert refreshed(restore).status == RequestStatus.SUBMITTED


def test_staff_owner_with_view_permission_sees_own_requests_only(client, owner, restore, other_app):
    theirs = RestoreRequestFactory(backup__client__application=other_app)
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    owner.user_permissions.add(Permission.objects.get(codename="view_restorerequest"))
    client.force_login(owner)

    response = client.get(changelist_url(RestoreRequest))
    assert list(response.context["cl"].result_list) == [restore]
    assert "approve_selected" not in response.text
    assert client.get(change_url(theirs)).status_code == 302  # "does not exist", back to the index
    assert client.post(approve_url(restore)).status_code == 403
    assert client.post(reject_url(restore), {"reason": "mine"}).status_code == 403
    assert refreshed(restore).status == RequestStatus.SUBMITTED
