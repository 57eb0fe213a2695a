"""The bodies of an application's notification channels: Slack, Microsoft Teams and e-mail.

One ``Message`` (title, text, facts, a link back to the portal) is made from
the event and its object, then written in each format:

- Slack incoming webhook: ``{"text": fallback, "blocks": [...]}`` in Block
  Kit — a section of mrkdwn, a section of fields, a context line and an
  actions block whose button opens the portal. Everything that comes from
  users or agents (names, hostnames, messages) is escaped for mrkdwn (``&``,
  ``<``, ``>``): unescaped, ``<!channel>`` in a hostname would ping a whole
  channel and ``<http://evil|click>`` would make a link.
- Microsoft Teams, as a Workflows webhook ("Post to a channel when a webhook
  request is received") takes it: a ``message`` with one Adaptive Card
  attachment (schema, ``AdaptiveCard`` 1.4, TextBlocks, a FactSet and an
  ``Action.OpenUrl``). The Office 365 connector's MessageCard is retired and
  Workflows refuse it. TextBlocks and fact values render a subset of Markdown,
  so everything from users and agents is escaped for it (``teams_escape``):
  unescaped, a client named ``[click](https://evil)`` would be a link.
- E-mail: a subject and a plain-text body, sent with Django's mail.

The body is rendered once, at dispatch, and stored in WebhookDelivery.body:
what the admin shows is exactly what was sent, and every retry sends the same.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from catalog.choices import AlertSeverity
from catalog.models import Alert
from requests_app.choices import ClientAction, RequestStatus
from requests_app.models import ClientRequest, RestoreRequest, WebhookFormat
from requests_app.webhooks import Event

PORTAL = "Backup Portal"
#: The event of a channel's test message (a delivery only: nobody subscribes to it).
TEST_EVENT = "channel.test"
ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_VERSION = "1.4"
ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
#: Slack: a section's text holds 3,000 characters, a field 2,000, a section 10 fields.
SLACK_TEXT_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000
SLACK_MAX_FIELDS = 10
BUTTON_TEXT = "Open in the portal"
SLACK_ICONS = {AlertSeverity.CRITICAL: ":red_circle: ", AlertSeverity.WARNING: ":warning: "}
TEAMS_COLOURS = {AlertSeverity.CRITICAL: "Attention", AlertSeverity.WARNING: "Warning"}
#: What the related objects of each event need to be loaded with for a message (dispatch adds them).
RELATED: dict[str, tuple[str, ...]] = {
    Event.ALERT_RAISED: ("application", "client", "agent", "storage_target"),
    Event.RESTORE_REQUEST_CHANGED: ("backup__client__application", "target_agent", "requester"),
    Event.CLIENT_REQUEST_CHANGED: ("application", "policy", "requester"),
}


@dataclass(frozen=True)
class Message:
    """What a person reads, whatever the channel; every string is plain text, unescaped."""

    title: str
    text: str
    url: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    severity: str = ""  # an alert's; "" for anything else
    when: datetime | None = None


# --- From an event to a message ---------------------------------------------------------------


def message(event: str, obj, *, status: str = "", previous: str | None = None) -> Message:
    """The message of ``event`` about ``obj`` (an Alert, RestoreRequest or ClientRequest)."""
    if event == Event.ALERT_RAISED:
        return _alert(obj)
    if event in (Event.RESTORE_REQUEST_CHANGED, Event.CLIENT_REQUEST_CHANGED):
        return _request(obj, status=status, previous=previous)
    raise ValueError(f"no chat message for {event}")


def test_message(application) -> Message:
    return Message(
        title=f"Test message for {application.name}",
        text=f"This channel will receive the alerts and request updates of {application.name} "
        f"that its owners chose, from the {PORTAL}.",
        url=portal_url(reverse("requests:channels", args=[application.slug])),
        facts=[("Application", application.name)],
        when=timezone.now(),
    )


def portal_url(path: str) -> str:
    return settings.PORTAL_BASE_URL + path


def _alert(alert: Alert) -> Message:
    where = alert.application.name if alert.application_id else "shared infrastructure"
    facts = [("Application", where), ("Severity", alert.get_severity_display())]
    if alert.client_id:
        facts.append(("Client", alert.client.name))
    if alert.agent_id:
        facts.append(("Server", alert.agent.hostname))
    if alert.storage_target_id:
        facts.append(("Storage", alert.storage_target.name))
    query = f"?application={alert.application.slug}" if alert.application_id else ""
    return Message(
        title=f"{alert.get_severity_display()}: {alert.get_kind_display()} in {where}",
        text=alert.message,
        url=portal_url(reverse("alerts") + query),
        facts=facts,
        severity=alert.severity,
        when=alert.created_at,
    )


def _request(request: RestoreRequest | ClientRequest, *, status: str, previous: str | None) -> Message:
    label = RequestStatus(status).label.lower() if status else request.get_status_display().lower()
    change = f"{RequestStatus(previous).label} → {label}" if previous else "New request"
    facts = [("Application", request.application.name), ("Status", label)]
    if isinstance(request, RestoreRequest):
        backup = request.backup
        title = f"Restore request #{request.pk} for {backup.client.name}: {label}"
        facts += [
            ("Client", backup.client.name),
            ("Recovery point", f"#{backup.pk}, {_utc(backup.taken_at)}"),
            ("Restore onto", f"{request.target_agent.hostname}:{request.target_location}"),
        ]
    else:
        what = "Retire request" if request.action == ClientAction.RETIRE else "Client request"
        title = f"{what} #{request.pk} for {request.name} on {request.hostname}: {label}"
        facts += [("Server", request.hostname), ("Client", request.name), ("Policy", request.policy.name)]
    facts.append(("Requested by", request.requester.get_full_name() or request.requester.get_username()))
    if request.external_ref:
        facts.append(("Ticket", request.external_ref))
    text = change + (f". {request.error}" if request.error else "")
    return Message(
        title=title, text=text, url=portal_url(request.get_absolute_url()), facts=facts, when=timezone.now()
    )


def _utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "—"


# --- From a message to a body ---------------------------------------------------------------


def render(fmt: str, msg: Message) -> str:
    """The exact body stored and sent for a channel of format ``fmt``."""
    body = {WebhookFormat.SLACK: slack_body, WebhookFormat.TEAMS: teams_body, WebhookFormat.EMAIL: email_body}
    return json.dumps(body[fmt](msg), ensure_ascii=False, separators=(",", ":"))


def slack_escape(text: str) -> str:
    """Slack's three control characters, as its formatting docs ask; nothing else is touched."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: What Adaptive Card Markdown reads as formatting anywhere in a line: a backslash escapes it.
