"""Agent benchmark: files-plugin throughput against `tar -cf - DIR | sha256sum`, the agent's
peak RSS, and the requests and bytes the agent exchanges with the portal per backup.

    .venv/bin/python bench/agent_backup.py                 # 1 MiB and 1 GiB trees
    .venv/bin/python bench/agent_backup.py --sizes-mib 1 64

Everything is real: a scratch portal (runserver on SQLite), the real
``backup-agent`` CLI, real files; a counting HTTP proxy sits between them.
Results are printed as a Markdown table and written to bench/results/.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate_tree import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = self.sent = self.received = 0
        self.paths: dict[str, int] = {}

    def add(self, path: str, sent: int, received: int) -> None:
        with self.lock:
            self.requests += 1
            self.sent += sent
            self.received += received
            key = path.rsplit("/", 1)[-1] if "/jobs/" in path else path
            self.paths[key] = self.paths.get(key, 0) + 1


def counting_proxy(upstream_port: int, counter: Counter) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # the agent API is POST only
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            sent = len(self.raw_requestline) + len(str(self.headers)) + len(body)
            received = len(payload) + 200  # status line and headers, roughly
            counter.add(self.path, sent, received)
            conn.close()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def tar_sha256_seconds(tree: Path) -> float:
    start = time.perf_counter()
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(tree.parent), tree.name], stdout=subprocess.PIPE)
    sha = subprocess.run(["sha256sum"], stdin=tar.stdout, capture_output=True, check=True)
    tar.stdout.close()
    tar.wait()
    assert tar.returncode == 0 and sha.stdout
    return time.perf_counter() - start


def peak_rss_kib(pid: int, stop: threading.Event, result: list[int]) -> None:
    """Sample the process's own high-water mark (VmHWM). Not wait4's ru_maxrss: that
    counts the pages the child shared with this (big) process between fork and exec."""
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    result[0] = max(result[0], int(line.split()[1]))
        except OSError:
            return
        stop.wait(0.02)


def run_agent(config: Path) -> tuple[float, int, str]:
    """One `backup-agent run --once`; returns (seconds, peak RSS in KiB, stderr)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [PY, "-m", "backup_agent", "run", "--once", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=peak_rss_kib, args=(process.pid, stop, peak))
    sampler.start()
    stderr = process.stderr.read().decode(errors="replace")
    process.wait()
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"agent failed:\n{stderr[-3000:]}")
    return elapsed, peak[0], stderr


def portal(workdir: Path) -> tuple[dict, subprocess.Popen, int]:
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="portal.settings",
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{workdir / 'portal.sqlite3'}",
        PORTAL_VAR_DIR=str(workdir / "var"),
    )
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen(
        [PY, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
            break
        except OSError:
            time.sleep(0.1)
    return env, server, port


def bench_size(mib: int, workdir: Path, env: dict, proxy_url: str, counter: Counter, repeats: int) -> dict:
    tree = workdir / f"tree-{mib}"
    files, written = generate(tree, mib * 2**20)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    setup = json.loads(
        subprocess.run(
            [PY, "bench/portal_setup.py", str(storage), str(tree)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    config = workdir / "agent.json"
    if setup["token"]:
        subprocess.run(
            [
                PY,
                "-m",
                "backup_agent",
                "enrol",
                "--server",
                proxy_url,
                "--token",
                setup["token"],
                "--hostname",
                setup["hostname"],
                "--config",
                str(config),
                "--spool-dir",
                str(workdir / "spool"),
                "--force",
            ],
            check=True,
            capture_output=True,
        )
    tar_times, agent_times, rss, traffic = [], [], [], []
    for _ in range(repeats):
        tar_times.append(tar_sha256_seconds(tree))
        subprocess.run(
            [PY, "manage.py", "backup_now", str(setup["client_id"])],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        counter.reset()
        seconds, peak_kib, _ = run_agent(config)
        agent_times.append(seconds)
        rss.append(peak_kib)
        traffic.append((counter.requests, counter.sent, counter.received, dict(counter.paths)))
        shutil.rmtree(storage)
        storage.mkdir()
    best_tar, best_agent = min(tar_times), min(agent_times)
    requests, sent, received, paths = traffic[-1]
    return {
        "size_mib": mib,
        "files": files,
        "bytes": written,
        "tar_sha256_s": round(best_tar, 3),
        "agent_s": round(best_agent, 3),
        "ratio": round(best_tar / best_agent, 3),
        "agent_mib_s": round(written / 2**20 / best_agent, 1),
        "agent_peak_rss_mib": round(max(rss) / 1024, 1),
        "requests": requests,
        "bytes_sent_to_portal": sent,
        "bytes_received_from_portal": received,
        "requests_by_endpoint": paths,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 1024])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-agent-"))
    env, server, port = portal(workdir)
    counter = Counter()
    proxy = counting_proxy(port, counter)
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    results = []
    try:
        for mib in args.sizes_mib:
            results.append(bench_size(mib, workdir, env, proxy_url, counter, args.repeats))
    finally:
        proxy.shutdown()
        server.terminate()
        server.wait()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        "| size | files | tar\\|sha256sum | agent | ratio | agent MiB/s | agent peak RSS "
        "| requests | sent | received |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['size_mib']} MiB | {r['files']} | {r['tar_sha256_s']} s | {r['agent_s']} s | {r['ratio']} "
            f"| {r['agent_mib_s']} | {r['agent_peak_rss_mib']} MiB | {r['requests']} "
            f"| {r['bytes_sent_to_portal']} B | {r['bytes_received_from_portal']} B |"
        )
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "agent_backup.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
