"""Demo data for ``manage.py seed_demo``: a small estate with a month of realistic history.

Everything is keyed on natural keys (code, slug, name, hostname), so running the
seed again changes nothing but the demo passwords, the agents' last poll and the
clients' next run. History is generated only for a client that has none yet,
from a fixed random seed: the same estate, relative to "now", every time.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from catalog import agent_versions
from catalog.choices import (
    AlertKind,
    AlertSeverity,
    BackupStatus,
    ClientStatus,
    Compression,
    ErrorClass,
    JobKind,
    JobState,
    JobTrigger,
    Plugin,
    StorageKind,
    Verification,
)
from catalog.models import (
    Agent,
    Alert,
    Application,
    Backup,
    BackupClient,
    CostCenter,
    Job,
    ProtectionPolicy,
    StorageTarget,
)
from catalog.plugin_options import validate_options

DEMO_URL = "http://127.0.0.1:8000/"
OWNER_USERNAME = "owner"
ADMIN_USERNAME = "admin"
DEFAULT_OWNER_PASSWORD = "owner-demo-pass"  # noqa: S105 - a documented demo login, printed by the command
DEFAULT_ADMIN_PASSWORD = "admin-demo-pass"  # noqa: S105 - a documented demo login, printed by the command

GiB = 1024**3
MiB = 1024**2
HISTORY_DAYS = 30
SEED = "backup-portal-demo"  # the same history on every machine
# Runs in the last hour are left out so that every retry chain has finished before "now".
SETTLE = timedelta(hours=1)
FIRST_ATTEMPT_FAILURE_RATE = 0.04
RETRY_BACKOFF = timedelta(minutes=5)
# Full backups of slowly changing data deduplicate about 10:1 on the appliance; that ratio
# is why the target keeps data uncompressed, and what turns the logical sum into "used".
DEDUP_RATIO = 10
# Read throughput in MiB/s: tar streams faster than a dump that walks every table.
THROUGHPUT = {Plugin.FILES: (120, 320), Plugin.POSTGRESQL: (60, 140), Plugin.MYSQL: (40, 110)}
RESTORE_THROUGHPUT = 200 * MiB

COST_CENTERS = [
    ("CC-100", "Retail", "retail-finance@example.com"),
    ("CC-200", "Corporate Services", "corporate-finance@example.com"),
]
# slug, name, cost centre, owned by the demo owner
APPLICATIONS = [
    ("webshop", "Web Shop", "CC-100", True),
    ("orders", "Orders", "CC-100", True),
    ("payroll", "Payroll", "CC-200", False),
]
_POLICY_FIELDS = (
    "name", "schedule", "rpo_hours", "retention_days", "restore_test_interval_days",
    "price_per_gb_month", "max_retries", "auto_approve_clients", "description",
)
POLICIES = [
    dict(zip(_POLICY_FIELDS, row, strict=True))
    for row in [
        ("Gold", "0 */4 * * *", 6, 35, 7, Decimal("0.12"), 3, False,
         "Every 4 hours, kept 5 weeks, restore-tested weekly; new clients need the backup team."),
        ("Silver", "0 1 * * *", 26, 30, 30, Decimal("0.06"), 3, True,
         "Daily, kept 30 days, restore-tested monthly."),
        ("Bronze", "30 2 * * *", 50, 14, 90, Decimal("0.03"), 3, True,
         "Daily, kept 2 weeks, restore-tested quarterly."),
    ]
]
# hostname, applications served
AGENTS = [
    ("web01.demo.local", ["webshop"]),
    ("db01.demo.local", ["orders"]),
    ("hr01.demo.local", ["payroll"]),
]
AGENT_PLUGINS = [Plugin.FILES, Plugin.POSTGRESQL, Plugin.MYSQL, Plugin.COMMAND]
#: The demo's hosts run the agent this portal ships (the admin would show an older one as outdated).
AGENT_VERSION = agent_versions.shipped_version()

# What goes wrong, per plugin: error class, message, and whether data had started flowing.
FAILURES = {
    Plugin.FILES: [
        (ErrorClass.PERMISSION_DENIED, "tar: {path}: Cannot open: Permission denied", False),
        (ErrorClass.DISK_FULL, "write error: No space left on device", True),
        (ErrorClass.LEASE_EXPIRED, "agent stopped reporting progress; lease expired", True),
    ],
    Plugin.POSTGRESQL: [
        (ErrorClass.DATABASE_UNREACHABLE,
         'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused',
         False),
        (ErrorClass.TIMEOUT,
         "pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout", True),
    ],
    Plugin.MYSQL: [
        (ErrorClass.DATABASE_UNREACHABLE,
         "mysqldump: Got error: 2002: Can't connect to local MySQL server through socket "
         "'/var/run/mysqld/mysqld.sock' (111) when trying to connect", False),
        (ErrorClass.TIMEOUT,
         "mysqldump: Error 2013: Lost connection to MySQL server during query when dumping "
         "table `orders` at row: 120331", True),
    ],
}


@dataclass(frozen=True)
class ClientSpec:
    """A demo client; its last ``broken_runs`` scheduled runs fail with ``fault`` and raise ``alert``."""

    app: str
    name: str
    agent: str
    plugin: str
    options: dict
    policy: str
    base_gib: float
    broken_runs: int = 0
    fault: str | None = None
    alert: str | None = None


CLIENTS = [
    ClientSpec("webshop", "media", "web01.demo.local", Plugin.FILES,
               {"paths": ["/srv/webshop/media"]}, "Silver", 14,
               broken_runs=2, fault=ErrorClass.PERMISSION_DENIED, alert=AlertKind.RPO_BREACHED),
    ClientSpec("webshop", "shop-db", "web01.demo.local", Plugin.MYSQL, {"database": "shop"}, "Gold", 3),
    ClientSpec("webshop", "nginx-config", "web01.demo.local", Plugin.FILES,
               {"paths": ["/etc/nginx", "/etc/letsencrypt"]}, "Bronze", 2),
    ClientSpec("orders", "orders-db", "db01.demo.local", Plugin.POSTGRESQL,
               {"database": "orders"}, "Gold", 8),
    ClientSpec("orders", "exports", "db01.demo.local", Plugin.FILES,
               {"paths": ["/srv/orders/exports"]}, "Bronze", 6,
               broken_runs=1, fault=ErrorClass.LEASE_EXPIRED, alert=AlertKind.JOB_FAILED),
    ClientSpec("payroll", "payroll-db", "hr01.demo.local", Plugin.POSTGRESQL,
               {"database": "payroll"}, "Gold", 2.5),
    ClientSpec("payroll", "documents", "hr01.demo.local", Plugin.FILES,
               {"paths": ["/srv/payroll/documents"]}, "Silver", 22),
]


@dataclass(frozen=True)
class SeedResult:
    """What the command prints: the logins, what the catalog holds, how much history was new."""

    logins: list[tuple[str, str, str]]
    counts: dict[str, int]
    history_clients: int


def seed(*, owner_password: str = DEFAULT_OWNER_PASSWORD, admin_password: str = DEFAULT_ADMIN_PASSWORD,
         now: datetime | None = None) -> SeedResult:
    """Create or refresh the demo estate; raises ValidationError for a password Django rejects."""
    now = now or timezone.now()
    User = get_user_model()
    # Check both passwords before writing anything, against the user they will belong to.
    validate_password(owner_password, User(username=OWNER_USERNAME, email=f"{OWNER_USERNAME}@example.com"))
    validate_password(admin_password, User(username=ADMIN_USERNAME, email=f"{ADMIN_USERNAME}@example.com"))
    with transaction.atomic():
        owner, admin = _seed_users(owner_password, admin_password)
        apps = _seed_applications(owner)
        target = _seed_storage_target()
        policies = _seed_policies(target)
        agents = _seed_agents(apps, now)
        clients = _seed_clients(apps, agents, policies, now)
        fresh = [client for client in clients if not client.jobs.exists()]
        _seed_history(fresh, now)
        _seed_alerts(clients)
        _update_storage_use(target)
    return SeedResult(
        logins=[
            (owner.username, owner_password, "owns Web Shop and Orders"),
            (admin.username, admin_password, "backup team, superuser"),
        ],
        counts={
            "cost centres": CostCenter.objects.count(),
            "applications": Application.objects.count(),
            "policies": ProtectionPolicy.objects.count(),
            "agents": Agent.objects.count(),
            "clients": BackupClient.objects.count(),
            "jobs": Job.objects.count(),
            "backups": Backup.objects.count(),
            "open alerts": Alert.objects.open().count(),
        },
        history_clients=len(fresh),
    )


# --- Reference data ---------------------------------------------------------------


def _seed_users(owner_password: str, admin_password: str) -> tuple:
    User = get_user_model()
    owner, _ = User.objects.get_or_create(
        username=OWNER_USERNAME, defaults={"email": f"{OWNER_USERNAME}@example.com"}
    )
    # The password is set on every run, so the logins the command prints are always true.
    owner.set_password(owner_password)
    owner.save()
    admin, _ = User.objects.get_or_create(
        username=ADMIN_USERNAME, defaults={"email": f"{ADMIN_USERNAME}@example.com"}
    )
    admin.is_staff = admin.is_superuser = True
    admin.set_password(admin_password)
    admin.save()
    team, _ = Group.objects.get_or_create(name=settings.PORTAL_BACKUP_TEAM_GROUP)
    admin.groups.add(team)
    return owner, admin


def _seed_applications(owner) -> dict[str, Application]:
    centres = {}
    for code, name, email in COST_CENTERS:
        centres[code], _ = CostCenter.objects.update_or_create(
            code=code, defaults={"name": name, "owner_email": email}
        )
    apps = {}
    for slug, name, code, owned in APPLICATIONS:
        apps[slug], _ = Application.objects.update_or_create(
            slug=slug, defaults={"name": name, "cost_center": centres[code]}
        )
        if owned:
            apps[slug].owners.add(owner)
    return apps


def _seed_storage_target() -> StorageTarget:
    root = Path(settings.PORTAL_STORAGE_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    target, _ = StorageTarget.objects.update_or_create(
        name="demo-filesystem",
        defaults={
            "kind": StorageKind.FILESYSTEM,
            "location": str(root),
            # Logical capacity: 600 GiB of dedup appliance at about 10:1.
            "capacity_bytes": 600 * GiB * DEDUP_RATIO,
            "compression": Compression.NONE,
            "keep_uncompressed": True,
        },
    )
    return target


def _seed_policies(target: StorageTarget) -> dict[str, ProtectionPolicy]:
    policies = {}
    for spec in POLICIES:
        values = {**spec, "storage_target": target}
        name = values.pop("name")
        policies[name], _ = ProtectionPolicy.objects.update_or_create(name=name, defaults=values)
    return policies


def _seed_agents(apps: dict[str, Application], now: datetime) -> dict[str, Agent]:
    agents = {}
    for hostname, slugs in AGENTS:
        values = {"version": AGENT_VERSION, "plugins": list(AGENT_PLUGINS), "last_seen_at": now}
        agents[hostname], _ = Agent.objects.update_or_create(
            hostname=hostname,
            defaults=values,
            create_defaults={**values, "enrolled_at": now - timedelta(days=HISTORY_DAYS + 2)},
        )
        agents[hostname].applications.add(*(apps[slug] for slug in slugs))
    return agents


def _seed_clients(apps, agents, policies, now: datetime) -> list[BackupClient]:
    clients = []
    for spec in CLIENTS:
        validate_options(spec.plugin, spec.options)
        policy = policies[spec.policy]
        values = {
            "agent": agents[spec.agent],
            "hostname": spec.agent,
            "plugin": spec.plugin,
            "options": spec.options,
            "policy": policy,
            "status": ClientStatus.ACTIVE,
            "next_backup_at": policy.next_run_after(now),
        }
        client, _ = BackupClient.objects.update_or_create(
            application=apps[spec.app],
            name=spec.name,
            defaults=values,
            create_defaults={**values, "created_at": now - timedelta(days=HISTORY_DAYS + 1)},
        )
        clients.append(client)
    return clients


# --- History ------------------------------------------------------------------------


def _seed_history(clients: list[BackupClient], now: datetime) -> None:
    """A month of scheduled runs: the jobs first, then the backups they produced."""
    if not clients:
        return
    rng = random.Random(SEED)  # noqa: S311 - demo data, not secrets
    start = now - timedelta(days=HISTORY_DAYS)
    jobs, retries = [], []
    for client in clients:
        client_jobs, client_retries = _client_jobs(client, rng, start, now)
        jobs += client_jobs
        retries += client_retries
    # Inserted in time order, so job ids grow with time as they do in production.
    jobs.sort(key=lambda job: job.created_at)
    Job.objects.bulk_create(jobs)
    # A retry points at the attempt it repeats, which has an id only now.
    for retry, retried in retries:
        retry.retry_of = retried
    Job.objects.bulk_update([retry for retry, _ in retries], ["retry_of"])
    backups = [_backup_for(job, rng, now) for job in jobs if job.state == JobState.SUCCEEDED]
    _mark_restore_tests(backups, rng, start, now)
    Backup.objects.bulk_create(backups)
    Job.objects.bulk_create(_follow_up_jobs(backups))


def _client_jobs(client: BackupClient, rng: random.Random, start: datetime, now: datetime):
    """One job per scheduled run, plus its retries; returns (jobs, [(retry, retried job)])."""
    spec = _spec_for(client)
    growth = rng.uniform(0.001, 0.004)  # per day: business data grows slowly
    runs = _schedule_runs(client.policy, start, now - SETTLE)
    jobs, retries = [], []
    for index, scheduled in enumerate(runs):
        days = (scheduled - start) / timedelta(days=1)
        size = int(spec.base_gib * GiB * (1 + growth * days) * rng.uniform(0.98, 1.02))
        broken = index >= len(runs) - spec.broken_runs
        chain = _run_attempts(client, scheduled, size, rng, fault=spec.fault if broken else None)
        jobs += chain
        retries += zip(chain[1:], chain[:-1], strict=True)
    return jobs, retries


def _spec_for(client: BackupClient) -> ClientSpec:
    return next(s for s in CLIENTS if (s.app, s.name) == (client.application.slug, client.name))


def _schedule_runs(policy: ProtectionPolicy, start: datetime, end: datetime) -> list[datetime]:
    runs, moment = [], policy.next_run_after(start)
    while moment <= end:
        runs.append(moment)
        moment = policy.next_run_after(moment)
    return runs


def _run_attempts(client, scheduled: datetime, size: int, rng: random.Random, *, fault: str | None):
    """A scheduled run: attempt 1, then a retry after each failure, up to the policy's limit."""
    broken = fault is not None
    if broken:
        # The same fault on every attempt: retrying cannot fix it, a person has to.
        attempts = client.policy.max_retries + 1
        failure = next(f for f in FAILURES[client.plugin] if f[0] == fault)
    else:
        attempts = 2 if rng.random() < FIRST_ATTEMPT_FAILURE_RATE else 1
        failure = rng.choice(FAILURES[client.plugin])
    chain, created = [], scheduled
    for attempt in range(1, attempts + 1):
        job = _job(client, created, attempt, size, rng)
        if broken or attempt < attempts:
            _fail(job, client, failure, rng)
        else:
            _succeed(job, client, rng)
        chain.append(job)
        created = job.finished_at  # the retry is queued when the failure is reported
    return chain


