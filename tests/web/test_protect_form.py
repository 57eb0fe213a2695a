"""Protect a new server: per-plugin fields, option rules shown on the right field, then the service."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.choices import Plugin
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest
from tests import factories


def protect(browser, app, **fields):
    data = {"hostname": "db02.example.com", "name": "orders-db", **fields}
    return browser.post(reverse("requests:protect", args=[app.slug]), data)


@pytest.mark.django_db
def test_form_offers_policies_with_their_approval_rule(owner_client, app, auto_policy, manual_policy):
    response = owner_client.get(reverse("requests:protect", args=[app.slug]))
    page = response.content.decode()
    assert "Silver" in page and "Gold" in page
    assert "automatic" in page and "backup team approves" in page


@pytest.mark.django_db
def test_relative_path_is_shown_on_the_paths_field(owner_client, app, auto_policy):
    response = protect(
        owner_client, app, plugin=Plugin.FILES, paths="/srv/ok\nrelative/dir", policy=auto_policy.pk
    )
    assert "is not absolute" in response.context["form"].errors["paths"][0]
    assert not ClientRequest.objects.exists()


@pytest.mark.django_db
def test_bad_database_name_is_shown_on_the_database_field(owner_client, app, auto_policy):
    response = protect(
        owner_client, app, plugin=Plugin.POSTGRESQL, database="orders; drop", policy=auto_policy.pk
    )
    assert "database name" in response.context["form"].errors["database"][0]
    assert not ClientRequest.objects.exists()


@pytest.mark.django_db
def test_bad_port_and_host_are_shown_on_their_fields(owner_client, app, auto_policy):
    response = protect(
        owner_client, app, plugin=Plugin.MYSQL, database="shop", db_port="70000", policy=auto_policy.pk
    )
    assert "db_port" in response.context["form"].errors
    response = protect(
        owner_client, app, plugin=Plugin.MYSQL, database="shop", db_host="bad host!", policy=auto_policy.pk
    )
    assert "host name" in response.context["form"].errors["db_host"][0]


@pytest.mark.django_db
def test_missing_command_arguments_are_required(client, backup_admin, app, auto_policy):
    client.force_login(backup_admin)  # commands are the backup team's
    response = protect(client, app, plugin=Plugin.COMMAND, policy=auto_policy.pk)
    errors = response.context["form"].errors
    assert "Enter the backup command" in errors["backup_argv"][0]
    assert "Enter the restore command" in errors["restore_argv"][0]
    response = protect(
        client,
        app,
        plugin=Plugin.COMMAND,
        backup_argv="dump\n{target}",
        restore_argv="/bin/load\n{nope}",
        policy=auto_policy.pk,
    )
    assert "must start with /" in response.context["form"].errors["backup_argv"][0]
    response = protect(
        client,
        app,
        plugin=Plugin.COMMAND,
        backup_argv="/bin/dump",
        restore_argv="/bin/load\n{nope}",
        policy=auto_policy.pk,
    )
    assert "Unknown placeholder" in response.context["form"].errors["restore_argv"][0]
    assert not ClientRequest.objects.exists()


@pytest.mark.django_db
def test_owners_cannot_ask_for_a_custom_command(owner_client, app, auto_policy):
    form = owner_client.get(reverse("requests:protect", args=[app.slug])).content.decode()
    assert 'value="command"' not in form and "the backup team sets them up" in form

    response = protect(
        owner_client,
        app,
        plugin=Plugin.COMMAND,
        backup_argv="/bin/sh\n-c\nid > /tmp/x; cat /srv/payroll/documents/*",
        restore_argv="/bin/sh\n-c\ntrue",
        policy=auto_policy.pk,
    )

    assert response.status_code == 403
    assert "Custom commands are the backup team&#x27;s" in response.content.decode()
    assert not ClientRequest.objects.exists()


@pytest.mark.django_db
def test_a_team_members_command_request_is_never_approved_by_the_system(
    client, backup_admin, app, auto_policy
):
    client.force_login(backup_admin)
    protect(
        client,
        app,
        plugin=Plugin.COMMAND,
        backup_argv="/usr/local/bin/export-app",
        restore_argv="/usr/local/bin/import-app\n{target}",
        policy=auto_policy.pk,
    )
    request = ClientRequest.objects.get()
    assert (request.status, request.needs_approval) == (RequestStatus.SUBMITTED, True)
    assert "backup team" in request.approval_rule


@pytest.mark.django_db
def test_only_the_chosen_plugins_fields_are_validated(owner_client, app, auto_policy):
    response = protect(
        owner_client,
        app,
        plugin=Plugin.FILES,
        paths="/srv/orders",
        database="not valid!",
        backup_argv="x",
        policy=auto_policy.pk,
    )
    request = ClientRequest.objects.get()
    assert response.status_code == 302
    assert request.options == {"paths": ["/srv/orders"]}


@pytest.mark.django_db
def test_database_options_are_built_from_the_fields(owner_client, app, manual_policy):
    protect(
        owner_client,
        app,
        plugin=Plugin.POSTGRESQL,
        database="orders",
        db_host="pg.internal",
        db_port="5433",
        db_user="backup",
        policy=manual_policy.pk,
        justification="Orders database",
        external_ref="CHG1",
    )
    request = ClientRequest.objects.get()
    assert request.options == {"database": "orders", "host": "pg.internal", "port": 5433, "user": "backup"}
    assert request.status == RequestStatus.SUBMITTED and request.needs_approval
    assert (request.justification, request.external_ref) == ("Orders database", "CHG1")


@pytest.mark.django_db
def test_auto_approved_request_leads_to_the_request_page_with_the_enrol_button(
    owner_client, owner, app, auto_policy
):
    response = protect(owner_client, app, plugin=Plugin.FILES, paths="/srv/orders", policy=auto_policy.pk)
    request = ClientRequest.objects.get()
    assert response.url == request.get_absolute_url()
    assert request.status == RequestStatus.APPROVED
    assert request.requester == owner
    page = owner_client.get(response.url).content.decode()
    assert "Show the enrol command" in page


@pytest.mark.django_db
def test_a_taken_client_name_is_refused(owner_client, app, auto_policy):
    factories.BackupClientFactory(application=app, name="orders-db")
    response = protect(owner_client, app, plugin=Plugin.FILES, paths="/srv", policy=auto_policy.pk)
    assert "already has a client named orders-db" in response.context["form"].errors["name"][0]


@pytest.mark.django_db
def test_an_open_request_for_the_same_name_is_refused(owner_client, app, manual_policy):
    protect(owner_client, app, plugin=Plugin.FILES, paths="/srv", policy=manual_policy.pk)
    response = protect(owner_client, app, plugin=Plugin.FILES, paths="/srv", policy=manual_policy.pk)
    assert "already open" in response.context["form"].errors["name"][0]
    assert ClientRequest.objects.count() == 1
