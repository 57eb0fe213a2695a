"""The idle poll beside a bare Django JSON view, on one server in one run (issue #13).

    make bench-poll
    .venv/bin/python bench/poll.py --database-url postgres://postgres@127.0.0.1:5432/bp_poll_bench

A scratch PostgreSQL database (dropped and made again with ``--recreate``, else
reused) holds ``--agents`` agents with issued tokens, each bound to its instance
and holding what its poll reports (version, protocol, plugins, allow-list), five
clients each with ``--history`` finished backup jobs per client, and, as in a
real fleet, a few agents with a running job (listed in their poll's ``running``)
or a retry waiting for its backoff: polls that find no work to hand out.

One gunicorn (``--workers`` sync workers, DEBUG off, the portal's settings and
middleware; bench/poll_settings.py only adds the bare view of bench/poll_urls.py)
serves both; wrk (``--threads``, ``--connections``, ``--duration``) posts the
same request to each in turn: the poll's body and bearer token, rotated over
every agent by a Lua script, for ``--rounds`` rounds in turn. Each run follows a
warm-up; gunicorn is restarted around it so that PostgreSQL's counters
(``pg_stat_database``: transactions, rows written) cover the measured requests.
The CPU time of the gunicorn workers and of their PostgreSQL sessions per
request is also measured: unlike req/s, it hardly depends on what else the
machine runs. Queries per request are counted in-process (one request through
Django's test client with ``CaptureQueriesContext``, after a first one by the
same agent).

It prints a table and the ratio poll / bare, and writes bench/results/poll.json.
It fails only on errors (a request that is not 200, a server that does not
start), never on a missed target (the poll at ≥ 0.5× the bare view).

``--repo DIR`` measures another checkout with the same setup (e.g. a worktree of
an older commit: ``git worktree add /tmp/poll-before <commit>``); the two
bench/poll_*.py modules are copied into it when missing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)
SECRET_KEY = "bench-poll-" + "k" * 50
VERSION, PROTOCOL, PLUGINS = "0.2.0", 2, ["files", "postgresql"]
CLIENTS_PER_AGENT = 5


def token_of(i: int) -> str:
    return "bpa_bench" + hashlib.sha256(f"poll-bench-{i}".encode()).hexdigest()[:40]


def instance_of(i: int) -> str:
    return hashlib.md5(f"poll-bench-instance-{i}".encode()).hexdigest()  # noqa: S324 - an id, not a secret


def hostname_of(i: int) -> str:
    return f"srv{i:05d}.bench.example.com"


def allow_of(i: int) -> dict:
    return {
        "paths": ["/srv/app", f"/srv/app{i % 7}"],
        "restore_roots": ["/srv/restore"],
        "commands": [],
        "databases": ["postgresql:orders_*"],
        "storage": ["/mnt/protection"],
    }


def body_of(i: int, running: list[int]) -> dict:
    return {
        "version": VERSION,
        "protocol": PROTOCOL,
        "plugins": PLUGINS,
        "running": running,
        "allow": allow_of(i),
        "instance": {"id": instance_of(i), "host": hostname_of(i)},
    }


def server_env(repo: Path, database_url: str) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.poll_settings",
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        SECURE_SSL_REDIRECT="false",
        PYTHONPATH=str(repo),
    )
    return env


# --- In the measured checkout's Django (subcommands _seed and _count) ------------------------


def _django(repo: Path) -> None:
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    import django

    django.setup()


def seed(repo: Path, agents_count: int, history: int) -> None:
    """Migrate the scratch database and load the fleet; prints each agent's running job ids as JSON."""
    _django(repo)
    from datetime import timedelta
    from decimal import Decimal

    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from catalog import allow_list
    from catalog.models import (
        Agent,
        Application,
        BackupClient,
        CostCenter,
        ProtectionPolicy,
        StorageTarget,
        hash_token,
    )

    call_command("migrate", verbosity=0)
    now = timezone.now()
    cost_center = CostCenter.objects.create(code="BENCH", name="Bench", owner_email="b@example.com")
    app = Application.objects.create(slug="orders", name="Orders", cost_center=cost_center)
    target = StorageTarget.objects.create(name="bench", location="/mnt/protection", capacity_bytes=2**50)
    policy = ProtectionPolicy.objects.create(
        name="Bench",
        schedule="0 3 * * *",
        retention_days=7,
        rpo_hours=24,
        storage_target=target,
        price_per_gb_month=Decimal("0"),
    )
    fleet = Agent.objects.bulk_create(
        Agent(
            hostname=hostname_of(i),
            token_hash=hash_token(token_of(i)),
            version=VERSION,
            protocol=PROTOCOL,
            plugins=PLUGINS,
            allow_list=allow_list.normalise(allow_of(i)),
            instance_id=instance_of(i),
            instance_host=hostname_of(i),
            enrolled_at=now - timedelta(days=30),
            last_seen_at=now,
        )
        for i in range(agents_count)
    )
    Agent.applications.through.objects.bulk_create(
        Agent.applications.through(agent_id=agent.pk, application_id=app.pk) for agent in fleet
    )
    BackupClient.objects.bulk_create(
        BackupClient(
            application=app,
            agent=agent,
            name=f"c{i:05d}-{n}",
            hostname=agent.hostname,
            plugin="files",
            options={"paths": ["/srv/app"]},
            policy=policy,
            status="active",
            next_backup_at=now + timedelta(days=1),
        )
        for i, agent in enumerate(fleet)
        for n in range(CLIENTS_PER_AGENT)
    )
    with connection.cursor() as cursor:
        # The history: finished backups, one a day per client, as the scheduler made them.
        cursor.execute(
            """
            INSERT INTO catalog_job (kind, client_id, agent_id, state, trigger, attempt, target_location,
                overwrite, created_at, not_before, started_at, finished_at, bytes_done, bytes_total,
                log_tail, error_class, error_message)
            SELECT 'backup', c.id, c.agent_id, 'succeeded', 'schedule', 1, '', false,
                   now() - g * interval '1 day', now() - g * interval '1 day',
                   now() - g * interval '1 day', now() - g * interval '1 day' + interval '5 minutes',
                   1048576, 1048576, '', '', ''
            FROM catalog_backupclient c CROSS JOIN generate_series(1, %s) AS g
            """,
            [history],
        )
        # One agent in 20 is running a backup (it lists it), one in 20 has a retry in its backoff.
        cursor.execute(
            """
            INSERT INTO catalog_job (kind, client_id, agent_id, state, trigger, attempt, target_location,
                overwrite, created_at, not_before, started_at, lease_expires_at, bytes_done,
                log_tail, error_class, error_message)
            SELECT 'backup', c.id, c.agent_id,
                   CASE WHEN a.rank % 20 = 0 THEN 'running' ELSE 'queued' END, 'schedule',
                   CASE WHEN a.rank % 20 = 0 THEN 1 ELSE 2 END, '', false, now(),
                   CASE WHEN a.rank % 20 = 0 THEN now() ELSE now() + interval '1 day' END,
                   CASE WHEN a.rank % 20 = 0 THEN now() END,
                   CASE WHEN a.rank % 20 = 0 THEN now() + interval '1 day' END, 0, '', '', ''
            FROM catalog_backupclient c
            JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS rank FROM catalog_agent) a
              ON a.id = c.agent_id
            WHERE a.rank % 20 IN (0, 10) AND c.name LIKE '%%-0'
            """
        )
        cursor.execute("ANALYZE")
    running: dict[int, list[int]] = {}
    index = {agent.pk: i for i, agent in enumerate(fleet)}
    from catalog.models import Job

    for job_id, agent_id in Job.objects.filter(state="running").values_list("pk", "agent_id"):
        running.setdefault(index[agent_id], []).append(job_id)
    print(json.dumps({"running": running}))


