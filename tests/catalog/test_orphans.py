"""Orphan archives (issue #12): the agent lists what it wrote, the portal records what no backup explains."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog.agent_api.serializers import MAX_ARCHIVES_PER_REPORT, MAX_BYTES
from catalog.choices import BackupStatus
from catalog.models import OrphanArchive
from catalog.services import orphans
from tests import factories
from tests.helpers import agent_client

POLL = "/api/agent/v1/poll"
INSTANCE = {"id": "0123456789abcdef0123456789abcdef", "host": "db01.example.com"}


def body(archives=None, **extra) -> dict:
    """A poll as today's agents send it; with ``archives`` when given."""
    payload = {
        "version": "1.2.0",
        "protocol": 2,
        "plugins": ["files"],
        "running": [],
        "allow": {
            "paths": ["/srv"],
            "restore_roots": [],
            "commands": [],
            "databases": [],
            "storage": ["/mnt"],
        },
        "instance": INSTANCE,
        **extra,
    }
    if archives is not None:
        payload["archives"] = archives
    return payload


def archive(location: str, size: int = 10) -> dict:
    return {"location": location, "size": size}


def orphan_rows(agent) -> dict[str, OrphanArchive]:
    return {row.location: row for row in OrphanArchive.objects.filter(agent=agent)}


@pytest.fixture
def estate(mine):
    return mine


@pytest.fixture
def api(estate):
    client, _ = agent_client(estate.agent)
    return client


def age(agent, hours: float) -> None:
    """Move this agent's orphans ``hours`` into the past (found, seen and due earlier)."""
    for row in OrphanArchive.objects.filter(agent=agent):
        delta = timedelta(hours=hours)
        row.found_at -= delta
        row.last_seen_at -= delta
        row.removal_due_at -= delta
        row.save()


# --- the service -------------------------------------------------------------------


def test_known_archives_are_ignored_whatever_the_backups_status(estate):
    expired = factories.BackupFactory(
        client=estate.client, status=BackupStatus.EXPIRED, location="orders/a/job-2"
    )
    now = timezone.now()

    remove = orphans.record_report(
        estate.agent, [archive(estate.backup.location), archive(expired.location)], now
    )

    assert remove == []
    assert not OrphanArchive.objects.exists()


def test_a_deleted_backups_location_is_no_longer_known(estate):
    gone = factories.BackupFactory(
        client=estate.client,
        status=BackupStatus.DELETED,
        location="orders/a/job-3",
        taken_at=timezone.now() - timedelta(days=40),
        deleted_at=timezone.now(),
    )

    orphans.record_report(estate.agent, [archive(gone.location)], timezone.now())

    assert list(orphan_rows(estate.agent)) == [gone.location]


def test_new_orphan_is_recorded_with_the_due_time_from_the_setting(estate, settings):
    settings.PORTAL_ORPHAN_GRACE_HOURS = 5
    now = timezone.now()

    remove = orphans.record_report(estate.agent, [archive("orders/web/job-9", 1234)], now)

    row = OrphanArchive.objects.get()
    assert (row.agent, row.location, row.size_bytes) == (estate.agent, "orders/web/job-9", 1234)
    assert row.found_at == row.last_seen_at == now
    assert row.removal_due_at == now + timedelta(hours=5)
    assert remove == []  # not due yet


def test_a_re_report_updates_last_seen_and_size_but_not_found_or_due(estate):
    first = timezone.now()
    orphans.record_report(estate.agent, [archive("orders/web/job-9", 10)], first)
    later = first + timedelta(hours=1)

    orphans.record_report(estate.agent, [archive("orders/web/job-9", 99)], later)

    row = OrphanArchive.objects.get()
    assert (row.found_at, row.last_seen_at, row.size_bytes) == (first, later, 99)
    assert row.removal_due_at == first + timedelta(hours=72)


def test_an_orphan_no_longer_listed_is_forgotten(estate):
    now = timezone.now()
    orphans.record_report(estate.agent, [archive("orders/web/job-8"), archive("orders/web/job-9")], now)

    orphans.record_report(estate.agent, [archive("orders/web/job-9")], now + timedelta(hours=1))
    assert list(orphan_rows(estate.agent)) == ["orders/web/job-9"]

    orphans.record_report(estate.agent, [], now + timedelta(hours=2))  # an empty list: none exist
    assert not OrphanArchive.objects.exists()


def test_an_orphan_adopted_by_a_late_backup_is_forgotten_at_the_next_report(estate):
    now = timezone.now()
    orphans.record_report(estate.agent, [archive("orders/web/job-9")], now)
    factories.BackupFactory(client=estate.client, location="orders/web/job-9")

    orphans.record_report(estate.agent, [archive("orders/web/job-9")], now + timedelta(hours=1))

    assert not OrphanArchive.objects.exists()


