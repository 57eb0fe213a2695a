"""Selective restore: a restore request names files, folders or tables of its recovery point.

The selection is checked against the point's file list, normalised, kept on the
request, handed to the job and the agent, and shown wherever the request is:
the API, its page, the mails, the webhooks and the audit trail.
"""

from __future__ import annotations

import json

import pytest
from django.core import mail
from django.urls import reverse

from catalog.choices import Plugin
from catalog.models import Job
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.errors import InvalidRequest
from requests_app.models import AuditEvent, RestoreRequest
from requests_app.webhooks import Event
from tests import factories
from tests.helpers import agent_client, key_client
from tests.index_files import WEBSHOP, give_file_list
from tests.requests.factories import submit_restore
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.django_db

URL = "/api/v1/restore-requests/"
MEDIA = "/srv/webshop/media"


@pytest.fixture
def shop(mine):
    """``owner``'s recovery point with a file list, on an agent that restores selections."""
    give_file_list(mine.backup, WEBSHOP)
    mine.agent.protocol = 3
    mine.agent.save(update_fields=["protocol"])
    return mine


def body(estate, **fields) -> dict:
    return {
        "backup": estate.backup.pk,
        "target_agent": estate.agent.hostname,
        "target_location": "/srv/restore/today",
        **fields,
    }


def new_location(owner, estate, paths, **fields):
    """A restore to a new location on the owner's own server: approved at once."""
    return submit_restore(owner, backup=estate.backup, overwrite=False, paths=paths, **fields)


# --- The workflow -------------------------------------------------------------------------------


def test_the_selection_goes_from_the_request_to_the_job_and_the_agent(owner, shop):
    request = new_location(owner, shop, [f"{MEDIA}/invoice-2026-02.pdf", "/etc/nginx"])

    assert request.status == RequestStatus.APPROVED
    assert request.paths == ["/etc/nginx", f"{MEDIA}/invoice-2026-02.pdf"]
    job = Job.objects.get(pk=request.job_id)
    assert job.paths == request.paths
    api, _ = agent_client(shop.agent)
    polled = api.post("/api/agent/v1/poll", {"version": "0.1.0", "protocol": 3}, format="json").json()
    (payload,) = [p for p in polled["jobs"] if p["id"] == job.pk]
    assert payload["target"] == {"location": "/srv/data", "overwrite": False, "paths": request.paths}


def test_a_selection_waiting_for_the_team_keeps_it_until_approved(owner, shop, backup_admin):
    request = submit_restore(owner, backup=shop.backup, overwrite=True, paths=[MEDIA])
    assert request.status == RequestStatus.SUBMITTED and request.job_id is None

    services.approve(RestoreRequest, request.pk, actor=Actor.person(backup_admin, Channel.ADMIN))

    request.refresh_from_db()
    assert request.job.paths == [MEDIA]


def test_duplicates_and_paths_inside_a_chosen_folder_are_dropped(owner, shop):
    request = new_location(
        owner, shop, [f"{MEDIA}/logo.png", MEDIA, f"{MEDIA}/", "/srv//webshop/media", "/srv/webshop/app.py"]
    )

    assert request.paths == ["/srv/webshop/app.py", MEDIA]


def test_no_selection_restores_everything(owner, shop):
    request = new_location(owner, shop, [])

    assert request.paths == [] and request.job.paths == []


@pytest.mark.parametrize(
    "paths, words",
    [
        (["/srv/webshop/media/missing.pdf"], "/srv/webshop/media/missing.pdf is not in this recovery point"),
        (["/srv/../etc/passwd"], "'..'"),
        (["relative/path"], "absolute"),
        (["/"], "leave the selection empty"),
    ],
)
def test_a_path_the_point_does_not_hold_is_refused_by_name(owner, shop, paths, words):
    with pytest.raises(InvalidRequest) as refused:
        new_location(owner, shop, paths)

    assert words in refused.value.errors["paths"]
    assert not RestoreRequest.objects.exists()


