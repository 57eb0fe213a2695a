"""Background task functions of the catalog: every periodic and queued one (run through core.queue).

Thin: the work is in catalog.services and catalog.notify. Tasks take ids and
do nothing for a row that is gone.
"""

from __future__ import annotations

import logging

from catalog import notify
from catalog.services import agents, file_lists, jobs, restore_tests, retention, scheduler, watch

log = logging.getLogger(__name__)


def schedule_backups() -> int:
    queued = scheduler.schedule_due_backups()
    if queued:
        log.info("queued %d scheduled backup(s)", queued)
    return queued


def reap_leases() -> int:
    reaped = jobs.reap_expired_leases()
    if reaped:
        log.warning("%d job(s) lost their agent (lease expired)", reaped)
    return reaped


def watch_agents() -> int:
    return agents.watch_silent_agents()


def schedule_restore_tests() -> int:
    queued = restore_tests.schedule()
    if queued:
        log.info("queued %d restore test(s)", queued)
    return queued


def expire_backups() -> int:
    queued = retention.expire_due()
    if queued:
        log.info("queued removal of %d expired backup(s)", queued)
    return queued


def purge_incoming_file_lists() -> int:
    """Uploaded file lists whose job never completed (older than a day)."""
    removed = file_lists.purge_incoming()
    if removed:
        log.info("removed %d uploaded file list(s) whose job never completed", removed)
    return removed


def watch_protection() -> int:
    """RPO, restore-test freshness and storage fill: one alert per condition, closed when it clears."""
    return watch.watch_rpo() + watch.watch_restore_tests() + watch.watch_storage()


# --- Alert mail -----------------------------------------------------------------------------


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


def forecast_capacity() -> int:
    """Daily: alert on storage targets forecast full within PORTAL_CAPACITY_ALERT_DAYS (docs/capacity.md)."""
    from catalog.services import capacity

    raised = capacity.watch_capacity()
    if raised:
        log.warning("%d storage target(s) forecast full soon", raised)
    return raised


# --- Anomalies (catalog/anomaly.py, docs/anomalies.md) ----------------------------------------


def evaluate_backup(backup_id: int) -> bool:
    """Check one new recovery point against its client's history; True when it looks suspicious."""
    from catalog.services import anomalies

    verdict = anomalies.evaluate(backup_id)
    return bool(verdict and verdict.suspicious)


def check_anomalies() -> int:
    """The safety net of ``evaluate_backup``: recent points whose check never ran (worker down)."""
    from catalog.services import anomalies

    checked = anomalies.check_missed()
    if checked:
        log.warning("checked %d backup(s) for anomalies that the immediate path had missed", checked)
    return checked
