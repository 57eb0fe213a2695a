"""Background tasks of alert mail (run through portal.queue). Thin: the work is in catalog.notify."""

from __future__ import annotations

import logging

from catalog import notify

log = logging.getLogger(__name__)


def mail_alert(alert_id: int) -> int:
    """Mail a critical alert at once; does nothing for an alert already mailed or gone."""
    return notify.mail_alert(alert_id)


def mail_unsent_critical() -> int:
    """The safety net of ``mail_alert``: critical alerts whose mail never went out."""
    mailed = notify.mail_unsent_critical()
    if mailed:
        log.warning("mailed %d critical alert(s) the immediate path had missed", mailed)
    return mailed


def send_digests() -> int:
    """The daily digest: one mail per person of the non-critical alerts since the last one."""
    sent = notify.send_digests()
    if sent:
        log.info("sent %d alert digest(s)", sent)
    return sent
