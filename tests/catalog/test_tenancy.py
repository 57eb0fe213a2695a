"""Who sees what: ``visible_to`` on every catalog queryset.

Two tenants, ``app`` (owned by ``owner``) and ``other_app`` (owned by
``other_owner``), each with one of everything. Every assertion compares the
exact set of primary keys, so "sees all of mine" and "sees nothing of theirs"
are checked at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group

from catalog.choices import JobKind
from catalog.models import (
    Agent,
    Alert,
    Application,
    Backup,
    BackupClient,
    CostCenter,
    EnrolmentToken,
    Job,
    ProtectionPolicy,
    StorageTarget,
)
from catalog.services import agents
from tests import factories

pytestmark = pytest.mark.django_db

# Models whose rows belong to an application.
TENANT_MODELS = [CostCenter, Application, Agent, BackupClient, Job, Backup, Alert, EnrolmentToken]
# Shared reference data: policies (published tiers) and storage (the backup team's business).
ALL_MODELS = [*TENANT_MODELS, ProtectionPolicy, StorageTarget]


@dataclass
class Tenant:
    """The primary keys of one application's rows, by model."""

    app: Application
    pks: dict[type, set[int]] = field(default_factory=dict)


def populate(app: Application) -> Tenant:
    """One of everything for ``app``: a client with a backup, a restore of it, an alert, a token."""
    backup = factories.BackupFactory(client__application=app)
    client = backup.client
    restore = factories.JobFactory(kind=JobKind.RESTORE, client=client, backup=backup)
    alert = factories.AlertFactory(client=client)
    token, _ = agents.issue_enrolment_token(application=app, hostname=f"new-{app.slug}.example.com")
    return Tenant(
        app=app,
        pks={
            CostCenter: {app.cost_center_id},
            Application: {app.pk},
            Agent: {client.agent_id},
            BackupClient: {client.pk},
            Job: {backup.job_id, restore.pk},
            Backup: {backup.pk},
            Alert: {alert.pk},
            EnrolmentToken: {token.pk},
        },
    )


def visible_pks(model, user) -> list[int]:
    """A list, not a set: a duplicate row would show up as a repeated key."""
    return sorted(model.objects.visible_to(user).values_list("pk", flat=True))


def all_pks(model) -> list[int]:
    return sorted(model.objects.values_list("pk", flat=True))


def fresh(user):
    """The user as a new request would load it: nothing cached on the instance."""
    return get_user_model().objects.get(pk=user.pk)


@pytest.fixture
def mine(app) -> Tenant:
    return populate(app)


@pytest.fixture
def theirs(other_app) -> Tenant:
    return populate(other_app)


@pytest.fixture
def group_member(db):
    """Owns ``group_app`` only through membership of its owner group."""
    user = factories.UserFactory(username="group_member")
    user.groups.add(Group.objects.create(name="orders-dba"))
    return user


@pytest.fixture
def group_owned(group_member) -> Tenant:
    app = factories.ApplicationFactory(slug="ledger", owner_group=group_member.groups.get())
    return populate(app)


# --- Owners ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m.__name__)
def test_owner_sees_their_objects_and_nothing_of_another_application(model, owner, mine, theirs):
    assert visible_pks(model, owner) == sorted(mine.pks[model])


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m.__name__)
def test_other_owner_sees_nothing_of_the_first_application(model, other_owner, mine, theirs):
    assert visible_pks(model, other_owner) == sorted(theirs.pks[model])


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m.__name__)
def test_member_of_the_owner_group_sees_the_application(model, group_member, group_owned, mine):
    assert visible_pks(model, group_member) == sorted(group_owned.pks[model])


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m.__name__)
def test_owner_of_no_application_sees_nothing(model, mine, theirs):
    bystander = factories.UserFactory(username="bystander")
    assert visible_pks(model, bystander) == []


def test_owner_sees_only_applications_they_own_not_their_neighbours(owner, app, other_app):
    """Sharing a cost centre with another application does not open that application."""
    shared = factories.ApplicationFactory(cost_center=app.cost_center, owners=[factories.UserFactory()])
    assert visible_pks(Application, owner) == [app.pk]
    assert visible_pks(CostCenter, owner) == [app.cost_center_id]
    assert shared.pk not in visible_pks(Application, owner)


# --- No duplicates -----------------------------------------------------------------------