TEAMS_MARKDOWN = re.compile(r"([\\`*_\[\]])")
#: ... and at the start of a line: a heading, a list or a quote (``1.`` an ordered list).
TEAMS_LINE_START = re.compile(r"(?m)^(\s*)([#>+-]|\d+(?=[.)]))")


def teams_escape(text: str) -> str:
    """Text from users and agents as literal text in a TextBlock or fact (Adaptive Card Markdown)."""
    text = TEAMS_MARKDOWN.sub(r"\\\1", text)
    return TEAMS_LINE_START.sub(lambda m: m[1] + ("\\" + m[2] if not m[2].isdigit() else m[2] + "\\"), text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_body(msg: Message) -> dict:
    title, text = slack_escape(msg.title), slack_escape(msg.text)
    icon = SLACK_ICONS.get(msg.severity, "")
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{slack_escape(label)}*\n{slack_escape(value)}", SLACK_FIELD_LIMIT)}
        for label, value in msg.facts[:SLACK_MAX_FIELDS]
    ]
    headline = _cut(f"{icon}*{title}*\n{text}", SLACK_TEXT_LIMIT)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": headline}}]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks += [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{PORTAL} · {_utc(msg.when)}"}]},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "open_portal",
                    "text": {"type": "plain_text", "text": BUTTON_TEXT},
                    "url": msg.url,
                }
            ],
        },
    ]
    # The top-level text is what notifications and screen readers show: the title, escaped as well.
    return {"text": _cut(f"{title}: {text}" if text else title, SLACK_TEXT_LIMIT), "blocks": blocks}


def teams_body(msg: Message) -> dict:
    color = TEAMS_COLOURS.get(msg.severity, "Default")
    card = {
        "$schema": ADAPTIVE_CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "body": [
            {
                "type": "TextBlock",
                "text": teams_escape(msg.title),
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
            {"type": "TextBlock", "text": teams_escape(msg.text) or " ", "wrap": True},
            {
                "type": "FactSet",
                "facts": [{"title": label, "value": teams_escape(value)} for label, value in msg.facts],
            },
            {"type": "TextBlock", "text": f"{PORTAL} · {_utc(msg.when)}", "isSubtle": True, "size": "Small"},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": BUTTON_TEXT, "url": msg.url}],
    }
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def email_body(msg: Message) -> dict:
    facts = "\n".join(f"{label}: {value}" for label, value in msg.facts)
    text = f"{msg.title}\n\n{msg.text}\n\n{facts}\n\nOpen in the portal: {msg.url}\n\n"
    text += f"— {PORTAL}, {_utc(msg.when)}\n"
    subject = " ".join(f"[{PORTAL}] {msg.title}".split())  # one line: a header never takes a newline
    return {"subject": subject, "text": text}
