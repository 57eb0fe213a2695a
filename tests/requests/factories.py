"""Requests for the tests: through the services, as the portal makes them, or as bare rows.

``submit_restore`` and ``submit_client`` apply the approval rules and write the
"submitted" audit event, as every real request has; the factories make rows
directly, for lists and fixtures where the history does not matter.
"""

from __future__ import annotations

import itertools

import factory

from catalog.choices import Plugin
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel
from requests_app.models import ClientRequest, RestoreRequest
from tests import factories

_numbers = itertools.count(1)


def submit_restore(requester, *, backup=None, overwrite: bool = True, channel=Channel.WEB, **fields):
    """A restore request onto the backup's own agent; overwriting, so it waits for the backup team."""
    backup = backup or factories.BackupFactory()
    fields.setdefault("target_agent", backup.client.agent)
    fields.setdefault("target_location", "/srv/data")
    return services.submit_restore(
        actor=Actor.person(requester, channel), backup=backup, overwrite=overwrite, **fields
    )


def submit_client(requester, *, application=None, policy=None, channel=Channel.WEB, **fields):
    """A new-client request on a policy that needs the backup team (unless ``policy`` says otherwise)."""
    n = next(_numbers)
    fields.setdefault("hostname", f"new{n}.example.com")  # a host the portal has never seen
    fields.setdefault("name", f"new-client-{n}")
    fields.setdefault("plugin", Plugin.FILES)
    fields.setdefault("options", {"paths": ["/srv/data"]})
    return services.submit_client(
        actor=Actor.person(requester, channel),
        application=application or factories.ApplicationFactory(),
        policy=policy or factories.ProtectionPolicyFactory(auto_approve_clients=False),
        **fields,
    )


class ClientRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClientRequest

    application = factory.SubFactory(factories.ApplicationFactory)
    hostname = factory.Sequence(lambda n: f"requested{n}.example.com")
    name = factory.Sequence(lambda n: f"requested-client-{n}")
    plugin = Plugin.FILES
    options = factory.LazyFunction(lambda: {"paths": ["/srv/data"]})
    policy = factory.SubFactory(factories.ProtectionPolicyFactory)
    justification = "A new service goes live next week."
    requester = factory.SubFactory(factories.UserFactory)
    approval_rule = factory.LazyAttribute(
        lambda r: f"New clients on {r.policy.name} need the backup team's approval."
    )


class RestoreRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RestoreRequest

    backup = factory.SubFactory(factories.BackupFactory)
    target_agent = factory.LazyAttribute(lambda r: r.backup.client.agent)
    target_location = "/srv/data"
    overwrite = True
    reason = "Files deleted by mistake."
    requester = factory.SubFactory(factories.UserFactory)
    approval_rule = "Overwriting existing data needs the backup team's approval."
