"""Turn policy schedules into queued backup jobs.

Each active client carries ``next_backup_at``; the scheduler reads only the
clients that are due (a partial index serves it), so its cost grows with the
work due now, not with the number of clients.

A batch is a handful of queries whatever its size: the due clients (values,
not model instances), which of them are busy, one INSERT of the jobs, and one
UPDATE of ``next_backup_at`` per distinct next run. The next run is the
policy's (``ProtectionPolicy.next_run_after`` reads only the policy's schedule
and the moment), so it is computed once per policy per tick, not per client.

Jobs queued by the schedule are not announced (no ``job_changed``), as before
they were inserted in bulk: the first change anybody hears of is the agent's claim.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from catalog.choices import ClientStatus, JobKind, JobState, JobTrigger
from catalog.models import BackupClient, Job, ProtectionPolicy

# Clients locked, queued and moved on per transaction. A batch holds its clients'
# row locks (on SQLite, the write lock) until it commits: a fraction of a second.
BATCH = 2000


class NextRuns:
    """Each policy's next run after ``now``, computed once: every client of a policy shares it."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._runs: dict[int, datetime] = {}

    def group(self, clients: list[tuple[int, int]]) -> dict[datetime, list[int]]:
        """``(client_id, policy_id)`` pairs grouped by their next run: ``{next run: [client_id, …]}``."""
        missing = {policy_id for _, policy_id in clients} - self._runs.keys()
        for policy in ProtectionPolicy.objects.filter(pk__in=missing).order_by():
            self._runs[policy.pk] = policy.next_run_after(self.now)
        groups: dict[datetime, list[int]] = defaultdict(list)
        for client_id, policy_id in clients:
            groups[self._runs[policy_id]].append(client_id)
        return groups


def schedule_due_backups(*, now: datetime | None = None, batch: int = BATCH) -> int:
    """Queue one backup job per due client; returns how many were queued."""
    now = now or timezone.now()
    next_runs = NextRuns(now)
    _initialise_new_clients(next_runs, batch)
    queued = 0
    while True:
        created, seen = _schedule_batch(now, batch, next_runs)
        queued += created
        if seen < batch:
            return queued


def _schedule_batch(now: datetime, batch: int, next_runs: NextRuns) -> tuple[int, int]:
    with transaction.atomic():
        # Locked and skipped: two schedulers running at once split the work
        # instead of queuing every due client twice.
        due = list(
            BackupClient.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=ClientStatus.ACTIVE, next_backup_at__lte=now)
            .order_by("next_backup_at")
            .values_list("pk", "agent_id", "policy_id")[:batch]
        )
        if not due:
            return 0, 0
        # A client whose previous backup is still queued or running (agent
        # offline, slow backup) gets no second one on top: jobs would pile up,
        # and job_one_open_backup_per_client would refuse the whole batch. The
        # check holds until commit: "backup now" locks the client row before it
        # queues (so it waits for this batch, or this batch skips that client),
        # and a retry replaces a job that was open here, so it counts as busy.
        # It is a query of its own, after the locks are taken, not a subquery of
        # the SELECT above: under READ COMMITTED that SELECT's snapshot predates
        # its locks, and would miss a "backup now" that committed in between.
        busy = set(
            Job.objects.filter(
                client_id__in=[client_id for client_id, _, _ in due],
                kind=JobKind.BACKUP,
                state__in=JobState.open(),
            )
            .order_by()
            .values_list("client_id", flat=True)
        )
        queued = _insert_jobs([client_id for client_id, _, _ in due if client_id not in busy], now)
        # Busy clients move on too: their next backup is at the next run.
        _move_on([(client_id, policy_id) for client_id, _, policy_id in due], next_runs)
    return queued, len(due)


def _insert_jobs(client_ids: list[int], now: datetime) -> int:
    """Queue a scheduled backup of each client in one INSERT … SELECT; returns how many.

    What ``bulk_create`` would insert, without building and compiling a model
    instance per job (that was most of a tick at 10,000 clients): each job's
    client and agent come from the client's row, every other column is the
    value of one ``Job`` made here, prepared by its field as ``bulk_create``
    prepares it, so a field added to ``Job`` gets its default here too. Jobs are
    numbered in the order the clients fell due, as an agent claims them.
    """
    if not client_ids:
        return 0
    quote = connection.ops.quote_name
    template = Job(kind=JobKind.BACKUP, trigger=JobTrigger.SCHEDULE, created_at=now, not_before=now)
    columns = ["client_id", "agent_id"]
    selected = [quote("id"), quote("agent_id")]  # from the client's row
    params = []
    for field in Job._meta.local_concrete_fields:
        value = field.get_db_prep_save(field.pre_save(template, add=True), connection)
        if field.column in columns or value is None:  # the client's; the job's id and other NULLs
            continue
        columns.append(field.column)
        selected.append("%s")
        params.append(value)
    sql = (
        f"INSERT INTO {quote(Job._meta.db_table)} ({', '.join(map(quote, columns))}) "  # noqa: S608 - names, not values
        f"SELECT {', '.join(selected)} FROM {quote(BackupClient._meta.db_table)} "
        f"WHERE {quote('id')} IN ({', '.join(['%s'] * len(client_ids))}) "
        f"ORDER BY {quote('next_backup_at')}, {quote('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *client_ids])
        return cursor.rowcount


def _move_on(clients: list[tuple[int, int]], next_runs: NextRuns) -> None:
    """Set each client's ``next_backup_at`` to its policy's next run: one UPDATE per distinct run."""
    for run, client_ids in next_runs.group(clients).items():
        BackupClient.objects.filter(pk__in=client_ids).update(next_backup_at=run)


def _initialise_new_clients(next_runs: NextRuns, batch: int) -> None:
    """Give active clients that have never been scheduled their first run time."""
    fresh = list(
        BackupClient.objects.filter(status=ClientStatus.ACTIVE, next_backup_at__isnull=True)
        .order_by()
        .values_list("pk", "policy_id")[:batch]
    )
    _move_on(fresh, next_runs)