def test_agent_serving_two_of_the_owners_applications_appears_once(owner, app):
    second = factories.ApplicationFactory(owners=[owner])
    agent = factories.AgentFactory(applications=[app, second])
    assert visible_pks(Agent, owner) == [agent.pk]
    assert Agent.objects.visible_to(owner).count() == 1


def test_cost_centre_of_two_owned_applications_appears_once(owner, app):
    factories.ApplicationFactory(cost_center=app.cost_center, owners=[owner])
    assert visible_pks(CostCenter, owner) == [app.cost_center_id]


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m.__name__)
def test_owner_both_directly_and_by_group_sees_each_row_once(model, group_member, group_owned):
    group_owned.app.owners.add(group_member)
    assert visible_pks(model, group_member) == sorted(group_owned.pks[model])


# --- Shared reference data -----------------------------------------------------------------


def test_policies_are_published_to_every_signed_in_owner(owner, other_owner, mine, theirs):
    """Service tiers are chosen from a shared menu, including tiers only the other tenant uses today."""
    everything = all_pks(ProtectionPolicy)
    assert len(everything) == 2
    assert visible_pks(ProtectionPolicy, owner) == everything
    assert visible_pks(ProtectionPolicy, other_owner) == everything


def test_storage_targets_are_visible_to_the_backup_team_only(owner, backup_admin, mine, theirs):
    assert visible_pks(StorageTarget, owner) == []
    assert visible_pks(StorageTarget, backup_admin) == all_pks(StorageTarget)
    assert len(all_pks(StorageTarget)) == 2


# --- Backup team and nobody -----------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("persona", ["backup_admin", "superuser"])
def test_backup_team_sees_everything(model, persona, request, mine, theirs):
    user = request.getfixturevalue(persona)
    assert visible_pks(model, user) == all_pks(model)
    assert len(all_pks(model)) >= 2


@pytest.fixture(params=["anonymous", "inactive_owner", "inactive_superuser", "inactive_backup_admin"])
def nobody(request, owner, superuser, backup_admin):
    """Someone who must see nothing at all, even if they once owned everything."""
    if request.param == "anonymous":
        return AnonymousUser()
    user = {"inactive_owner": owner, "inactive_superuser": superuser, "inactive_backup_admin": backup_admin}[
        request.param
    ]
    user.is_active = False
    user.save(update_fields=["is_active"])
    return fresh(user)


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_anonymous_and_inactive_users_see_nothing(model, nobody, mine, theirs):
    assert visible_pks(model, nobody) == []


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_no_user_at_all_sees_nothing(model, mine):
    assert visible_pks(model, None) == []


# --- Query counts ---------------------------------------------------------------------------


def test_owners_backup_list_is_one_query_plus_the_team_check(owner, mine, theirs, django_assert_num_queries):
    owner = fresh(owner)
    with django_assert_num_queries(2) as captured:  # backup-team membership, then the rows
        backups = list(Backup.objects.visible_to(owner))
    assert [b.pk for b in backups] == sorted(mine.pks[Backup])
    # Tenancy is a subquery in the one SELECT, not ids fetched into Python first.
    assert "catalog_application" in captured.captured_queries[-1]["sql"]


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_owners_list_of_any_model_takes_at_most_two_queries(
    model, owner, mine, theirs, django_assert_max_num_queries
):
    owner = fresh(owner)
    with django_assert_max_num_queries(2):
        list(model.objects.visible_to(owner))


def test_query_count_does_not_grow_with_the_number_of_owned_applications(
    owner, mine, django_assert_num_queries
):
    for _ in range(3):
        populate(factories.ApplicationFactory(owners=[owner]))
    owner = fresh(owner)
    with django_assert_num_queries(2):
        assert len(list(Backup.objects.visible_to(owner))) == 4


def test_superusers_list_is_a_single_query(superuser, mine, theirs, django_assert_num_queries):
    root = fresh(superuser)
    with django_assert_num_queries(1):  # no membership check: is_superuser is on the row
        backups = list(Backup.objects.visible_to(root))
    assert len(backups) == 2


def test_backup_team_check_is_asked_once_per_user_object(backup_admin, mine, django_assert_num_queries):
    admin = fresh(backup_admin)
    with django_assert_num_queries(3):  # membership once, then one query per list
        list(Backup.objects.visible_to(admin))
        list(Job.objects.visible_to(admin))
