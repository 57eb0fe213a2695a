"""A client's life: pending_enrolment → active ⇄ paused → retired. Retiring is here.

Retiring stops a client's backups and nothing else: its recovery points stay in the
catalog and on storage until their retention ends, when the retention sweep expires them
as it does any other (``catalog.services.retention``); they can be restored meanwhile.
Whoever decides to retire (an approved retire request, requests_app.services) calls
``retire``; whether the host's agent goes too is ``agent_still_needed``'s answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q

from catalog.choices import ClientStatus, JobKind, JobState
from catalog.errors import InvalidTransition
from catalog.models import Agent, BackupClient, Job
from catalog.services import jobs

#: The states a client can be retired from (a client still waiting for its agent is withdrawn
#: by cancelling the request that asked for it).
RETIRABLE = (ClientStatus.ACTIVE, ClientStatus.PAUSED)
#: What a retired client no longer does: back up, and test its restores. Restores of its
#: points (the owner's) and the removal of expired ones (retention) go on.
STOPPED_KINDS = (JobKind.BACKUP, JobKind.RESTORE_TEST)


@dataclass(frozen=True)
class Retired:
    client: BackupClient
    cancelled: list[int]  # queued jobs cancelled
    stopping: list[int]  # running jobs asked to stop


def retire(client_id: int) -> Retired:
    """Retire an active or paused client: no more backups; its queued backups and restore tests cancelled.

    The caller holds a transaction. A running backup or restore test is asked to stop
    (cancelled, never retried). Backups are not touched.
    """
    client = BackupClient.objects.select_for_update().get(pk=client_id)
    if client.status not in RETIRABLE:
        raise InvalidTransition(f"{client} is {client.get_status_display().lower()}; it cannot be retired.")
    client.status = ClientStatus.RETIRED
    client.next_backup_at = None
    client.save(update_fields=["status", "next_backup_at"])
    cancelled, stopping = [], []
    open_jobs = Job.objects.filter(client=client, kind__in=STOPPED_KINDS, state__in=JobState.open())
    for job_id in open_jobs.order_by("pk").values_list("pk", flat=True):
        try:
            job = jobs.cancel(job_id)
        except InvalidTransition:
            continue  # it finished meanwhile
        (cancelled if job.state == JobState.CANCELLED else stopping).append(job_id)
    return Retired(client, cancelled, stopping)


def agent_still_needed(agent: Agent, *, besides: BackupClient | None = None) -> bool:
    """Whether a client of any application still uses ``agent``'s host (active or paused): shared hosts.

    ``besides``: a client about to be retired, which does not count (the retire form's "the agent
    stays" or "the agent goes" asks before the client is retired).
    """
    users = BackupClient.objects.filter(Q(agent=agent) | Q(hostname__iexact=agent.hostname))
    if besides is not None:
        users = users.exclude(pk=besides.pk)
    return users.filter(status__in=RETIRABLE).exists()
