"""Generate the reports benchmark's data set: a large catalog and one busy month, in PostgreSQL.

    .venv/bin/python bench/generate_catalog.py \\
        --database-url postgres://postgres@127.0.0.1:5432/bp_bench \\
        --clients 10000 --backups 1000000 --month 2026-10 --recreate

Creates the database, runs the migrations (``manage.py migrate``), then loads:
cost centres, applications with their owners, three priced policies on two
storage targets, agents, clients, exactly ``--backups`` backups taken in the
month (each with its succeeded job), the last ``--previous-days`` days of the
month before (their retention reaches into the month), failed attempts with
error classes and the retries that recovered, outages whose retries gave up,
retention (expire jobs, deleted and expired backups, legal holds), restore
tests with their verdicts, restore and client requests with their audit
trail, and alerts. The data describe the catalog at the end of the month.

Dimensions are made in Python and sent with COPY; the million-row tables are
computed inside PostgreSQL (``INSERT … SELECT`` over ``generate_series``) in
time order, as they would have been written, with their foreign keys and
secondary indexes dropped during the load and recreated (and so validated)
afterwards. Everything is seeded: the same arguments give the same rows.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

REPO = Path(__file__).resolve().parents[1]
DAY = 86400.0
AGENT_VERSION = "0.1.0"


@dataclass(frozen=True)
class Policy:
    name: str
    schedule: str
    per_day: int
    retention_days: int
    rpo_hours: int
    restore_test_days: int
    max_retries: int
    price: str
    target: int  # index into TARGETS
    auto_approve: bool
    share: float
    tested_share: float  # clients restore-tested within a month (interval ÷ 30 days)


POLICIES = (
    Policy("Gold", "0 */4 * * *", 6, 35, 8, 30, 3, "0.0150", 0, False, 0.25, 1.0),
    Policy("Silver", "0 */8 * * *", 3, 14, 24, 60, 3, "0.0100", 0, False, 0.50, 0.5),
    Policy("Bronze", "0 2 * * *", 1, 7, 48, 90, 2, "0.0060", 1, True, 0.25, 0.34),
)
# name, kind, location, compression, keep_uncompressed, share of capacity used at month end
TARGETS = (
    ("dd-primary", "filesystem", "/mnt/dd01/portal", "none", True, 0.72),
    ("s3-archive", "s3", "backup-archive-eu", "gzip", False, 0.55),
)
# error class, share of failed attempts, message, log tail
ERRORS = (
    (
        "timeout",
        0.22,
        "The backup did not finish within its time limit.",
        "tar: /srv/data/archive: file changed as we read it\nbackup-agent: killed after 21600 s",
    ),
    (
        "database_unreachable",
        0.18,
        'connection to server at "localhost" (127.0.0.1), port 5432 failed: Connection refused',
        'pg_dump: error: connection to server at "localhost" failed: Connection refused',
    ),
    (
        "permission_denied",
        0.15,
        "tar: /srv/data/private: Cannot open: Permission denied",
        "tar: /srv/data/private: Cannot open: Permission denied\ntar: Exiting with failure status",
    ),
    ("lease_expired", 0.15, "The agent stopped reporting; its lease expired.", ""),
    (
        "disk_full",
        0.10,
        "write error: No space left on device",
        "backup-agent: writing data.tar: [Errno 28] No space left on device",
    ),
    (
        "command_not_found",
        0.03,
        "/usr/local/bin/export-data: not found",
        "sh: 1: /usr/local/bin/export-data: not found",
    ),
    (
        "checksum_mismatch",
        0.02,
        "The stored data does not match its SHA-256.",
        "backup-agent: sha256 of data.tar differs from the manifest",
    ),
    ("unknown", 0.15, "exit status 1", "backup-agent: the plugin exited with status 1"),
)
ERROR_INDEX = {name: i + 1 for i, (name, *_rest) in enumerate(ERRORS)}  # 1-based, as in SQL arrays
# plugin, share of clients, median front-end size, prefix of client names, the agent's data file
PLUGINS = (
    ("files", 0.45, 2e9, "fs", "data.tar"),
    ("postgresql", 0.30, 1e9, "pg", "data.dump"),
    ("mysql", 0.15, 5e8, "my", "data.sql"),
    ("command", 0.10, 2e8, "cmd", "data.bin"),
)
DEPARTMENTS = (
    "Finance",
    "Human Resources",
    "Sales",
    "Marketing",
    "Logistics",
    "Manufacturing",
    "Procurement",
    "Legal",
    "Research",
    "Customer Service",
    "IT Operations",
    "Security",
    "Facilities",
    "Treasury",
    "E-Commerce",
    "Quality",
    "Engineering",
    "Analytics",
    "Compliance",
    "Field Service",
)
APP_WORDS = (
    "Payroll",
    "Billing",
    "Orders",
    "Inventory",
    "Ledger",
    "Portal",
    "Catalog",
    "Tickets",
    "Fleet",
    "Claims",
    "Quotes",
    "Contracts",
    "Assets",
    "Invoices",
    "Pricing",
    "Shipping",
    "Returns",
    "Loyalty",
    "Timesheets",
    "Recruiting",
)
APP_KINDS = (
    "Core",
    "Web",
    "API",
    "Reporting",
    "Archive",
    "Mobile",
    "Gateway",
    "Sync",
    "Search",
    "Analytics",
    "Planner",
    "Scheduler",
    "Exports",
    "Imports",
    "Workflow",
    "Notifications",
    "Documents",
    "Audit",
    "Backoffice",
    "Integration",
)


# --- Arguments and database ---------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bp_bench")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--backups", type=int, default=1_000_000, help="Backups taken in the month.")
    parser.add_argument("--month", default="2026-10", help="YYYY-MM")
    parser.add_argument("--previous-days", type=int, default=10, help="Days of the month before to load.")
    parser.add_argument("--cost-centers", type=int, default=20)
    parser.add_argument("--applications", type=int, default=400)
    parser.add_argument("--agents", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--recreate", action="store_true", help="Drop the database first if it exists.")
    args = parser.parse_args(argv)
    if args.agents < args.applications or args.clients < args.agents:
        parser.error("need clients ≥ agents ≥ applications (every agent serves one application)")
    return args


def month_bounds(text: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(text + "-01", "%Y-%m-%d").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def recreate_database(url: str, recreate: bool) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cur.fetchone():
            if not recreate:
                raise SystemExit(f"database {name} exists; pass --recreate to replace it")
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()


def migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "true"}
    subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "migrate", "--noinput", "-v", "0"], env=env, check=True
    )


PLAN_COLUMNS = (
    ("client_id", "bigint"),
    ("agent_id", "bigint"),
    ("app_id", "bigint"),
    ("app_slug", "text"),
    ("client_name", "text"),
    ("agent_hostname", "text"),
    ("plugin", "text"),
    ("target_id", "bigint"),
    ("compression", "text"),
    ("retention_s", "float8"),
    ("rpo_s", "float8"),
    ("max_retries", "int"),
    ("n", "int"),
    ("n_prev", "int"),
    ("interval_s", "float8"),
    ("phase_s", "float8"),
    ("gap_start", "float8"),
    ("gap_len", "float8"),
    ("silent_since", "float8"),
    ("outage", "boolean"),
    ("outage_error", "int"),
    ("base_size", "float8"),
    ("growth", "float8"),
    ("ratio", "float8"),
    ("tput", "float8"),
    ("owner_id", "int"),
    ("test_k", "int"),
)

# The columns each COPY writes, in the order of the generated rows.
COLUMNS = {
    "bench_plan": ", ".join(name for name, _ in PLAN_COLUMNS),
    "auth_user": (
        "id, password, last_login, is_superuser, username, first_name, last_name, email, is_staff, "
        "is_active, date_joined"
    ),
    "auth_user_groups": "user_id, group_id",
    "catalog_costcenter": "id, code, name, owner_email",
    "catalog_application": "id, slug, name, cost_center_id, description, created_at",
    "catalog_application_owners": "id, application_id, user_id",
    "catalog_storagetarget": (
        "id, name, kind, location, capacity_bytes, used_bytes, compression, keep_uncompressed"
    ),
    "catalog_protectionpolicy": (
        "id, name, description, schedule, retention_days, rpo_hours, restore_test_interval_days, "
        "max_retries, price_per_gb_month, auto_approve_clients, storage_target_id"
    ),
    "catalog_agent": (
        "id, hostname, token_hash, version, protocol, plugins, enrolled_at, last_seen_at, revoked_at, "
        "instance_id, instance_host"
    ),
    "catalog_agent_applications": "id, agent_id, application_id",
    "catalog_backupclient": (
        "id, name, hostname, plugin, options, status, next_backup_at, created_at, agent_id, "
        "application_id, policy_id"
    ),
    "catalog_job": (
        "id, kind, state, trigger, attempt, target_location, overwrite, created_at, not_before, "
        "started_at, finished_at, lease_expires_at, cancel_requested_at, bytes_done, bytes_total, "
        "log_tail, error_class, error_message, agent_id, backup_id, client_id, requested_by_id, "
        "retry_of_id"
    ),
    "requests_app_restorerequest": (
        "id, status, needs_approval, approval_rule, external_ref, decided_at, decision_reason, "
        "error, created_at, updated_at, target_location, overwrite, reason, backup_id, "
        "decided_by_id, job_id, requester_id, target_agent_id"
    ),
    "requests_app_clientrequest": (
        "id, status, needs_approval, approval_rule, external_ref, decided_at, decision_reason, "
        "error, created_at, updated_at, hostname, name, plugin, options, justification, "
        "application_id, client_id, decided_by_id, enrolment_id, policy_id, "
        "requester_id"
    ),
    "requests_app_auditevent": (
        "id, occurred_at, application_id, client_request_id, restore_request_id, actor_kind, "
        "actor_user_id, actor_label, channel, action, from_status, to_status, message"
    ),
    "catalog_alert": (
        "id, kind, severity, key, message, created_at, resolved_at, acknowledged_at, "
        "acknowledged_by_id, agent_id, application_id, client_id, job_id, digested_at, emailed_at"
    ),
}


def copy_rows(cur, table: str, rows: Iterable[Sequence]) -> int:
    """COPY ``rows`` into ``table`` (its ``COLUMNS``) in chunks of CSV.

    NULL is written as \\N, so that '' stays an empty string.
    """

    def cell(value):
        if value is None:
            return r"\N"
        if isinstance(value, bool):
            return "t" if value else "f"
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict | list):
            return json.dumps(value)
        return value

    statement = f"COPY {table} ({COLUMNS[table]}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    count, buffer = 0, io.StringIO()
    writer = csv.writer(buffer)
    names = COLUMNS[table].split(", ")
    for row in rows:
        values = [row[name] for name in names] if isinstance(row, dict) else row
        writer.writerow([cell(v) for v in values])
        count += 1
        if buffer.tell() > 8 << 20:
            buffer.seek(0)
            cur.copy_expert(statement, buffer)
            buffer.seek(0)
            buffer.truncate()
    buffer.seek(0)
    cur.copy_expert(statement, buffer)
    return count


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# --- Dimensions, made in Python ------------------------------------------------------------


class Catalog:
    """The small tables and each client's plan for the month, all from one seeded RNG."""

    def __init__(self, args: argparse.Namespace, start: datetime, end: datetime) -> None:
        self.args, self.rng = args, random.Random(args.seed)
        self.ms, self.me = start.timestamp(), end.timestamp()
        self.length = self.me - self.ms
        self.users, self.owner_of_app = self._users()
        self.cost_centers = [
            (
                i + 1,
                f"CC-{100 + i * 10}",
                DEPARTMENTS[i % len(DEPARTMENTS)] + ("" if i < 20 else f" {i}"),
                f"finance.{i + 1}@example.com",
            )
            for i in range(args.cost_centers)
        ]
        self.apps = self._applications()
        self.agents, self.clients, self.plan = self._agents_and_clients()

    def _users(self):
        rng, when = self.rng, at(self.ms - 400 * DAY)
        users = []
        for i in range(1, 6):
            users.append((i, f"admin{i}", "Backup", f"Admin {i}", True))
        users.append((6, "auditor", "Internal", "Audit", False))
        owners = max(1, self.args.applications * 3 // 4)
        for i in range(owners):
            users.append((7 + i, f"owner{i + 1:03d}", "Owner", f"{i + 1:03d}", False))
        rows = [
            (
                uid,
                f"!{rng.getrandbits(160):040x}",
                None,
                False,
                name,
                first,
                last,
                f"{name}@example.com",
                staff,
                True,
                when,
            )
            for uid, name, first, last, staff in users
        ]
        owner_ids = [u[0] for u in users[6:]]
        owner_of_app = [owner_ids[a % len(owner_ids)] for a in range(self.args.applications)]
        return rows, owner_of_app

    def _applications(self):
        apps = []
        for a in range(self.args.applications):
            word, kind = APP_WORDS[a % len(APP_WORDS)], APP_KINDS[(a // len(APP_WORDS)) % len(APP_KINDS)]
            suffix = a // (len(APP_WORDS) * len(APP_KINDS))
            name = f"{word} {kind}" + (f" {suffix + 1}" if suffix else "")
            slug = name.lower().replace(" ", "-")
            apps.append((a + 1, slug, name, a % self.args.cost_centers + 1))
        return apps

    def application_owners(self):
        rows, seen = [], set()
        owner_count = len(self.users) - 6
        for a, owner in enumerate(self.owner_of_app):
            pairs = [(a + 1, owner)]
            if a % 3 == 0:  # some applications have a second owner
                pairs.append((a + 1, 7 + (a * 7 + 1) % owner_count))
            for pair in pairs:
                if pair not in seen:
                    seen.add(pair)
                    rows.append((len(rows) + 1, *pair))
        return rows

    def _agents_and_clients(self):
        args, rng = self.args, self.rng
        revoked = set(rng.sample(range(args.agents), max(1, args.agents // 200)))
        silent = set(rng.sample(sorted(set(range(args.agents)) - revoked), max(1, args.agents // 100)))
        silent_since = {g: self.ms + rng.uniform(20, 30.5) * DAY for g in silent}
        agents = []
        for g in range(args.agents):
            app = self.apps[g % args.applications]
            enrolled = self.ms - rng.uniform(60, 600) * DAY
            if g in revoked:
                revoked_at = self.ms - rng.uniform(10, 200) * DAY
                seen = revoked_at - rng.uniform(60, 3600)
            else:
                revoked_at = None
                seen = silent_since.get(g, self.me - rng.uniform(1, 30))
            token = hashlib.sha256(f"bench-agent-{args.seed}-{g}".encode()).hexdigest()
            hostname = f"srv{g + 1:04d}.{app[1]}.example.com"
            agents.append(
                (
                    g + 1,
                    hostname,
                    token,
                    AGENT_VERSION,
                    2,  # the protocol it speaks (docs/agent-protocol.md)
                    [p[0] for p in PLUGINS],
                    at(enrolled),
                    at(seen),
                    revoked_at and at(revoked_at),
                    hashlib.sha256(f"bench-instance-{args.seed}-{g}".encode()).hexdigest()[:32],
                    hostname,
                )
            )
        scenarios = self._scenarios(revoked, silent)
        clients, plan = [], []
        for c in range(args.clients):
            g = c % args.agents
            client, row = self._client(c, agents[g], scenarios.get(c, "normal"), silent_since.get(g))
            clients.append(client)
            plan.append(row)
        self._size_backups(plan)
        return agents, clients, plan

    def _scenarios(self, revoked: set[int], silent: set[int]) -> dict[int, str]:
        n, agents = self.args.clients, self.args.agents
        scenario = {c: "retired" for c in range(n) if c % agents in revoked}
        scenario |= {c: "silent" for c in range(n) if c % agents in silent}
        rest = [c for c in range(n) if c not in scenario]
        picked = iter(self.rng.sample(rest, len(rest)))
        for name, share in (("pending", 0.002), ("new", 0.02), ("paused", 0.015), ("outage", 0.015)):
            for _ in range(max(1, round(n * share))):
                scenario[next(picked)] = name
        return scenario

    def _client(self, c: int, agent: tuple, scenario: str, silent_since: float | None):
        rng, ms, me = self.rng, self.ms, self.me
        app_id = (c % self.args.agents) % self.args.applications + 1
        policy_index = rng.choices(range(len(POLICIES)), [p.share for p in POLICIES])[0]
        policy = POLICIES[policy_index]
        plugin, _, median, prefix, _ = rng.choices(PLUGINS, [p[1] for p in PLUGINS])[0]
        name = f"{prefix}-{c + 1:05d}"
        app_slug = self.apps[app_id - 1][1]
        created = ms - rng.uniform(40, 600) * DAY
        gap_start, gap_len, status, agent_id = me, 0.0, "active", agent[0]
        match scenario:
            case "silent":
                gap_start, gap_len = silent_since, me - silent_since
            case "paused":
                gap_start = ms + rng.uniform(3, 28) * DAY
                gap_len, status = me - gap_start, "paused"
            case "outage":
                gap_start, gap_len = ms + rng.uniform(2, 26) * DAY, rng.uniform(1, 4) * DAY
            case "new":
                created = ms + rng.uniform(1, 25) * DAY
                gap_start, gap_len = ms, created + 3600 - ms
            case "pending":
                created, status, agent_id = me - rng.uniform(1, 5) * DAY, "pending_enrolment", None
            case "retired":
                status = "retired"
        target = TARGETS[policy.target]
        client = (
            c + 1,
            name,
            agent[1],
            plugin,
            self._options(plugin, app_slug),
            status,
            at(me + rng.uniform(0, DAY / policy.per_day)) if status == "active" else None,
            at(created),
            agent_id,
            app_id,
            policy_index + 1,
        )
        plan = {
            "client_id": c + 1,
            "agent_id": agent_id,
            "app_id": app_id,
            "app_slug": app_slug,
            "client_name": name,
            "agent_hostname": agent[1],
            "plugin": plugin,
            "target_id": policy.target + 1,
            "compression": target[3],
            "retention_s": policy.retention_days * DAY,
            "rpo_s": policy.rpo_hours * 3600.0,
            "max_retries": policy.max_retries,
            "gap_start": gap_start,
            "gap_len": gap_len,
            "silent_since": silent_since if scenario == "silent" else None,
            "outage": scenario == "outage",
            "outage_error": ERROR_INDEX[
                rng.choice(("database_unreachable", "disk_full", "permission_denied"))
            ],
            "base_size": min(2e12, max(5e7, rng.lognormvariate(math.log(median), 1.2))),
            "growth": rng.gauss(0.02, 0.03),
            "ratio": rng.uniform(0.3, 0.6) if target[3] == "gzip" else 1.001,
            "tput": rng.uniform(80e6, 400e6),
            "owner_id": self.owner_of_app[app_id - 1],
            "scenario": scenario,
            "policy": policy,
            "created": created,
            "weight": 0.0 if scenario in ("pending", "retired") else policy.per_day * (self.length - gap_len),
        }
        return client, plan

    @staticmethod
    def _options(plugin: str, app_slug: str) -> dict:
        database = app_slug.replace("-", "_")
        return {
            "files": {"paths": [f"/srv/{app_slug}", f"/etc/{app_slug}"], "exclude": ["*.tmp", "cache/"]},
            "postgresql": {"database": database, "user": "backup"},
            "mysql": {"database": database, "host": "localhost"},
            "command": {
                "backup_argv": ["/usr/local/bin/export-data", "{target}"],
                "restore_argv": ["/usr/local/bin/import-data", "{target}"],
            },
        }[plugin]

    def _size_backups(self, plan: list[dict]) -> None:
        """Give each client its count of backups so the month holds exactly ``--backups``."""
        rng, total = self.rng, sum(p["weight"] for p in plan)
        scale = self.args.backups / total
        shares = [p["weight"] * scale for p in plan]
        counts = [math.floor(s) for s in shares]
        by_remainder = sorted(range(len(plan)), key=lambda i: counts[i] - shares[i])
        for i in by_remainder[: self.args.backups - sum(counts)]:
            counts[i] += 1
        for p, n in zip(plan, counts, strict=True):
            p["n"] = n
            active = self.length - p["gap_len"]
            p["interval_s"] = active / n if n else DAY
            # At least an hour before the month's (or the gap's) end, so retries stay inside it.
            p["phase_s"] = rng.uniform(0, max(0.0, p["interval_s"] - 3600))
            existed = p["scenario"] not in ("new", "pending", "retired")
            p["n_prev"] = round(self.args.previous_days * DAY / p["interval_s"]) if existed and n else 0
            p["test_k"] = self._restore_test_slot(p)

    def _restore_test_slot(self, p: dict) -> int | None:
        """Which backup the client's last restore test read: this month's, else one of the month before."""
        rng = self.rng
        if p["n"] and rng.random() < p["policy"].tested_share:
            return rng.randrange(p["n"])
        if p["n_prev"] > 1 and rng.random() < 0.9:
            return -rng.randrange(1, p["n_prev"])
        return None


def load_dimensions(cur, cat: Catalog) -> None:
    cur.execute("INSERT INTO auth_group (name) VALUES ('backup-admins') RETURNING id")
    group_id = cur.fetchone()[0]
    copy_rows(cur, "auth_user", cat.users)
    copy_rows(cur, "auth_user_groups", [(i, group_id) for i in range(1, 6)])
    copy_rows(cur, "catalog_costcenter", cat.cost_centers)
    when = at(cat.ms - 400 * DAY)
    copy_rows(cur, "catalog_application", [(*a, "", when) for a in cat.apps])
    copy_rows(cur, "catalog_application_owners", cat.application_owners())
    copy_rows(
        cur,
        "catalog_storagetarget",
        [(i + 1, t[0], t[1], t[2], 1 << 50, 0, t[3], t[4]) for i, t in enumerate(TARGETS)],
    )
    copy_rows(cur, "catalog_protectionpolicy", [policy_row(i, p) for i, p in enumerate(POLICIES)])
    copy_rows(cur, "catalog_agent", cat.agents)
    pairs = sorted({(c[8] or (c[0] - 1) % cat.args.agents + 1, c[9]) for c in cat.clients})
    copy_rows(cur, "catalog_agent_applications", [(i + 1, *pair) for i, pair in enumerate(pairs)])
    copy_rows(cur, "catalog_backupclient", cat.clients)
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in PLAN_COLUMNS
    )
    cur.execute(sql.SQL("CREATE UNLOGGED TABLE bench_plan ({})").format(columns))
    copy_rows(cur, "bench_plan", ([p[n] for n, _ in PLAN_COLUMNS] for p in cat.plan))
    cur.execute("CREATE UNIQUE INDEX ON bench_plan (client_id); ANALYZE bench_plan")


def policy_row(i: int, p: Policy) -> tuple:
    description = f"{p.name}: every {24 // p.per_day} h, kept {p.retention_days} days"
    return (
        i + 1,
        p.name,
        description,
        p.schedule,
        p.retention_days,
        p.rpo_hours,
        p.restore_test_days,
        p.max_retries,
        p.price,
        p.auto_approve,
        p.target + 1,
    )


# --- The big tables, computed in PostgreSQL ------------------------------------------------

# A seeded uniform number in [0, 1) for a key and a salt; the same on every run.
HASH_FUNCTION = """
CREATE FUNCTION pg_temp.u(key bigint, salt int) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT (hashint8extended(key, salt * 7919 + {seed}) & 2147483647)::float8 / 2147483648.0 $$
"""

# One row per backup slot: when it was scheduled, how many attempts failed first, when it ran.
SLOTS = """
CREATE UNLOGGED TABLE bench_slot AS
WITH raw AS (
    SELECT p.client_id, p.agent_id, p.retention_s, p.max_retries, p.base_size, p.growth, p.ratio, p.tput,
           p.owner_id, p.silent_since, g.k, p.client_id * 1000000 + 500000 + g.k AS slot_key,
           %(ms)s + p.phase_s + g.k * p.interval_s AS t0, p.gap_start, p.gap_len
    FROM bench_plan p CROSS JOIN LATERAL generate_series(-p.n_prev, p.n - 1) AS g(k)
), scheduled AS (
    SELECT raw.*, t0 + CASE WHEN k >= 0 AND t0 >= gap_start THEN gap_len ELSE 0 END AS sched,
           5 + 25 * pg_temp.u(slot_key, 2) AS poll, 30 + 570 * pg_temp.u(slot_key, 3) AS d_fail,
           pg_temp.u(slot_key, 1) AS u_fail
    FROM raw
), tried AS (
    SELECT scheduled.*,
           -- No retries across the month's edges: every slot's backup stays in its month.
           CASE WHEN sched > %(ms)s - 7200 AND sched < %(ms)s OR sched > %(me)s - 7200 THEN 0
                WHEN u_fail < 0.021 THEN 1 WHEN u_fail < 0.0245 THEN 2
                WHEN u_fail < 0.0255 THEN LEAST(3, max_retries) ELSE 0 END AS f,
           (base_size * (1 + growth * (sched - %(ms)s) / %(month_s)s)
            * (0.99 + 0.02 * pg_temp.u(slot_key, 4)))::bigint AS size
    FROM scheduled
), ran AS (
    SELECT tried.*,
           sched + poll + f * (d_fail + poll) + 300 * (power(2, f) - 1) AS taken,
           CASE WHEN f > 0 THEN sched + poll + (f - 1) * (d_fail + poll) + 300 * (power(2, f - 1) - 1)
                + d_fail END AS fail_last,
           (size * ratio)::bigint AS stored,
           pg_temp.u(slot_key, 7) < 0.0002 AS legal_hold,
           f = 0 AND pg_temp.u(slot_key, 5) < 0.002 AS by_user
    FROM tried
)
SELECT row_number() OVER (ORDER BY sched, client_id) AS backup_id, ran.*,
       taken + 5 + size / tput AS finished, taken + retention_s AS expires
FROM ran
"""

# Every job the month's work left behind, with its id in creation order.
JOBS = """
CREATE UNLOGGED TABLE bench_job AS
SELECT row_number() OVER (ORDER BY created_at, slot_key, role, attempt) AS id, j.*
FROM (
    -- The attempt that succeeded and produced the backup.
    SELECT 'backup' AS role, s.slot_key, s.f + 1 AS attempt, s.client_id, s.agent_id,
           NULL::bigint AS backup_ref,
           'backup' AS kind, 'succeeded' AS state,
           CASE WHEN s.f > 0 THEN 'retry' WHEN s.by_user THEN 'user' ELSE 'schedule' END AS trigger,
           CASE WHEN s.f = 0 THEN s.sched ELSE s.fail_last END AS created_at,
           CASE WHEN s.f = 0 THEN s.sched ELSE s.fail_last + 300 * power(2, s.f - 1) END AS not_before,
           s.taken AS started_at, s.finished AS finished_at, NULL::float8 AS lease_at,
           s.size AS bytes_done, s.size AS bytes_total, 0 AS error_idx,
           CASE WHEN s.by_user THEN s.owner_id END AS requested_by_id
    FROM bench_slot s
  UNION ALL
    -- Attempts that failed before it; each retry waits 300 s × 2^(attempt − 1).
    SELECT 'failed', s.slot_key, a, s.client_id, s.agent_id, NULL, 'backup', 'failed',
           CASE WHEN a = 1 THEN 'schedule' ELSE 'retry' END,
           x.start - s.poll - CASE WHEN a = 1 THEN 0 ELSE 300 * power(2, a - 2) END,
           x.start - s.poll, x.start, x.start + s.d_fail, NULL,
           (s.size * pg_temp.u(s.slot_key * 8 + a, 11))::bigint, s.size,
           width_bucket(pg_temp.u(s.slot_key * 8 + a, 12), %(error_bounds)s::float8[]), NULL
    FROM bench_slot s CROSS JOIN LATERAL generate_series(1, s.f) AS a
    CROSS JOIN LATERAL (SELECT s.sched + s.poll + (a - 1) * (s.d_fail + s.poll)
                               + 300 * (power(2, a - 1) - 1) AS start) x
  UNION ALL
    -- Outages: every attempt failed, the retries gave up and a person was alerted.
    SELECT 'giveup', -p.client_id, a, p.client_id, p.agent_id, NULL, 'backup', 'failed',
           CASE WHEN a = 1 THEN 'schedule' ELSE 'retry' END,
           x.start - 15 - CASE WHEN a = 1 THEN 0 ELSE 300 * power(2, a - 2) END,
           x.start - 15, x.start, x.start + 45, NULL, 0, NULL, p.outage_error, NULL
    FROM bench_plan p CROSS JOIN LATERAL generate_series(1, p.max_retries + 1) AS a
    CROSS JOIN LATERAL (SELECT p.gap_start + 15 + (a - 1) * 60 + 300 * (power(2, a - 1) - 1) AS start) x
    WHERE p.outage
  UNION ALL
    -- A silent agent's next backup waits in the queue.
    SELECT 'pending', -p.client_id, 1, p.client_id, p.agent_id, NULL, 'backup', 'queued', 'schedule',
           LEAST(p.silent_since + p.interval_s / 2, %(me)s - 60), LEAST(p.silent_since + p.interval_s / 2,
           %(me)s - 60), NULL, NULL, NULL, 0, NULL, 0, NULL
    FROM bench_plan p WHERE p.silent_since IS NOT NULL AND p.n > 0
  UNION ALL
    -- Retention: the sweep marks a backup expired and its agent removes it (unless it is silent).
    SELECT 'expire', s.slot_key, 1, s.client_id, s.agent_id, s.backup_id, 'expire',
           CASE WHEN x.created >= coalesce(s.silent_since, 'infinity') THEN 'queued'
                WHEN x.created + x.poll + x.dur <= %(me)s THEN 'succeeded'
                WHEN x.created + x.poll <= %(me)s THEN 'running' ELSE 'queued' END,
           'system', x.created, x.created,
           CASE WHEN x.created + x.poll <= %(me)s AND x.created < coalesce(s.silent_since, 'infinity')
                THEN x.created + x.poll END,
           CASE WHEN x.created + x.poll + x.dur <= %(me)s AND x.created < coalesce(s.silent_since, 'infinity')
                THEN x.created + x.poll + x.dur END,
           CASE WHEN x.created + x.poll <= %(me)s AND x.created + x.poll + x.dur > %(me)s
                AND x.created < coalesce(s.silent_since, 'infinity') THEN x.created + x.poll + 120 END,
           0, NULL, 0, NULL
    FROM bench_slot s CROSS JOIN LATERAL (
        SELECT s.expires + 60 * pg_temp.u(s.slot_key, 13) AS created,
               5 + 25 * pg_temp.u(s.slot_key, 14) AS poll,
               1 + 4 * pg_temp.u(s.slot_key, 15) AS dur) x
    WHERE NOT s.legal_hold AND x.created <= %(me)s
  UNION ALL
    -- Restore tests: most pass; some find a bad backup; a few lose their agent (no verdict).
    SELECT 'rtest', s.slot_key, 1, s.client_id, s.agent_id, s.backup_id, 'restore_test',
           CASE WHEN x.verdict < 0.95 THEN 'succeeded' ELSE 'failed' END, 'system',
           x.start - 20, x.start - 20, x.start, x.start + x.dur, NULL,
           CASE WHEN x.verdict < 0.95 THEN s.size ELSE (s.size * x.verdict * 0.9)::bigint END, s.size,
           CASE WHEN x.verdict < 0.95 THEN 0 WHEN x.verdict < 0.975 THEN %(checksum)s
                WHEN x.verdict < 0.985 THEN %(unknown)s ELSE %(lease)s END, NULL
    FROM bench_slot s JOIN bench_plan p ON p.client_id = s.client_id AND p.test_k = s.k
    CROSS JOIN LATERAL (
        SELECT s.finished + 3600 + 21600 * pg_temp.u(s.slot_key, 20) AS start,
               10 + s.size / (s.tput * 1.5) AS dur, pg_temp.u(s.slot_key, 21) AS verdict) x
    WHERE x.start + x.dur < LEAST(%(me)s, coalesce(s.silent_since, 'infinity'), s.expires)
) j
"""

INSERT_JOBS = """
INSERT INTO catalog_job (
    id, kind, state, trigger, attempt, target_location, overwrite, created_at, not_before, started_at,
    finished_at, lease_expires_at, cancel_requested_at, bytes_done, bytes_total, log_tail, error_class,
    error_message, agent_id, backup_id, client_id, requested_by_id, retry_of_id)
SELECT j.id, j.kind, j.state, j.trigger, j.attempt, '', false, to_timestamp(j.created_at),
       to_timestamp(j.not_before), to_timestamp(j.started_at), to_timestamp(j.finished_at),
       to_timestamp(j.lease_at), NULL, j.bytes_done, j.bytes_total,
       coalesce((%(tails)s::text[])[nullif(j.error_idx, 0)], ''),
       coalesce((%(classes)s::text[])[nullif(j.error_idx, 0)], ''),
       coalesce((%(messages)s::text[])[nullif(j.error_idx, 0)], ''),
       j.agent_id, j.backup_ref, j.client_id, j.requested_by_id, prev.id
FROM bench_job j
LEFT JOIN (SELECT slot_key, attempt, id FROM bench_job WHERE role IN ('failed', 'giveup')) prev
       ON prev.slot_key = j.slot_key AND prev.attempt = j.attempt - 1
ORDER BY j.id
"""

# The manifest the agent reports with a backup (backup_agent/executor.py), filled in by format():
# built as text and cast once, which is cheaper than nested jsonb_build_object() calls.
MANIFEST = (
    '{"format": 1, "job_id": %s, "attempt": %s, "client": {"id": %s, "name": "%s", "application": "%s"}, '
    '"plugin": "%s", "data_file": "%s", "size": %s, "stored_size": %s, "sha256": "%s", "compression": "%s", '
    '"started_at": "%s", "finished_at": "%s", "agent": {"hostname": "%s", "version": "'
    + AGENT_VERSION
    + '"}, '
    '"facts": %s}'
)
DATABASE_FACTS = (
    '{"database": "%s", "row_counts_exact": %s, '
    '"row_counts": {"orders": %s, "customers": %s, "events": %s, "audit_log": %s}}'
)
FILES_FACTS = '{"members": %s, "total_size": %s, "skipped": 0, "skipped_links": []}'

INSERT_BACKUPS = """
INSERT INTO catalog_backup (
    id, taken_at, expires_at, size_bytes, stored_size_bytes, location, sha256, compression, manifest, status,
    verified_at, verification, legal_hold, legal_hold_reason, deleted_at, client_id, job_id,
    storage_target_id, legal_hold_at, legal_hold_by_id, verification_job_id)
SELECT s.backup_id, to_timestamp(s.taken), to_timestamp(s.expires), s.size, s.stored,
       p.app_slug || '/' || p.client_name || '/job-' || bj.id, x.sha256, p.compression,
       format(%(manifest)s, bj.id, bj.attempt, p.client_id, p.client_name, p.app_slug, p.plugin,
              CASE p.plugin WHEN 'files' THEN 'data.tar' WHEN 'postgresql' THEN 'data.dump'
                  WHEN 'mysql' THEN 'data.sql' ELSE 'data.bin' END
              || CASE WHEN p.compression = 'gzip' THEN '.gz' ELSE '' END,
              s.size, s.stored, x.sha256, p.compression,
              to_char(to_timestamp(s.taken) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
              to_char(to_timestamp(s.finished) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
              p.agent_hostname,
              CASE WHEN p.plugin IN ('postgresql', 'mysql')
                   THEN format(%(database_facts)s, p.app_slug, (p.plugin = 'postgresql')::text, s.size / 900,
                               s.size / 20000, s.size / 300, s.size / 1200)
                   ELSE format(%(files_facts)s, s.size / 2000000 + 1, s.size) END)::jsonb,
       CASE WHEN ej.id IS NULL THEN 'available' WHEN ej.state = 'succeeded' THEN 'deleted' ELSE 'expired' END,
       CASE WHEN tj.error_idx <> %(lease)s THEN to_timestamp(tj.finished_at) END,
       CASE WHEN tj.error_idx = 0 THEN 'passed' WHEN tj.error_idx <> %(lease)s THEN 'failed' ELSE '' END,
       s.legal_hold, CASE WHEN s.legal_hold THEN 'Litigation hold, case LH-' || (s.backup_id %% 97 + 2026)
                     ELSE '' END,
       CASE WHEN ej.state = 'succeeded' THEN to_timestamp(ej.finished_at) END,
       s.client_id, bj.id, p.target_id,
       CASE WHEN s.legal_hold THEN to_timestamp(LEAST(s.taken + 3600 + 86400 * pg_temp.u(s.slot_key, 8),
                                                      %(me)s)) END,
       CASE WHEN s.legal_hold THEN 1 END,
       CASE WHEN tj.error_idx <> %(lease)s THEN tj.id END
FROM bench_slot s
JOIN bench_plan p ON p.client_id = s.client_id
JOIN bench_job bj ON bj.role = 'backup' AND bj.slot_key = s.slot_key
LEFT JOIN bench_job ej ON ej.role = 'expire' AND ej.backup_ref = s.backup_id
LEFT JOIN bench_job tj ON tj.role = 'rtest' AND tj.backup_ref = s.backup_id
CROSS JOIN LATERAL (SELECT encode(sha256(int8send(s.slot_key * 31 + %(seed)s)), 'hex') AS sha256) x
ORDER BY s.backup_id
"""


def drop_load_obstacles(cur, tables: Sequence[str]) -> list[str]:
    """Drop the foreign keys and secondary indexes of ``tables``; return the statements that restore them.

    Kept during the load: primary keys, unique constraints and every CHECK constraint.
    """
    cur.execute(
        """
        SELECT format('ALTER TABLE %%I ADD CONSTRAINT %%I %%s', conrelid::regclass, conname,
                      pg_get_constraintdef(oid)),
               format('ALTER TABLE %%I DROP CONSTRAINT %%I', conrelid::regclass, conname)
        FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text = ANY(%(tables)s)
        """,
        {"tables": list(tables)},
    )
    constraints = cur.fetchall()
    cur.execute(
        """
        SELECT indexdef, format('DROP INDEX %%I', indexname) FROM pg_indexes i
        WHERE tablename = ANY(%(tables)s) AND NOT EXISTS (
            SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.contype IN ('p', 'u'))
        """,
        {"tables": list(tables)},
    )
    indexes = cur.fetchall()
    for _, drop in constraints + indexes:
        cur.execute(drop)
    return [create for create, _ in indexes] + [create for create, _ in constraints]


# Columns added to the models since the statements above were written, with their model defaults:
# set as column defaults for the load (only where the column exists), dropped after it.
NEWER_COLUMNS = {
    "catalog_job": {"paths": "'[]'::jsonb", "level": "''", "level_reason": "''"},
    "catalog_backup": {
        "level": "'full'", "index_kind": "''", "index_sha256": "''",
        "anomaly": "'{}'::jsonb", "anomaly_acknowledged_note": "''",
    },  # fmt: skip
    "requests_app_restorerequest": {"paths": "'[]'::jsonb"},
}


def newer_column_defaults(cur, on: bool) -> None:
    for table, columns in NEWER_COLUMNS.items():
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table])
        present = {row[0] for row in cur.fetchall()}
        for column, default in columns.items():
            if column in present:
                alter = sql.SQL("ALTER TABLE {} ALTER COLUMN {} ").format(
                    sql.Identifier(table), sql.Identifier(column)
                )
                cur.execute(alter + sql.SQL("SET DEFAULT " + default if on else "DROP DEFAULT"))


def load_bulk(cur, cat: Catalog, step) -> None:
    params = {
        "ms": cat.ms,
        "me": cat.me,
        "month_s": cat.length,
        "seed": cat.args.seed,
        "manifest": MANIFEST,
        "database_facts": DATABASE_FACTS,
        "files_facts": FILES_FACTS,
        "checksum": ERROR_INDEX["checksum_mismatch"],
        "unknown": ERROR_INDEX["unknown"],
        "lease": ERROR_INDEX["lease_expired"],
        "error_bounds": [sum(e[1] for e in ERRORS[:i]) for i in range(len(ERRORS))],
        "classes": [e[0] for e in ERRORS],
        "messages": [e[2] for e in ERRORS],
        "tails": [e[3] for e in ERRORS],
    }
    cur.execute(sql.SQL(HASH_FUNCTION).format(seed=sql.Literal(cat.args.seed)))
    restore = drop_load_obstacles(cur, ["catalog_job", "catalog_backup"])
    with step("stage backup slots"):
        cur.execute(SLOTS, params)
        cur.execute("ANALYZE bench_slot")
    with step("stage jobs"):
        cur.execute(JOBS, params)
        cur.execute("ANALYZE bench_job")
    with step("insert jobs"):
        cur.execute(INSERT_JOBS, params)
    with step("insert backups"):
        cur.execute(INSERT_BACKUPS, params)
    with step("recreate indexes and foreign keys"):
        for statement in restore:
            cur.execute(statement)


# --- Requests, audit and alerts: a few thousand rows, made in Python ----------------------


class Ids:
    """Next free primary keys, so small tables can be written with COPY."""

    def __init__(self, cur) -> None:
        self.cur, self.next = cur, {}

    def take(self, table: str) -> int:
        if table not in self.next:
            self.cur.execute(sql.SQL("SELECT coalesce(max(id), 0) + 1 FROM {}").format(sql.Identifier(table)))
            self.next[table] = self.cur.fetchone()[0]
        value = self.next[table]
        self.next[table] += 1
        return value


SYSTEM = {"actor_kind": "system", "channel": "system", "actor_label": "system", "actor_user_id": None}


class Trail:
    """The audit events of one request, as the services would have written them."""

    def __init__(self, events: list[dict], kind: str, request_id: int, app_id: int) -> None:
        self.events, self.links = (
            events,
            {
                "application_id": app_id,
                "client_request_id": request_id if kind == "client" else None,
                "restore_request_id": request_id if kind == "restore" else None,
            },
        )

    def __call__(self, when: float, actor: dict, action: str, before: str, after: str, message="") -> None:
        self.events.append(
            {"occurred_at": at(when), **self.links, **actor, "action": action, "from_status": before,
             "to_status": after, "message": message}
        )  # fmt: skip


class Requests:
    """Restore and client requests, their restore jobs and audit events."""

    def __init__(self, cur, cat: Catalog) -> None:
        self.cur, self.cat, self.rng = cur, cat, random.Random(cat.args.seed + 1)
        self.ids = Ids(cur)
        self.jobs, self.restores, self.client_requests, self.events = [], [], [], []
        self.usernames = {u[0]: u[4] for u in cat.users}
        self.hostnames = {a[0]: a[1] for a in cat.agents}
        self.agents_by_app: dict[int, set[int]] = {}
        for c in cat.clients:
            if c[8]:
                self.agents_by_app.setdefault(c[9], set()).add(c[8])

    def person(self, user_id: int, channel: str = "web") -> dict:
        label = self.usernames[user_id]
        return {"actor_kind": "user", "channel": channel, "actor_label": label, "actor_user_id": user_id}

    def decider(self) -> tuple[int, dict]:
        user_id = self.rng.randrange(1, 6)  # one of the backup admins
        return user_id, self.person(user_id, "admin")

    def write(self) -> None:
        copy_rows(self.cur, "catalog_job", self.jobs)
        copy_rows(self.cur, "requests_app_restorerequest", self.restores)
        copy_rows(self.cur, "requests_app_clientrequest", self.client_requests)
        events = sorted(self.events, key=lambda e: e["occurred_at"])
        copy_rows(self.cur, "requests_app_auditevent", ({"id": i + 1, **e} for i, e in enumerate(events)))

    # Restores ------------------------------------------------------------------------------

    def add_restore_requests(self) -> None:
        """About one restore a month for every twentieth client, of backups of this month and the last."""
        cat, rng = self.cat, self.rng
        self.cur.execute(
            """
            SELECT b.id, b.client_id, c.application_id, c.agent_id, c.plugin, b.size_bytes,
                   extract(epoch FROM b.taken_at)::float8, extract(epoch FROM b.expires_at)::float8
            FROM catalog_backup b JOIN catalog_backupclient c ON c.id = b.client_id
            JOIN catalog_agent a ON a.id = c.agent_id
            WHERE pg_temp.u(b.id, 40) < %(rate)s AND a.revoked_at IS NULL ORDER BY b.id
            """,
            {"rate": cat.args.clients / 20 / cat.args.backups},
        )
        for backup_id, client_id, app_id, agent_id, plugin, size, taken, expires in self.cur.fetchall():
            created = taken + rng.uniform(7200, max(7200.0, min(3 * DAY, expires - taken - 7200)))
            if created >= cat.me - 600:
                continue
            target = agent_id
            if rng.random() < 0.05:  # onto another application's server
                other = rng.choice([a for a in self.agents_by_app if a != app_id] or [app_id])
                target = rng.choice(sorted(self.agents_by_app[other]))
            database = plugin in ("postgresql", "mysql")
            job = {
                "backup_id": backup_id, "client_id": client_id, "agent_id": target, "bytes_total": size,
                "target_location": f"restore_{backup_id}" if database else f"/srv/restore/{backup_id}",
                "overwrite": rng.random() < 0.3, "requested_by_id": self.cat.owner_of_app[app_id - 1],
            }  # fmt: skip
            self._restore(job, app_id, created)

    def _restore(self, job: dict, app_id: int, created: float) -> None:
        cat, rng = self.cat, self.rng
        request_id, owner = self.ids.take("requests_app_restorerequest"), job["requested_by_id"]
        trail = Trail(self.events, "restore", request_id, app_id)
        hostname = self.hostnames[job["agent_id"]]
        if job["overwrite"]:
            needs, rule = True, "Overwriting existing data needs the backup team's approval."
        elif job["agent_id"] not in self.agents_by_app[app_id]:
            needs = True
            rule = (
                f"{hostname} does not serve this application: a restore across applications needs approval."
            )
        else:
            needs, rule = False, "A restore to a new location on your own server is approved automatically."
        row = {
            "id": request_id, "status": "submitted", "needs_approval": needs, "approval_rule": rule,
            "external_ref": f"INC{rng.randrange(10**7):07d}" if rng.random() < 0.4 else "",
            "decided_at": None, "decided_by_id": None, "decision_reason": "", "error": "",
            "created_at": at(created), "updated_at": at(created), "target_location": job["target_location"],
            "overwrite": job["overwrite"], "reason": "Recover yesterday's data.",
            "backup_id": job["backup_id"],
            "job_id": None, "requester_id": owner, "target_agent_id": job["agent_id"],
        }  # fmt: skip
        trail(created, self.person(owner), "submitted", "", "submitted")
        roll = rng.random()
        if roll < 0.03:
            when = min(created + rng.uniform(60, 3600), cat.me - 60)
            row |= {"status": "cancelled", "updated_at": at(when)}
            trail(when, self.person(owner), "cancelled", "submitted", "cancelled")
        elif needs and roll < 0.13:
            when, (admin, actor) = min(created + rng.uniform(600, 8 * 3600), cat.me - 60), self.decider()
            reason = "Not during business hours: restore it tonight."
            row |= {"status": "rejected", "decided_at": at(when), "decided_by_id": admin,
                    "decision_reason": reason, "updated_at": at(when)}  # fmt: skip
            trail(when, actor, "rejected", "submitted", "rejected", reason)
        elif not needs or created < cat.me - 8 * 3600:  # else still waiting for a decision
            if needs:
                when, (admin, actor) = created + rng.uniform(600, 4 * 3600), self.decider()
            else:
                when, admin, actor = created + 1, None, SYSTEM
            row |= {
                "status": "approved",
                "decided_at": at(when),
                "decided_by_id": admin,
                "updated_at": at(when),
            }
            trail(when, actor, "approved", "submitted", "approved", "" if needs else rule)
            row |= self._restore_job(job, when, trail, hostname)
        self.restores.append(row)

    def _restore_job(self, job: dict, approved: float, trail: Trail, hostname: str) -> dict:
        """The restore job the approval queued, as far as it got by the end of the month."""
        cat, rng = self.cat, self.rng
        job_id = self.ids.take("catalog_job")
        start = approved + rng.uniform(5, 30)
        end = start + 10 + job["bytes_total"] / rng.uniform(100e6, 300e6)
        agent = {"actor_kind": "agent", "channel": "agent", "actor_label": hostname, "actor_user_id": None}
        row = {
            **JOB_DEFAULTS, **job, "id": job_id, "kind": "restore", "state": "queued", "trigger": "request",
            "created_at": at(approved), "not_before": at(approved),
        }  # fmt: skip
        request = {"job_id": job_id}
        if start <= cat.me:
            row |= {"state": "running", "started_at": at(start), "lease_expires_at": at(cat.me + 120)}
            request |= {"status": "running", "updated_at": at(start)}
            trail(start, agent, "running", "approved", "running")
        if end <= cat.me:
            failed = rng.random() < 0.05
            row |= {"state": "failed" if failed else "succeeded", "finished_at": at(end),
                    "lease_expires_at": None, "bytes_done": 0 if failed else job["bytes_total"]}  # fmt: skip
            error = ""
            if failed:
                error = "The restore failed: no space left on the target."
                row |= {"error_class": "disk_full", "error_message": "write error: No space left on device"}
            status = "failed" if failed else "completed"
            request |= {"status": status, "updated_at": at(end), "error": error}
            trail(end, agent, status, "running", status, error)
        self.jobs.append(row)
        return request

    # New clients ----------------------------------------------------------------------------

    def add_client_requests(self) -> None:
        """Every new client came from a request; a few more were refused, withdrawn or are waiting."""
        cat, rng = self.cat, self.rng
        for client, p in zip(cat.clients, cat.plan, strict=True):
            if p["scenario"] == "new":
                asked = {
                    "application_id": client[9], "name": client[1], "hostname": client[2],
                    "plugin": client[3], "options": client[4], "policy_id": client[10],
                    "client_id": client[0],
                }  # fmt: skip
                self._client_request(
                    asked, p["created"] - rng.uniform(3600, 3 * DAY), provisioned=p["created"]
                )
        for i in range(max(1, cat.args.clients // 100)):
            app_id, policy_id = rng.randrange(cat.args.applications) + 1, rng.randrange(len(POLICIES)) + 1
            plugin = rng.choice(PLUGINS)[0]
            asked = {
                "application_id": app_id, "name": f"new-{i + 1:04d}",
                "hostname": f"newhost{i + 1}.example.com",
                "plugin": plugin, "options": Catalog._options(plugin, cat.apps[app_id - 1][1]),
                "policy_id": policy_id, "client_id": None,
            }  # fmt: skip
            self._client_request(asked, cat.ms + rng.uniform(0, cat.length - 3600))

    def _client_request(self, asked: dict, created: float, provisioned: float | None = None) -> None:
        cat, rng = self.cat, self.rng
        request_id, owner = (
            self.ids.take("requests_app_clientrequest"),
            cat.owner_of_app[asked["application_id"] - 1],
        )
        policy = POLICIES[asked["policy_id"] - 1]
        needs = not policy.auto_approve
        rule = f"New clients on {policy.name} " + (
            "need the backup team's approval." if needs else "are approved automatically."
        )
        trail = Trail(self.events, "client", request_id, asked["application_id"])
        row = {
            **asked, "id": request_id, "status": "submitted", "needs_approval": needs, "approval_rule": rule,
            "external_ref": "", "decided_at": None, "decided_by_id": None, "decision_reason": "", "error": "",
            "created_at": at(created), "updated_at": at(created), "justification": "",
            "enrolment_id": None, "requester_id": owner,
        }  # fmt: skip
        trail(created, self.person(owner), "submitted", "", "submitted")
        if provisioned is not None:  # the client exists
            if needs:
                when, (admin, actor) = (
                    created + rng.uniform(0.1, 0.9) * (provisioned - created),
                    self.decider(),
                )
            else:
                when, admin, actor = created + 1, None, SYSTEM
            trail(when, actor, "approved", "submitted", "approved", "" if needs else rule)
            trail(provisioned, SYSTEM, "provisioned", "approved", "provisioned",
                  f"Attached to agent {asked['hostname']}.")  # fmt: skip
            row |= {"status": "provisioned", "decided_at": at(when), "decided_by_id": admin,
                    "updated_at": at(provisioned)}  # fmt: skip
        elif needs and rng.random() < 0.5:
            when, (admin, actor) = min(created + rng.uniform(600, 6 * 3600), cat.me - 60), self.decider()
            reason = "Use the shared database cluster's backup instead."
            row |= {"status": "rejected", "decided_at": at(when), "decided_by_id": admin,
                    "decision_reason": reason, "updated_at": at(when)}  # fmt: skip
            trail(when, actor, "rejected", "submitted", "rejected", reason)
        elif rng.random() < 0.3:
            when = min(created + rng.uniform(60, 3600), cat.me - 60)
            row |= {"status": "cancelled", "updated_at": at(when)}
            trail(when, self.person(owner), "cancelled", "submitted", "cancelled")
        self.client_requests.append(row)


JOB_DEFAULTS = {
    "attempt": 1, "target_location": "", "overwrite": False, "started_at": None, "finished_at": None,
    "lease_expires_at": None, "cancel_requested_at": None, "bytes_done": 0, "bytes_total": None,
    "log_tail": "", "error_class": "", "error_message": "", "backup_id": None, "requested_by_id": None,
    "retry_of_id": None,
}  # fmt: skip


class Alerts:
    """Open and resolved alerts for what went wrong: outages, silent agents, restore tests."""

    def __init__(self, cur, cat: Catalog) -> None:
        self.cur, self.cat, self.rng, self.rows = cur, cat, random.Random(cat.args.seed + 2), []
        self.plan = {p["client_id"]: p for p in cat.plan}
        self.names = {c[0]: f"{cat.apps[c[9] - 1][1]}/{c[1]}" for c in cat.clients}

    def add(self, kind: str, severity: str, key: str, message: str, created: float, resolved=None, **links):
        rng, me = self.rng, self.cat.me
        acked = created + rng.uniform(300, 4 * 3600) if rng.random() < 0.6 else None
        acked = acked if acked and acked < me else None
        digest = created - created % DAY + DAY + 7 * 3600  # warnings go out in the next morning's digest
        row = {
            "kind": kind, "severity": severity, "key": key, "message": message, "created_at": at(created),
            "resolved_at": resolved and at(resolved), "acknowledged_at": acked and at(acked),
            "acknowledged_by_id": acked and rng.randrange(1, 6),
            "digested_at": at(digest) if severity != "critical" and digest < me else None,
            "emailed_at": at(created + 5) if severity == "critical" else None,
            "agent_id": None, "application_id": None, "client_id": None, "job_id": None,
        }  # fmt: skip
        self.rows.append(row | links)

    def write(self) -> None:
        self.outages()
        self.silent_agents()
        self.restore_tests()
        self.rows.sort(key=lambda r: r["created_at"])
        copy_rows(self.cur, "catalog_alert", ({"id": i + 1, **r} for i, r in enumerate(self.rows)))

    def outages(self) -> None:
        """Retries that gave up, and RPOs breached while a client or its agent was down."""
        cur, cat = self.cur, self.cat
        cur.execute("SELECT slot_key, id, finished_at FROM bench_job WHERE role = 'giveup' ORDER BY attempt")
        gave_up = {-key: (job_id, finished) for key, job_id, finished in cur.fetchall()}  # the last attempt
        cur.execute(
            """
            SELECT p.client_id,
                   (SELECT extract(epoch FROM max(b.taken_at))::float8 FROM catalog_backup b
                    WHERE b.client_id = p.client_id AND b.taken_at < to_timestamp(p.gap_start)),
                   (SELECT extract(epoch FROM min(b.taken_at))::float8 FROM catalog_backup b
                    WHERE b.client_id = p.client_id AND b.taken_at >= to_timestamp(p.gap_start))
            FROM bench_plan p WHERE p.outage OR p.silent_since IS NOT NULL ORDER BY p.client_id
            """
        )
        for client_id, last_good, next_good in cur.fetchall():
            p, name = self.plan[client_id], self.names[client_id]
            links = {"application_id": p["app_id"], "client_id": client_id}
            if client_id in gave_up:
                job_id, failed_at = gave_up[client_id]
                message = f"Backup of {name} failed after {p['max_retries'] + 1} attempts."
                self.add("job_failed", "critical", f"job_failed:client:{client_id}", message, failed_at,
                         next_good, agent_id=p["agent_id"], job_id=job_id, **links)  # fmt: skip
            breached = (last_good or p["created"]) + p["rpo_s"]
            if breached < min(next_good or cat.me, cat.me):
                message = f"{name} has no good backup within its RPO of {p['policy'].rpo_hours} h."
                self.add("rpo_breached", "critical", f"rpo_breached:client:{client_id}", message, breached,
                         next_good, **links)  # fmt: skip

    def silent_agents(self) -> None:
        for agent_id, hostname, _, _, _, _, _, seen, revoked, _, _ in self.cat.agents:
            if revoked is None and seen.timestamp() < self.cat.me - 3600:
                message = f"Agent {hostname} has not polled since {seen:%Y-%m-%d %H:%M} UTC."
                app_id = (agent_id - 1) % self.cat.args.applications + 1
                self.add("agent_silent", "warning", f"agent_silent:agent:{agent_id}", message,
                         seen.timestamp() + 180, agent_id=agent_id, application_id=app_id)  # fmt: skip

    def restore_tests(self) -> None:
        """Failed restore tests stay open; clients with no passed test within their interval are overdue."""
        cat, passed = self.cat, set()
        self.cur.execute(
            "SELECT client_id, id, finished_at, error_idx, backup_ref FROM bench_job"
            " WHERE role = 'rtest' ORDER BY id"
        )
        for client_id, job_id, finished, error_idx, backup_id in self.cur.fetchall():
            p = self.plan[client_id]
            if error_idx == 0:
                passed.add(client_id)
            elif error_idx != ERROR_INDEX["lease_expired"]:
                message = f"Restore test of {self.names[client_id]} (backup {backup_id}) failed."
                key = f"restore_test_failed:client:{client_id}"
                links = {"application_id": p["app_id"], "client_id": client_id, "agent_id": p["agent_id"]}
                self.add("restore_test_failed", "critical", key, message, finished, job_id=job_id, **links)
        for client_id, *_, status, _, _, _, _, _ in cat.clients:
            p, days = self.plan[client_id], self.plan[client_id]["policy"].restore_test_days
            if status == "active" and client_id not in passed and p["created"] < cat.me - days * DAY:
                message = f"{self.names[client_id]} has had no successful restore test in {days} days."
                key = f"restore_test_overdue:client:{client_id}"
                when = cat.me - self.rng.uniform(3600, 5 * DAY)
                self.add("restore_test_overdue", "warning", key, message, when, application_id=p["app_id"],
                         client_id=client_id)  # fmt: skip


# --- Finishing -----------------------------------------------------------------------------


def finish(cur) -> None:
    cur.execute(
        """
        UPDATE catalog_storagetarget t SET used_bytes = u.used,
               capacity_bytes = greatest(1, ceil(u.used / (%(fill)s::float8[])[t.id]))::bigint
        FROM (SELECT t.id, coalesce(sum(b.stored_size_bytes) FILTER (WHERE b.status <> 'deleted'), 0) AS used
              FROM catalog_storagetarget t LEFT JOIN catalog_backup b ON b.storage_target_id = t.id
              GROUP BY t.id) u
        WHERE u.id = t.id
        """,
        {"fill": [t[5] for t in TARGETS]},
    )
    cur.execute(
        """
        SELECT c.table_name FROM information_schema.columns c
        WHERE c.table_schema = 'public' AND c.column_name = 'id' AND c.is_identity = 'YES'
        """
    )
    for (table,) in cur.fetchall():
        cur.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({t}, 'id'), max(id)) FROM {i} HAVING max(id) > 0"
            ).format(t=sql.Literal(table), i=sql.Identifier(table))
        )
    for table in ("bench_job", "bench_slot", "bench_plan"):
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


# What the load left, in the order it is printed.
COUNTS = (
    ("cost centres", "catalog_costcenter"),
    ("applications", "catalog_application"),
    ("users", "auth_user"),
    ("protection policies", "catalog_protectionpolicy"),
    ("storage targets", "catalog_storagetarget"),
    ("agents", "catalog_agent"),
    ("clients", "catalog_backupclient"),
    ("backups taken in the month", "catalog_backup WHERE taken_at >= %(ms)s AND taken_at < %(me)s"),
    ("backups taken before it", "catalog_backup WHERE taken_at < %(ms)s"),
    ("  deleted by retention", "catalog_backup WHERE status = 'deleted'"),
    ("  expired, removal pending", "catalog_backup WHERE status = 'expired'"),
    ("  under legal hold", "catalog_backup WHERE legal_hold"),
    ("  verified by a restore test", "catalog_backup WHERE verified_at IS NOT NULL"),
    ("jobs", "catalog_job"),
    ("  backup, succeeded", "catalog_job WHERE kind = 'backup' AND state = 'succeeded'"),
    ("  backup, failed", "catalog_job WHERE kind = 'backup' AND state = 'failed'"),
    ("  backup, retries", "catalog_job WHERE kind = 'backup' AND retry_of_id IS NOT NULL"),
    ("  expire", "catalog_job WHERE kind = 'expire'"),
    ("  restore test", "catalog_job WHERE kind = 'restore_test'"),
    ("  restore", "catalog_job WHERE kind = 'restore'"),
    ("restore requests", "requests_app_restorerequest"),
    ("client requests", "requests_app_clientrequest"),
    ("audit events", "requests_app_auditevent"),
    ("alerts open", "catalog_alert WHERE resolved_at IS NULL"),
    ("alerts resolved", "catalog_alert WHERE resolved_at IS NOT NULL"),
)


class Stopwatch:
    """Times the generator's steps and prints each as it ends."""

    def __init__(self) -> None:
        self.began, self.steps = time.perf_counter(), []

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        print(f"  {name} …", end="", flush=True)
        yield
        self.steps.append((name, time.perf_counter() - t0))
        print(f" {self.steps[-1][1]:.1f} s", flush=True)

    @property
    def total(self) -> float:
        return time.perf_counter() - self.began


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start, end = month_bounds(args.month)
    step = Stopwatch()
    with step("create database and migrate"):
        recreate_database(args.database_url, args.recreate)
        migrate(args.database_url)
    with step("plan the catalog (Python)"):
        cat = Catalog(args, start, end)
    conn = psycopg2.connect(args.database_url)
    conn.autocommit = True  # statement by statement; a failed load is simply run again with --recreate
    cur = conn.cursor()
    # For this session only. JIT would spend seconds compiling each of the few big statements.
    cur.execute("SET synchronous_commit = off; SET jit = off")
    cur.execute("SET work_mem = '512MB'; SET maintenance_work_mem = '1GB'")
    newer_column_defaults(cur, on=True)
    with step("load dimensions (COPY)"):
        load_dimensions(cur, cat)
    load_bulk(cur, cat, step)
    with step("requests, audit events, alerts"):
        requests = Requests(cur, cat)
        requests.add_restore_requests()
        requests.add_client_requests()
        requests.write()
        Alerts(cur, cat).write()
    with step("storage usage, sequences, drop staging"):
        finish(cur)
    newer_column_defaults(cur, on=False)
    with step("VACUUM ANALYZE"):
        cur.execute("VACUUM (ANALYZE)")
    total = step.total
    rows = []
    for name, rest in COUNTS:
        cur.execute("SELECT count(*) FROM " + rest, {"ms": start, "me": end})  # noqa: S608 - constants
        rows.append((name, cur.fetchone()[0]))
    cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
    size = cur.fetchone()[0]
    conn.close()
    print(
        f"\nLoaded {urlsplit(args.database_url).path.lstrip('/')} for {args.month} in {total:.1f} s "
        f"(seed {args.seed}, database size {size}):"
    )
    for name, value in rows:
        print(f"  {name:<40} {value:>12,}")


if __name__ == "__main__":
    main()
