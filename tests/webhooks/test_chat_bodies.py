"""Slack and Teams bodies against their documented formats; escaping of what users and agents wrote.

Slack: an incoming webhook takes ``text`` (the notification fallback) and ``blocks`` (Block Kit:
section/context/actions; mrkdwn text objects; a button element with ``url``); ``&``, ``<`` and ``>``
are control characters to escape. Teams: a Workflows webhook ("Post to a channel when a webhook
request is received") takes a ``message`` whose attachment is an Adaptive Card
(``application/vnd.microsoft.card.adaptive``, ``contentUrl`` null); the MessageCard is refused.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings

from catalog.choices import AlertKind, AlertSeverity
from requests_app.choices import RequestStatus
from requests_app.models import WebhookFormat
from requests_app.webhooks import Event, chat
from tests import factories
from tests.requests.factories import submit_client, submit_restore

HOSTILE = "<!channel>&"
MENTIONS = ("<!channel>", "<!here>", "<!everyone>", "<http")


@pytest.fixture
def hostile_alert(app):
    agent = factories.AgentFactory(hostname=f"{HOSTILE}.example.com", applications=[app])
    client = factories.BackupClientFactory(application=app, agent=agent, name="web")
    return factories.AlertFactory(
        client=client,
        agent=agent,
        kind=AlertKind.JOB_FAILED,
        severity=AlertSeverity.CRITICAL,
        message=f"Backup on {HOSTILE} failed: see <http://evil.example|here> & <!here>",
    )


def rendered(fmt: str, msg: chat.Message) -> dict:
    body = chat.render(fmt, msg)
    assert isinstance(body, str)
    return json.loads(body)


def all_text(value) -> list[str]:
    """Every string in a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in all_text(item)]
    if isinstance(value, list):
        return [text for item in value for text in all_text(item)]
    return []


# --- Slack ------------------------------------------------------------------------------------


