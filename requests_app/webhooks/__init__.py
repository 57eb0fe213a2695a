"""Signed webhooks: every request and job change and every alert, POSTed to the integrations that ask.

    dispatch.py        an event → one WebhookDelivery per subscription that wants it and may see it
    delivery.py        one delivery → one signed POST, its attempt logged, the retry scheduled
    representation.py  the ``object`` of each event (the REST API's representation)
    signing.py         X-Portal-Signature: HMAC-SHA256 of timestamp, delivery id and raw body, per attempt
    receivers.py       the catalog's signals (job_changed, alert_raised) → dispatch

docs/api.md is the receivers' side of the contract: headers, body, signature, retries.
"""

from django.db import models


class Event(models.TextChoices):
    """What a subscription can ask for; the ``event`` of the body and the X-Portal-Event header."""

    RESTORE_REQUEST_CHANGED = "restore_request.changed", "Restore request changed"
    CLIENT_REQUEST_CHANGED = "client_request.changed", "Client request changed"
    JOB_CHANGED = "job.changed", "Job changed"
    ALERT_RAISED = "alert.raised", "Alert raised"


#: The ``status`` of an alert.raised event: alerts have no state field, a new one is open.
ALERT_OPEN = "open"