def test_due_orphans_are_returned_and_an_adopted_one_is_not(estate, monkeypatch):
    now = timezone.now()
    orphans.record_report(estate.agent, [archive("orders/web/job-8"), archive("orders/web/job-9")], now)
    later = now + timedelta(hours=72)
    assert orphans.record_report(
        estate.agent, [archive("orders/web/job-8"), archive("orders/web/job-9")], later
    ) == ["orders/web/job-8", "orders/web/job-9"]

    # A late report records job-9 between the matching and the answer: re-checked, not removed.
    original = orphans.known_locations
    calls = []

    def late_report_in_between(agent, locations):
        calls.append(set(locations))
        if len(calls) == 2:  # the re-check before answering
            factories.BackupFactory(client=estate.client, location="orders/web/job-9")
        return original(agent, locations)

    monkeypatch.setattr(orphans, "known_locations", late_report_in_between)
    remove = orphans.record_report(
        estate.agent, [archive("orders/web/job-8"), archive("orders/web/job-9")], later
    )

    assert remove == ["orders/web/job-8"]
    assert list(orphan_rows(estate.agent)) == ["orders/web/job-8"]


# --- the poll ---------------------------------------------------------------------------------


def test_a_poll_with_archives_records_them_and_answers_remove_archives(api, estate):
    response = api.post(
        POLL, body([archive(estate.backup.location), archive("orders/web/job-9", 7)]), format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["remove_archives"] == []
    assert orphan_rows(estate.agent)["orders/web/job-9"].size_bytes == 7


def test_due_orphans_are_asked_for_removal_only_in_the_answer_to_an_archives_poll(api, estate):
    api.post(POLL, body([archive("orders/web/job-9")]), format="json")
    age(estate.agent, 73)

    idle = api.post(POLL, body(), format="json")
    report = api.post(POLL, body([archive("orders/web/job-9")]), format="json")

    assert idle.status_code == report.status_code == 200
    assert "remove_archives" not in idle.json()
    assert report.json()["remove_archives"] == ["orders/web/job-9"]
    # The agent removed it: the next report leaves it out, and the row goes.
    after = api.post(POLL, body([]), format="json")
    assert after.json()["remove_archives"] == []
    assert not OrphanArchive.objects.exists()


def test_an_idle_poll_runs_no_orphan_query(api, estate, django_assert_num_queries):
    api.post(POLL, body(), format="json")  # binds the instance: the steady state from here on
    # An idle poll's count (the agent and its open jobs, by its token: tests/catalog/test_idle_poll.py);
    # the body has no "archives".
    with django_assert_num_queries(1) as captured:
        response = api.post(POLL, body(), format="json")
    assert response.status_code == 200
    assert "remove_archives" not in response.json()
    assert not [q for q in captured.captured_queries if "orphan" in q["sql"].lower()]


def test_a_report_poll_costs_a_constant_number_of_queries(api, estate):
    def report(n: int):
        listed = [archive(estate.backup.location)] + [archive(f"orders/web/job-{i}") for i in range(n)]
        with CaptureQueriesContext(connection) as captured:
            assert api.post(POLL, body(listed), format="json").status_code == 200
        return len(captured)

    api.post(POLL, body(), format="json")  # binds the instance: the steady state from here on
    assert report(2) == report(2)  # first recorded, then updated
    age(estate.agent, 100)
    assert report(40) == report(40)


@pytest.mark.parametrize(
    "archives, field",
    [
        (None, "archives"),
        ("orders/web/job-9", "archives"),
        ({"location": "orders/web/job-9", "size": 1}, "archives"),
        (["orders/web/job-9"], "archives"),
        ([{"size": 1}], "location"),
        ([{"location": "orders/web/job-9"}], "size"),
        ([archive("/etc/passwd")], "location"),
        ([archive("orders/../../etc")], "location"),
        ([archive("orders/web/job-9\x00")], "location"),
        ([archive("")], "location"),
        ([archive("orders/web/job-9/")], "location"),
        ([archive("./orders/web/job-9")], "location"),
        ([archive("orders//web/job-9")], "location"),
        ([archive("x" * 1001)], "location"),
        ([archive("orders/web/job-9", -1)], "size"),
        ([archive("orders/web/job-9", MAX_BYTES + 1)], "size"),
        ([archive("orders/web/job-9", 1.0)], "size"),
        ([archive("orders/web/job-9", "1")], None),  # DRF reads "1" as 1: accepted
    ],
)
def test_bad_lists_are_400_and_change_nothing(api, estate, archives, field):
    orphans.record_report(estate.agent, [archive("orders/web/job-1")], timezone.now())
    payload = body()
    payload["archives"] = archives

    response = api.post(POLL, payload, format="json")

    if field is None:
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.content
    assert field in str(response.json()["errors"])
    assert list(orphan_rows(estate.agent)) == ["orders/web/job-1"]


def test_a_list_longer_than_the_limit_is_400(api, estate):
    too_many = [archive(f"orders/web/job-{i}") for i in range(MAX_ARCHIVES_PER_REPORT + 1)]
    response = api.post(POLL, body(too_many), format="json")
    assert response.status_code == 400
    assert "archives" in response.json()["errors"]
    assert not OrphanArchive.objects.exists()


def test_the_largest_list_and_size_are_accepted(api, estate):
    listed = [archive(f"orders/web/job-{i}", MAX_BYTES) for i in range(MAX_ARCHIVES_PER_REPORT)]
    response = api.post(POLL, body(listed), format="json")
    assert response.status_code == 200, response.content[:500]
    assert OrphanArchive.objects.filter(agent=estate.agent).count() == MAX_ARCHIVES_PER_REPORT


# --- tenancy ----------------------------------------------------------------------------------


def test_an_agent_cannot_make_another_agents_backups_look_like_orphans(api, estate, other_app):
    theirs = factories.build_estate(other_app)
    their_orphan = OrphanArchive.objects.create(
        agent=theirs.agent, location="payroll/x/job-5", removal_due_at=timezone.now() - timedelta(hours=1)
    )

    # Their backup's location in my list is not "known" for me: it is my orphan, on my storage.
    response = api.post(
        POLL, body([archive(theirs.backup.location), archive("payroll/x/job-5")]), format="json"
    )
    assert response.status_code == 200
    assert set(orphan_rows(estate.agent)) == {theirs.backup.location, "payroll/x/job-5"}
    # Their rows are untouched by my report, and my answer never carries their due orphan.
    assert response.json()["remove_archives"] == []
    assert list(orphan_rows(theirs.agent)) == ["payroll/x/job-5"]
    assert OrphanArchive.objects.get(pk=their_orphan.pk).removal_due_at < timezone.now()

    # My empty report forgets only my orphans.
    api.post(POLL, body([]), format="json")
    assert not orphan_rows(estate.agent)
    assert list(orphan_rows(theirs.agent)) == ["payroll/x/job-5"]

    # Their own report still finds their backup known and their orphan due.
    their_api, _ = agent_client(theirs.agent)
    answer = their_api.post(
        POLL,
        body([archive(theirs.backup.location), archive("payroll/x/job-5")], instance=None),
        format="json",
    )
    assert answer.json()["remove_archives"] == ["payroll/x/job-5"]


def test_my_backups_do_not_explain_another_agents_archives(estate, other_app):
    theirs = factories.build_estate(other_app)
    orphans.record_report(theirs.agent, [archive(estate.backup.location)], timezone.now())
    assert list(orphan_rows(theirs.agent)) == [estate.backup.location]


def test_a_live_backup_of_any_agent_is_never_asked_for_removal(estate, other_app):
    """A misconfigured agent listing a shared storage root must not delete others' backups."""
    theirs = factories.build_estate(other_app)
    now = timezone.now()
    orphans.record_report(estate.agent, [archive(theirs.backup.location), archive("orders/web/job-9")], now)

    remove = orphans.record_report(
        estate.agent,
        [archive(theirs.backup.location), archive("orders/web/job-9")],
        now + timedelta(hours=72),
    )

    assert remove == ["orders/web/job-9"]
    assert theirs.backup.location in orphan_rows(estate.agent)  # still on the team's list


# --- the admin --------------------------------------------------------------------------------


def test_admin_lists_orphans_read_only_with_constant_queries(root_client, estate, other_app):
    theirs = factories.build_estate(other_app)
    url = reverse("admin:catalog_orphanarchive_changelist")
    now = timezone.now()
    orphans.record_report(estate.agent, [archive("orders/web/job-1")], now)
    orphans.record_report(theirs.agent, [archive("payroll/x/job-1")], now)  # two agents: the filter shows
    root_client.get(url)
    with CaptureQueriesContext(connection) as few:
        assert root_client.get(url).status_code == 200
    orphans.record_report(estate.agent, [archive(f"orders/web/job-{i}") for i in range(5)], now)
    orphans.record_report(theirs.agent, [archive(f"payroll/x/job-{i}") for i in range(3)], now)
    with CaptureQueriesContext(connection) as many:
        response = root_client.get(url)

    assert len(many) == len(few), "\n".join(q["sql"] for q in many.captured_queries)
    assert len(response.context["cl"].result_list) == 8
    assert f"{estate.agent} (5)" in response.text  # the orphans count per agent (facets)
    filtered = root_client.get(url, {"agent__id__exact": theirs.agent.pk})
    assert {row.location for row in filtered.context["cl"].result_list} == {
        f"payroll/x/job-{i}" for i in range(3)
    }
    row = OrphanArchive.objects.first()
    change = root_client.get(reverse("admin:catalog_orphanarchive_change", args=[row.pk]))
    assert change.status_code == 200
    assert not change.context["has_change_permission"]
    assert root_client.get(reverse("admin:catalog_orphanarchive_add")).status_code == 403


def test_owners_do_not_see_orphans(client, owner, estate):
    owner.is_staff = True
    owner.save()
    client.force_login(owner)
    orphans.record_report(estate.agent, [archive("orders/web/job-1")], timezone.now())
    response = client.get(reverse("admin:catalog_orphanarchive_changelist"))
    assert response.status_code == 403 or not list(response.context["cl"].result_list)
