"""A scratch PostgreSQL catalog for the scheduler benchmark (bench/schedule.py): clients, agents, jobs.

A lighter loader than bench/generate_catalog.py (which loads a busy month of backups for the
reports benchmark): the scheduler reads clients, their policies and their open backup jobs, so
that is what is loaded, with the same shape (cost centres, applications, 2,000 agents, the Gold,
Silver and Bronze schedules in the same shares, 97.8 % of clients active), plus
``history`` finished jobs per client so the job table and its indexes are not empty, and an
open backup (queued or running) for 2 % of the active clients: the scheduler's "busy" clients.

Rows go in with the ORM's bulk_create, so the loader follows the models as they change.
Everything is seeded: the same arguments give the same rows.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]

# name, cron, share of clients (as bench/generate_catalog.py)
POLICIES = (("Gold", "0 */4 * * *", 0.25), ("Silver", "0 */8 * * *", 0.50), ("Bronze", "0 2 * * *", 0.25))
ACTIVE_SHARE = 0.978
BUSY_SHARE = 0.02  # active clients whose previous backup is still queued or running
LOADED_AT = datetime(2026, 11, 1, tzinfo=UTC)


def recreate_database(database_url: str) -> None:
    """Drop and create the database named in ``database_url``, then run the migrations."""
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    connection = psycopg2.connect(admin_url)
    connection.autocommit = True
    with connection.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    connection.close()
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "migrate", "-v", "0"], check=True, env=env, cwd=REPO
    )


def load(*, clients: int, agents: int, applications: int, history: int, seed: int = 7) -> dict[str, int]:
    """Load the catalog into the (migrated, empty) database Django is set up with; returns row counts."""
    from django.db import connection, transaction

    from catalog.choices import ClientStatus, JobKind, JobState, JobTrigger, Plugin
    from catalog.models import (
        Agent,
        Application,
        BackupClient,
        CostCenter,
        Job,
        ProtectionPolicy,
        StorageTarget,
    )

    rng = random.Random(seed)
    started = time.perf_counter()
    with transaction.atomic():
        centres = CostCenter.objects.bulk_create(
            CostCenter(code=f"CC{n:03d}", name=f"Cost centre {n}", owner_email=f"finance{n}@example.com")
            for n in range(20)
        )
        apps = Application.objects.bulk_create(
            Application(slug=f"app-{n:04d}", name=f"Application {n}", cost_center=centres[n % len(centres)])
            for n in range(applications)
        )
        target = StorageTarget.objects.create(
            name="dd-primary", location="/mnt/dd01/portal", capacity_bytes=2**50
        )
        policies = [
            ProtectionPolicy.objects.create(
                name=name,
                schedule=cron,
                retention_days=14,
                rpo_hours=24,
                storage_target=target,
                price_per_gb_month=Decimal("0.0100"),
            )
            for name, cron, _ in POLICIES
        ]
        hosts = Agent.objects.bulk_create(
            Agent(
                hostname=f"srv{n:05d}.example.com",
                version="0.1.0",
                plugins=["files", "postgresql", "mysql", "command"],
                enrolled_at=LOADED_AT,
                last_seen_at=LOADED_AT,
            )
            for n in range(agents)
        )
        rows = []
        for n in range(clients):
            agent = hosts[n % len(hosts)]
            app = apps[(n // len(hosts) * 7 + n) % len(apps)]
            policy = rng.choices(policies, weights=[share for *_, share in POLICIES])[0]
            roll = rng.random()
            status = ClientStatus.ACTIVE
            if roll >= ACTIVE_SHARE:
                status = rng.choice(
                    [ClientStatus.PAUSED, ClientStatus.PENDING_ENROLMENT, ClientStatus.RETIRED]
                )
            rows.append(
                BackupClient(
                    application=app,
                    agent=None if status == ClientStatus.PENDING_ENROLMENT else agent,
                    name=f"client-{n:05d}",
                    hostname=agent.hostname,
                    plugin=Plugin.FILES,
                    options={"paths": ["/srv/data"]},
                    policy=policy,
                    status=status,
                    next_backup_at=LOADED_AT + timedelta(hours=rng.uniform(0, 24))
                    if status == ClientStatus.ACTIVE
                    else None,
                    created_at=LOADED_AT - timedelta(days=rng.uniform(30, 400)),
                )
            )
        made = BackupClient.objects.bulk_create(rows, batch_size=2000)
        through = Agent.applications.through
        pairs = {(c.agent_id, c.application_id) for c in made if c.agent_id}
        through.objects.bulk_create(
            (through(agent_id=agent_id, application_id=app_id) for agent_id, app_id in sorted(pairs)),
            batch_size=5000,
        )
        jobs = []
        for client in made:
            if client.agent_id is None:
                continue
            for k in range(history):
                when = LOADED_AT - timedelta(hours=(history - k) * 8 + rng.uniform(0, 2))
                jobs.append(
                    Job(
                        kind=JobKind.BACKUP,
                        client_id=client.pk,
                        agent_id=client.agent_id,
                        state=JobState.SUCCEEDED if rng.random() > 0.03 else JobState.FAILED,
                        trigger=JobTrigger.SCHEDULE,
                        created_at=when,
                        not_before=when,
                        started_at=when + timedelta(seconds=20),
                        finished_at=when + timedelta(minutes=rng.uniform(1, 30)),
                        bytes_done=rng.randrange(1, 2**34),
                    )
                )
            if client.status == ClientStatus.ACTIVE and rng.random() < BUSY_SHARE:
                running = rng.random() < 0.5
                jobs.append(
                    Job(
                        kind=JobKind.BACKUP,
                        client_id=client.pk,
                        agent_id=client.agent_id,
                        state=JobState.RUNNING if running else JobState.QUEUED,
                        trigger=JobTrigger.SCHEDULE,
                        created_at=LOADED_AT,
                        not_before=LOADED_AT,
                        started_at=LOADED_AT if running else None,
                        lease_expires_at=LOADED_AT + timedelta(minutes=10) if running else None,
                    )
                )
            if len(jobs) >= 20_000:
                Job.objects.bulk_create(jobs, batch_size=5000)
                jobs = []
        Job.objects.bulk_create(jobs, batch_size=5000)
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    counts = {
        "clients": BackupClient.objects.count(),
        "active clients": BackupClient.objects.filter(status=ClientStatus.ACTIVE).count(),
        "agents": Agent.objects.count(),
        "jobs": Job.objects.count(),
        "open backups": Job.objects.filter(kind=JobKind.BACKUP, state__in=JobState.open()).count(),
    }
    print(f"  loaded in {time.perf_counter() - started:.1f} s: {counts}", file=sys.stderr)
    return counts
