"""manage.py seed_demo: the demo estate, a month of history, last month's reports, its logins, idempotence."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core import mail
from django.core.management import CommandError, call_command
from django.db.models import Max, Min
from django.utils import timezone
from pypdf import PdfReader

from catalog.choices import (
    AlertKind,
    AlertSeverity,
    BackupStatus,
    ClientStatus,
    JobKind,
    JobState,
    JobTrigger,
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
from demo import data as demo
from reports import render
from reports.choices import ReportFormat, ReportKind
from reports.models import Report
from reports.periods import Month

COUNTED = [
    CostCenter,
    Application,
    ProtectionPolicy,
    StorageTarget,
    Agent,
    BackupClient,
    Job,
    Backup,
    Alert,
    Report,
]


@pytest.fixture(autouse=True)
def storage_root(settings, tmp_path):
    """The demo target's folder goes to a temporary directory, never to var/."""
    settings.PORTAL_STORAGE_ROOT = tmp_path / "storage"
    return settings.PORTAL_STORAGE_ROOT


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """The reports' files too."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def quick_pdfs(request, monkeypatch):
    """WeasyPrint takes about 0.4 s a PDF: a stand-in, unless the test asks for ``real_pdfs``."""
    if "real_pdfs" not in request.fixturenames:
        monkeypatch.setattr(render, "render_pdf", lambda *args, **kwargs: render.RenderedPdf(b"%PDF-", 1))


@pytest.fixture
def real_pdfs():
    """The reports rendered by WeasyPrint, as ``make demo`` does."""


def seed_demo(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    counted = {model.__name__: model.objects.count() for model in COUNTED}
    counted["User"] = get_user_model().objects.count()
    return counted


def printed_logins(output: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(\S+) / (\S+)\s", output, flags=re.MULTILINE))


@pytest.fixture
def seeded(db) -> str:
    return seed_demo()


def test_seed_creates_the_documented_estate(seeded, storage_root):
    assert CostCenter.objects.count() == 2
    assert set(Application.objects.values_list("slug", flat=True)) == {"webshop", "orders", "payroll"}
    assert set(ProtectionPolicy.objects.values_list("name", flat=True)) == {"Gold", "Silver", "Bronze"}
    assert Agent.objects.count() == 3
    assert 5 <= BackupClient.objects.count() <= 7
    target = StorageTarget.objects.get(name="demo-filesystem")
    assert target.location == str(storage_root)
    assert storage_root.is_dir()
    assert 0 < target.used_bytes < target.capacity_bytes


def test_every_client_is_active_valid_and_scheduled(seeded):
    now = timezone.now()
    for client in BackupClient.objects.select_related("policy"):
        validate_options(client.plugin, client.options)
        assert client.status == ClientStatus.ACTIVE
        assert client.agent_id is not None
        assert client.next_backup_at > now - timedelta(minutes=1)


def test_history_covers_a_month_of_backups(seeded):
    span = Backup.objects.aggregate(first=Min("taken_at"), last=Max("taken_at"))
    assert span["last"] - span["first"] > timedelta(days=28)
    assert Backup.objects.count() > 500
    assert Backup.objects.filter(status=BackupStatus.AVAILABLE).exists()
    # Bronze keeps 14 days: its older recovery points are gone, after an expiry job.
    assert Backup.objects.filter(status=BackupStatus.DELETED, jobs__kind=JobKind.EXPIRE).exists()
    assert Job.objects.filter(kind=JobKind.RESTORE_TEST, state=JobState.SUCCEEDED).exists()


def test_every_succeeded_backup_job_produced_one_backup(seeded):
    succeeded = Job.objects.filter(kind=JobKind.BACKUP, state=JobState.SUCCEEDED)
    assert succeeded.count() == Backup.objects.count()
    assert not succeeded.filter(produced_backup__isnull=True).exists()
    assert not Job.objects.filter(finished_at__gt=timezone.now()).exists()
    backup = Backup.objects.select_related("client__application").first()
    assert backup.location == f"{backup.client.application.slug}/{backup.client.name}/job-{backup.job_id}"


def test_a_failed_job_is_followed_by_a_successful_retry(seeded):
    retry = (
        Job.objects.filter(
            trigger=JobTrigger.RETRY, state=JobState.SUCCEEDED, retry_of__state=JobState.FAILED
        )
        .select_related("retry_of")
        .first()
    )
    assert retry is not None
    assert retry.attempt == 2 and retry.retry_of.attempt == 1
    assert retry.retry_of.error_class and retry.retry_of.error_message
    assert retry.created_at >= retry.retry_of.finished_at


def test_open_alerts_name_the_broken_clients(seeded):
    rpo = Alert.objects.open().get(kind=AlertKind.RPO_BREACHED)
    assert rpo.severity == AlertSeverity.CRITICAL
    assert rpo.key == f"rpo_breached:client:{rpo.client_id}"
    assert rpo.application_id == rpo.client.application_id
    # Its recent backups failed: nothing good within the RPO.
    recent = timezone.now() - timedelta(hours=rpo.client.policy.rpo_hours)
    assert not rpo.client.backups.filter(taken_at__gte=recent).exists()
    failed = Alert.objects.open().get(kind=AlertKind.JOB_FAILED)
    assert failed.severity == AlertSeverity.WARNING
    assert failed.job.state == JobState.FAILED


def test_running_twice_changes_no_counts(seeded):
    before = counts()
    output = seed_demo()
    assert counts() == before
    assert "history created for 0 clients" in output


def last_months_reports():
    return Report.objects.filter(month=Month.last_completed().first_day)


def test_last_months_reports_are_there_with_their_files(real_pdfs, seeded):
    """What the monthly run makes: each kind company-wide, each cost centre's chargeback; PDF and CSV."""
    both = {ReportFormat.PDF, ReportFormat.CSV}
    reports = last_months_reports()
    company = reports.filter(cost_center__isnull=True, application__isnull=True)
    for kind in ReportKind.values:
        assert set(company.filter(kind=kind).values_list("format", flat=True)) == both, kind
    for code in ("CC-100", "CC-200"):
        chargeback = reports.filter(kind=ReportKind.CHARGEBACK, cost_center__code=code)
        assert set(chargeback.values_list("format", flat=True)) == both, code
    assert reports.count() == 2 * (len(ReportKind.values) + 2)
    for report in reports:
        with report.file.open("rb") as handle:
            content = handle.read()
        assert len(content) == report.size_bytes > 0
        assert report.summary, report
        if report.format == ReportFormat.PDF:
            assert content.startswith(b"%PDF") and report.pages >= 1
    compliance = reports.get(kind=ReportKind.COMPLIANCE, cost_center=None, format=ReportFormat.PDF)
    with compliance.file.open("rb") as handle:
        first_page = PdfReader(handle).pages[0].extract_text()
    assert "Compliance report" in first_page and Month.last_completed().label in first_page
    # Shown on the portal, not mailed.
    assert not mail.outbox and not reports.filter(emailed_at__isnull=False).exists()
    assert f"Reports for {Month.last_completed().label}: {reports.count()} generated" in seeded


