"""The anomaly check through the catalog: real file lists compared, evidence stored, one alert,
acknowledged by the owner on the client's page, shown on the restore page and in the API.

Histories are synthetic but go through the public doors: each point gets a real file list
(written by the agent's own writer) and is judged by ``anomalies.evaluate``, as the task does.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.choices import AlertKind, AlertSeverity, JobState
from catalog.file_index import IndexReader
from catalog.models import Alert, Backup
from catalog.services import anomalies, jobs
from catalog.services.anomalies import changes_between
from tests import factories
from tests.helpers import agent_client, run_at_once
from tests.identity.totp import mark_oidc_amr
from tests.index_files import complete, give_file_list, upload, write_files_index

GB = 1 << 30
FILES = 300
MTIME = 1_767_323_045


class Tree:
    """A client's files as a dict the index writer takes: a few folders of files, (size, mtime) each."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.files = {f"d{i % 6}/f{i:04d}.dat": (1000 + i, MTIME) for i in range(FILES)}
        self.next = FILES

    def as_tree(self) -> dict:
        root: dict = {}
        for path, value in self.files.items():
            folder, name = path.split("/")
            root.setdefault(folder, {})[name] = value
        return {"srv/app": root}

    def touch(self, share: float, *, day: int) -> None:
        for path in self.rng.sample(sorted(self.files), int(len(self.files) * share)):
            size, _ = self.files[path]
            self.files[path] = (size, MTIME + 86400 * day)

    def normal_day(self, day: int) -> None:
        """A few files edited, one or two added, sometimes one removed."""
        self.touch(0.015, day=day)
        for _ in range(self.rng.choice((1, 2))):
            self.files[f"d{self.next % 6}/f{self.next:04d}.dat"] = (500, MTIME + 86400 * day)
            self.next += 1
        if self.rng.random() < 0.3:
            del self.files[self.rng.choice(sorted(self.files))]

    def delete(self, share: float) -> None:
        for path in self.rng.sample(sorted(self.files), int(len(self.files) * share)):
            del self.files[path]


def take(client, tree: Tree, day: int, *, size: int, start) -> Backup:
    """A recovery point of ``client`` on ``day`` with ``tree``'s file list, judged as the task does."""
    job = factories.JobFactory(client=client, state=JobState.SUCCEEDED)
    backup = factories.BackupFactory(
        client=client, job=job, taken_at=start + timedelta(days=day), size_bytes=size
    )
    give_file_list(backup, tree.as_tree())
    anomalies.evaluate(backup.pk)
    backup.refresh_from_db()
    return backup


def history(client, tree: Tree, days: int = 20, *, size: float = 10 * GB):
    start = timezone.now() - timedelta(days=days + 1)
    points = []
    for day in range(days):
        if day:
            tree.normal_day(day)
        points.append(take(client, tree, day, size=int(size * 1.005**day), start=start))
    return start, points


@pytest.fixture
def estate(app):
    return factories.build_estate(app)


@pytest.fixture
def client_(estate):
    Backup.objects.filter(client=estate.client).delete()
    return estate.client


def anomaly_alerts():
    return Alert.objects.filter(kind=AlertKind.ANOMALY_DETECTED)


# --- figures ---------------------------------------------------------------------------------


def test_file_changes_are_counted_by_merging_the_two_file_lists(tmp_path):
    before = {"srv/app": {"a": {"x": 1, "y": 2}, "b": {"z": 3}, "keep": 4, "link": ("->", "a/x")}}
    after = {
        "srv/app": {
            "a": {"x": (1, MTIME + 60), "y": 2, "new": 5},  # x changed, new added
            "keep": 4,
            "link": ("->", "a/y"),  # a symlink pointing elsewhere: changed
            "c": {"w": 1},  # a new folder with a new file
        }
    }  # b and b/z deleted
    write_files_index(tmp_path / "1.bpi", before)
    write_files_index(tmp_path / "2.bpi", after, version=2)
    changes = changes_between(IndexReader(tmp_path / "1.bpi"), IndexReader(tmp_path / "2.bpi"))
    assert (changes.new, changes.changed, changes.deleted) == (3, 2, 2)
    same = changes_between(IndexReader(tmp_path / "1.bpi"), IndexReader(tmp_path / "1.bpi"))
    assert (same.new, same.changed, same.deleted) == (0, 0, 0)


# --- verdicts ---------------------------------------------------------------------------------


