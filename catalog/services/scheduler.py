"""Turn policy schedules into queued backup jobs.

Each active client carries ``next_backup_at``; the scheduler reads only the
clients that are due (a partial index serves it), so its cost grows with the
work due now, not with the number of clients.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from catalog.choices import ClientStatus, JobKind, JobState, JobTrigger
from catalog.models import BackupClient, Job

BATCH = 500


def schedule_due_backups(*, now: datetime | None = None, batch: int = BATCH) -> int:
    """Queue one backup job per due client; returns how many were queued."""
    now = now or timezone.now()
    _initialise_new_clients(now)
    queued = 0
    while True:
        created, seen = _schedule_batch(now, batch)
        queued += created
        if seen < batch:
            return queued


def _schedule_batch(now: datetime, batch: int) -> tuple[int, int]:
    with transaction.atomic():
        # Locked and skipped: two schedulers running at once split the work
        # instead of queuing every due client twice.
        due = list(
            BackupClient.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("policy")
            .filter(status=ClientStatus.ACTIVE, next_backup_at__lte=now)
            .order_by("next_backup_at")[:batch]
        )
        if not due:
            return 0, 0
        # A client whose previous backup is still queued or running (agent
        # offline, slow backup) gets no second one on top: jobs would pile up,
        # and job_one_open_backup_per_client would refuse the whole batch. The
        # check holds until commit: "backup now" locks the client row before it
        # queues (so it waits for this batch, or this batch skips that client),
        # and a retry replaces a job that was open here, so it counts as busy.
        busy = set(
            Job.objects.filter(client__in=due, kind=JobKind.BACKUP, state__in=JobState.open()).values_list(
                "client_id", flat=True
            )
        )
        jobs = [
            Job(
                kind=JobKind.BACKUP,
                client_id=client.pk,
                agent_id=client.agent_id,
                trigger=JobTrigger.SCHEDULE,
                created_at=now,
                not_before=now,
            )
            for client in due
            if client.pk not in busy
        ]
        Job.objects.bulk_create(jobs)
        for client in due:
            client.next_backup_at = client.policy.next_run_after(now)
        BackupClient.objects.bulk_update(due, ["next_backup_at"])
    return len(jobs), len(due)


def _initialise_new_clients(now: datetime) -> None:
    """Give active clients that have never been scheduled their first run time."""
    fresh = list(
        BackupClient.objects.select_related("policy").filter(
            status=ClientStatus.ACTIVE, next_backup_at__isnull=True
        )[:BATCH]
    )
    for client in fresh:
        client.next_backup_at = client.policy.next_run_after(now)
    BackupClient.objects.bulk_update(fresh, ["next_backup_at"])
