"""Owners manage their application's channels from its page: add, list (masked), test, remove; nobody else."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from requests_app.models import WebhookDelivery, WebhookFormat, WebhookSubscription
from requests_app.webhooks import Event, chat
from tests.webhooks.receiver import Receiver

SLACK_URL = "https://hooks.slack.com/services/T0001/B0001/abcdefghijklmnopqrstuvwx"
TEAMS_URL = (
    "https://prod-12.westeurope.logic.azure.com:443/workflows/0123abcd/triggers/manual/paths/invoke"
    "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=Zm9vYmFyYmF6cXV4c2VjcmV0"
)


def page(slug: str = "orders") -> str:
    return reverse("requests:channels", args=[slug])


def form(**overrides) -> dict:
    data = {"name": "#orders-oncall", "format": "slack", "url": SLACK_URL, "topics": ["alerts", "requests"]}
    return data | overrides


def make(application, **fields) -> WebhookSubscription:
    fields.setdefault("format", WebhookFormat.SLACK)
    fields.setdefault("url", SLACK_URL)
    fields.setdefault("event_types", [Event.ALERT_RAISED])
    return WebhookSubscription.objects.create(application=application, name="chan", secret="s" * 20, **fields)


def test_the_application_page_links_to_its_notifications(owner_client, app):
    text = owner_client.get(reverse("catalog:application", args=["orders"])).text
    assert f'href="{page()}"' in text


def test_an_owner_adds_a_slack_channel_and_sees_it_masked(owner_client, app):
    response = owner_client.post(page(), form())

    assert response.status_code == 302 and response["Location"] == page()
    channel = WebhookSubscription.objects.get()
    assert (channel.application, channel.format, channel.url, channel.api_key) == (
        app,
        WebhookFormat.SLACK,
        SLACK_URL,
        None,
    )
    assert channel.event_types == [
        Event.ALERT_RAISED,
        Event.RESTORE_REQUEST_CHANGED,
        Event.CLIENT_REQUEST_CHANGED,
    ]
    assert channel.secret.startswith("whsec_")
    listing = owner_client.get(page()).text
    assert "#orders-oncall" in listing and "https://hooks.slack.com/…uvwx" in listing
    assert SLACK_URL not in listing and "abcdefghijklmnop" not in listing


def test_an_owner_adds_a_teams_workflow_and_an_e_mail_channel(owner_client, app):
    teams = form(format="teams", url=TEAMS_URL, topics=["requests"])
    assert owner_client.post(page(), teams).status_code == 302
    addresses = "a@orders.example.com; b@orders.example.com"
    emails = form(name="team list", format="email", url="", email_to=addresses)
    assert owner_client.post(page(), emails).status_code == 302

    teams_channel, by_mail = WebhookSubscription.objects.order_by("pk")
    assert (teams_channel.format, teams_channel.event_types) == (
        WebhookFormat.TEAMS,
        [Event.RESTORE_REQUEST_CHANGED, Event.CLIENT_REQUEST_CHANGED],
    )
    assert (by_mail.format, by_mail.url, by_mail.recipients) == (
        WebhookFormat.EMAIL,
        "",
        ["a@orders.example.com", "b@orders.example.com"],
    )
    listing = owner_client.get(page()).text
    assert "sig=Zm9v" not in listing and "a@orders.example.com, b@orders.example.com" in listing


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://hooks.slack.com/services/T0/B0/x",
        "http://hooks.slack.com/services/T0/B0/x",  # not https
        "https://hooks.slack.com.evil.example/services/T0/B0/x",
        "https://evil.example.com/services/T0/B0/x",
        "https://user:password@hooks.slack.com/services/T0/B0/x",
        "http://127.0.0.1:8080/hooks",
        "https://10.1.2.3/hooks",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hooks",
        "https://localhost/hooks",
        "https://intranet/hooks",
        "https://backup.corp.internal/hooks",
        "javascript:alert(1)",
    ],
)
def test_hostile_or_wrong_slack_urls_are_refused(owner_client, app, url):
    response = owner_client.post(page(), form(url=url))

    assert response.status_code == 400
    assert response.context["form"].errors["url"]
    assert not WebhookSubscription.objects.exists()


@pytest.mark.parametrize(
    "url", ["http://prod-1.westeurope.logic.azure.com/workflows/x", "https://192.168.1.10/x", "https://[fd00::1]/x"]
)
def test_a_teams_url_must_be_public_https(owner_client, app, url):
    response = owner_client.post(page(), form(format="teams", url=url))
    assert response.status_code == 400 and response.context["form"].errors["url"]


def test_a_local_receiver_is_accepted_when_the_setting_allows_it(owner_client, app, settings):
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = True
    assert owner_client.post(page(), form(url="http://127.0.0.1:8080/hooks")).status_code == 302


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"topics": []}, "topics", "Choose alerts, request updates, or both."),
        ({"url": ""}, "url", "The webhook URL from Slack or Teams."),
        ({"format": "email", "email_to": ""}, "email_to", "At least one e-mail address."),
        ({"format": "email", "email_to": "who, b@example.com"}, "email_to", "Not an e-mail address: who"),
        ({"format": "portal"}, "format", None),  # signed JSON is for integrations, set up by the team
    ],
)
def test_clear_form_errors(owner_client, app, overrides, field, message):
    response = owner_client.post(page(), form(**overrides))

    assert response.status_code == 400
    errors = response.context["form"].errors[field]
    assert message is None or message in errors
    assert message is None or message in response.text
    assert not WebhookSubscription.objects.exists()


def test_another_owner_gets_404_for_the_page_and_each_channel(other_client, app, other_app):
    channel = make(app)
    assert other_client.get(page()).status_code == 404
    assert other_client.post(page(), form()).status_code == 404
    for name in ("requests:channel-delete", "requests:channel-test"):
        assert other_client.post(reverse(name, args=["orders", channel.pk])).status_code == 404
        # Through their own application: the channel is not one of its channels.
        assert other_client.post(reverse(name, args=["payroll", channel.pk])).status_code == 404
    assert WebhookSubscription.objects.filter(pk=channel.pk).exists()
    assert not WebhookDelivery.objects.exists()


def test_the_backup_team_manages_any_applications_channels(team_client, app):
    assert team_client.get(page()).status_code == 200
    assert team_client.post(page(), form()).status_code == 302


def test_an_owner_removes_a_channel_by_post_only(owner_client, app):
    channel = make(app)
    remove = reverse("requests:channel-delete", args=["orders", channel.pk])

    assert owner_client.get(remove).status_code == 405
    response = owner_client.post(remove, follow=True)
    assert response.status_code == 200 and "removed" in response.text
    assert not WebhookSubscription.objects.exists()


def test_changes_need_the_csrf_token(owner, app):
    channel = make(app)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    assert browser.post(page(), form()).status_code == 403
    assert browser.post(reverse("requests:channel-delete", args=["orders", channel.pk])).status_code == 403
    assert browser.post(reverse("requests:channel-test", args=["orders", channel.pk])).status_code == 403
    assert WebhookSubscription.objects.count() == 1
    assert not WebhookDelivery.objects.exists()


def test_send_a_test_message_posts_to_the_channel(
    owner_client, app, settings, django_capture_on_commit_callbacks
):
    settings.PORTAL_WEBHOOK_ALLOW_PRIVATE = True
    with Receiver() as receiver:
        channel = make(app, format=WebhookFormat.TEAMS, url=receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            response = owner_client.post(reverse("requests:channel-test", args=["orders", channel.pk]))
        assert response.status_code == 302

        [received] = receiver.received
    card = json.loads(received.body)["attachments"][0]["content"]
    assert card["body"][0]["text"] == "Test message for Orders"
    row = WebhookDelivery.objects.get(subscription=channel)
    assert (row.event, row.status) == (chat.TEST_EVENT, "delivered")
    listing = owner_client.get(page()).text
    assert "delivered" in listing


def test_the_list_takes_the_same_queries_for_many_channels(owner_client, app):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert owner_client.get(page()).status_code == 200
        return len(queries)

    make(app)
    few = count()
    for n in range(5):
        channel = make(app, format=WebhookFormat.EMAIL, url="", email_to=f"x{n}@example.com")
        WebhookDelivery.objects.create(
            subscription=channel, delivery_id=uuid.uuid4(), event=Event.ALERT_RAISED, body="{}"
        )
    assert count() == few


def test_an_application_has_a_bounded_number_of_channels(owner_client, app):
    from requests_app.channels.forms import MAX_CHANNELS_PER_APPLICATION

    for _ in range(MAX_CHANNELS_PER_APPLICATION):
        make(app)
    response = owner_client.post(page(), form())
    assert response.status_code == 400 and "at most" in response.text


# --- The admin ---------------------------------------------------------------------------------


def admin_url(view: str, *args) -> str:
    return reverse(f"admin:requests_app_webhooksubscription_{view}", args=args)


def admin_form_data(app, **overrides) -> dict:
    """The admin's add form for a Slack channel of ``app`` that hears alerts."""
    data = {
        "name": "#orders",
        "format": "slack",
        "application": app.pk,
        "url": SLACK_URL,
        "email_to": "",
        "api_key": "",
        "events": [Event.ALERT_RAISED],
        "active": "on",
        "new_secret": "a-secret-typed-by-the-admin-0123",
    }
    return {**data, **overrides}


def test_the_admin_adds_an_application_channel_and_never_shows_its_url_again(team_client, app):
    data = admin_form_data(app)
    assert team_client.post(admin_url("add"), data).status_code == 302
    channel = WebhookSubscription.objects.get()
    assert (channel.application, channel.format) == (app, WebhookFormat.SLACK)

    change = team_client.get(admin_url("change", channel.pk)).text
    assert SLACK_URL not in change and "https://hooks.slack.com/…uvwx" in change
    # Saved without a new URL: the old one is kept.
    unchanged = {**data, "url": "", "new_secret": ""}
    assert team_client.post(admin_url("change", channel.pk), unchanged).status_code == 302
    channel.refresh_from_db()
    assert channel.url == SLACK_URL


def test_the_admin_refuses_a_chat_channel_of_job_events_and_a_hostile_url(team_client, app):
    response = team_client.post(admin_url("add"), admin_form_data(app, events=[Event.JOB_CHANGED]))
    assert response.status_code == 200 and "alerts and request changes only" in response.text
    response = team_client.post(admin_url("add"), admin_form_data(app, url="https://10.0.0.1/x"))
    assert response.status_code == 200 and "private or local network" in response.text
    assert not WebhookSubscription.objects.exists()