def test_normal_history_with_growth_raises_nothing_and_stores_the_figures(client_):
    tree = Tree()
    _, points = history(client_, tree, days=20)
    assert not anomaly_alerts().exists()
    assert all(p.anomaly_checked_at for p in points)
    assert not Backup.objects.suspicious().exists()
    last = points[-1]
    assert last.files_changed is not None and 0 < last.files_changed < 20
    assert points[0].files_new is None  # nothing before it to compare with
    assert anomalies.last_known_clean(client_) is None


@pytest.mark.parametrize("weekend", [1.0, 3.0, 1 / 3], ids=["growth", "weekends-3x", "weekends-third"])
def test_sixty_days_of_one_percent_growth_and_weekly_cycles_raise_nothing(client_, weekend):
    tree = Tree(12)
    start = timezone.now() - timedelta(days=61)
    points = []
    for day in range(60):
        if day:
            tree.normal_day(day)
        factor = weekend if timezone.localtime(start + timedelta(days=day)).weekday() >= 5 else 1.0
        points.append(take(client_, tree, day, size=int(20 * GB * 1.01**day * factor), start=start))
    assert not anomaly_alerts().exists()
    assert not Backup.objects.suspicious().exists()
    assert all(p.anomaly_checked_at for p in points)


def test_too_little_history_gives_no_verdict(client_):
    tree = Tree()
    start, points = history(client_, tree, days=3)
    tree.touch(0.95, day=4)
    verdict = anomalies.evaluate(take(client_, tree, 4, size=GB, start=start).pk)
    backup = Backup.objects.order_by("-taken_at").first()
    assert backup.anomaly == {} and backup.anomaly_checked_at is not None
    assert backup.files_changed >= 0.9 * FILES  # the figures are kept all the same
    assert verdict is None  # already judged by take(): once only
    assert not anomaly_alerts().exists()


def test_encryption_like_change_raises_one_alert_with_the_evidence(client_):
    tree = Tree()
    start, points = history(client_, tree)
    tree.touch(0.9, day=20)
    encrypted = take(client_, tree, 20, size=int(10 * GB * 1.005**20), start=start)

    assert encrypted.suspicious and encrypted.anomaly["rules"] == ["changed_burst"]
    assert encrypted.files_changed >= 0.9 * FILES - 5
    assert encrypted.anomaly["compared_with"] == [p.pk for p in points]
    assert encrypted.anomaly["baseline"]["changed_share"]["points"] == 19
    alert = anomaly_alerts().get()
    assert alert.severity == AlertSeverity.CRITICAL
    assert alert.key == f"anomaly_detected:client:{client_.pk}"
    assert (alert.application_id, alert.client_id, alert.job_id) == (
        client_.application_id,
        client_.pk,
        encrypted.job_id,
    )
    assert f"Backup {encrypted.pk} of {client_}" in alert.message
    assert "files changed (8" in alert.message and "usually" in alert.message
    assert "median of 19 points" in alert.message
    # Evaluated again (the periodic safety net, a duplicate task): nothing more.
    assert anomalies.evaluate(encrypted.pk) is None
    assert anomaly_alerts().count() == 1
    assert anomalies.last_known_clean(client_) == points[-1]


def test_mass_deletion_raises_an_alert(client_):
    tree = Tree(2)
    start, _ = history(client_, tree)
    tree.delete(0.6)
    wiped = take(client_, tree, 20, size=int(10 * GB * 1.005**20), start=start)
    assert "mass_deletion" in wiped.anomaly["rules"]
    assert "shrink_files" in wiped.anomaly["rules"]
    assert "files deleted (" in anomaly_alerts().get().message


def test_sudden_shrink_by_eighty_percent_raises_an_alert(client_):
    tree = Tree(3)
    start, _ = history(client_, tree)
    tree.normal_day(20)
    shrunk = take(client_, tree, 20, size=int(10 * GB * 1.005**20 * 0.2), start=start)
    assert shrunk.anomaly["rules"] == ["shrink_size"]
    assert "80% less than the usual" in anomaly_alerts().get().message


def test_a_suspicious_point_is_left_out_of_the_next_baseline(client_):
    tree = Tree(4)
    start, points = history(client_, tree)
    shrunk = take(client_, tree, 20, size=int(2 * GB), start=start)
    after = take(client_, tree, 21, size=int(2 * GB), start=start)
    assert shrunk.suspicious and after.suspicious
    assert shrunk.pk not in after.anomaly["compared_with"]
    assert anomaly_alerts().count() == 1  # one page per client while it is open
    assert anomalies.last_known_clean(client_) == points[-1]
    owner = client_.application.owners.get()
    assert anomalies.acknowledge(shrunk, by=owner, note="moved the archive away", mfa=True)
    assert anomaly_alerts().get().resolved_at is None  # Tuesday's point is still suspicious
    assert anomalies.acknowledge(after, by=owner, note="moved the archive away", mfa=True)
    assert anomaly_alerts().get().resolved_at is not None
    assert not anomalies.acknowledge(after, by=owner, note="twice", mfa=True)