def check_slack_shape(body: dict) -> None:
    """What Slack's incoming webhooks and Block Kit reference require of each part we use."""
    assert set(body) == {"text", "blocks"}
    assert isinstance(body["text"], str) and body["text"].strip()
    assert isinstance(body["blocks"], list) and 1 <= len(body["blocks"]) <= 50
    for block in body["blocks"]:
        assert block["type"] in {"section", "context", "actions"}
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] == "mrkdwn"
                assert 1 <= len(block["text"]["text"]) <= 3000
            for item in block.get("fields", []):
                assert item["type"] == "mrkdwn" and 1 <= len(item["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        elif block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10
            assert all(element["type"] in {"mrkdwn", "plain_text"} for element in block["elements"])
        else:
            [button] = block["elements"]
            assert button["type"] == "button"
            assert button["text"]["type"] == "plain_text" and len(button["text"]["text"]) <= 75
            assert isinstance(button["url"], str) and len(button["url"]) <= 3000
            assert len(button["action_id"]) <= 255


def test_slack_alert_body_is_block_kit_with_a_link_to_the_portal(hostile_alert):
    body = rendered(WebhookFormat.SLACK, chat.message(Event.ALERT_RAISED, hostile_alert))

    check_slack_shape(body)
    section, facts, context, actions = body["blocks"]
    assert section["text"]["text"].startswith(":red_circle: *Critical: Job failed in Orders*")
    assert {"type": "mrkdwn", "text": "*Client*\nweb"} in facts["fields"]
    assert context["elements"][0]["text"].startswith("Backup Portal · ")
    [button] = actions["elements"]
    assert button["url"] == f"{settings.PORTAL_BASE_URL}/alerts/?application=orders"
    assert body["text"].startswith("Critical: Job failed in Orders: Backup on ")


def test_slack_escapes_control_characters_in_hostnames_and_messages(hostile_alert):
    body = rendered(WebhookFormat.SLACK, chat.message(Event.ALERT_RAISED, hostile_alert))

    texts = [body["text"]] + [
        text for block in body["blocks"] if block["type"] != "actions" for text in all_text(block)
    ]
    for text in texts:
        assert not any(mention in text for mention in MENTIONS), text
    section, facts = body["blocks"][:2]
    escaped = (
        "Backup on &lt;!channel&gt;&amp; failed: see &lt;http://evil.example|here&gt; &amp; &lt;!here&gt;"
    )
    assert escaped in section["text"]["text"]
    assert {"type": "mrkdwn", "text": "*Server*\n&lt;!channel&gt;&amp;.example.com"} in facts["fields"]
    assert "&lt;!here&gt;" in body["text"]


def test_slack_text_is_cut_to_the_section_limit(hostile_alert):
    hostile_alert.message = "x" * 5000
    body = rendered(WebhookFormat.SLACK, chat.message(Event.ALERT_RAISED, hostile_alert))
    check_slack_shape(body)
    assert body["blocks"][0]["text"]["text"].endswith("…")


# --- Teams ------------------------------------------------------------------------------------


def check_teams_shape(body: dict) -> dict:
    """The Workflows webhook's envelope and an Adaptive Card of a version Teams renders; the card."""
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert "contentUrl" in attachment and attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["type"] == "AdaptiveCard"
    assert tuple(map(int, card["version"].split("."))) >= (1, 4)
    assert "@type" not in body and "sections" not in body  # not the retired MessageCard
    for element in card["body"]:
        assert element["type"] in {"TextBlock", "FactSet"}
        if element["type"] == "TextBlock":
            assert isinstance(element["text"], str) and element["text"]
        else:
            assert all(set(fact) == {"title", "value"} for fact in element["facts"])
            assert all(isinstance(fact["value"], str) for fact in element["facts"])
    [action] = card["actions"]
    assert action["type"] == "Action.OpenUrl" and action["title"]
    return card


def test_teams_alert_body_is_an_adaptive_card_in_the_workflows_envelope(hostile_alert):
    body = rendered(WebhookFormat.TEAMS, chat.message(Event.ALERT_RAISED, hostile_alert))

    card = check_teams_shape(body)
    title, text, facts, footer = card["body"]
    assert (title["text"], title["weight"], title["color"]) == (
        "Critical: Job failed in Orders",
        "Bolder",
        "Attention",
    )
    assert text["text"] == hostile_alert.message and text["wrap"] is True
    assert {"title": "Server", "value": f"{HOSTILE}.example.com"} in facts["facts"]
    assert card["actions"][0]["url"] == f"{settings.PORTAL_BASE_URL}/alerts/?application=orders"


def test_teams_restore_request_body_links_to_the_request(owner, mine):
    request = submit_restore(owner, backup=mine.backup, external_ref="INC0012345")
    msg = chat.message(
        Event.RESTORE_REQUEST_CHANGED,
        request,
        previous=RequestStatus.SUBMITTED,
        status=RequestStatus.APPROVED,
    )
    card = check_teams_shape(rendered(WebhookFormat.TEAMS, msg))

    assert card["body"][0]["text"] == f"Restore request #{request.pk} for {mine.client.name}: approved"
    assert card["body"][1]["text"] == "Submitted → approved"
    facts = {fact["title"]: fact["value"] for fact in card["body"][2]["facts"]}
    assert facts["Ticket"] == "INC0012345" and facts["Application"] == "Orders"
    assert card["actions"][0]["url"] == f"{settings.PORTAL_BASE_URL}/requests/restore/{request.pk}/"


def test_client_request_bodies_in_every_format(owner, app):
    request = submit_client(owner, application=app, hostname="db7.example.com", name="db7")
    msg = chat.message(Event.CLIENT_REQUEST_CHANGED, request, previous=None, status=RequestStatus.SUBMITTED)
    url = f"{settings.PORTAL_BASE_URL}/requests/client/{request.pk}/"

    slack = rendered(WebhookFormat.SLACK, msg)
    check_slack_shape(slack)
    assert slack["blocks"][-1]["elements"][0]["url"] == url
    assert "db7 on db7.example.com: submitted" in slack["text"]
    card = check_teams_shape(rendered(WebhookFormat.TEAMS, msg))
    assert card["actions"][0]["url"] == url
    mail = rendered(WebhookFormat.EMAIL, msg)
    title = f"Client request #{request.pk} for db7 on db7.example.com: submitted"
    assert mail["subject"] == f"[Backup Portal] {title}"
    assert f"Open in the portal: {url}" in mail["text"]


def test_test_message_links_to_the_channels_page(app):
    for fmt in (WebhookFormat.SLACK, WebhookFormat.TEAMS):
        body = rendered(fmt, chat.test_message(app))
        assert f"{settings.PORTAL_BASE_URL}/applications/orders/notifications/" in all_text(body)


def test_job_changes_have_no_chat_message(mine):
    with pytest.raises(ValueError, match="no chat message"):
        chat.message(Event.JOB_CHANGED, mine.backup)



def test_a_retire_request_says_so_in_its_title(owner, app):
    from requests_app import services
    from requests_app.actors import Actor

    client = factories.BackupClientFactory(application=app, name="web", hostname="web1.example.com")
    request = services.submit_retire(actor=Actor.person(owner), client=client)

    msg = chat.message(Event.CLIENT_REQUEST_CHANGED, request, previous=None, status=RequestStatus.SUBMITTED)

    assert msg.title == f"Retire request #{request.pk} for web on web1.example.com: submitted"


def test_teams_escapes_markdown_in_what_users_and_agents_wrote(app):
    """Adaptive Card TextBlocks and facts render Markdown: a hostile name must stay literal text."""
    hostile = "[click](https://evil)"
    agent = factories.AgentFactory(hostname="*bold*_x_.example.com", applications=[app])
    client = factories.BackupClientFactory(application=app, agent=agent, name=hostile)
    alert = factories.AlertFactory(
        client=client, agent=agent, kind=AlertKind.JOB_FAILED, severity=AlertSeverity.WARNING,
        message="# Heading\n- item `code` [x](https://evil)",
    )  # fmt: skip

    card = check_teams_shape(rendered(WebhookFormat.TEAMS, chat.message(Event.ALERT_RAISED, alert)))

    _, text, facts, _ = card["body"]
    values = {fact["title"]: fact["value"] for fact in facts["facts"]}
    assert values["Client"] == r"\[click\](https://evil)"
    assert values["Server"] == r"\*bold\*\_x\_.example.com"
    assert text["text"] == "\\# Heading\n\\- item \\`code\\` \\[x\\](https://evil)"
    assert "[click](" not in json.dumps(card)
    # Slack's escaping is its own: the name is not backslashed there.
    slack = rendered(WebhookFormat.SLACK, chat.message(Event.ALERT_RAISED, alert))
    assert hostile in json.dumps(slack)


def test_teams_escape_leaves_plain_text_alone():
    assert chat.teams_escape("Critical: Job failed in Orders") == "Critical: Job failed in Orders"
    assert chat.teams_escape("1. first\n  > quoted") == "1\\. first\n  \\> quoted"