def _job(client: BackupClient, created: datetime, attempt: int, size: int, rng: random.Random) -> Job:
    not_before = created if attempt == 1 else created + RETRY_BACKOFF * 2 ** (attempt - 2)
    return Job(
        kind=JobKind.BACKUP,
        client=client,
        agent_id=client.agent_id,
        trigger=JobTrigger.SCHEDULE if attempt == 1 else JobTrigger.RETRY,
        attempt=attempt,
        created_at=created,
        not_before=not_before,
        # Agents poll about once a minute, so a due job waits up to that long to be claimed.
        started_at=not_before + timedelta(seconds=rng.uniform(2, 60)),
        bytes_total=size,
    )


def _succeed(job: Job, client: BackupClient, rng: random.Random) -> None:
    seconds = job.bytes_total / (rng.uniform(*THROUGHPUT[client.plugin]) * MiB) + rng.uniform(3, 20)
    job.state = JobState.SUCCEEDED
    job.finished_at = job.started_at + timedelta(seconds=seconds)
    job.bytes_done = job.bytes_total


def _fail(job: Job, client: BackupClient, failure, rng: random.Random) -> None:
    error_class, template, partial = failure
    done = int(job.bytes_total * rng.uniform(0.05, 0.7)) if partial else 0
    seconds = done / (rng.uniform(*THROUGHPUT[client.plugin]) * MiB) + rng.uniform(1, 15)
    message = template.format(
        path=client.options.get("paths", ["/"])[0], database=client.options.get("database", "")
    )
    job.state = JobState.FAILED
    job.finished_at = job.started_at + timedelta(seconds=seconds)
    job.bytes_done = done
    # A dump that never connected cannot know how much there was to read.
    job.bytes_total = job.bytes_total if partial else None
    job.error_class, job.error_message = error_class, message
    job.log_tail = f"backup-agent {AGENT_VERSION}: {client.plugin} backup of {client}\n{message}"


