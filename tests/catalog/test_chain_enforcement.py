"""Issue #15: the database keeps chains whole, whatever code writes (migration 0013's triggers).

A point an available point builds on cannot leave ``available``; a point cannot be, or
become, available while its base is not; a base's row cannot be deleted (the foreign key).
Through every door: the ORM's ``update()``, ``delete()`` and ``create()``, raw SQL, and the
admin. Runs on whichever database DATABASE_URL names (SQLite and PostgreSQL both).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.urls import reverse
from django.utils import timezone

from catalog.choices import BackupStatus
from catalog.models import Backup
from tests import factories

pytestmark = pytest.mark.django_db

TRIGGERS = {
    "sqlite": {
        "backup_base_stays_available",
        "backup_base_must_be_available_insert",
        "backup_base_must_be_available_update",
    },
    "postgresql": {"backup_chain_whole"},
}


@contextmanager
def refused_by(name: str):
    """The write inside fails with an IntegrityError naming ``name``; the test carries on after it."""
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        yield
    assert name in str(excinfo.value), str(excinfo.value)


@pytest.fixture
def chain():
    """A full and two incrementals, all available."""
    return factories.build_chain(factories.incremental_client(), 3)


def status_of(backup: Backup) -> str:
    return Backup.objects.values_list("status", flat=True).get(pk=backup.pk)


def test_the_triggers_are_in_place():
    # SQLite drops a table's triggers when a migration rebuilds it: this says so at once.
    listing = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'catalog_backup'",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE tgrelid = 'catalog_backup'::regclass "
        "AND NOT tgisinternal",
    }
    with connection.cursor() as cursor:
        cursor.execute(listing[connection.vendor])
        names = {row[0] for row in cursor.fetchall()}
    assert TRIGGERS[connection.vendor] <= names


@pytest.mark.parametrize("status", [BackupStatus.EXPIRED, BackupStatus.DELETED])
def test_an_orm_update_cannot_take_a_base_out_of_available(chain, status):
    full, first, _ = chain
    for base in (full, first):
        with refused_by("backup_base_stays_available"):
            Backup.objects.filter(pk=base.pk).update(status=status, deleted_at=base.expires_at)
        assert status_of(base) == BackupStatus.AVAILABLE


def test_raw_sql_cannot_take_a_base_out_of_available(chain):
    full, _, _ = chain
    with refused_by("backup_base_stays_available"), connection.cursor() as cursor:
        cursor.execute("UPDATE catalog_backup SET status = %s WHERE id = %s", [BackupStatus.EXPIRED, full.pk])
    assert status_of(full) == BackupStatus.AVAILABLE


def test_a_chain_may_leave_leaves_first(chain):
    full, first, second = chain
    for point in (second, first, full):
        Backup.objects.filter(pk=point.pk).update(status=BackupStatus.EXPIRED)
    assert {status_of(point) for point in chain} == {BackupStatus.EXPIRED}


def test_other_changes_to_a_base_are_not_refused(chain):
    full, _, _ = chain
    held = {"legal_hold": True, "legal_hold_reason": "case"}
    Backup.objects.filter(pk=full.pk).update(expires_at=timezone.now(), **held)
    Backup.objects.filter(pk=full.pk).update(status=BackupStatus.AVAILABLE)  # available to available


def test_a_point_cannot_come_back_before_its_base(chain):
    full, first, second = chain
    for point in (second, first, full):
        Backup.objects.filter(pk=point.pk).update(status=BackupStatus.EXPIRED)
    with refused_by("backup_base_must_be_available"):
        Backup.objects.filter(pk=second.pk).update(status=BackupStatus.AVAILABLE)
    for point in (full, first, second):  # oldest first: each base is back before its dependent
        Backup.objects.filter(pk=point.pk).update(status=BackupStatus.AVAILABLE)
    assert {status_of(point) for point in chain} == {BackupStatus.AVAILABLE}


def test_an_available_point_cannot_be_inserted_on_an_expired_base(chain):
    full, first, second = chain
    Backup.objects.filter(pk=second.pk).update(status=BackupStatus.EXPIRED)
    with refused_by("backup_base_must_be_available"):
        factories.BackupFactory(client=second.client, level="incremental", base=second, full=full)
    factories.BackupFactory(client=second.client, level="incremental", base=first, full=full)  # the neighbour


def test_an_available_point_cannot_be_moved_onto_an_expired_base(chain):
    full, first, second = chain
    other = factories.build_chain(second.client, 1)[0]
    Backup.objects.filter(pk=other.pk).update(status=BackupStatus.EXPIRED)
    with refused_by("backup_base_must_be_available"):
        Backup.objects.filter(pk=second.pk).update(base=other)
    assert Backup.objects.get(pk=second.pk).base == first


def test_the_orm_cannot_delete_a_base(chain):
    full, first, _ = chain
    with pytest.raises(ProtectedError), transaction.atomic():
        full.delete()
    with pytest.raises(ProtectedError), transaction.atomic():
        Backup.objects.filter(pk=first.pk).delete()
    assert Backup.objects.filter(pk__in=[full.pk, first.pk]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_raw_sql_cannot_delete_a_base():
    # The foreign keys are checked at commit (deferred): in autocommit that is the statement's end.
    full, first, _ = factories.build_chain(factories.incremental_client(), 3)
    for base in (full, first):
        with pytest.raises(IntegrityError), connection.cursor() as cursor:
            cursor.execute("DELETE FROM catalog_backup WHERE id = %s", [base.pk])
    assert Backup.objects.filter(pk__in=[full.pk, first.pk]).count() == 2


def test_the_admin_cannot_delete_a_base(chain, root_client):
    full, _, _ = chain
    url = reverse("admin:catalog_backup_delete", args=[full.pk])
    assert root_client.post(url, {"post": "yes"}).status_code == 403
    changelist = reverse("admin:catalog_backup_changelist")
    response = root_client.post(changelist, {"action": "delete_selected", "_selected_action": [full.pk]})
    assert response.status_code in (200, 302)
    assert status_of(full) == BackupStatus.AVAILABLE
    assert Backup.objects.filter(pk=full.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite checks row by row, in order")
def test_postgresql_checks_at_the_statements_end_so_one_update_may_expire_a_whole_chain(chain):
    Backup.objects.filter(pk__in=[point.pk for point in chain]).update(status=BackupStatus.EXPIRED)
    assert {status_of(point) for point in chain} == {BackupStatus.EXPIRED}