# --- acknowledgement: the one-off import --------------------------------------------------------


def test_one_off_import_acknowledged_by_the_owner_becomes_the_new_normal(client, owner, client_):
    tree = Tree(5)
    start, points = history(client_, tree)
    imported = take(client_, tree, 20, size=int(40 * GB), start=start)
    assert imported.anomaly["rules"] == ["unusual_size"]
    client.force_login(owner)
    mark_oidc_amr(client)  # acknowledging needs MFA, as approving does (test_anomaly_issue17.py)

    page = client.get(reverse("catalog:client", args=[client_.pk]))
    assert f'data-suspicious="{imported.pk}"' in page.content.decode()
    assert "times the usual" in page.content.decode()
    url = reverse("catalog:acknowledge-anomaly", args=[client_.pk, imported.pk])
    refused = client.post(url, {"note": "  "}, follow=True)
    assert "Say why" in refused.content.decode()
    assert Backup.objects.get(pk=imported.pk).suspicious

    response = client.post(url, {"note": "one-off import of the 2019 archive"})
    assert response.status_code == 302
    imported.refresh_from_db()
    assert not imported.suspicious
    assert (imported.anomaly_acknowledged_by, imported.anomaly_acknowledged_note) == (
        owner,
        "one-off import of the 2019 archive",
    )
    assert anomaly_alerts().get().resolved_at is not None
    assert not Backup.objects.suspicious().exists()
    assert anomalies.last_known_clean(client_) is None

    for day in range(21, 28):
        tree.normal_day(day)
        later = take(client_, tree, day, size=int(40 * GB * 1.005 ** (day - 20)), start=start)
        assert not later.suspicious, later.anomaly
        assert imported.pk in [p.backup_id for p in anomalies.history(later)]  # the baseline now
    assert anomaly_alerts().count() == 1
    page = client.get(reverse("catalog:client", args=[client_.pk])).content.decode()
    assert 'data-suspicious="' not in page


def test_another_applications_owner_cannot_acknowledge(client, other_owner, other_app, client_):
    tree = Tree(6)
    start, _ = history(client_, tree)
    shrunk = take(client_, tree, 20, size=int(2 * GB), start=start)
    client.force_login(other_owner)
    url = reverse("catalog:acknowledge-anomaly", args=[client_.pk, shrunk.pk])
    assert client.post(url, {"note": "mine now"}).status_code == 404
    assert client.get(url).status_code in (404, 405)
    assert Backup.objects.get(pk=shrunk.pk).suspicious


# --- the restore page and the API ---------------------------------------------------------------


def test_restore_page_warns_and_points_to_the_last_known_clean_point(client, owner, client_):
    tree = Tree(7)
    start, points = history(client_, tree)
    tree.touch(0.9, day=20)
    encrypted = take(client_, tree, 20, size=int(10 * GB), start=start)
    tree.normal_day(21)
    after = take(client_, tree, 21, size=int(10 * GB), start=start)
    client.force_login(owner)

    for chosen in (encrypted, after):
        page = client.get(reverse("requests:restore", args=[chosen.pk])).content.decode()
        assert "data-anomaly-warning" in page
        assert f'data-last-known-clean="{points[-1].pk}"' in page
    assert "files changed" in client.get(reverse("requests:restore", args=[encrypted.pk])).content.decode()
    clean = client.get(reverse("requests:restore", args=[points[-1].pk])).content.decode()
    assert "data-anomaly-warning" not in clean
    detail = client.get(reverse("catalog:client", args=[client_.pk])).content.decode()
    assert f'data-last-known-clean="{points[-1].pk}"' in detail