def test_the_demo_owner_sees_their_cost_centres_chargeback(seeded):
    owner = get_user_model().objects.get(username=demo.OWNER_USERNAME)
    visible = last_months_reports().visible_to(owner)
    assert set(visible.values_list("kind", "cost_center__code").distinct()) == {
        (ReportKind.CHARGEBACK, "CC-100")
    }


def test_running_twice_keeps_the_reports_and_remakes_a_missing_file(seeded):
    files = dict(last_months_reports().values_list("pk", "file"))
    output = seed_demo()
    assert dict(last_months_reports().values_list("pk", "file")) == files
    assert f"0 generated, {len(files)} already there" in output

    lost = last_months_reports().get(kind=ReportKind.OPERATIONS, format=ReportFormat.PDF)
    lost.file.storage.delete(lost.file.name)
    output = seed_demo()
    assert f"2 generated, {len(files) - 2} already there" in output
    assert last_months_reports().count() == len(files)
    lost.refresh_from_db()
    assert lost.file.storage.exists(lost.file.name)


def test_owner_owns_webshop_and_orders_not_payroll(seeded):
    owner = get_user_model().objects.get(username=demo.OWNER_USERNAME)
    visible = set(Application.objects.visible_to(owner).values_list("slug", flat=True))
    assert visible == {"webshop", "orders"}


def test_admin_is_in_the_backup_team(seeded, settings):
    admin = get_user_model().objects.get(username=demo.ADMIN_USERNAME)
    assert admin.is_staff and admin.is_superuser
    assert admin.groups.filter(name=settings.PORTAL_BACKUP_TEAM_GROUP).exists()


def test_printed_logins_work(seeded):
    assert demo.DEMO_URL in seeded
    logins = printed_logins(seeded)
    assert set(logins) == {"owner", "admin"}
    for username, password in logins.items():
        assert authenticate(username=username, password=password) is not None


def test_passwords_can_be_overridden_and_are_reset_on_every_run(seeded):
    output = seed_demo("--owner-password", "another-owner-secret", "--admin-password", "another-admin-secret")
    assert printed_logins(output) == {"owner": "another-owner-secret", "admin": "another-admin-secret"}
    assert authenticate(username="owner", password="another-owner-secret") is not None
    assert authenticate(username="owner", password=demo.DEFAULT_OWNER_PASSWORD) is None


def test_a_password_django_rejects_is_refused_before_anything_is_written(db):
    with pytest.raises(CommandError, match="Password rejected"):
        seed_demo("--admin-password", "admin")
    assert not get_user_model().objects.exists()
    assert not Application.objects.exists()
