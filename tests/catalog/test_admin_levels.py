"""The backup team's admin and backup levels: the policy's scheme, each point's level and chain,
each job's planned level — at a constant number of queries."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog.choices import BackupLevel, JobState, Verification
from catalog.models import Backup, Job
from tests import factories

pytestmark = pytest.mark.django_db


def change_url(obj) -> str:
    return reverse(f"admin:catalog_{obj._meta.model_name}_change", args=[obj.pk])


def changelist(model_name: str) -> str:
    return reverse(f"admin:catalog_{model_name}_changelist")


def chain_for(app=None, length: int = 4, **client_fields):
    """A files client on a weekly policy with a chain of ``length`` points, one a day, newest first last."""
    app = app or factories.ApplicationFactory()
    policy = factories.ProtectionPolicyFactory(full_every_days=7)
    client = factories.BackupClientFactory(application=app, policy=policy, **client_fields)
    return factories.build_chain(client, length, start=timezone.now() - timedelta(days=length))


def chain_field(page: str) -> str:
    """The change page's read-only "chain" field."""
    return page.split('class="form-row field-chain', 1)[1].split('<div class="form-row', 1)[0]


# --- Policies ---------------------------------------------------------------------------------------


def test_policy_form_has_a_backup_levels_fieldset_saying_dumps_are_full(root_client):
    policy = factories.ProtectionPolicyFactory()

    page = root_client.get(change_url(policy)).content.decode()

    section = page.split(">Backup levels<", 1)[1].split("</fieldset>", 1)[0]
    assert 'name="full_every_days"' in section and 'name="full_every_backups"' in section
    assert "database dumps (PostgreSQL, MySQL) and custom commands are always full backups" in section