def _backup_for(job: Job, rng: random.Random, now: datetime) -> Backup:
    client, policy = job.client, job.client.policy
    location = f"{client.application.slug}/{client.name}/job-{job.pk}"
    backup = Backup(
        client=client,
        job=job,
        storage_target_id=policy.storage_target_id,
        taken_at=job.started_at,
        # Retention is counted from the start of the backup, so expires_at > taken_at always.
        expires_at=job.started_at + timedelta(days=policy.retention_days),
        # The target keeps data uncompressed: what is stored is what the plugin read.
        size_bytes=job.bytes_done,
        stored_size_bytes=job.bytes_done,
        location=location,
        sha256=hashlib.sha256(location.encode()).hexdigest(),
        compression=Compression.NONE,
    )
    # The retention sweep runs hourly and the agent removes the data minutes later;
    # until then an expired backup waits for its removal.
    removed = backup.expires_at + timedelta(minutes=rng.uniform(1, 60))
    if removed <= now:
        backup.status, backup.deleted_at = BackupStatus.DELETED, removed
    elif backup.expires_at <= now:
        backup.status = BackupStatus.EXPIRED
    return backup


def _mark_restore_tests(backups: list[Backup], rng: random.Random, start: datetime, now: datetime):
    """Restore tests at each policy's interval, counted back from now, on the newest backup then."""
    by_client: dict[int, list[Backup]] = {}
    for backup in backups:  # already in time order
        by_client.setdefault(backup.client_id, []).append(backup)
    for client_backups in by_client.values():
        interval = timedelta(days=client_backups[0].client.policy.restore_test_interval_days)
        taken = [backup.taken_at for backup in client_backups]
        moment = now - interval * rng.uniform(0.1, 0.6)
        while moment > start:
            # Two hours' margin: the backup has certainly finished before it is tested.
            index = bisect.bisect_left(taken, moment - timedelta(hours=2)) - 1
            if index >= 0:
                client_backups[index].verified_at = moment
                client_backups[index].verification = Verification.PASSED
            moment -= interval