def count(repo: Path, agent: int, running: list[int]) -> None:
    """Queries of one idle poll and of one bare request, in-process; printed as JSON."""
    _django(repo)
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_of(agent)}", SERVER_NAME="127.0.0.1")
    body = json.dumps(body_of(agent, running))
    result = {}
    for name, path in (("poll", "/api/agent/v1/poll"), ("bare", "/bench/bare")):
        client.post(path, body, content_type="application/json")  # the steady state from here
        with CaptureQueriesContext(connection) as captured:
            response = client.post(path, body, content_type="application/json")
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.content[:300]!r}")
        sqls = [q["sql"] for q in captured.captured_queries]
        writes = [s for s in sqls if s.split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}]
        result[name] = {"queries": len(sqls), "writes": len(writes), "sql": sqls}
    print(json.dumps(result))


# --- The orchestration (no Django here) ---------------------------------------------------------


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, text=True, capture_output=True, **kwargs)


def in_repo(repo: Path, database_url: str, *args: str) -> dict:
    out = run(
        [str(PYTHON), str(Path(__file__).resolve()), *args, "--repo", str(repo)],
        env=server_env(repo, database_url),
        cwd=repo,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def admin_url(database_url: str) -> tuple[str, str]:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


def pg(database_url: str, sql: str, *params, autocommit: bool = False):
    import psycopg2

    connection = psycopg2.connect(database_url)
    connection.autocommit = autocommit
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()


def database_exists(database_url: str) -> bool:
    admin, name = admin_url(database_url)
    return bool(pg(admin, "SELECT 1 FROM pg_database WHERE datname = %s", name))


def stats(database_url: str) -> dict:
    """The scratch database's counters (not the WAL position: the whole server's, other databases' too)."""
    admin, name = admin_url(database_url)
    (row,) = pg(
        admin,
        "SELECT xact_commit, xact_rollback, tup_inserted + tup_updated + tup_deleted "
        "FROM pg_stat_database WHERE datname = %s",
        name,
    )
    return dict(zip(("commits", "rollbacks", "rows_written"), map(int, row), strict=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(repo: Path, database_url: str, port: int, workers: int):
    command = [
        str(PYTHON.parent / "gunicorn"), "portal.wsgi:application", "--chdir", str(repo),
        "--workers", str(workers), "--worker-class", "sync", "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning",
    ]  # fmt: skip
    with tempfile.TemporaryFile(mode="w+") as log:
        env = server_env(repo, database_url)
        process = subprocess.Popen(command, env=env, cwd=repo, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"gunicorn did not start:\n{log.read()[-3000:]}")
                time.sleep(0.1)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            time.sleep(1)  # the workers' database sessions end, and their statistics with them


LUA = """
local tokens = {%(tokens)s}
local bodies = {%(bodies)s}
local n = #tokens
local counter = 0
function setup(thread)
  thread:set("offset", counter * math.floor(n / 2))
  counter = counter + 1
end
function init(args)
  i = offset or 0
end
function request()
  i = i %% n + 1
  return wrk.format("POST", "%(path)s", {["Authorization"] = "Bearer " .. tokens[i],
                    ["Content-Type"] = "application/json"}, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  local failed = e.connect + e.read + e.write + e.timeout
  io.write(string.format("BENCH %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
           latency:percentile(50), latency:percentile(99), e.status, failed))
end
"""


def lua_script(folder: Path, path: str, agents_count: int, running: dict[str, list[int]]) -> Path:
    tokens = ",".join(json.dumps(token_of(i)) for i in range(agents_count))
    bodies = ",".join(
        json.dumps(json.dumps(body_of(i, running.get(str(i), [])), separators=(",", ":")))
        for i in range(agents_count)
    )
    script = folder / f"{path.strip('/').replace('/', '_')}.lua"
    script.write_text(LUA % {"tokens": tokens, "bodies": bodies, "path": path})
    return script


def wrk(script: Path, port: int, args, duration: int) -> dict:
    out = run([
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(script), f"http://127.0.0.1:{port}",
    ])  # fmt: skip
    line = next(line for line in out.stdout.splitlines() if line.startswith("BENCH "))
    requests, duration_us, p50, p99, non2xx, socket_errors = map(int, line.split()[1:])
    if non2xx or socket_errors:
        raise SystemExit(
            f"{script.name}: {non2xx} answers not 2xx, {socket_errors} socket errors\n{out.stdout}"
        )
    return {
        "requests": requests,
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
    }


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes (Linux /proc), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def backends(database_url: str) -> list[int]:
    admin, name = admin_url(database_url)
    return [pid for (pid,) in pg(admin, "SELECT pid FROM pg_stat_activity WHERE datname = %s", name)]


def measure(args, repo: Path, script: Path, port: int) -> dict:
    """One measured run after a warm-up: speed, and what each request cost in CPU and in the database.

    The CPU time of the gunicorn workers and of their PostgreSQL sessions, per request,
    does not depend on what else the machine runs, unlike req/s on a shared machine.
    """
    # Everybody polled a moment ago: the steady state, whatever the code measured.
    pg(args.database_url, "UPDATE catalog_agent SET last_seen_at = now()", autocommit=True)
    with gunicorn(repo, args.database_url, port, args.workers):
        wrk(script, port, args, args.warmup)
    before = stats(args.database_url)
    with gunicorn(repo, args.database_url, port, args.workers) as server:
        # Requests first, until every worker has loaded the portal and opened its session.
        booting, deadline = 0, time.monotonic() + 60
        while booting < 10 * args.connections and time.monotonic() < deadline:
            booting += wrk(script, port, args, 2)["requests"]
        workers, sessions = children(server.pid), backends(args.database_url)
        web, db = cpu_seconds(workers), cpu_seconds(sessions)
        result = wrk(script, port, args, args.duration)
        result["web_cpu"] = cpu_seconds(workers) - web
        result["db_cpu"] = cpu_seconds(sessions) - db
    after = stats(args.database_url)
    for key in ("commits", "rollbacks", "rows_written"):
        # The database's counters cover the first requests too.
        result[key] = (after[key] - before[key]) * result["requests"] / (result["requests"] + booting)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bp_poll_bench")
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="The checkout to measure (default: this one)."
    )
    parser.add_argument("--recreate", action="store_true", help="Drop the database and load it again.")
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--history", type=int, default=60, help="Finished backup jobs per client.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=15, help="Seconds of each measured run.")
    parser.add_argument("--warmup", type=int, default=5, help="Seconds of the run before each.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of each view, in turn.")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "poll.json")
    args = parser.parse_args()
    repo = args.repo.resolve()
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("The benchmark needs PostgreSQL (--database-url postgres://…).")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk, or make bench-poll).")
    for name in ("poll_settings.py", "poll_urls.py"):
        if not (repo / "bench" / name).exists():
            shutil.copy(REPO / "bench" / name, repo / "bench" / name)

    admin, name = admin_url(args.database_url)
    started = time.monotonic()
    state_file = Path(tempfile.gettempdir()) / f"bench-poll-{name}.json"
    if args.recreate or not database_exists(args.database_url) or not state_file.exists():
        pg(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', autocommit=True)
        pg(admin, f'CREATE DATABASE "{name}"', autocommit=True)
        fleet = in_repo(repo, args.database_url, "_seed", "--agents", str(args.agents), "--history",
                        str(args.history))  # fmt: skip
        state_file.write_text(json.dumps({"agents": args.agents, **fleet}))
        print(f"loaded {args.agents} agents in {time.monotonic() - started:.1f} s")
    else:
        env = server_env(repo, args.database_url)
        run([str(PYTHON), "manage.py", "migrate", "--verbosity", "0"], env=env, cwd=repo)
    fleet = json.loads(state_file.read_text())
    agents_count, running = fleet["agents"], fleet["running"]
    busy = int(next(iter(running), 0))
    queries = in_repo(repo, args.database_url, "_count", "--agent", str(busy), "--running",
                      json.dumps(running.get(str(busy), [])))  # fmt: skip

    port = free_port()
    rounds: dict[str, list[dict]] = {"bare": [], "poll": []}
    with tempfile.TemporaryDirectory() as folder:
        scripts = {
            target: lua_script(Path(folder), path, agents_count, running)
            for target, path in (("bare", "/bench/bare"), ("poll", "/api/agent/v1/poll"))
        }
        for n in range(args.rounds):  # side by side, in turn: the server's other load hits both alike
            for target, script in scripts.items():
                rounds[target].append(measure(args, repo, script, port))
                r = rounds[target][-1]
                print(f"round {n + 1} {target}: {r['rps']:,.0f} req/s", flush=True)
    results = {target: summary(runs) | queries[target] for target, runs in rounds.items()}
    ratios = sorted(p["rps"] / b["rps"] for b, p in zip(rounds["bare"], rounds["poll"], strict=True))
    ratio = ratios[len(ratios) // 2]

    commit = run(["git", "-C", str(repo), "describe", "--always", "--dirty"]).stdout.strip()
    print(
        f"\nIdle poll vs bare Django JSON view: {repo} ({commit}), {agents_count} agents, gunicorn "
        f"{args.workers} sync workers, wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"median of {args.rounds} rounds\n"
    )
    header = (
        "view", "req/s", "p50 ms", "p99 ms", "CPU ms/req web + db", "queries", "writes", "xact_commit/req",
        "rows written/req",
    )  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for target, r in results.items():
        cells = (
            target, f"{r['rps']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
            f"{r['web_cpu_per_request'] * 1000:.2f} + {r['db_cpu_per_request'] * 1000:.2f}",
            r["queries"], r["writes"],
            f"{r['commits_per_request']:.2f}", f"{r['rows_written_per_request']:.3f}",
        )  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    each = ", ".join(f"{x:.2f}" for x in ratios)
    print(f"\nratio poll / bare: {ratio:.2f} (the median of the rounds' {each}); target >= 0.5")
    cost = {t: r["web_cpu_per_request"] + r["db_cpu_per_request"] for t, r in results.items()}
    cpu_ratio = cost["bare"] / cost["poll"] if cost["poll"] else 0.0
    print(f"CPU per request, bare / poll (web workers + database sessions): {cpu_ratio:.2f}")
    print("idle poll SQL:", *queries["poll"]["sql"], sep="\n  ")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {"repo": str(repo), "commit": commit, "agents": agents_count, "ratio": ratio, "ratios": ratios,
              "cpu_ratio": cpu_ratio, "results": results, "rounds": rounds}  # fmt: skip
    args.output.write_text(json.dumps(report, indent=2))


def summary(runs: list[dict]) -> dict:
    """The median round's speed; the database's counters over every round."""
    middle = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    requests = sum(r["requests"] for r in runs)
    per_request = {
        f"{key}_per_request": sum(r[key] for r in runs) / requests
        for key in ("commits", "rollbacks", "rows_written", "web_cpu", "db_cpu")
    }
    return {"rps": middle["rps"], "p50_ms": middle["p50_ms"], "p99_ms": middle["p99_ms"], **per_request}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_seed", "_count"):
        sub = argparse.ArgumentParser()
        sub.add_argument("command")
        sub.add_argument("--repo", type=Path, required=True)
        sub.add_argument("--agents", type=int)
        sub.add_argument("--history", type=int)
        sub.add_argument("--agent", type=int)
        sub.add_argument("--running", default="[]")
        a = sub.parse_args()
        if a.command == "_seed":
            seed(a.repo, a.agents, a.history)
        else:
            count(a.repo, a.agent, json.loads(a.running))
    else:
        main()
