"""The backup team's admin: every page renders, costs constant queries, and guards the lifecycle."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib import admin as django_admin
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog.choices import (
    AgentAction,
    AgentStatus,
    AlertKind,
    AlertSeverity,
    BackupStatus,
    ClientStatus,
    ErrorClass,
    JobState,
    Plugin,
)
from catalog.models import Agent, Alert, Backup, BackupClient, CostCenter, EnrolmentToken, Job, StorageTarget
from catalog.services import agents
from tests import factories

MODELS = (
    "costcenter",
    "application",
    "agent",
    "storagetarget",
    "protectionpolicy",
    "backupclient",
    "job",
    "backup",
    "alert",
    "enrolmenttoken",
)
ADDABLE = ("costcenter", "application", "agent", "storagetarget", "protectionpolicy", "backupclient")
NOT_ADDABLE = tuple(m for m in MODELS if m not in ADDABLE)


def changelist_url(model_name: str) -> str:
    return reverse(f"admin:catalog_{model_name}_changelist")


def change_url(obj) -> str:
    return reverse(f"admin:catalog_{obj._meta.model_name}_change", args=[obj.pk])


def build_stack(n: int) -> dict:
    """One row of every catalog model, each with its own related rows, so an N+1 shows in every list."""
    now = timezone.now()
    owner = factories.UserFactory()
    application = factories.ApplicationFactory(owners=[owner])
    backup = factories.BackupFactory(client__application=application)
    client, job, agent = backup.client, backup.job, backup.client.agent
    Job.objects.filter(pk=job.pk).update(
        started_at=now - timedelta(seconds=90),
        finished_at=now,
        bytes_done=3 * 1024**3,
        error_class=ErrorClass.TIMEOUT,
    )
    open_alert = factories.AlertFactory(
        client=client,
        agent=agent,
        job=job,
        storage_target=backup.storage_target,
        kind=AlertKind.JOB_FAILED,
        severity=AlertSeverity.CRITICAL,
        message=f"Backup of stack {n} failed: disk full",
    )
    factories.AlertFactory(
        client=client,
        kind=AlertKind.RPO_BREACHED,
        severity=AlertSeverity.WARNING,
        acknowledged_at=now,
        acknowledged_by=owner,
    )
    token = EnrolmentToken.objects.create(
        token_hash=f"{n:064d}",
        application=application,
        hostname=agent.hostname,
        created_by=owner,
        expires_at=now + timedelta(days=1),
        used_at=now,
        agent=agent,
    )
    return {
        "costcenter": application.cost_center,
        "application": application,
        "agent": agent,
        "storagetarget": backup.storage_target,
        "protectionpolicy": client.policy,
        "backupclient": client,
        "job": job,
        "backup": backup,
        "alert": open_alert,
        "enrolmenttoken": token,
    }


#: A value that only this row shows, on its changelist and on its change form.
SHOWN = {
    "costcenter": lambda obj: obj.code,
    "application": lambda obj: obj.slug,
    "agent": lambda obj: obj.hostname,
    "storagetarget": lambda obj: obj.name,
    "protectionpolicy": lambda obj: obj.name,
    "backupclient": lambda obj: obj.name,
    "job": lambda obj: str(obj.client),
    "backup": lambda obj: str(obj.client),
    "alert": lambda obj: obj.message,
    "enrolmenttoken": lambda obj: obj.hostname,
}


@pytest.fixture
def stack(db):
    return build_stack(0)


# --- Every page renders --------------------------------------------------------------


@pytest.mark.parametrize("model_name", MODELS)
def test_changelist_lists_the_rows(root_client, stack, model_name):
    response = root_client.get(changelist_url(model_name))
    assert response.status_code == 200
    assert SHOWN[model_name](stack[model_name]) in response.text


@pytest.mark.parametrize("model_name", MODELS)
def test_change_form_shows_the_object(root_client, stack, model_name):
    response = root_client.get(change_url(stack[model_name]))
    assert response.status_code == 200
    assert SHOWN[model_name](stack[model_name]) in response.text
    if model_name == "backup":
        assert stack["backup"].sha256 in response.text


@pytest.mark.parametrize("model_name", ADDABLE)
def test_add_form_renders_where_adding_is_allowed(root_client, stack, model_name):
    assert root_client.get(reverse(f"admin:catalog_{model_name}_add")).status_code == 200


@pytest.mark.parametrize("model_name", NOT_ADDABLE)
def test_records_written_by_the_machine_cannot_be_added(root_client, db, model_name):
    assert root_client.get(reverse(f"admin:catalog_{model_name}_add")).status_code == 403


@pytest.mark.parametrize("model_name", MODELS)
def test_backup_team_member_without_model_permissions_uses_the_admin(team_client, stack, model_name):
    response = team_client.get(changelist_url(model_name))
    assert response.status_code == 200
    assert SHOWN[model_name](stack[model_name]) in response.text


def test_non_staff_owner_is_sent_to_the_login_page(client, owner, app):
    client.force_login(owner)
    for url in (reverse("admin:index"), changelist_url("backupclient")):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("admin:login"))


def test_staff_owner_with_view_permission_sees_only_own_clients(client, owner, app, other_app):
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    owner.user_permissions.add(Permission.objects.get(codename="view_backupclient"))
    mine = factories.BackupClientFactory(application=app, name="orders-db")
    theirs = factories.BackupClientFactory(application=other_app, name="payroll-db")
    client.force_login(owner)

    response = client.get(changelist_url("backupclient"))
    assert list(response.context["cl"].result_list) == [mine]
    assert client.get(change_url(theirs)).status_code == 302  # "does not exist", back to the index


# --- Constant query counts -----------------------------------------------------------


@pytest.mark.parametrize("model_name", MODELS)
def test_changelist_queries_do_not_grow_with_rows(root_client, db, model_name):
    url = changelist_url(model_name)
    for n in range(2):
        build_stack(n)
    root_client.get(url)  # warm caches (content types, session) outside the measurement
    with CaptureQueriesContext(connection) as few:
        assert root_client.get(url).status_code == 200
    for n in range(2, 6):
        build_stack(n)
    with CaptureQueriesContext(connection) as many:
        response = root_client.get(url)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) >= 6
    assert len(many) == len(few), "\n".join(q["sql"] for q in many.captured_queries)


def test_backup_team_changelist_queries_do_not_grow_with_rows(team_client, db):
    url = changelist_url("backup")
    build_stack(0)
    team_client.get(url)
    with CaptureQueriesContext(connection) as few:
        team_client.get(url)
    for n in range(1, 4):
        build_stack(n)
    with CaptureQueriesContext(connection) as many:
        team_client.get(url)
    assert len(many) == len(few)


def test_delete_page_of_a_target_with_backups_refuses_without_loading_them(root_client, db):
    target = factories.StorageTargetFactory(name="dd-01")
    url = reverse("admin:catalog_storagetarget_delete", args=[target.pk])
    factories.BackupFactory.create_batch(2, storage_target=target)
    with CaptureQueriesContext(connection) as few:
        root_client.get(url)
    factories.BackupFactory.create_batch(12, storage_target=target)
    with CaptureQueriesContext(connection) as many:
        response = root_client.get(url)

    assert len(many) == len(few)
    assert "more than 10 backups (storage_target)" in response.text
    root_client.post(url, {"post": "yes"})
    assert StorageTarget.objects.filter(pk=target.pk).exists()


def test_unused_cost_centre_can_be_deleted(root_client, db):
    cost_center = factories.CostCenterFactory()
    url = reverse("admin:catalog_costcenter_delete", args=[cost_center.pk])
    assert root_client.post(url, {"post": "yes"}).status_code == 302
    assert not CostCenter.objects.filter(pk=cost_center.pk).exists()


# --- Lists show what the backup team needs ----------------------------------------------


def test_sizes_durations_and_ages_are_human_readable(root_client, stack):
    def page(model_name):
        # Columns keep "7.0 GiB" on one line with a no-break space.
        return root_client.get(changelist_url(model_name)).text.replace("\N{NO-BREAK SPACE}", " ")

    jobs = page("job")
    assert "3.0 GiB" in jobs and "1m 30s" in jobs and "Timeout" in jobs
    assert "1.0 GiB" in page("backup")
    assert "10.0 TiB" in page("storagetarget")
    factories.AgentFactory(last_seen_at=timezone.now() - timedelta(days=2, hours=3, minutes=30))
    assert "2d 3h ago" in page("agent")


def test_client_list_shows_the_last_available_backup(root_client, db):
    now = timezone.now()
    backup_client = factories.BackupClientFactory()
    good = factories.BackupFactory(client=backup_client, taken_at=now - timedelta(days=3))
    factories.BackupFactory(
        client=backup_client, taken_at=now - timedelta(hours=1), status=BackupStatus.EXPIRED
    )
    never = factories.BackupClientFactory()

    rows = {c.pk: c for c in root_client.get(changelist_url("backupclient")).context["cl"].result_list}
    assert rows[backup_client.pk].last_backup_at == good.taken_at
    assert rows[never.pk].last_backup_at is None


def test_token_hashes_are_never_shown(root_client, stack):
    agent = stack["agent"]
    agent.issue_token()
    agent.save()
    for url in (changelist_url("agent"), change_url(agent)):
        assert agent.token_hash not in root_client.get(url).text
    token = stack["enrolmenttoken"]
    for url in (changelist_url("enrolmenttoken"), change_url(token)):
        assert token.token_hash not in root_client.get(url).text


@pytest.mark.parametrize("status", AgentStatus.values)
def test_agent_status_filter_matches_the_derived_status(root_client, db, status):
    now = timezone.now()
    silent = now - timedelta(seconds=settings.PORTAL_AGENT_SILENT_AFTER + 60)
    agents = {
        AgentStatus.ONLINE: factories.AgentFactory(last_seen_at=now),
        AgentStatus.SILENT: factories.AgentFactory(last_seen_at=silent),
        AgentStatus.NEVER_SEEN: factories.AgentFactory(last_seen_at=None),
        AgentStatus.REVOKED: factories.AgentFactory(revoked_at=now),
    }
    response = root_client.get(changelist_url("agent"), {"status": status})
    listed = list(response.context["cl"].result_list)
    assert listed == [agents[status]]
    assert listed[0].status == status
    assert AgentStatus(status).label in response.text


def listed_pks(client, model_name: str, **params) -> set[int]:
    return {obj.pk for obj in client.get(changelist_url(model_name), params).context["cl"].result_list}


def test_alert_filters_split_acknowledged_and_resolved(root_client, superuser, db):
    now = timezone.now()
    new = factories.AlertFactory()
    seen = factories.AlertFactory(acknowledged_at=now, acknowledged_by=superuser)
    resolved = factories.AlertFactory(resolved_at=now)

    # Django's EmptyFieldListFilter ("Empty" / "Not empty"), as on the API keys' revoked_at.
    assert listed_pks(root_client, "alert", acknowledged_at__isempty="1") == {new.pk, resolved.pk}
    assert listed_pks(root_client, "alert", acknowledged_at__isempty="0") == {seen.pk}
    assert listed_pks(root_client, "alert", resolved="no") == {new.pk, seen.pk}  # "Open"
    assert listed_pks(root_client, "alert", resolved="yes") == {resolved.pk}  # "Resolved"
    text = root_client.get(changelist_url("alert")).text
    assert "By acknowledged at" in text and "Not empty" in text and "By open or resolved" in text


def test_enrolment_token_filter_on_used(root_client, stack):
    used = stack["enrolmenttoken"]
    waiting = EnrolmentToken.objects.create(
        token_hash="f" * 64,
        application=used.application,
        hostname="new.example.com",
        created_by=used.created_by,
        expires_at=timezone.now() + timedelta(days=1),
    )
    assert listed_pks(root_client, "enrolmenttoken", used_at__isempty="1") == {waiting.pk}
    assert listed_pks(root_client, "enrolmenttoken", used_at__isempty="0") == {used.pk}


def test_alerts_list_unacknowledged_first(root_client, superuser, db):
    now = timezone.now()
    old_open = factories.AlertFactory(created_at=now - timedelta(days=2))
    acknowledged = factories.AlertFactory(
        created_at=now - timedelta(hours=1), acknowledged_at=now, acknowledged_by=superuser
    )
    new_open = factories.AlertFactory(created_at=now - timedelta(hours=2))

    listed = list(root_client.get(changelist_url("alert")).context["cl"].result_list)
    assert listed == [new_open, old_open, acknowledged]


# --- Actions -------------------------------------------------------------------------


def test_revoke_token_action_revokes_live_agents_only(team_client, db):
    earlier = timezone.now() - timedelta(days=1)
    live = factories.AgentFactory()
    already = factories.AgentFactory(revoked_at=earlier)
    before = timezone.now()

    response = team_client.post(
        changelist_url("agent"),
        {"action": "revoke_token", "_selected_action": [live.pk, already.pk]},
        follow=True,
    )

    live.refresh_from_db()
    already.refresh_from_db()
    assert before <= live.revoked_at <= timezone.now()
    assert live.status == AgentStatus.REVOKED
    assert already.revoked_at == earlier
    assert "Revoked the token of 1 agent(s)" in response.text


def test_acknowledge_action_records_who_and_when(team_client, backup_admin, superuser, db):
    earlier = timezone.now() - timedelta(hours=3)
    first, second = factories.AlertFactory.create_batch(2)
    seen = factories.AlertFactory(acknowledged_at=earlier, acknowledged_by=superuser)
    before = timezone.now()

    response = team_client.post(
        changelist_url("alert"),
        {"action": "acknowledge", "_selected_action": [first.pk, second.pk, seen.pk]},
        follow=True,
    )

    assert "Acknowledged 2 alert(s)" in response.text
    for alert in (first, second):
        alert.refresh_from_db()
        assert alert.acknowledged_by == backup_admin
        assert before <= alert.acknowledged_at <= timezone.now()
    seen.refresh_from_db()
    assert (seen.acknowledged_by, seen.acknowledged_at) == (superuser, earlier)
    assert Alert.objects.filter(resolved_at__isnull=False).count() == 0


# --- The lifecycle is not edited by hand ------------------------------------------------


@pytest.mark.parametrize("model_name", ["job", "backup", "alert"])
def test_jobs_backups_and_alerts_cannot_be_deleted(root_client, stack, model_name):
    obj = stack[model_name]
    url = reverse(f"admin:catalog_{model_name}_delete", args=[obj.pk])
    assert root_client.get(url).status_code == 403
    assert root_client.post(url, {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()
    assert "delete_selected" not in root_client.get(changelist_url(model_name)).text


@pytest.mark.parametrize("model", [Job, Backup])
def test_read_only_forms_show_every_field(model):
    model_admin = django_admin.site.get_model_admin(model)
    shown = set(flatten_fieldsets(model_admin.fieldsets))
    assert {f.name for f in model._meta.concrete_fields if not f.auto_created} <= shown


def test_job_change_form_is_read_only(root_client, stack):
    job = stack["job"]
    response = root_client.get(change_url(job))
    assert 'name="state"' not in response.text
    assert 'name="_save"' not in response.text
    root_client.post(change_url(job), {"state": JobState.CANCELLED})
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED


def test_backup_legal_hold_is_editable_and_nothing_else(root_client, stack):
    backup = stack["backup"]
    response = root_client.post(
        change_url(backup),
        {"legal_hold": "on", "legal_hold_reason": "Litigation 2024-17", "sha256": "0" * 64},
    )
    assert response.status_code == 302
    backup.refresh_from_db()
    assert backup.legal_hold and backup.legal_hold_reason == "Litigation 2024-17"
    assert backup.sha256 != "0" * 64


def test_legal_hold_without_a_reason_is_refused_on_the_field(root_client, stack):
    backup = stack["backup"]
    response = root_client.post(change_url(backup), {"legal_hold": "on", "legal_hold_reason": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["legal_hold_reason"]
    assert not Backup.objects.get(pk=backup.pk).legal_hold


# --- Plugin options ------------------------------------------------------------------


def client_form_data(backup_client: BackupClient, **changes) -> dict:
    data = {
        "application": backup_client.application_id,
        "name": backup_client.name,
        "hostname": backup_client.hostname,
        "agent": backup_client.agent_id,
        "plugin": backup_client.plugin,
        "options": json.dumps(backup_client.options),
        "policy": backup_client.policy_id,
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("plugin", "options", "expected"),
    [
        (Plugin.FILES, {"paths": ["srv/data"]}, "paths: 'srv/data' is not absolute"),
        (Plugin.FILES, {"paths": ["/srv"], "colour": "blue"}, "Unknown option(s): colour"),
        (Plugin.POSTGRESQL, {"database": "orders; DROP"}, "database: Use letters, digits"),
        (Plugin.COMMAND, {"backup_argv": ["/bin/dump", "{oops}"], "restore_argv": ["/bin/load"]},
         "backup_argv: Unknown placeholder(s)"),
    ],
)
def test_invalid_plugin_options_show_an_error_and_save_nothing(root_client, stack, plugin, options, expected):
    backup_client = stack["backupclient"]
    before = (backup_client.plugin, backup_client.options)

    response = root_client.post(
        change_url(backup_client), client_form_data(backup_client, plugin=plugin, options=json.dumps(options))
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(expected in message for message in errors["options"]), errors
    backup_client.refresh_from_db()
    assert (backup_client.plugin, backup_client.options) == before


def test_valid_plugin_options_are_saved(root_client, stack):
    backup_client = stack["backupclient"]
    options = {"database": "orders", "port": 5432}
    response = root_client.post(
        change_url(backup_client),
        client_form_data(backup_client, plugin=Plugin.POSTGRESQL, options=json.dumps(options)),
    )
    assert response.status_code == 302
    backup_client.refresh_from_db()
    assert (backup_client.plugin, backup_client.options) == (Plugin.POSTGRESQL, options)


def test_client_status_is_set_on_creation_only(root_client, stack):
    existing = stack["backupclient"]
    data = client_form_data(existing, name="orders-files", status=ClientStatus.ACTIVE)
    assert root_client.post(reverse("admin:catalog_backupclient_add"), data).status_code == 302
    created = BackupClient.objects.get(application=existing.application, name="orders-files")
    assert created.status == ClientStatus.ACTIVE

    root_client.post(change_url(created), client_form_data(created, status=ClientStatus.RETIRED))
    created.refresh_from_db()
    assert created.status == ClientStatus.ACTIVE


def test_agent_form_edits_applications_not_the_token_nor_the_hostname(root_client, stack):
    agent = stack["agent"]
    agent.issue_token()
    agent.save()
    token_hash, hostname = agent.token_hash, agent.hostname
    before = [app.slug for app in agent.applications.all()]
    other = factories.ApplicationFactory()

    response = root_client.post(
        change_url(agent),
        {
            "hostname": "someone-else.example.com",
            "applications": [other.pk],
            "token_hash": "f" * 64,
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    agent = Agent.objects.get(pk=agent.pk)
    assert list(agent.applications.all()) == [other]
    assert (agent.token_hash, agent.hostname) == (token_hash, hostname)
    # Who serves what is the team's decision, and it is on the record.
    trail = [(e.action, e.actor_label, e.message) for e in agent.events.all()]
    assert ("shared", "root", f"Now serves {other.slug}.") in trail
    assert all(("unregistered", "root", f"Stops serving {slug}.") in trail for slug in before)


def test_backup_now_action_queues_a_backup_per_enrolled_client(client, superuser):
    enrolled = factories.BackupClientFactory()
    waiting = factories.BackupClientFactory(agent=None, status=ClientStatus.PENDING_ENROLMENT)
    client.force_login(superuser)

    response = client.post(
        reverse("admin:catalog_backupclient_changelist"),
        {"action": "backup_now", "_selected_action": [enrolled.pk, waiting.pk]},
        follow=True,
    )

    assert response.status_code == 200
    job = Job.objects.get()
    assert (job.client, job.kind, job.trigger, job.requested_by) == (enrolled, "backup", "user", superuser)
    assert "no enrolled agent" in response.content.decode()


def test_backup_now_action_says_already_queued_instead_of_queuing_again(client, superuser):
    enrolled = factories.BackupClientFactory()
    client.force_login(superuser)
    url = reverse("admin:catalog_backupclient_changelist")

    client.post(url, {"action": "backup_now", "_selected_action": [enrolled.pk]})
    response = client.post(url, {"action": "backup_now", "_selected_action": [enrolled.pk]}, follow=True)

    job = Job.objects.get()
    assert f"already queued or running for {enrolled} (job {job.pk}, queued)" in response.content.decode()


def test_a_team_member_reads_an_agents_history(client, backup_admin):
    agent = factories.AgentFactory()
    agents.record(agent, AgentAction.SHARED, user=backup_admin, message="Now serves orders.")
    client.force_login(backup_admin)

    page = client.get(change_url(agent)).content.decode()

    assert "Now serves orders." in page