def _follow_up_jobs(backups: list[Backup]) -> list[Job]:
    """The restore tests and expiries the backups went through, named by their backup."""
    jobs = []
    for backup in backups:
        if backup.verified_at:
            jobs.append(_system_job(backup, JobKind.RESTORE_TEST, backup.verified_at, backup.size_bytes))
        if backup.deleted_at:
            jobs.append(_system_job(backup, JobKind.EXPIRE, backup.deleted_at, None))
    return sorted(jobs, key=lambda job: job.created_at)


def _system_job(backup: Backup, kind: str, finished: datetime, size: int | None) -> Job:
    started = finished - timedelta(seconds=(size or 0) / RESTORE_THROUGHPUT + 20)
    created = started - timedelta(seconds=45)
    return Job(
        kind=kind,
        client=backup.client,
        agent_id=backup.client.agent_id,
        backup=backup,
        state=JobState.SUCCEEDED,
        trigger=JobTrigger.SYSTEM,
        created_at=created,
        not_before=created,
        started_at=started,
        finished_at=finished,
        bytes_done=size or 0,
        bytes_total=size,
    )


# --- Alerts and storage -------------------------------------------------------------


def _seed_alerts(clients: list[BackupClient]) -> None:
    """The open alerts the broken clients would have raised; one per key, as the watches do."""
    for client in clients:
        spec = _spec_for(client)
        failed = client.jobs.filter(kind=JobKind.BACKUP, state=JobState.FAILED).first()  # newest first
        if not spec.alert or failed is None:
            continue
        if spec.alert == AlertKind.RPO_BREACHED:
            severity, created_at, message = AlertSeverity.CRITICAL, *_rpo_breach(client)
        else:
            severity, created_at = AlertSeverity.WARNING, failed.finished_at
            message = f"{client}: backup failed after {failed.attempt} attempts: {failed.error_message}"
        Alert.objects.get_or_create(
            key=f"{spec.alert}:client:{client.pk}",
            resolved_at=None,
            defaults={
                "kind": spec.alert,
                "severity": severity,
                "application": client.application,
                "client": client,
                "job": failed,
                "message": message,
                "created_at": created_at,
            },
        )


def _rpo_breach(client: BackupClient) -> tuple[datetime, str]:
    rpo = timedelta(hours=client.policy.rpo_hours)
    last_good = client.backups.filter(status=BackupStatus.AVAILABLE).order_by("-taken_at").first()
    if last_good is None:
        return client.created_at + rpo, f"{client}: no good backup yet (RPO {client.policy.rpo_hours} h)."
    return last_good.taken_at + rpo, (
        f"{client}: the newest good backup is from {last_good.taken_at:%Y-%m-%d %H:%M} UTC, "
        f"older than the {client.policy.rpo_hours} h RPO of {client.policy}."
    )


def _update_storage_use(target: StorageTarget) -> None:
    logical = target.backups.exclude(status=BackupStatus.DELETED).aggregate(total=Sum("stored_size_bytes"))
    # The same count the storage watch makes (catalog.services.watch.watch_storage).
    target.used_bytes = logical["total"] or 0
    target.save(update_fields=["used_bytes"])
