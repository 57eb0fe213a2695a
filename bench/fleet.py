"""Fleet simulator: thousands of simulated agents speaking the real agent protocol to a real portal.

    .venv/bin/python bench/fleet.py run --engine pg --agents 1000          # one run
    .venv/bin/python bench/fleet.py run --engine sqlite --agents 100 --size-gb 1024
    .venv/bin/python bench/fleet.py run --engine pg --agents 1000 --portals 2   # scale-out
    .venv/bin/python bench/fleet.py matrix                                  # everything (bench/fleet_runs.sh)
    .venv/bin/python bench/fleet.py table                                   # tables of var/fleet-results/

Each run starts its own production-like portal: a scratch database (SQLite file
``var/fleet-<label>.sqlite3`` or PostgreSQL ``bp_fleet_<label>``), ``migrate``,
gunicorn (sync workers, DEBUG off, SECRET_KEY and ALLOWED_HOSTS set) and the real
worker: ``manage.py qcluster`` after ``sync_schedules`` (django-q2, the embedded
default) or a Celery worker and beat on Redis. The set-up (bench/fleet_setup.py)
creates ``agents × clients`` clients on a policy due every minute and one real
one-time enrolment token per host.

The simulated agents (asyncio; a minimal HTTP/1.1 client over asyncio streams,
the standard library only, no real data) then do what backup_agent does:

1. ``enrol`` with their token (``instance`` bound), protocol 2;
2. ``poll`` every ``poll_after`` seconds (the portal's answer), listing the jobs
   they hold in ``running``; every job of an answer is recorded;
3. per job: ``progress`` after 5 s, then as the portal's ``report_after`` asks, for a random
   duration, then ``complete``:
   success with a protocol-2 report (``location`` = the job's ``destination``,
   sha256, sizes = the configured size per client, manifest), or a failure with
   an ``error_class`` (``--fail-rate``; ``--bad-clients`` of the clients always
   fail, so retries run out and alerts are raised as they would be). A report is
   resent until the portal answers 200 or 409, as the agent's spool does.

Measured over a window after enrolment: jobs dispatched and completed per
second, poll/progress/complete latency (p50/p99), the database's commits per job
(PostgreSQL ``pg_stat_database.xact_commit``), the portal's CPU seconds per 1,000
jobs (utime+stime from /proc of gunicorn and the worker processes and all their
children), and an owner's dashboard and client page response times (signed in
with a session, a GET every few seconds). Then a drain: the fleet's clients are
paused (no new scheduled jobs) and the agents finish what is queued; then the
checks: no (job, attempt) handed out twice, and every job the portal queued is
terminal or still legitimately queued/running. Results: var/fleet-results/*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv" / "bin"
PY = str(VENV / "python")
RESULTS = REPO / "var" / "fleet-results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET_KEY = "fleet-simulator-scratch-secret-key-4f9a1b7c2d8e6f0a3b5c9d1e7f2a4b6c8d0e"  # noqa: S105
ERROR_CLASSES = ("disk_full", "permission_denied", "timeout", "database_unreachable", "unknown")
ERROR_TEXT = {
    "disk_full": "tar: /mnt/protection/x: Cannot write: No space left on device",
    "permission_denied": "tar: /srv/app/secret: Cannot open: Permission denied",
    "timeout": "tar timed out after 3600 s (tool_timeout)",
    "database_unreachable": 'pg_dump: error: connection to server at "db" failed: Connection refused',
    "unknown": "tar exited with status 2",
}
ALLOW = {
    "paths": ["/srv/app"],
    "restore_roots": [],
    "commands": [],
    "databases": [],
    "storage": ["/mnt/protection"],
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 50) * 1000, 1) if values else None,
        "p99_ms": round(pct(values, 99) * 1000, 1) if values else None,
        "max_ms": round(max(values) * 1000, 1) if values else None,
    }


# --- HTTP/1.1 over asyncio streams ---------------------------------------------------------


class HttpError(Exception):
    pass


class Http:
    """One connection per request (gunicorn's sync workers close after each answer)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.slots = asyncio.Semaphore(limit)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict | None = None, timeout: float = 120
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        async with self.slots:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), timeout
                )
            except (OSError, TimeoutError) as exc:
                raise HttpError(f"connect: {exc!r}") from exc
            try:
                writer.write(raw)
                data = await asyncio.wait_for(reader.read(), timeout)
            except (OSError, TimeoutError) as exc:
                raise HttpError(f"io: {exc!r}") from exc
            finally:
                writer.close()
        head, _, payload = data.partition(b"\r\n\r\n")
        if not head:
            raise HttpError("empty answer")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        pairs = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines if ":" in line]
        if any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in pairs):
            payload = dechunk(payload)
        return status, pairs, payload

    async def post_json(self, path: str, body: dict, token: str | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, _, payload = await self.request("POST", path, json.dumps(body).encode(), headers)
        try:
            return status, json.loads(payload) if payload else {}
        except ValueError:
            return status, {"raw": payload[:200].decode("latin-1")}


def dechunk(payload: bytes) -> bytes:
    out, rest = bytearray(), payload
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


# --- The simulated fleet ---------------------------------------------------------------------


@dataclass
class Options:
    agents: int
    clients: int
    size_bytes: int
    job_min: float
    job_max: float
    fail_rate: float
    bad_clients: float
    progress_every: float
    connections: int
    enrol_concurrency: int


@dataclass
class Stats:
    latency: dict = field(default_factory=lambda: defaultdict(list))  # kind -> [(t, seconds)]
    errors: dict = field(default_factory=lambda: defaultdict(int))  # "kind status" -> n
    handouts: list = field(default_factory=list)  # (t, job id, attempt, agent)
    acks: list = field(default_factory=list)  # (t, job id, outcome)
    duplicates: list = field(default_factory=list)
    wrong_agent: list = field(default_factory=list)
    page: dict = field(default_factory=lambda: defaultdict(list))  # page -> [(t, seconds, status)]


class Fleet:
    def __init__(self, portals: list[tuple[str, int]], setup: dict, opts: Options) -> None:
        self.opts = opts
        self.setup = setup
        self.http = [Http(host, port, max(1, opts.connections // len(portals))) for host, port in portals]
        self.stats = Stats()
        self.tokens: list[str | None] = [None] * opts.agents
        self.agent_ids: list[int | None] = [None] * opts.agents
        self.instances = [hashlib.md5(f"fleet-{i}".encode()).hexdigest() for i in range(opts.agents)]  # noqa: S324
        self.held: list[dict[int, dict]] = [{} for _ in range(opts.agents)]
        self.handed: dict[tuple[int, int], int] = {}
        self.polling = asyncio.Event()
        self.job_tasks: set[asyncio.Task] = set()
        self.measuring = False

    def portal(self, index: int) -> Http:
        return self.http[index % len(self.http)]

    async def timed(self, kind: str, coro):
        started = time.monotonic()
        try:
            status, body = await coro
        except HttpError as exc:
            self.stats.errors[f"{kind} {str(exc).split(':')[0]}"] += 1
            return None, {}
        self.stats.latency[kind].append((time.time(), time.monotonic() - started))
        if status >= 300:
            self.stats.errors[f"{kind} {status} {body.get('code', '')}".strip()] += 1
        return status, body

    # enrolment ---------------------------------------------------------------------------
    async def enrol_all(self) -> float:
        gate = asyncio.Semaphore(self.opts.enrol_concurrency)

        async def one(i: int) -> None:
            async with gate:
                for _ in range(20):
                    status, body = await self.timed(
                        "enrol",
                        self.portal(i).post_json(
                            "/api/agent/v1/enrol",
                            {
                                "token": self.setup["tokens"][i],
                                "hostname": self.setup["hosts"][i],
                                "version": "1.4.0",
                                "protocol": 2,
                                "plugins": ["files", "postgresql", "mysql", "command"],
                                "instance": {"id": self.instances[i], "host": self.setup["hosts"][i]},
                            },
                        ),
                    )
                    if status == 201:
                        self.tokens[i], self.agent_ids[i] = body["agent_token"], body["agent_id"]
                        return
                    await asyncio.sleep(1)

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(self.opts.agents)))
        return time.monotonic() - started

    # polling -----------------------------------------------------------------------------
    async def agent_loop(self, i: int, first_delay: float) -> None:
        await asyncio.sleep(first_delay)
        backoff = 5.0
        while self.polling.is_set() and self.tokens[i]:
            body = {
                "version": "1.4.0",
                "protocol": 2,
                "plugins": ["files", "postgresql", "mysql", "command"],
                "running": sorted(self.held[i]),
                "allow": ALLOW,
                "instance": {"id": self.instances[i], "host": self.setup["hosts"][i]},
            }
            status, answer = await self.timed(
                "poll", self.portal(i).post_json("/api/agent/v1/poll", body, self.tokens[i])
            )
            if status == 200:
                backoff = 5.0
                now = time.time()
                for job in answer.get("jobs", []):
                    self.hand_out(i, job, now)
                wait = float(answer.get("poll_after", 30))
            else:
                wait, backoff = backoff, min(backoff * 2, 300)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped(), wait)

    async def _stopped(self) -> None:
        while self.polling.is_set():
            await asyncio.sleep(1)

    def hand_out(self, i: int, job: dict, now: float) -> None:
        key = (job["id"], job.get("attempt", 1))
        if key in self.handed:
            self.stats.duplicates.append(
                {"job": job["id"], "attempt": key[1], "first": self.handed[key], "again": i}
            )
        self.handed[key] = i
        self.stats.handouts.append((now, job["id"], key[1], i))
        self.held[i][job["id"]] = job
        task = asyncio.get_running_loop().create_task(self.run_job(i, job))
        self.job_tasks.add(task)
        task.add_done_callback(self.job_tasks.discard)

    async def run_job(self, i: int, job: dict) -> None:
        opts, http, token = self.opts, self.portal(i), self.tokens[i]
        started = utcnow()
        duration = random.uniform(opts.job_min, opts.job_max)
        size = opts.size_bytes
        done, cancelled, t = 0.0, False, 0.0
        every = opts.progress_every  # the first report; then the portal's report_after, as backup_agent does
        path = f"/api/agent/v1/jobs/{job['id']}"
        while t < duration:
            step = min(every, duration - t)
            await asyncio.sleep(step)
            t += step
            if t < duration:
                done = size * t / duration
                status, answer = await self.timed(
                    "progress",
                    http.post_json(f"{path}/progress", {"bytes_done": int(done), "bytes_total": size}, token),
                )
                if status == 200 and answer.get("cancel"):
                    cancelled = True
                    break
                if status == 200 and type(answer.get("report_after")) in (int, float):
                    every = min(max(float(answer["report_after"]), 1.0), 300.0)
        client_id = job["client"]["id"]
        bad = (client_id * 2654435761) % 1000 < opts.bad_clients * 1000
        finished = utcnow()
        times = {"started_at": started.isoformat(), "finished_at": finished.isoformat(), "protocol": 2}
        if cancelled or bad or random.random() < opts.fail_rate:
            error_class = (
                "unknown" if cancelled else ("database_unreachable" if bad else random.choice(ERROR_CLASSES))
            )
            report = {
                "status": "failed",
                "error": "cancelled by the portal" if cancelled else ERROR_TEXT[error_class],
                "error_class": error_class,
                "log_tail": ERROR_TEXT[error_class],
                **times,
            }
        elif job["kind"] == "backup":
            digest = hashlib.sha256(f"{job['id']}-{job.get('attempt', 1)}".encode()).hexdigest()
            report = {
                "status": "succeeded",
                "size": size,
                "stored_size": size,
                "location": job["destination"],
                "sha256": digest,
                "compression": job["storage"].get("compression", "none"),
                "log_tail": "",
                "manifest": {
                    "job": job["id"],
                    "client": job["client"]["name"],
                    "plugin": job["client"]["plugin"],
                    "size": size,
                    "stored_size": size,
                    "sha256": digest,
                    "compression": job["storage"].get("compression", "none"),
                    **times,
                    "plugin_facts": {"members": 1000 + client_id % 9000, "bytes": size},
                },
                **times,
            }
        else:  # restore test / expire / restore: nothing to report but the outcome
            report = {"status": "succeeded", "log_tail": "", **times}
        for attempt in range(1000):  # the spool: resent until 200 or 409
            status, answer = await self.timed("complete", http.post_json(f"{path}/complete", report, token))
            if status in (200, 404, 409):
                outcome = report["status"] if status == 200 else f"http {status}"
                self.stats.acks.append((time.time(), job["id"], outcome))
                break
            await asyncio.sleep(min(5 * (attempt + 1), 30))
        self.held[i].pop(job["id"], None)

    # the owner's pages -------------------------------------------------------------------
    async def probe_pages(self, every: float, stop: asyncio.Event) -> None:
        # A person's browser: its own connection, not queued behind the agents' requests.
        http = Http(self.http[0].host, self.http[0].port, 1)
        cookies: dict[str, str] = {}

        def remember(headers):
            for name, value in headers:
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    cookies[key] = rest.split(";")[0]

        def cookie_header() -> dict:
            return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}

        status, headers, body = await http.request("GET", "/accounts/login/")
        remember(headers)
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        form = urllib.parse.urlencode(
            {
                "username": self.setup["owner"],
                "password": self.setup["owner_password"],
                "csrfmiddlewaretoken": match.group(1).decode() if match else "",
            }
        ).encode()
        status, headers, _ = await http.request(
            "POST",
            "/accounts/login/",
            form,
            {"Content-Type": "application/x-www-form-urlencoded", **cookie_header()},
        )
        remember(headers)
        if status != 302 or "sessionid" not in cookies:
            self.stats.errors[f"login {status}"] += 1
            return
        pages = {"dashboard": "/", "client": f"/clients/{self.setup['client_id']}/"}
        while not stop.is_set():
            for name, path in pages.items():
                started = time.monotonic()
                try:
                    status, _, body = await http.request("GET", path, headers=cookie_header(), timeout=120)
                except HttpError:
                    status = 0
                self.stats.page[name].append((time.time(), time.monotonic() - started, status))
                if status != 200:
                    self.stats.errors[f"page {name} {status}"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


# --- Processes, CPU, database counters -------------------------------------------------------


def proc_children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            tree[int(fields[1])].append(int(entry))
    return tree


def tree_cpu(roots: list[int]) -> float:
    """utime+stime of the processes and every descendant, living or reaped (cutime/cstime)."""
    tree, total, seen = proc_children(), 0, set()
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        pending.extend(tree.get(pid, []))
    return total / CLK_TCK


def postgres_cpu() -> float:
    """The PostgreSQL server's CPU: the postmaster's tree (exited backends are in its cutime/cstime).

    Every database on the server is in it, other people's work included.
    """
    pids = sorted(Path("/var/run/postgresql").glob("*.pid"))
    if not pids:
        return 0.0
    return tree_cpu([int(pids[0].read_text().split()[0])])


def psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-XAtq", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def xact_commit(db: str) -> int:
    """Transactions committed in ``db`` so far (the statistics as last flushed by its backends)."""
    sql = (
        "SELECT pg_stat_clear_snapshot(); "
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(psql(sql, db).splitlines()[-1])


def tree_state() -> dict:
    """Which code ran: the commit, and a digest of the uncommitted changes (others edit the tree)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    return {
        "head": git("rev-parse", "HEAD").strip(),
        "modified": git("status", "--short").count("\n"),
        "diff_sha256": hashlib.sha256(git("diff").encode()).hexdigest()[:16],
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Portal:
    """A scratch portal: database, gunicorn instance(s), worker(s)."""

    def __init__(
        self,
        label: str,
        engine: str,
        portals: int,
        gunicorn_workers: int,
        celery_workers: int,
        celery_concurrency: int,
        poll_seconds: int,
        schedule: str,
    ) -> None:
        self.label, self.engine, self.n_portals = label, engine, portals
        self.gunicorn_workers, self.celery_workers, self.celery_concurrency = (
            gunicorn_workers,
            celery_workers,
            celery_concurrency,
        )
        self.schedule = schedule
        self.var = REPO / "var" / f"fleet-{label}"
        self.db = f"bp_fleet_{label.replace('-', '_')}"
        self.ports = [18400 + n for n in range(portals)]
        self.procs: dict[str, subprocess.Popen] = {}
        database_url = (
            f"sqlite:///{self.var / 'portal.sqlite3'}"
            if engine == "sqlite"
            else f"postgres://postgres@127.0.0.1:5432/{self.db}"
        )
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "false",
            "SECRET_KEY": SECRET_KEY,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database_url,
            "PORTAL_VAR_DIR": str(self.var),
            "STATIC_ROOT": str(REPO / "var" / "fleet-static"),
            "PORTAL_TASK_BACKEND": "django_q" if engine == "sqlite" else "celery",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
            "CELERY_TASK_DEFAULT_QUEUE": f"fleet-{label}-{int(time.time())}",
            "PORTAL_AGENT_ENROL_RATE": "100000/minute",
            "PORTAL_AGENT_POLL_SECONDS": str(poll_seconds),
            "PORTAL_RETRY_BASE_SECONDS": "15",
            "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
            "LOG_LEVEL": "WARNING",
            "Q_WORKERS": "2",
        }
        self.log_dir = self.var / "logs"

    def manage(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            [PY, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def script(self, name: str, *args: str, timeout: float = 900) -> str:
        done = subprocess.run(
            [PY, str(REPO / "bench" / name), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise RuntimeError(f"{name} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def create(self) -> None:
        shutil.rmtree(self.var, ignore_errors=True)
        self.log_dir.mkdir(parents=True)
        if self.engine == "pg":
            psql(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
            psql(f"CREATE DATABASE {self.db}")
        self.manage("migrate", "--noinput")
        if not (REPO / "var" / "fleet-static" / "staticfiles.json").exists():
            self.manage("collectstatic", "--noinput")
        if self.engine == "sqlite":
            self.manage("sync_schedules")

    def spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - open for the process's life
        self.procs[name] = subprocess.Popen(
            cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> None:
        for n, port in enumerate(self.ports):
            self.spawn(
                f"gunicorn{n}",
                [
                    str(VENV / "gunicorn"),
                    "portal.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    str(self.gunicorn_workers),
                    "--worker-class",
                    "sync",
                    "--backlog",
                    "4096",
                    "--timeout",
                    "120",
                    "--graceful-timeout",
                    "10",
                    "--log-level",
                    "warning",
                ],
            )
        if self.engine == "sqlite":
            self.spawn("qcluster", [PY, "manage.py", "qcluster"])
        else:
            for n in range(self.celery_workers):
                self.spawn(
                    f"celery-worker{n}",
                    [
                        str(VENV / "celery"),
                        "-A",
                        "portal",
                        "worker",
                        "-c",
                        str(self.celery_concurrency),
                        "-n",
                        f"fleet{n}-{self.label}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "-l",
                        "warning",
                    ],
                )
            self.spawn(
                "celery-beat",
                [
                    str(VENV / "celery"),
                    "-A",
                    "portal",
                    "beat",
                    "-l",
                    "warning",
                    "-s",
                    str(self.var / "celerybeat-schedule"),
                ],
            )
        deadline = time.time() + 90
        for port in self.ports:
            while True:
                try:
                    out = subprocess.run(
                        [
                            "curl",
                            "-s",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                            f"http://127.0.0.1:{port}/healthz",
                        ],
                        capture_output=True,
                        text=True,
                        timeout=10,
                    ).stdout
                except subprocess.TimeoutExpired:
                    out = ""
                if out == "200":
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"portal on {port} not healthy ({out}); see {self.log_dir}")
                time.sleep(1)

    def cpu(self) -> dict:
        web = tree_cpu([p.pid for name, p in self.procs.items() if name.startswith("gunicorn")])
        worker = tree_cpu([p.pid for name, p in self.procs.items() if not name.startswith("gunicorn")])
        return {"web": web, "worker": worker}

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def drop(self) -> None:
        if self.engine == "pg":
            psql(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")


# --- One run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    label = args.label or f"{args.engine}-{args.agents}a-{args.portals}p-{args.size_gb:g}g"
    portal = Portal(
        label,
        args.engine,
        args.portals,
        args.gunicorn_workers,
        args.celery_workers,
        args.celery_concurrency,
        args.poll,
        args.schedule,
    )
    result: dict = {
        "label": label,
        "engine": "SQLite + django-q2" if args.engine == "sqlite" else "PostgreSQL + Celery/Redis",
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "started": utcnow().isoformat(),
        "load_before": loadavg(),
        "tree": tree_state(),
        "cores": os.cpu_count(),
        "status": "started",
    }
    print(f"== {label}: load {result['load_before']}", flush=True)
    try:
        t = time.monotonic()
        portal.create()
        result["migrate_s"] = round(time.monotonic() - t, 1)
        since = utcnow()
        setup_file = portal.var / "setup.json"
        portal.script("fleet_setup.py", str(args.agents), str(args.clients), str(setup_file))
        setup = json.loads(setup_file.read_text())
        result["setup_s"] = setup["setup_seconds"]
        portal.start()
        print(f"   portal up (setup {setup['setup_seconds']} s)", flush=True)
        asyncio.run(simulate(args, portal, setup, since, result))
        result["status"] = "finished"
    except Exception as exc:  # a run that could not finish is reported as such
        result["status"] = f"failed: {exc!r}"[:2000]
        print(result["status"], flush=True)
    finally:
        portal.stop()
        result["finished"] = utcnow().isoformat()
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{label}.json").write_text(json.dumps(result, indent=1, default=str))
        if not args.keep:
            portal.drop()
    print_table([result])
    return result


async def simulate(args, portal: Portal, setup: dict, since: datetime, result: dict) -> None:
    opts = Options(
        agents=args.agents,
        clients=args.clients,
        size_bytes=int(args.size_gb * 10**9),
        job_min=args.job_min,
        job_max=args.job_max,
        fail_rate=args.fail_rate,
        bad_clients=args.bad_clients,
        progress_every=5.0,
        connections=args.connections,
        enrol_concurrency=args.enrol_concurrency,
    )
    fleet = Fleet([("127.0.0.1", port) for port in portal.ports], setup, opts)
    cpu_e0 = portal.cpu()
    enrol_s = await fleet.enrol_all()
    cpu_e1 = portal.cpu()
    enrolled = sum(1 for token in fleet.tokens if token)
    result["enrol"] = {
        "seconds": round(enrol_s, 1),
        "enrolled": enrolled,
        "per_s": round(enrolled / enrol_s, 1),
        "web_cpu_ms_per_enrol": round((cpu_e1["web"] - cpu_e0["web"]) / max(enrolled, 1) * 1000, 1),
    }
    print(f"   enrolled {enrolled}/{args.agents} in {enrol_s:.0f} s", flush=True)
    loop = asyncio.get_running_loop()
    fleet.polling.set()
    agents = [loop.create_task(fleet.agent_loop(i, random.uniform(0, args.poll))) for i in range(args.agents)]
    # Idle polls (no job due yet): what an agent costs when it has nothing to do.
    await asyncio.sleep(min(args.poll, 10))  # the first polls spread over one interval
    i0, cpu_i0 = time.time(), portal.cpu()
    commits_i0 = xact_commit(portal.db) if args.engine == "pg" else None
    await asyncio.sleep(args.idle)
    i1, cpu_i1 = time.time(), portal.cpu()
    commits_i1 = xact_commit(portal.db) if args.engine == "pg" else None
    polls = [s for when, s in fleet.stats.latency["poll"] if i0 <= when < i1]
    idle_cpu = cpu_i1["web"] - cpu_i0["web"]
    result["idle"] = {
        "seconds": round(i1 - i0, 1),
        "polls": len(polls),
        "polls_per_s": round(len(polls) / (i1 - i0), 1),
        "poll": summary(polls),
        "web_cpu_s": round(idle_cpu, 2),
        "web_cpu_ms_per_poll": round(idle_cpu / len(polls) * 1000, 2) if polls else None,
        "worker_cpu_s": round(cpu_i1["worker"] - cpu_i0["worker"], 2),
        "commits_per_poll": round((commits_i1 - commits_i0) / len(polls), 2)
        if commits_i0 is not None and polls
        else None,
        "web_cores_busy": round(idle_cpu / (i1 - i0), 2),
    }
    print(f"   idle: {result['idle']}", flush=True)
    resumed = await asyncio.to_thread(portal.script, "fleet_inspect.py", "resume", args.schedule)
    result["resumed"] = json.loads(resumed)
    # The window: whole minutes (the policy's cron fires on the minute), from 2 s past the next one.
    await asyncio.sleep(62 - time.time() % 60)
    t0_wall, t0 = utcnow(), time.time()
    cpu0, pg0, sim0 = portal.cpu(), postgres_cpu(), time.process_time()
    commits0 = xact_commit(portal.db) if args.engine == "pg" else None
    stop_pages = asyncio.Event()
    pages = loop.create_task(fleet.probe_pages(args.page_every, stop_pages))
    load_samples = []
    while time.time() - t0 < args.duration:
        await asyncio.sleep(min(10, args.duration - (time.time() - t0)))
        load_samples.append(os.getloadavg()[0])
        done = sum(1 for a in fleet.stats.acks if a[0] >= t0)
        print(
            f"   t+{time.time() - t0:4.0f}s handed {len(fleet.stats.handouts)} acked {done} "
            f"held {sum(len(h) for h in fleet.held)} load {load_samples[-1]:.1f}",
            flush=True,
        )
    t1_wall, t1 = utcnow(), time.time()
    cpu1, pg1, sim1 = portal.cpu(), postgres_cpu(), time.process_time()
    commits1 = xact_commit(portal.db) if args.engine == "pg" else None
    stop_pages.set()
    await pages
    # The drain: nothing new is scheduled; the agents finish what is queued or retried.
    await asyncio.to_thread(portal.script, "fleet_inspect.py", "pause")
    drain_started = time.time()
    open_ = {}
    while time.time() - drain_started < args.drain:
        await asyncio.sleep(10)
        open_ = json.loads(await asyncio.to_thread(portal.script, "fleet_inspect.py", "open"))
        print(f"   drain {time.time() - drain_started:4.0f}s open {open_}", flush=True)
        if not any(open_.values()):
            break
    fleet.polling.clear()
    # Polls in flight finish (their answers may carry jobs); a saturated portal gets 120 s more.
    _, stuck = await asyncio.wait(agents, timeout=120)
    for task in stuck:
        task.cancel()
    result["polls_cancelled_at_end"] = len(stuck)
    if fleet.job_tasks:
        await asyncio.wait(list(fleet.job_tasks), timeout=args.job_max + 30)
    held_at_end = {job_id for held in fleet.held for job_id in held}
    report = json.loads(
        await asyncio.to_thread(
            portal.script,
            "fleet_inspect.py",
            "report",
            since.isoformat(),
            t0_wall.isoformat(),
            t1_wall.isoformat(),
        )
    )
    window = t1 - t0
    in_window = lambda rows: [r for r in rows if t0 <= r[0] < t1]  # noqa: E731
    lat = {
        kind: summary([s for when, s in (rows if kind == "enrol" else in_window(rows))])
        for kind, rows in fleet.stats.latency.items()
    }
    acks_w = in_window(fleet.stats.acks)
    handed_w = in_window(fleet.stats.handouts)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    completed = len(acks_w)
    portal_cpu = cpu["web"] + cpu["worker"]
    # Correctness: every job of the run is terminal, or still legitimately open at the end.
    lost = []
    for row in report["jobs"]["open"]:
        # Queued stays legitimate (its agent is alive and will claim it); running only if an agent holds it.
        legit = row["state"] == "queued" or (row["state"] == "running" and row["id"] in held_at_end)
        if not legit:
            lost.append(row)
    acked_ok = {job for _, job, outcome in fleet.stats.acks if outcome in ("succeeded", "failed")}
    by_state = report["jobs"]["by_state"]
    result.update(
        {
            "window_s": round(window, 1),
            "load_during": {
                "mean": round(sum(load_samples) / len(load_samples), 2) if load_samples else None,
                "max": max(load_samples) if load_samples else None,
            },
            "throughput": {
                "dispatched_per_s": round(len(handed_w) / window, 2),
                "completed_per_s": round(completed / window, 2),
                "completed_per_h": round(completed / window * 3600),
                "jobs_completed": completed,
                "jobs_dispatched": len(handed_w),
                "db_finished_in_window": report["jobs"]["window"]["finished"],
                "offered_per_s": round(args.agents * args.clients / cron_period(args.schedule), 2),
            },
            "latency": lat,
            "pages": {
                name: {
                    **summary([s for when, s, status in rows if status == 200]),
                    "errors": sum(1 for *_, status in rows if status != 200),
                }
                for name, rows in fleet.stats.page.items()
            },
            "errors": dict(fleet.stats.errors),
            "cpu": {
                "web_s": round(cpu["web"], 1),
                "worker_s": round(cpu["worker"], 1),
                "portal_s_per_1000_jobs": round(portal_cpu / completed * 1000, 1) if completed else None,
                "postgres_all_s": round(pg1 - pg0, 1) if args.engine == "pg" else None,
                "portal_cores_busy": round(portal_cpu / window, 2),
                "simulator_s": round(sim1 - sim0, 1),
            },
            "db": {
                "commits": (commits1 - commits0) if commits0 is not None else None,
                "commits_per_job": round((commits1 - commits0) / completed, 1)
                if commits0 is not None and completed
                else None,
                "bytes": report.get("database_bytes"),
                "tables": report.get("tables"),
            },
            "correctness": {
                "handouts": len(fleet.stats.handouts),
                "duplicate_handouts": fleet.stats.duplicates[:50],
                "duplicate_count": len(fleet.stats.duplicates),
                "jobs_of_run": report["jobs"]["total"],
                "by_state": by_state,
                "by_trigger": report["jobs"]["by_trigger"],
                "failed_by_error_class": report["jobs"]["failed_by_error_class"],
                "open_at_end": len(report["jobs"]["open"]),
                "queued_at_end": sum(1 for row in report["jobs"]["open"] if row["state"] == "queued"),
                "queued_due_at_end": sum(
                    1
                    for row in report["jobs"]["open"]
                    if row["state"] == "queued" and datetime.fromisoformat(row["not_before"]) <= utcnow()
                ),
                "lease_expired": report["jobs"]["failed_by_error_class"].get("lease_expired", 0),
                "lost": lost[:50],
                "lost_count": len(lost),
                "acks_ok": len(acked_ok),
                "acks_409_404": sum(1 for *_, o in fleet.stats.acks if o.startswith("http")),
                "drain_open": open_,
            },
            "people": report["people"],
            "alerts": report["alerts"],
            "backups": report["backups"],
            "data_protected_bytes": args.agents * args.clients * int(args.size_gb * 10**9),
        }
    )


def cron_period(schedule: str) -> float:
    minute = schedule.split()[0]
    return 60.0 * (int(minute[2:]) if minute.startswith("*/") else 1)


# --- Tables ------------------------------------------------------------------------------------


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        value = f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    return f"{value}{unit}"


HUMAN = ("manual_jobs", "approved_by_person", "rejected_by_person", "alerts_acknowledged")


def human_actions(people: dict) -> int:
    """requests_app.metrics' human actions: manual jobs + decisions by a person + alerts acknowledged."""
    return sum(people.get(name, 0) for name in HUMAN)


def md(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def two(d: dict | None) -> str:
    return f"{fmt((d or {}).get('p50_ms'))} / {fmt((d or {}).get('p99_ms'))}"


def print_table(results: list[dict], full: bool = False) -> None:
    done = [r for r in results if "throughput" in r]
    rows = []
    for r in results:
        if "throughput" not in r:
            rows.append([r["label"], r["status"][:80]] + [""] * 12)
            continue
        lat, pages, cpu = r["latency"], r["pages"], r["cpu"]
        rows.append(
            [
                r["label"],
                r["status"][:20],
                f"{r['config']['agents']:,}",
                r["load_during"]["mean"],
                r["throughput"]["dispatched_per_s"],
                r["throughput"]["completed_per_s"],
                two(lat.get("poll")),
                two(lat.get("complete")),
                fmt(r["db"]["commits_per_job"]),
                fmt(cpu["portal_s_per_1000_jobs"]),
                two(pages.get("dashboard")),
                two(pages.get("client")),
                r["correctness"]["duplicate_count"],
                r["correctness"]["lost_count"],
            ]
        )
    head = ["run", "status", "agents", "load (mean)", "jobs/s dispatched", "jobs/s completed",
            "poll p50/p99 ms", "complete p50/p99 ms", "commits/job", "portal CPU s/1000 jobs",
            "dashboard p50/p99 ms", "client page p50/p99 ms", "dup", "lost"]  # fmt: skip
    print(md(head, rows))
    if not full:
        return
    print()
    print(md(
        ["run", "offered jobs/s", "completed jobs/h", "progress p50/p99 ms", "web CPU s", "worker CPU s",
         "portal cores busy", "postgres CPU s (all DBs)", "simulator CPU s", "window s", "errors"],
        [[r["label"], r["throughput"]["offered_per_s"], f"{r['throughput']['completed_per_h']:,}",
          two(r["latency"].get("progress")), r["cpu"]["web_s"], r["cpu"]["worker_s"],
          r["cpu"]["portal_cores_busy"],
          fmt(r["cpu"]["postgres_all_s"]), r["cpu"].get("simulator_s"), r["window_s"],
          "; ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"] for r in done],
    ))  # fmt: skip
    print()
    print(md(
        ["run", "enrolled", "enrol/s", "enrol p50/p99 ms", "web CPU ms/enrol", "idle polls/s",
         "idle poll p50/p99 ms", "web CPU ms/idle poll", "commits/idle poll"],
        [[r["label"], r["enrol"]["enrolled"], r["enrol"]["per_s"], two(r["latency"].get("enrol")),
          r["enrol"].get("web_cpu_ms_per_enrol"), (r.get("idle") or {}).get("polls_per_s"),
          two((r.get("idle") or {}).get("poll")), fmt((r.get("idle") or {}).get("web_cpu_ms_per_poll")),
          fmt((r.get("idle") or {}).get("commits_per_poll"))] for r in done],
    ))  # fmt: skip
    print()
    print(md(
        ["run", "handouts", "duplicates", "jobs of run", "by state", "by trigger", "failed by class",
         "queued at end (due)", "running held at end", "lease expired", "lost"],
        [[r["label"], r["correctness"]["handouts"], r["correctness"]["duplicate_count"],
          r["correctness"]["jobs_of_run"], r["correctness"]["by_state"], r["correctness"]["by_trigger"],
          r["correctness"]["failed_by_error_class"],
          f"{r['correctness'].get('queued_at_end')} ({r['correctness'].get('queued_due_at_end')})",
          r["correctness"]["open_at_end"] - (r["correctness"].get("queued_at_end") or 0),
          r["correctness"].get("lease_expired"), r["correctness"]["lost_count"]] for r in done],
    ))  # fmt: skip
    print()
    print(md(
        ["run", "alerts raised (window)", "by kind/severity (run)", "human actions (window)", "backups",
         "reported bytes"],
        [[r["label"], r["alerts"]["window_total"],
          ", ".join(f"{a['kind']}/{a['severity']}: {a['n']}" for a in r["alerts"]["run_by_kind_severity"])
          or "none",
          human_actions(r["people"]["window"]),
          r["backups"]["count"], f"{r['backups']['size_bytes']:,}"] for r in done],
    ))  # fmt: skip
    for r in done:
        if r["db"].get("tables"):
            print()
            print(f"{r['label']}: database {r['db']['bytes']:,} bytes")
            print(md(
                ["table", "rows", "bytes (with indexes)", "bytes/row"],
                [[t, v["rows"], f"{v['bytes']:,}", round(v["bytes"] / v["rows"]) if v["rows"] else "n/a"]
                 for t, v in r["db"]["tables"].items()],
            ))  # fmt: skip


# --- Command line ----------------------------------------------------------------------------

MATRIX = [
    # engine, agents, GB per client, idle, window, drain, portals (all: 1 client per agent, poll 30 s)
    ("pg", 10000, 1000, 30, 180, 150, 1),
    ("pg", 1000, 32, 30, 120, 120, 1),
    ("sqlite", 1000, 32, 30, 120, 120, 1),
    ("pg", 100, 1, 20, 120, 90, 1),
    ("pg", 100, 1000, 20, 120, 90, 1),
    ("sqlite", 100, 1, 20, 120, 90, 1),
    ("pg", 1000, 32, 30, 120, 120, 2),
    ("sqlite", 10000, 1000, 30, 120, 60, 1),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one run")
    r.add_argument("--engine", choices=("sqlite", "pg"), default="pg")
    r.add_argument("--agents", type=int, default=100)
    r.add_argument("--clients", type=int, default=1, help="clients per agent")
    r.add_argument("--size-gb", type=float, default=1.0, help="reported data size per client (GB, 10^9)")
    r.add_argument("--schedule", default="* * * * *", help="the policy's cron")
    r.add_argument("--poll", type=int, default=30, help="PORTAL_AGENT_POLL_SECONDS")
    r.add_argument("--job-min", type=float, default=5.0)
    r.add_argument("--job-max", type=float, default=20.0)
    r.add_argument("--fail-rate", type=float, default=0.05)
    r.add_argument(
        "--bad-clients", type=float, default=0.01, help="share of clients whose backups always fail"
    )
    r.add_argument("--idle", type=float, default=30, help="idle-poll measurement, seconds")
    r.add_argument("--duration", type=float, default=180, help="measured window, seconds")
    r.add_argument("--drain", type=float, default=150, help="longest drain, seconds")
    r.add_argument("--page-every", type=float, default=3.0)
    r.add_argument("--portals", type=int, default=1, help="gunicorn instances (scale-out: 2)")
    r.add_argument("--gunicorn-workers", type=int, default=4, help="sync workers per gunicorn")
    r.add_argument("--celery-workers", type=int, default=1)
    r.add_argument("--celery-concurrency", type=int, default=2)
    r.add_argument("--connections", type=int, default=512, help="simulator's open connections at most")
    r.add_argument("--enrol-concurrency", type=int, default=32)
    r.add_argument("--label", default="")
    r.add_argument("--keep", action="store_true", help="keep the scratch database")
    r.set_defaults(func=run)
    m = sub.add_parser("matrix", help="the recorded runs")
    m.add_argument("--only", default="", help="comma-separated indexes of MATRIX")
    m.add_argument("--tag", default="", help="prefix of the runs' labels")
    m.set_defaults(func=matrix)
    t = sub.add_parser("table", help="print the tables of var/fleet-results/")
    t.add_argument("--glob", default="*.json")
    t.set_defaults(func=lambda a: print_table(load_results(a.glob), full=True))
    return p


def load_results(pattern: str = "*.json") -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(RESULTS.glob(pattern))]


def matrix(args: argparse.Namespace) -> None:
    chosen = [int(x) for x in args.only.split(",") if x] or range(len(MATRIX))
    for index in chosen:
        engine, agents, size, idle, duration, drain, portals = MATRIX[index]
        label = f"{args.tag}{engine}-{agents}a-{portals}p-{size:g}g"
        argv = ["run", "--engine", engine, "--agents", str(agents), "--size-gb", str(size), "--label", label]
        argv += [
            "--idle",
            str(idle),
            "--duration",
            str(duration),
            "--drain",
            str(drain),
            "--portals",
            str(portals),
        ]
        if portals == 2:
            argv += ["--gunicorn-workers", "2", "--celery-workers", "2", "--celery-concurrency", "1"]
        run(parser().parse_args(argv))
    print_table(load_results(f"{args.tag}*.json"), full=True)


def main() -> None:
    args = parser().parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