def test_api_shows_the_flag_and_the_evidence_and_filters_by_it(owner, client_):
    from tests.helpers import key_client

    tree = Tree(8)
    start, points = history(client_, tree, days=10)
    shrunk = take(client_, tree, 10, size=int(GB // 2), start=start)
    api = key_client(owner)
    listed = api.get("/api/v1/backups/", {"client": client_.pk}).json()["results"]
    flags = {row["id"]: (row["suspicious"], row["anomaly"].get("rules")) for row in listed}
    assert flags[shrunk.pk] == (True, ["shrink_size"])
    assert flags[points[-1].pk] == (False, None)
    only = api.get("/api/v1/backups/", {"suspicious": "true"}).json()["results"]
    assert [row["id"] for row in only] == [shrunk.pk]
    others = api.get("/api/v1/backups/", {"suspicious": "false", "client": client_.pk}).json()["results"]
    assert shrunk.pk not in {row["id"] for row in others} and len(others) == len(points)
    detail = api.get(f"/api/v1/backups/{shrunk.pk}/").json()
    assert detail["anomaly"]["baseline"]["size_bytes"]["points"] == 10


# --- the hook, the safety net, concurrency ------------------------------------------------------


def test_a_completed_backup_is_checked_once_it_is_recorded(
    tmp_path, estate, django_capture_on_commit_callbacks
):
    job = factories.JobFactory(client=estate.client)
    api, _ = agent_client(job.agent)
    jobs.claim(job.agent)
    summary = write_files_index(tmp_path / "index.bpi", Tree().as_tree())
    assert upload(api, job, (tmp_path / "index.bpi").read_bytes()).status_code == 204
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert complete(api, job, index=summary).status_code == 200
    assert callbacks
    backup = Backup.objects.get(job=job)
    assert backup.anomaly_checked_at is not None  # tasks run in-line in the tests
    assert backup.files_new is None  # the estate's earlier point has no file list


def test_the_periodic_check_catches_points_a_stopped_worker_missed(client_):
    tree = Tree(9)
    start, _ = history(client_, tree)
    tree.touch(0.9, day=20)
    job = factories.JobFactory(client=client_, state=JobState.SUCCEEDED)
    missed = factories.BackupFactory(
        client=client_, job=job, taken_at=start + timedelta(days=20), size_bytes=GB
    )
    give_file_list(missed, tree.as_tree())
    old = factories.BackupFactory(client=client_, taken_at=timezone.now() - timedelta(days=30))
    assert anomalies.check_missed() == 1
    missed.refresh_from_db()
    assert missed.suspicious and anomaly_alerts().count() == 1
    assert Backup.objects.get(pk=old.pk).anomaly_checked_at is None  # history, not news
    assert anomalies.check_missed() == 0


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_raise_one_alert(app):
    client_ = factories.build_estate(app).client
    Backup.objects.filter(client=client_).delete()
    tree = Tree(10)
    start, _ = history(client_, tree)
    tree.touch(0.9, day=20)
    job = factories.JobFactory(client=client_, state=JobState.SUCCEEDED)
    point = factories.BackupFactory(client=client_, job=job, taken_at=start + timedelta(days=20))
    give_file_list(point, tree.as_tree())

    results = run_at_once([lambda: anomalies.evaluate(point.pk)] * 2)

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(1 for r in results if r is not None) == 1
    assert anomaly_alerts().count() == 1
    assert Backup.objects.get(pk=point.pk).suspicious


def test_the_api_list_costs_the_same_queries_however_many_points_are_suspicious(owner, client_):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.helpers import key_client

    api = key_client(owner)
    evidence = {"rules": ["shrink_size"], "summaries": ["size 1 GB, 90% less than the usual 10 GB"]}

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/api/v1/backups/", {"suspicious": "true"}).status_code == 200
        return len(captured)

    factories.BackupFactory.create_batch(2, client=client_, anomaly=evidence)
    queries()  # the key's first use is recorded once
    few = queries()
    factories.BackupFactory.create_batch(8, client=client_, anomaly=evidence)
    assert queries() == few


def test_the_backup_team_sees_the_flag_filters_and_acknowledges_in_the_admin(
    team_client, backup_admin, client_
):
    evidence = {"rules": ["changed_burst"], "summaries": ["290 of 300 files changed (97%), usually 1.2 %"]}
    flagged = factories.BackupFactory(client=client_, anomaly=evidence, anomaly_checked_at=timezone.now())
    clean = factories.BackupFactory(client=client_, anomaly_checked_at=timezone.now())
    changelist = reverse("admin:catalog_backup_changelist")

    listed = team_client.get(changelist, {"suspicious": "yes"})
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == [flagged]
    page = team_client.get(reverse("admin:catalog_backup_change", args=[flagged.pk])).content.decode()
    assert "290 of 300 files changed" in page and "Suspicious" in page
    mark_oidc_amr(team_client)

    response = team_client.post(
        changelist, {"action": "acknowledge_anomaly", "_selected_action": [flagged.pk, clean.pk]}, follow=True
    )
    assert "1 suspicious backup(s) acknowledged" in response.content.decode()
    flagged.refresh_from_db()
    assert not flagged.suspicious and flagged.anomaly_acknowledged_by == backup_admin
    assert "backup team" in flagged.anomaly_acknowledged_note
