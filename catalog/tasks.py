"""Background task functions of the catalog. Plain functions, run through portal.queue."""

from __future__ import annotations

import logging

from catalog.services import agents, jobs, scheduler

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
