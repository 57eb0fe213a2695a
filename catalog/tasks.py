"""Background task functions of the catalog. Plain functions, run through portal.queue."""

from __future__ import annotations

import logging

from catalog.services import agents, jobs, restore_tests, retention, scheduler, watch

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


def watch_protection() -> int:
    """RPO, restore-test freshness and storage fill: one alert per condition, closed when it clears."""
    return watch.watch_rpo() + watch.watch_restore_tests() + watch.watch_storage()