def test_policy_form_saves_the_levels(root_client):
    policy = factories.ProtectionPolicyFactory()
    data = {
        "name": policy.name, "description": "", "storage_target": policy.storage_target_id,
        "price_per_gb_month": "0.05", "schedule": "0 2 * * *", "retention_days": 30, "rpo_hours": 26,
        "restore_test_interval_days": 30, "max_retries": 3, "full_every_days": 7, "full_every_backups": "",
    }  # fmt: skip

    response = root_client.post(change_url(policy), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    policy.refresh_from_db()
    assert (policy.full_every_days, policy.full_every_backups) == (7, None)
    data.update(full_every_backups=251)
    refused = root_client.post(change_url(policy), data)
    assert refused.status_code == 200 and refused.context["adminform"].form.errors["full_every_backups"]


def test_policy_list_shows_each_level_scheme(root_client):
    factories.ProtectionPolicyFactory(name="Weekly", full_every_days=7)
    factories.ProtectionPolicyFactory(name="Counted", full_every_backups=7)
    factories.ProtectionPolicyFactory(name="Both", full_every_days=1, full_every_backups=10)
    factories.ProtectionPolicyFactory(name="Plain")

    page = root_client.get(changelist("protectionpolicy")).content.decode()

    for scheme in ("full every 7 days", "full every 7 backups", "full every day or 10 backups", "fulls only"):
        assert scheme in page


# --- Backups -----------------------------------------------------------------------------------------


def test_backup_list_shows_the_level_with_a_link_to_the_base(root_client):
    full, first, *_ = chain_for()

    page = root_client.get(changelist("backup")).content.decode()

    on = "Incremental\N{NO-BREAK SPACE}on\N{NO-BREAK SPACE}"  # kept on one line
    assert f'{on}<a href="{change_url(full)}">#{full.pk}</a>' in page
    assert f'{on}<a href="{change_url(first)}">#{first.pk}</a>' in page


def test_backup_list_filters_by_level(root_client):
    points = chain_for()

    incrementals = root_client.get(changelist("backup"), {"level": BackupLevel.INCREMENTAL})
    fulls = root_client.get(changelist("backup"), {"level": BackupLevel.FULL})

    assert {b.pk for b in incrementals.context["cl"].result_list} == {p.pk for p in points[1:]}
    assert {b.pk for b in fulls.context["cl"].result_list} == {points[0].pk}


def test_backup_page_lists_the_chain_up_to_the_point_and_what_depends_on_it(root_client):
    full, first, second, third = chain_for()

    field = chain_field(root_client.get(change_url(second)).content.decode())

    assert "<strong>Restorable</strong>: its chain of 3 points is whole." in field
    needs, later = field.split("Restoring it needs, oldest first:", 1)[1].split("later point", 1)
    assert [int(n) for n in re.findall(r">#(\d+)</a>", needs)] == [full.pk, first.pk, second.pk]
    assert "(this point)" in needs
    assert [int(n) for n in re.findall(r">#(\d+)</a>", later)] == [third.pk]
    assert "1 later point of the chain needs it" in field


def test_a_full_stands_alone_and_lists_its_dependents(root_client):
    full, first, second, third = chain_for()

    field = chain_field(root_client.get(change_url(full)).content.decode())

    assert "a full, it stands alone." in field
    assert "Restoring it needs" not in field
    assert "3 later points of the chain need it" in field
    assert [int(n) for n in re.findall(r">#(\d+)</a>", field)] == [first.pk, second.pk, third.pk]


def test_a_broken_chain_names_the_point_that_breaks_it(root_client):
    full, first, second, third = chain_for()
    Backup.objects.filter(pk=first.pk).update(verification=Verification.FAILED)

    field = chain_field(root_client.get(change_url(third)).content.decode())

    assert f"<strong>Not restorable</strong>: chain broken: backup {first.pk} failed verification." in field
    assert "failed verification" in field.split(f">#{first.pk}</a>", 1)[1].split("</li>", 1)[0]


def test_the_newest_point_with_nothing_after_it(root_client):
    *_, third = chain_for()

    field = chain_field(root_client.get(change_url(third)).content.decode())

    assert "No later point builds on it." in field


def test_legal_hold_help_says_a_hold_holds_the_chain(root_client):
    *_, point = chain_for()

    page = root_client.get(change_url(point)).content.decode()

    assert "A hold holds the chain" in page


def test_backup_page_queries_do_not_grow_with_the_chain(root_client):
    short = chain_for(length=3)
    long = chain_for(length=40)
    root_client.get(change_url(short[-1]))  # warm caches (content types, session)
    with CaptureQueriesContext(connection) as few:
        assert root_client.get(change_url(short[1])).status_code == 200
    with CaptureQueriesContext(connection) as many:
        assert root_client.get(change_url(long[20])).status_code == 200

    assert len(many) == len(few), "\n".join(q["sql"] for q in many.captured_queries)


def test_backup_list_queries_do_not_grow_with_chains(root_client):
    chain_for(length=3)
    url = changelist("backup")
    root_client.get(url)
    with CaptureQueriesContext(connection) as few:
        root_client.get(url)
    for _ in range(3):
        chain_for(length=6)
    with CaptureQueriesContext(connection) as many:
        response = root_client.get(url)

    assert len(response.context["cl"].result_list) == 21
    assert len(many) == len(few)


def test_owners_with_view_rights_see_no_other_applications_chain(client, owner, app, other_app):
    from django.contrib.auth.models import Permission

    owner.is_staff = True
    owner.save()
    owner.user_permissions.add(Permission.objects.get(codename="view_backup"))
    client.force_login(owner)
    mine = chain_for(app)
    theirs = chain_for(other_app)

    listed = client.get(changelist("backup"), {"level": BackupLevel.INCREMENTAL})
    assert {b.pk for b in listed.context["cl"].result_list} == {p.pk for p in mine[1:]}
    assert client.get(change_url(theirs[-1])).status_code in (302, 404)
    assert client.get(change_url(mine[-1])).status_code == 200


# --- Jobs ----------------------------------------------------------------------------------------------


def test_job_page_shows_the_planned_level_base_and_reason(root_client):
    *_, base = chain_for(length=2)
    incremental = factories.JobFactory(
        client=base.client, state=JobState.RUNNING, level=BackupLevel.INCREMENTAL, base=base,
        started_at=timezone.now(), lease_expires_at=timezone.now() + timedelta(minutes=5),
    )  # fmt: skip
    full = factories.JobFactory(
        client=base.client, state=JobState.SUCCEEDED, level=BackupLevel.FULL,
        level_reason="the policy's weekly full is due",
    )  # fmt: skip

    incremental_page = root_client.get(change_url(incremental)).content.decode()
    full_page = root_client.get(change_url(full)).content.decode()

    section = incremental_page.split(">Backup level<", 1)[1].split("</fieldset>", 1)[0]
    assert "Incremental" in section and change_url(base) in section
    assert "the policy&#x27;s weekly full is due" in full_page


def test_job_list_shows_and_filters_the_level(root_client):
    *_, base = chain_for(length=2)
    planned = factories.JobFactory(client=base.client, level=BackupLevel.INCREMENTAL, base=base)

    response = root_client.get(changelist("job"), {"level": BackupLevel.INCREMENTAL})

    assert [job.pk for job in response.context["cl"].result_list] == [planned.pk]
    assert Job.objects.filter(level=BackupLevel.INCREMENTAL).count() == 1
