"""factory_boy factories for the catalog. Tests build their data here, never from fixtures."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from catalog import models
from catalog.choices import AlertKind, AlertSeverity, BackupStatus, ClientStatus, JobKind, JobState, Plugin


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class CostCenterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.CostCenter

    code = factory.Sequence(lambda n: f"CC{n:04d}")
    name = factory.Sequence(lambda n: f"Cost centre {n}")
    owner_email = factory.Sequence(lambda n: f"finance{n}@example.com")


class ApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Application
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"app-{n}")
    name = factory.Sequence(lambda n: f"Application {n}")
    cost_center = factory.SubFactory(CostCenterFactory)

    @factory.post_generation
    def owners(self, create, extracted, **kwargs):
        if create and extracted:
            self.owners.add(*extracted)


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Agent
        skip_postgeneration_save = True

    hostname = factory.Sequence(lambda n: f"host{n}.example.com")
    version = "0.1.0"
    plugins = factory.LazyFunction(lambda: ["files", "postgresql", "mysql", "command"])
    enrolled_at = factory.LazyFunction(timezone.now)
    last_seen_at = factory.LazyFunction(timezone.now)

    @factory.post_generation
    def applications(self, create, extracted, **kwargs):
        if create and extracted:
            self.applications.add(*extracted)


class StorageTargetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.StorageTarget

    name = factory.Sequence(lambda n: f"target-{n}")
    location = factory.Sequence(lambda n: f"/mnt/protection/{n}")
    capacity_bytes = 10 * 1024**4


class ProtectionPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.ProtectionPolicy

    name = factory.Sequence(lambda n: f"Policy {n}")
    schedule = "0 2 * * *"
    retention_days = 30
    rpo_hours = 26
    storage_target = factory.SubFactory(StorageTargetFactory)
    price_per_gb_month = Decimal("0.0500")


class BackupClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.BackupClient
        skip_postgeneration_save = True

    application = factory.SubFactory(ApplicationFactory)
    agent = factory.SubFactory(AgentFactory)
    name = factory.Sequence(lambda n: f"client-{n}")
    hostname = factory.LazyAttribute(lambda c: c.agent.hostname if c.agent else "new.example.com")
    plugin = Plugin.FILES
    options = factory.LazyFunction(lambda: {"paths": ["/srv/data"]})
    policy = factory.SubFactory(ProtectionPolicyFactory)
    status = ClientStatus.ACTIVE

    @factory.post_generation
    def link_agent(self, create, extracted, **kwargs):
        # An agent serves the applications of its clients.
        if create and self.agent_id:
            self.agent.applications.add(self.application)


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Job

    kind = JobKind.BACKUP
    client = factory.SubFactory(BackupClientFactory)
    agent = factory.LazyAttribute(lambda j: j.client.agent)
    state = JobState.QUEUED


class BackupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Backup

    client = factory.SubFactory(BackupClientFactory)
    job = factory.SubFactory(
        JobFactory,
        client=factory.SelfAttribute("..client"),
        state=JobState.SUCCEEDED,
    )
    storage_target = factory.LazyAttribute(lambda b: b.client.policy.storage_target)
    taken_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda b: b.taken_at + timedelta(days=30))
    size_bytes = 1024**3
    stored_size_bytes = factory.SelfAttribute("size_bytes")
    location = factory.LazyAttribute(lambda b: f"{b.client.application.slug}/{b.client.name}/job")
    sha256 = factory.Sequence(lambda n: hashlib.sha256(str(n).encode()).hexdigest())
    status = BackupStatus.AVAILABLE


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Alert

    kind = AlertKind.JOB_FAILED
    severity = AlertSeverity.WARNING
    key = factory.Sequence(lambda n: f"test:{n}")
    client = factory.SubFactory(BackupClientFactory)
    application = factory.SelfAttribute("client.application")
    message = "Backup failed: permission denied"


# --- Estates: an application's agent, protected client and recent recovery point -----------------


@dataclass
class Estate:
    agent: models.Agent
    client: models.BackupClient
    backup: models.Backup


def build_estate(application, *, plugin: str = Plugin.FILES, options: dict | None = None) -> Estate:
    """An agent serving ``application``, a client of it on that agent, and one available backup."""
    agent = AgentFactory(applications=[application])
    client = BackupClientFactory(
        application=application,
        agent=agent,
        plugin=plugin,
        options=options or {"paths": ["/srv/data"]},
    )
    return Estate(agent=agent, client=client, backup=BackupFactory(client=client))


# --- Chains: fulls and incrementals (issue #15) ------------------------------------------------


def incremental_policy(**fields) -> models.ProtectionPolicy:
    """A policy that takes incrementals between fulls (a full every 7 backups unless told otherwise)."""
    fields.setdefault("full_every_backups", 7)
    return ProtectionPolicyFactory(**fields)


def incremental_client(**fields) -> models.BackupClient:
    """A files client on an incremental policy, on an agent that speaks protocol 4."""
    fields.setdefault("policy", incremental_policy())
    fields.setdefault("agent", AgentFactory(protocol=models.Agent.INCREMENTAL_PROTOCOL))
    return BackupClientFactory(**fields)


def file_list(n: int = 0) -> dict:
    """The fields of a recovery point whose file list the portal holds."""
    return {
        "index_entries": 10,
        "index_kind": "files",
        "index_size_bytes": 4567,
        "index_sha256": hashlib.sha256(f"index {n}".encode()).hexdigest(),
    }


def build_chain(client, length: int, *, start=None, every: timedelta = timedelta(days=1), **fields):
    """A full and ``length - 1`` incrementals of ``client``, one every ``every`` from ``start``, oldest
    first, each building on the one before and each with a file list."""
    start = start or timezone.now() - every * length
    points: list[models.Backup] = []
    for n in range(length):
        base = points[-1] if points else None
        job = JobFactory(client=client, state=JobState.SUCCEEDED)
        points.append(
            BackupFactory(
                client=client,
                job=job,
                location=f"{client.application.slug}/{client.name}/job-{job.pk}",  # as the agent writes
                taken_at=start + every * n,
                level=models.BackupLevel.INCREMENTAL if base else models.BackupLevel.FULL,
                base=base,
                full=(base.full or base) if base else None,
                **{**file_list(n), **fields},
            )
        )
    return points
