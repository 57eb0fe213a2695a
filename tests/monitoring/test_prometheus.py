"""The rules, the dashboard and a real Prometheus (Debian's, which `make test` installs) scraping the portal.

The Prometheus process is started here on a free loopback port, scrapes pytest-django's live
server every second with the bearer token, and evaluates deploy/prometheus/alerts.yml as
shipped, except that every ``for:`` is 0s so an alert fires at its first evaluation.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests import factories
from tests.helpers import stop_process, wait_for
from tests.monitoring.conftest import TOKEN

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "backup-portal.json"


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (`make prometheus`, Debian's).")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a loopback URL of ours)
        return json.loads(response.read())


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict:
        try:
            return get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        except urllib.error.HTTPError as exc:  # 400 carries the parse error as JSON
            return json.loads(exc.read())

    def wait_for(self, what: str, check, timeout: float = 45) -> object:
        return wait_for(check, timeout=timeout, what=f"Prometheus: {what}", interval=0.5)


@pytest.fixture(scope="module")
def prometheus(live_server, tmp_path_factory) -> Iterator[Prometheus]:
    root = tmp_path_factory.mktemp("prometheus")
    rules = root / "alerts.yml"
    # The file's own expressions; only the waiting times go, so the test need not wait 15 minutes.
    rules.write_text(re.sub(r"(?m)^(\s+for:\s*)\S+", r"\g<1>0s", ALERTS.read_text()))
    (root / "token").write_text(TOKEN)
    target = urllib.parse.urlsplit(live_server.url).netloc
    (root / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: backup-portal
    scrape_timeout: 1s
    authorization:
      type: Bearer
      credentials_file: {root / "token"}
    static_configs:
      - targets: ["{target}"]
"""
    )
    port = free_port()
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2):  # noqa: S310
                return True
        except OSError:
            if process.poll() is not None:
                pytest.fail("Prometheus exited:\n" + (root / "prometheus.log").read_text()[-3000:])
            return False

    try:
        wait_for(ready, timeout=30, what="Prometheus to start", interval=0.2)
        yield server
    finally:
        stop_process(process)
        log.close()


# --- Files checked without a server ----------------------------------------------------------------


def test_promtool_accepts_the_rules():
    result = subprocess.run(
        [binary("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_severity_and_annotations():
    import yaml

    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert {
        "BackupRPOBreached", "BackupAgentSilent", "BackupFailureRateHigh", "BackupQueueBacklog",
        "BackupRestoreTestFailed", "BackupStorageNearlyFull", "BackupStorageFullSoon",
        "BackupAnomalyDetected",
    } <= names  # fmt: skip
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "backup-portal"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        exprs += [target["expr"] for target in panel["targets"]]
    return exprs


def test_the_dashboard_loads_and_uses_only_portal_metrics():
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        assert "backup_portal_" in expr, expr


# --- A real Prometheus --------------------------------------------------------------------------


@pytest.fixture
def scraped(settings, transactional_db):
    settings.PORTAL_METRICS_TOKEN = TOKEN
    settings.PORTAL_METRICS_ALLOW = []


def test_every_dashboard_query_is_valid_promql(prometheus, scraped):
    for expr in dashboard_exprs():
        answer = prometheus.query(expr)
        assert answer["status"] == "success", (expr, answer)


def firing(prometheus: Prometheus, name: str) -> list[dict]:
    alerts = get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_the_rpo_breached_rule_fires_for_a_client_that_missed_its_rpo(prometheus, scraped, app, mine):
    policy = mine.client.policy
    late = factories.BackupClientFactory(application=app, agent=mine.agent, name="late-client", policy=policy)
    factories.BackupFactory(client=late, taken_at=timezone.now() - timedelta(hours=policy.rpo_hours + 1))

    def up():
        result = prometheus.query('up{job="backup-portal"}')["data"]["result"]
        return result and result[0]["value"][1] == "1"

    prometheus.wait_for("a successful scrape of /metrics (with the token)", up)

    fired = prometheus.wait_for("BackupRPOBreached to fire", lambda: firing(prometheus, "BackupRPOBreached"))
    clients = {(a["labels"]["application"], a["labels"]["client"]) for a in fired}
    assert clients == {(app.slug, "late-client")}, fired  # the protected client does not fire
    alert = fired[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["policy"] == policy.name
    assert "late-client" in alert["annotations"]["summary"]


def test_a_suspicious_backup_fires_the_anomaly_rule(prometheus, scraped, mine):
    mine.backup.anomaly = {"rules": ["most_files_changed"]}
    mine.backup.save(update_fields=["anomaly"])
    fired = prometheus.wait_for(
        "BackupAnomalyDetected to fire", lambda: firing(prometheus, "BackupAnomalyDetected")
    )
    assert fired[0]["labels"]["severity"] == "critical"


def test_the_restore_test_rule_follows_the_portals_open_alert(prometheus, scraped, mine):
    """It fires while the portal's restore_test_failed alert is open and clears when a later test passes
    (the portal resolves it then), not 24 hours after the failure."""
    from catalog.choices import AlertKind, AlertSeverity

    alert = factories.AlertFactory(
        client=mine.client, kind=AlertKind.RESTORE_TEST_FAILED, severity=AlertSeverity.CRITICAL
    )
    fired = prometheus.wait_for(
        "BackupRestoreTestFailed to fire", lambda: firing(prometheus, "BackupRestoreTestFailed")
    )
    assert fired[0]["labels"]["severity"] == "critical"
    assert fired[0]["value"] in ("1", "1e+00")

    alert.resolved_at = timezone.now()
    alert.save(update_fields=["resolved_at"])
    prometheus.wait_for(
        "BackupRestoreTestFailed to clear", lambda: not firing(prometheus, "BackupRestoreTestFailed")
    )