def test_a_selection_in_a_point_without_file_list_is_refused(owner, mine):
    mine.agent.protocol = 3
    mine.agent.save(update_fields=["protocol"])

    with pytest.raises(InvalidRequest) as refused:
        new_location(owner, mine, ["/srv/data/a.txt"])

    assert "no file list" in refused.value.errors["paths"]


def test_an_agent_that_would_restore_everything_is_never_sent_a_selection(owner, shop):
    shop.agent.protocol = 2
    shop.agent.save(update_fields=["protocol"])

    with pytest.raises(InvalidRequest) as refused:
        new_location(owner, shop, [MEDIA])

    assert "upgrade it" in refused.value.errors["paths"]
    assert not RestoreRequest.objects.exists()
    assert new_location(owner, shop, []).status == RequestStatus.APPROVED  # the whole point still can


def test_tables_of_a_database_point(owner, app):
    estate = factories.build_estate(app, plugin=Plugin.POSTGRESQL, options={"database": "orders"})
    estate.agent.protocol = 3
    estate.agent.save(update_fields=["protocol"])
    objects = [
        {"schema": "public", "name": "orders", "type": "table", "rows": 10},
        {"schema": "public", "name": "customers", "type": "table", "rows": 4},
    ]
    give_file_list(estate.backup, kind="postgresql", objects=objects)

    request = submit_restore(
        owner, backup=estate.backup, overwrite=False, target_location="orders_copy", paths=["/public/orders"]
    )
    with pytest.raises(InvalidRequest) as schema:
        submit_restore(
            owner, backup=estate.backup, overwrite=False, target_location="orders_copy", paths=["/public"]
        )

    assert request.job.paths == ["/public/orders"]
    assert "choose its tables" in schema.value.errors["paths"]


def test_tables_of_two_schemas_are_refused_before_the_agent_would(owner, app):
    estate = factories.build_estate(app, plugin=Plugin.POSTGRESQL, options={"database": "orders"})
    estate.agent.protocol = 3
    estate.agent.save(update_fields=["protocol"])
    objects = [
        {"schema": "public", "name": "orders", "type": "table"},
        {"schema": "sales", "name": "items", "type": "table"},
    ]
    give_file_list(estate.backup, kind="postgresql", objects=objects)

    with pytest.raises(InvalidRequest) as refused:
        submit_restore(
            owner,
            backup=estate.backup,
            overwrite=False,
            target_location="orders_copy",
            paths=["/public/orders", "/sales/items"],
        )

    assert "one schema per restore" in refused.value.errors["paths"]
    assert not RestoreRequest.objects.exists()


def test_a_hard_link_needs_the_file_it_links_to(owner, mine):
    tree = {"srv/app": {"data": {"a.bin": 10}, "b.bin": ("=>", "srv/app/data/a.bin")}}
    give_file_list(mine.backup, tree)
    mine.agent.protocol = 3
    mine.agent.save(update_fields=["protocol"])

    with pytest.raises(InvalidRequest) as refused:
        new_location(owner, mine, ["/srv/app/b.bin"])
    with_its_data = new_location(owner, mine, ["/srv/app/b.bin", "/srv/app/data"])

    assert "hard link to /srv/app/data/a.bin: select that file too" in refused.value.errors["paths"]
    assert with_its_data.paths == ["/srv/app/b.bin", "/srv/app/data"]


# --- Through the API ----------------------------------------------------------------------------


