"""The form that adds a channel: what kind, where to, and which of the application's events."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from requests_app.models import EMAIL_MAX_ADDRESSES, WebhookFormat, WebhookSubscription
from requests_app.webhooks import Event, destinations, signing

#: An application has a handful of channels; the cap keeps its page (and every dispatch) short.
MAX_CHANNELS_PER_APPLICATION = 20
ALERTS = "alerts"
REQUESTS = "requests"
#: What an owner ticks → the subscription's event types.
TOPICS = {
    ALERTS: (Event.ALERT_RAISED,),
    REQUESTS: (Event.RESTORE_REQUEST_CHANGED, Event.CLIENT_REQUEST_CHANGED),
}
CHANNEL_FORMATS = [
    (fmt.value, fmt.label) for fmt in (WebhookFormat.SLACK, WebhookFormat.TEAMS, WebhookFormat.EMAIL)
]


def topics_of(event_types: list[str]) -> list[str]:
    return [topic for topic, events in TOPICS.items() if set(events) & set(event_types)]


class ChannelForm(forms.ModelForm):
    format = forms.ChoiceField(choices=CHANNEL_FORMATS, widget=forms.RadioSelect, label="Where")
    url = forms.URLField(
        label="Webhook URL",
        max_length=1000,
        required=False,
        assume_scheme="https",
        help_text="Slack: the incoming webhook's https://hooks.slack.com/services/… URL. Teams: the URL of a "
        "Workflows “Post to a channel when a webhook request is received” flow. Shown masked once saved.",
        widget=forms.URLInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    email_to = forms.CharField(
        label="E-mail addresses",
        max_length=1000,
        required=False,
        help_text=f"E-mail: up to {EMAIL_MAX_ADDRESSES} addresses, separated by commas, e.g. a team's list. "
        "The application's owners already get its critical alerts by mail.",
    )
    topics = forms.MultipleChoiceField(
        label="Send",
        choices=[(ALERTS, "Alerts"), (REQUESTS, "Request updates (restores and new clients)")],
        initial=[ALERTS, REQUESTS],
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose alerts, request updates, or both."},
    )

    class Meta:
        model = WebhookSubscription
        fields = ("name", "format", "url", "email_to")
        labels = {"name": "Name"}
        help_texts = {"name": "For you, e.g. #orders-oncall."}

    def __init__(self, *args, application, **kwargs):
        super().__init__(*args, **kwargs)
        self.application = application
        self.instance.application = application

    def clean(self):
        cleaned = super().clean()
        fmt = cleaned.get("format")
        if fmt == WebhookFormat.EMAIL:
            cleaned["url"] = ""
            self._clean_addresses(cleaned.get("email_to", ""))
        elif fmt:
            cleaned["email_to"] = ""
            url = cleaned.get("url")
            if not url and "url" not in self.errors:
                self.add_error("url", "The webhook URL from Slack or Teams.")
            elif url:
                try:
                    destinations.validate(url, fmt)
                except ValidationError as exc:
                    self.add_error("url", exc)
        count = WebhookSubscription.objects.filter(application=self.application).count()
        if count >= MAX_CHANNELS_PER_APPLICATION:
            raise ValidationError(f"An application has at most {MAX_CHANNELS_PER_APPLICATION} channels.")
        # Before the model's clean() (in _post_clean), which checks the events and the URL's scheme again.
        chosen = cleaned.get("topics", ())
        self.instance.event_types = [event for topic in TOPICS if topic in chosen for event in TOPICS[topic]]
        self.instance.secret = self.instance.secret or signing.new_secret()
        return cleaned

    def _post_clean(self):
        # The model's checks (WebhookSubscription.clean) repeat the form's: run them on valid input only.
        if not self.errors:
            super()._post_clean()

    def _clean_addresses(self, value: str) -> None:
        addresses = WebhookSubscription(email_to=value).recipients
        if not addresses:
            self.add_error("email_to", "At least one e-mail address.")
            return
        if len(addresses) > EMAIL_MAX_ADDRESSES:
            self.add_error("email_to", f"At most {EMAIL_MAX_ADDRESSES} addresses.")
            return
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                self.add_error("email_to", f"Not an e-mail address: {address}")
                return
        self.cleaned_data["email_to"] = ", ".join(addresses)
