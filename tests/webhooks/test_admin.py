"""The webhook admin: secrets stay masked, deliveries are read-only with their attempts, Redeliver resends."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from requests_app.models import ApiKey, DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSubscription
from requests_app.webhooks import Event, delivery
from tests import factories
from tests.webhooks.receiver import SECRET

BODY = '{"event":"job.changed","object":{"id":1},"previous_status":"queued","status":"running"}'


def url(model_name: str, view: str = "changelist", *args) -> str:
    return reverse(f"admin:requests_app_{model_name}_{view}", args=args)


def make_delivery(subscription, **fields) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        subscription=subscription, delivery_id=uuid.uuid4(), event=Event.JOB_CHANGED, body=BODY, **fields
    )


def add_form_data(**overrides) -> dict:
    data = {
        "name": "ServiceNow production",
        "url": "https://servicenow.example.com/api/portal_hooks",
        "api_key": "",
        "events": [Event.RESTORE_REQUEST_CHANGED, Event.CLIENT_REQUEST_CHANGED],
        "active": "on",
        "new_secret": "a-secret-typed-by-the-admin-0123",
    }
    return {**data, **overrides}


# --- Subscriptions ----------------------------------------------------------------------------


def test_add_form_proposes_a_random_secret_to_copy(team_client):
    first = team_client.get(url("webhooksubscription", "add"))
    second = team_client.get(url("webhooksubscription", "add"))
    proposed = first.context["adminform"].form["new_secret"].value()
    assert proposed.startswith("whsec_") and len(proposed) > 40
    assert proposed != second.context["adminform"].form["new_secret"].value()


def test_subscription_is_created_with_its_events_secret_and_integration(team_client, owner):
    key, _ = ApiKey.issue(user=owner, name="ServiceNow (orders)")
    response = team_client.post(url("webhooksubscription", "add"), add_form_data(api_key=key.pk))
    assert response.status_code == 302, response.context["adminform"].form.errors
    subscription = WebhookSubscription.objects.get()
    assert subscription.secret == "a-secret-typed-by-the-admin-0123"
    assert subscription.event_types == [Event.RESTORE_REQUEST_CHANGED, Event.CLIENT_REQUEST_CHANGED]
    assert subscription.api_key == key


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"url": "ftp://files.example.com/hooks"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"new_secret": ""}, "new_secret"),
        ({"new_secret": "short"}, "new_secret"),
        ({"events": ["job.exploded"]}, "events"),
    ],
)
def test_add_form_refuses_what_cannot_work(team_client, overrides, field):
    response = team_client.post(url("webhooksubscription", "add"), add_form_data(**overrides))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not WebhookSubscription.objects.exists()


def test_revoked_keys_are_not_offered(team_client, owner):
    live, _ = ApiKey.issue(user=owner, name="live key")
    revoked, _ = ApiKey.issue(user=owner, name="revoked key")
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    field = team_client.get(url("webhooksubscription", "add")).context["adminform"].form.fields["api_key"]
    assert list(field.queryset) == [live]


def test_a_subscription_whose_key_was_revoked_can_still_be_edited(team_client, owner, subscribe):
    key, _ = ApiKey.issue(user=owner, name="old key")
    subscription = subscribe("https://example.com/hooks", api_key=key)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    data = add_form_data(api_key=key.pk, new_secret="", active="")
    response = team_client.post(url("webhooksubscription", "change", subscription.pk), data)
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert (subscription.api_key, subscription.active) == (key, False)


def test_secret_is_masked_on_the_list_and_the_change_page(team_client, subscribe):
    subscription = subscribe("https://example.com/hooks")
    for page in (url("webhooksubscription"), url("webhooksubscription", "change", subscription.pk)):
        text = team_client.get(page).text
        assert SECRET not in text
        assert SECRET[:12] not in text
        assert "••••••••" + SECRET[-4:] in text


def test_change_keeps_the_secret_unless_a_new_one_is_given(team_client, subscribe):
    subscription = subscribe("https://example.com/hooks")
    change = url("webhooksubscription", "change", subscription.pk)
    data = add_form_data(new_secret="", events=[])

    assert team_client.post(change, data).status_code == 302
    subscription.refresh_from_db()
    assert (subscription.secret, subscription.event_types) == (SECRET, [])

    assert team_client.post(change, {**data, "new_secret": "the-rotated-secret-456789"}).status_code == 302
    subscription.refresh_from_db()
    assert subscription.secret == "the-rotated-secret-456789"


def test_subscription_list_counts_pending_and_failed_deliveries(team_client, subscribe):
    subscription = subscribe("https://example.com/hooks")
    for status, n in ((DeliveryStatus.PENDING, 2), (DeliveryStatus.FAILED, 3), (DeliveryStatus.DELIVERED, 4)):
        for _ in range(n):
            make_delivery(subscription, status=status)
    [row] = team_client.get(url("webhooksubscription")).context["cl"].result_list
    assert (row.pending_count, row.failed_count) == (2, 3)


def test_deleting_a_subscription_counts_its_deliveries_instead_of_listing_them(team_client, subscribe):
    subscription = subscribe("https://example.com/hooks")
    for _ in range(3):
        make_delivery(subscription, status=DeliveryStatus.DELIVERED)
    page = team_client.get(url("webhooksubscription", "delete", subscription.pk))
    assert page.status_code == 200
    assert dict(page.context["model_count"]) == {
        "webhook subscriptions": 1,
        "webhook deliveries (with their attempts)": 3,
    }
    assert (
        team_client.post(url("webhooksubscription", "delete", subscription.pk), {"post": "yes"}).status_code
        == 302
    )
    assert not WebhookDelivery.objects.exists()


# --- Deliveries -------------------------------------------------------------------------------


def test_delivery_page_shows_body_and_every_attempt_read_only(team_client, subscribe):
    row = make_delivery(subscribe("https://example.com/hooks"), attempts=2, last_status_code=502)
    WebhookAttempt.objects.create(delivery=row, status_code=None, error="ConnectionRefusedError: refused")
    WebhookAttempt.objects.create(delivery=row, status_code=502, error="HTTP 502 Bad Gateway", duration_ms=31)

    response = team_client.get(url("webhookdelivery", "change", row.pk))

    assert response.status_code == 200
    assert "ConnectionRefusedError: refused" in response.text
    assert "HTTP 502 Bad Gateway" in response.text
    assert "&quot;previous_status&quot;:&quot;queued&quot;" in response.text  # the body, escaped
    assert SECRET not in response.text
    assert team_client.get(url("webhookdelivery", "add")).status_code == 403
    assert team_client.post(url("webhookdelivery", "change", row.pk), {}).status_code == 403


def test_delivery_can_be_found_by_its_x_portal_delivery_id(team_client, subscribe):
    subscription = subscribe("https://example.com/hooks")
    wanted, _other = make_delivery(subscription), make_delivery(subscription)
    found = team_client.get(url("webhookdelivery"), {"q": str(wanted.delivery_id)})
    assert list(found.context["cl"].result_list) == [wanted]
    assert team_client.get(url("webhookdelivery"), {"q": "not-a-uuid"}).status_code == 200


def test_redeliver_sends_the_same_delivery_again_under_the_same_id(
    team_client, team_subscription, receiver, django_capture_on_commit_callbacks
):
    row = make_delivery(team_subscription)
    delivery.deliver(str(row.delivery_id))
    row.refresh_from_db()
    assert row.status == DeliveryStatus.DELIVERED
    waiting = make_delivery(team_subscription, next_attempt_at=timezone.now() + timedelta(minutes=5))

    with django_capture_on_commit_callbacks(execute=True):
        response = team_client.post(
            url("webhookdelivery"),
            {"action": "redeliver_selected", "_selected_action": [row.pk, waiting.pk]},
            follow=True,
        )

    assert f"Redelivering 1 delivery(ies): {row.delivery_id}." in response.text
    assert "1 pending delivery(ies) left alone" in response.text
    assert [r.delivery_id for r in receiver.received] == [str(row.delivery_id)] * 2
    assert receiver.received[0].body == receiver.received[1].body
    row.refresh_from_db()
    assert (row.status, row.attempts) == (DeliveryStatus.DELIVERED, 2)
    assert row.attempt_log.count() == 2
    assert WebhookDelivery.objects.count() == 2  # no new delivery was made


def test_redeliver_revives_a_failed_delivery(team_subscription, receiver, django_capture_on_commit_callbacks):
    row = make_delivery(
        team_subscription,
        status=DeliveryStatus.FAILED,
        attempts=30,
        created_at=timezone.now() - timedelta(days=2),
    )
    with django_capture_on_commit_callbacks(execute=True):
        delivery.redeliver([row.pk])
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DELIVERED, 31, 200)


def test_owner_without_permissions_cannot_see_webhooks(client, owner):
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    client.force_login(owner)
    assert client.get(url("webhooksubscription")).status_code == 403
    assert client.get(url("webhookdelivery")).status_code == 403


def test_redeliver_needs_the_backup_team(client, owner, subscribe):
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    owner.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
    client.force_login(owner)
    make_delivery(subscribe("https://example.com/hooks"))
    response = client.get(url("webhookdelivery"))
    assert response.status_code == 200
    assert "redeliver_selected" not in response.text


# --- Constant query counts ---------------------------------------------------------------------


def _grow(n: int) -> None:
    owner = factories.UserFactory()
    key, _ = ApiKey.issue(user=owner, name=f"integration {n}")
    subscription = WebhookSubscription.objects.create(
        name=f"hook {n}", url=f"https://example.com/{n}", secret=SECRET, api_key=key
    )
    for status in DeliveryStatus.values:
        WebhookAttempt.objects.create(delivery=make_delivery(subscription, status=status), status_code=500)


@pytest.mark.parametrize("model_name", ["webhooksubscription", "webhookdelivery"])
def test_changelist_queries_do_not_grow_with_rows(team_client, model_name):
    page = url(model_name)
    _grow(0)
    team_client.get(page)  # warm caches (content types, session) outside the measurement
    with CaptureQueriesContext(connection) as few:
        assert team_client.get(page).status_code == 200
    for n in range(1, 6):
        _grow(n)
    with CaptureQueriesContext(connection) as many:
        response = team_client.get(page)
    assert len(response.context["cl"].result_list) >= 6
    assert len(many) == len(few), "\n".join(q["sql"] for q in many.captured_queries)