def test_the_api_takes_and_shows_paths(owner, shop):
    api = key_client(owner)

    response = api.post(URL, body(shop, paths=[MEDIA, f"{MEDIA}/logo.png"]), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["paths"] == [MEDIA]
    assert api.get(f"{URL}{response.json()['id']}/").json()["paths"] == [MEDIA]


@pytest.mark.parametrize(
    "paths, status, words",
    [
        (["/srv/webshop/nope.txt"], 400, "/srv/webshop/nope.txt is not in this recovery point"),
        ("/srv/webshop", 400, "list"),
        ([42], 400, "absolute"),
        ([["/srv"]], 400, "string"),
        ([""], 400, "blank"),
    ],
)
def test_the_api_refuses_a_bad_selection_as_a_field_error(owner, shop, paths, status, words):
    response = key_client(owner).post(URL, body(shop, paths=paths), format="json")

    assert response.status_code == status, response.json()
    assert words in json.dumps(response.json()["errors"]["paths"])
    assert not RestoreRequest.objects.exists()


def test_the_api_refuses_a_selection_for_an_old_agent(owner, shop):
    shop.agent.protocol = 2
    shop.agent.save(update_fields=["protocol"])

    response = key_client(owner).post(URL, body(shop, paths=[MEDIA]), format="json")

    assert response.status_code == 400
    assert "upgrade" in response.json()["errors"]["paths"][0]


def test_the_api_refuses_a_selection_in_a_point_without_file_list(owner, mine):
    mine.agent.protocol = 3
    mine.agent.save(update_fields=["protocol"])

    response = key_client(owner).post(URL, body(mine, paths=["/srv/data"]), format="json")

    assert response.status_code == 400
    assert "no file list" in response.json()["errors"]["paths"][0]


# --- Where the selection shows ------------------------------------------------------------------


def test_the_request_page_lists_the_first_twenty_and_counts_the_rest(owner, owner_client, mine):
    give_file_list(mine.backup, {"data": {f"f{i:02d}.txt": i for i in range(25)}})
    mine.agent.protocol = 3
    mine.agent.save(update_fields=["protocol"])
    request = new_location(owner, mine, [f"/data/f{i:02d}.txt" for i in range(25)])

    page = owner_client.get(reverse("requests:restore-request", args=[request.pk])).text

    assert "Selected" in page
    assert "<code>/data/f19.txt</code>" in page
    assert "/data/f20.txt" not in page
    assert "and 5 more" in page


def test_a_whole_restore_says_so_on_its_page(owner, owner_client, shop):
    request = new_location(owner, shop, [])

    page = owner_client.get(reverse("requests:restore-request", args=[request.pk])).text

    assert "the whole recovery point" in page


def test_the_audit_trail_says_what_was_selected(owner, shop):
    request = new_location(owner, shop, ["/etc/nginx", MEDIA, "/srv/webshop/app.py", "/srv/webshop/current"])

    submitted = AuditEvent.objects.get(restore_request=request, action="submitted")

    assert submitted.message == "4 selected: /etc/nginx, /srv/webshop/app.py, /srv/webshop/current, …"


def test_the_mails_list_the_selection(owner, shop, backup_admin, django_capture_on_commit_callbacks):
    owner.email = "owner@example.com"
    owner.save()

    with django_capture_on_commit_callbacks(execute=True):
        submit_restore(owner, backup=shop.backup, overwrite=True, paths=[MEDIA, "/etc/nginx"])

    team_mail = next(m for m in mail.outbox if "Waiting for approval" in m.subject)
    owner_mail = next(m for m in mail.outbox if m.to == ["owner@example.com"])
    for message in (team_mail, owner_mail):
        assert "Selected (2):" in message.body
        assert f"  {MEDIA}" in message.body and "  /etc/nginx" in message.body


def test_the_webhook_carries_the_paths(owner, shop, django_capture_on_commit_callbacks):
    from requests_app.models import WebhookSubscription
    from tests.webhooks.receiver import SECRET

    with Receiver() as receiver:
        WebhookSubscription.objects.create(
            url=receiver.url, name="ServiceNow", secret=SECRET, event_types=[Event.RESTORE_REQUEST_CHANGED]
        )
        with django_capture_on_commit_callbacks(execute=True):
            request = new_location(owner, shop, [MEDIA])

        bodies = [json.loads(r.body) for r in receiver.received]

    assert bodies
    assert all(b["object"]["paths"] == [MEDIA] for b in bodies)
    assert bodies[0]["object"]["id"] == request.pk
