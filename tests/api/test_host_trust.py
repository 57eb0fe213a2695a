"""Issue #10, findings 1, 2, 3 and 7, as the attacker ran them: an owner with an API key.

``owner`` owns ``app`` (Orders); ``other_owner`` owns ``other_app`` (Payroll),
whose server ``theirs.agent`` is enrolled. Each test is one attack, through
the public door it used, and what must happen instead.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from catalog.choices import AgentAction, ClientStatus
from catalog.errors import InvalidEnrolment
from catalog.models import Agent, BackupClient, EnrolmentToken, hash_token
from catalog.services import agents
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.models import AuditEvent, ClientRequest, RestoreRequest
from tests import factories
from tests.helpers import key_client

URL = "/api/v1/client-requests/"
ENROL = "/api/agent/v1/enrol"

pytestmark = pytest.mark.django_db


def ask(api, app, policy, hostname: str, **fields):
    body = {
        "application": app.slug,
        "hostname": hostname,
        "plugin": "files",
        "options": {"paths": ["/srv/orders"]},
        "policy": policy.name,
        **fields,
    }
    return api.post(URL, body, format="json")


# --- Finding 1: another application's host, taken by a request ------------------------------------


def test_a_request_for_another_applications_host_waits_for_the_team_and_attaches_nothing(
    owner_api, app, other_app, theirs, auto_policy
):
    response = ask(owner_api, app, auto_policy, theirs.agent.hostname)

    assert response.status_code == 201
    data = response.json()
    assert (data["status"], data["needs_approval"], data["client"]) == ("submitted", True, None)
    assert f"{theirs.agent.hostname} belongs to Payroll" in data["approval_rule"]
    assert list(theirs.agent.applications.all()) == [other_app]
    assert not BackupClient.objects.filter(application=app).exists()


def test_a_command_on_another_applications_host_is_refused_outright(owner_api, app, theirs, auto_policy):
    response = ask(
        owner_api,
        app,
        auto_policy,
        theirs.agent.hostname,
        plugin="command",
        options={
            "backup_argv": ["/bin/sh", "-c", "id > /tmp/x; cat /srv/payroll/documents/*"],
            "restore_argv": ["/bin/sh", "-c", "true"],
        },
    )

    assert response.status_code == 403
    assert "Custom commands are the backup team's" in response.json()["detail"]
    assert not ClientRequest.objects.exists()


def test_a_restore_onto_another_applications_host_is_refused_after_the_attempt(
    owner_api, app, mine, theirs, auto_policy
):
    ask(owner_api, app, auto_policy, theirs.agent.hostname)  # the attempt to claim the host

    response = owner_api.post(
        "/api/v1/restore-requests/",
        {"backup": mine.backup.pk, "target_agent": theirs.agent.hostname, "target_location": "/etc/cron.d/x"},
        format="json",
    )

    assert response.status_code == 400
    assert "target_agent" in response.json()["errors"]
    assert not RestoreRequest.objects.exists()


def test_sharing_a_host_is_the_teams_decision_and_on_the_record(
    owner_api, admin_api, app, other_app, theirs, auto_policy
):
    created = ask(owner_api, app, auto_policy, theirs.agent.hostname).json()

    approved = admin_api.post(f"{URL}{created['id']}/approve/")

    assert approved.status_code == 200
    assert approved.json()["status"] == "provisioned"
    assert set(theirs.agent.applications.all()) == {app, other_app}
    shared = theirs.agent.events.get(action=AgentAction.SHARED)
    assert (shared.actor_label, shared.message) == ("API key Team automation", "Now serves Orders (orders).")
    approval = AuditEvent.objects.get(client_request_id=created["id"], action="approved")
    assert "belongs to Payroll" in approval.message and "is shared" in approval.message


# --- Finding 2: agent takeover by enrolment --------------------------------------------------------


def test_a_revoked_agent_cannot_be_taken_back_by_an_owners_request(
    owner_api, admin_api, app, theirs, auto_policy
):
    agents.revoke(Agent.objects.filter(pk=theirs.agent.pk))
    created = ask(owner_api, app, auto_policy, theirs.agent.hostname).json()
    assert created["needs_approval"] is True

    # Even a (mistaken) approval by the team gives the owner no token for that host.
    admin_api.post(f"{URL}{created['id']}/approve/")
    refused = owner_api.post(f"{URL}{created['id']}/enrolment-token/")

    assert refused.status_code == 409
    theirs.agent.refresh_from_db()
    assert theirs.agent.revoked_at is not None
    assert not EnrolmentToken.objects.filter(hostname=theirs.agent.hostname).exists()


def test_an_enrolment_token_never_rekeys_an_enrolled_agent(app, theirs):
    # A token for the host from before its agent enrolled (or forged in the database by a bug).
    token = "bpe_" + "x" * 43
    EnrolmentToken.objects.create(
        token_hash=hash_token(token),
        application=app,
        hostname=theirs.agent.hostname,
        expires_at=theirs.agent.enrolled_at.replace(year=2100),
    )
    old_hash = theirs.agent.token_hash

    response = APIClient().post(
        ENROL, {"token": token, "hostname": theirs.agent.hostname}, format="json"
    )

    assert response.status_code == 400
    assert "already enrolled" in response.json()["detail"]
    theirs.agent.refresh_from_db()
    assert theirs.agent.token_hash == old_hash
    assert not theirs.agent.applications.filter(pk=app.pk).exists()


def test_two_owners_asking_for_one_new_host_cannot_both_have_it(
    owner_api, other_api, app, other_app, auto_policy
):
    payroll = ask(other_api, other_app, auto_policy, "new01.example.com").json()
    orders = ask(owner_api, app, auto_policy, "new01.example.com").json()

    assert payroll["status"] == "approved"
    assert (orders["status"], orders["needs_approval"]) == ("submitted", True)
    assert "belongs to Payroll" in orders["approval_rule"]
    assert owner_api.post(f"{URL}{orders['id']}/enrolment-token/").status_code == 409
    token = other_api.post(f"{URL}{payroll['id']}/enrolment-token/").json()["token"]
    agent, _ = agents.enrol(token=token, hostname="new01.example.com", version="1", plugins=["files"])
    assert list(agent.applications.all()) == [other_app]


def test_the_backup_team_rekeys_a_rebuilt_server_and_the_old_key_stops(backup_admin, theirs):
    old = theirs.agent.issue_token()
    theirs.agent.save()
    _, rekey = agents.issue_rekey_token(theirs.agent, created_by=backup_admin)

    response = APIClient().post(
        ENROL, {"token": rekey, "hostname": theirs.agent.hostname}, format="json"
    )

    assert response.status_code == 201
    assert Agent.objects.authenticate(old) is None
    assert Agent.objects.authenticate(response.json()["agent_token"]) == theirs.agent
    actions = list(theirs.agent.events.values_list("action", flat=True))
    assert actions[-2:] == [AgentAction.REKEY_ISSUED, AgentAction.REKEYED]


@pytest.mark.django_db(transaction=True)
def test_owners_racing_for_one_new_host_get_one_winner(owner, other_owner, app, other_app):
    policy = factories.ProtectionPolicyFactory(auto_approve_clients=True)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def submit(user, application) -> None:
        try:
            barrier.wait()
            services.submit_client(
                actor=Actor.person(user, Channel.API),
                application=application,
                hostname="race01.example.com",
                name="race",
                plugin="files",
                options={"paths": ["/srv"]},
                policy=policy,
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=submit, args=(owner, app)),
        threading.Thread(target=submit, args=(other_owner, other_app)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    statuses = sorted(ClientRequest.objects.values_list("status", flat=True))
    assert statuses == [RequestStatus.APPROVED, RequestStatus.SUBMITTED]
    assert Agent.objects.get(hostname="race01.example.com").applications.count() == 1


# --- Finding 7: two requests for one new host --------------------------------------------------------


def test_one_enrolment_provisions_every_request_for_the_host(
    owner_api, app, auto_policy, django_capture_on_commit_callbacks
):
    pg = ask(owner_api, app, auto_policy, "new02.example.com", plugin="postgresql", options={"database": "a"})
    my = ask(owner_api, app, auto_policy, "new02.example.com", plugin="mysql", options={"database": "b"})
    pg, my = pg.json(), my.json()
    assert (pg["status"], my["status"]) == ("approved", "approved")
    first = owner_api.post(f"{URL}{pg['id']}/enrolment-token/").json()["token"]
    second = owner_api.post(f"{URL}{my['id']}/enrolment-token/").json()["token"]

    with pytest.raises(InvalidEnrolment):  # the first one was voided by the second
        agents.enrol(token=first, hostname="new02.example.com", version="1", plugins=[])
    with django_capture_on_commit_callbacks(execute=True):
        agents.enrol(token=second, hostname="new02.example.com", version="1", plugins=["postgresql", "mysql"])

    for created in (pg, my):
        data = owner_api.get(f"{URL}{created['id']}/").json()
        assert data["status"] == "provisioned"
        assert BackupClient.objects.get(pk=data["client"]).status == ClientStatus.ACTIVE
    outstanding = EnrolmentToken.objects.filter(used_at__isnull=True, voided_at__isnull=True)
    assert not outstanding.exists()


def test_a_co_owner_cannot_take_the_requesters_token(owner_api, app, auto_policy):
    created = ask(owner_api, app, auto_policy, "new03.example.com").json()
    co_owner = factories.UserFactory(username="co_owner")
    app.owners.add(co_owner)

    assert key_client(co_owner, "Co").post(f"{URL}{created['id']}/enrolment-token/").status_code == 403
