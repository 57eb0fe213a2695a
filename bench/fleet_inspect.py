"""What the fleet simulator asks the portal's database, run inside the portal's environment.

    python bench/fleet_inspect.py resume "* * * * *"      # the fleet's policy gets its cron (after idling)
    python bench/fleet_inspect.py pause                   # no new scheduled backups (the drain)
    python bench/fleet_inspect.py open                    # open jobs of the fleet, as JSON
    python bench/fleet_inspect.py report SINCE T0 T1      # the run's jobs, alerts, people's work, sizes

Read-only except ``resume``, which sets the fleet policy's cron and each client's
next run from it (as the scheduler would), and ``pause``, which moves the fleet's
clients' next run far into the future so the scheduler queues nothing new while
the agents drain what is queued.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime

import django

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
django.setup()

from django.db import connection  # noqa: E402
from django.db.models import Count, Sum  # noqa: E402
from django.utils import timezone  # noqa: E402

from catalog import metrics as catalog_metrics  # noqa: E402
from catalog.choices import JobState  # noqa: E402
from catalog.models import Alert, Backup, BackupClient, Job, ProtectionPolicy  # noqa: E402
from requests_app import metrics as requests_metrics  # noqa: E402

FAR = datetime(2999, 1, 1, tzinfo=timezone.get_current_timezone())

#: Tables whose size per row the sizing table extrapolates (PostgreSQL only).
TABLES = (
    "catalog_job",
    "catalog_backup",
    "catalog_alert",
    "catalog_agent",
    "catalog_backupclient",
    "catalog_agentevent",
    "catalog_enrolmenttoken",
    "catalog_agent_applications",
    "django_q_task",
    "django_q_ormq",
)


def pause() -> dict:
    return {"paused": BackupClient.objects.filter(application__slug="fleet").update(next_backup_at=FAR)}


def resume(schedule: str) -> dict:
    policy = ProtectionPolicy.objects.get(name="Fleet")
    policy.schedule = schedule
    policy.save(update_fields=["schedule"])
    first = policy.next_run_after(timezone.now())
    return {
        "first_run": first.isoformat(),
        "clients": BackupClient.objects.filter(application__slug="fleet").update(next_backup_at=first),
    }


def open_jobs() -> dict:
    now = timezone.now()
    open_ = Job.objects.filter(client__application__slug="fleet", state__in=JobState.open())
    return {
        "queued_due": open_.filter(state=JobState.QUEUED, not_before__lte=now).count(),
        "queued_later": open_.filter(state=JobState.QUEUED, not_before__gt=now).count(),
        "running": open_.filter(state=JobState.RUNNING).count(),
    }


def _summed(querysets) -> dict:
    total: dict[str, int] = {}
    for rows in querysets:
        for row in rows:
            for name, value in row.items():
                if name != "week":
                    total[name] = total.get(name, 0) + (value or 0)
    return total


def report(since: datetime, t0: datetime, t1: datetime) -> dict:
    now = timezone.now()
    jobs = Job.objects.filter(client__application__slug="fleet", created_at__gte=since)
    by_state = dict(jobs.values_list("state").annotate(n=Count("pk")).order_by())
    by_trigger = dict(jobs.values_list("trigger").annotate(n=Count("pk")).order_by())
    by_kind = dict(jobs.values_list("kind").annotate(n=Count("pk")).order_by())
    failed_by_class = dict(
        jobs.filter(state=JobState.FAILED).values_list("error_class").annotate(n=Count("pk")).order_by()
    )
    open_rows = [
        {
            "id": job.pk,
            "state": job.state,
            "agent": job.agent.hostname,
            "attempt": job.attempt,
            "kind": job.kind,
            "not_before": job.not_before.isoformat(),
            "lease_expires_at": job.lease_expires_at.isoformat() if job.lease_expires_at else None,
            "started_at": job.started_at.isoformat() if job.started_at else None,
        }
        for job in jobs.filter(state__in=JobState.open()).select_related("agent")
    ]
    in_window = Job.objects.filter(client__application__slug="fleet")
    finished_in_window = in_window.filter(finished_at__gte=t0, finished_at__lt=t1).count()
    started_in_window = in_window.filter(started_at__gte=t0, started_at__lt=t1).count()
    created_in_window = in_window.filter(created_at__gte=t0, created_at__lt=t1).count()
    backups = Backup.objects.filter(client__application__slug="fleet", taken_at__gte=since)
    alerts = Alert.objects.filter(created_at__gte=since)
    alerts_window = Alert.objects.filter(created_at__gte=t0, created_at__lt=t1)
    people_run = _summed(requests_metrics.people_work_counts(since, now))
    people_window = _summed(requests_metrics.people_work_counts(t0, t1))
    jobs_run_window = _summed([catalog_metrics.job_counts(t0, t1)])
    result = {
        "jobs": {
            "total": jobs.count(),
            "by_state": by_state,
            "by_trigger": by_trigger,
            "by_kind": by_kind,
            "failed_by_error_class": failed_by_class,
            "open": open_rows,
            "window": {
                "created": created_in_window,
                "started": started_in_window,
                "finished": finished_in_window,
                "metrics_job_counts": jobs_run_window,
            },
        },
        "backups": {
            "count": backups.count(),
            "size_bytes": backups.aggregate(s=Sum("size_bytes"))["s"] or 0,
        },
        "alerts": {
            "run_total": alerts.count(),
            "run_by_kind_severity": [
                {"kind": k, "severity": s, "n": n}
                for k, s, n in alerts.values_list("kind", "severity").annotate(n=Count("pk")).order_by()
            ],
            "window_total": alerts_window.count(),
            "window_by_kind_severity": [
                {"kind": k, "severity": s, "n": n}
                for k, s, n in alerts_window.values_list("kind", "severity")
                .annotate(n=Count("pk"))
                .order_by()
            ],
            "open_unacknowledged": Alert.objects.filter(
                resolved_at__isnull=True, acknowledged_at__isnull=True
            ).count(),
        },
        "people": {"run": people_run, "window": people_window},
        "vendor": connection.vendor,
    }
    if connection.vendor == "postgresql":
        sizes = {}
        with connection.cursor() as cursor:
            for table in TABLES:
                cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
                if not cursor.fetchone()[0]:
                    continue
                cursor.execute(f'SELECT count(*), pg_total_relation_size(%s) FROM "{table}"', [table])  # noqa: S608
                rows, size = cursor.fetchone()
                sizes[table] = {"rows": rows, "bytes": size}
            cursor.execute("SELECT pg_database_size(current_database())")
            result["database_bytes"] = cursor.fetchone()[0]
        result["tables"] = sizes
    else:
        name = connection.settings_dict["NAME"]
        result["database_bytes"] = sum(
            os.path.getsize(name + suffix) for suffix in ("", "-wal") if os.path.exists(name + suffix)
        )
    return result


def main(argv: list[str]) -> None:
    action = argv[0]
    if action == "pause":
        out = pause()
    elif action == "resume":
        out = resume(argv[1])
    elif action == "open":
        out = open_jobs()
    elif action == "report":
        since, t0, t1 = (datetime.fromisoformat(value) for value in argv[1:4])
        out = report(since, t0, t1)
    else:
        raise SystemExit(f"unknown action {action!r}")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
