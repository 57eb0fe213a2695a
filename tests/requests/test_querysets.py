"""The request querysets: who follows which request, the open ones, a person's own."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.tenancy import is_backup_team
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest, RestoreRequest
from tests.requests.factories import ClientRequestFactory, RestoreRequestFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def requests(owner, other_owner, app, other_app, mine, theirs):
    """Each kind: one of ``app`` asked by its owner, one of ``other_app`` asked by its owner,
    and one of ``other_app`` asked by ``owner`` (who has since stopped owning it)."""
    rows = {}
    for kind, factory, field, value in (
        ("client", ClientRequestFactory, "application", lambda estate: estate.client.application),
        ("restore", RestoreRequestFactory, "backup", lambda estate: estate.backup),
    ):
        rows[kind] = {
            "mine": factory(requester=owner, **{field: value(mine)}),
            "theirs": factory(requester=other_owner, **{field: value(theirs)}),
            "asked_elsewhere": factory(requester=owner, **{field: value(theirs)}),
        }
    return rows


MODELS = {"client": ClientRequest, "restore": RestoreRequest}


@pytest.mark.parametrize("kind", MODELS)
def test_a_person_follows_their_applications_requests_and_their_own(requests, owner, kind):
    rows = requests[kind]

    followed = set(MODELS[kind].objects.for_person(owner))

    assert followed == {rows["mine"], rows["asked_elsewhere"]}


@pytest.mark.parametrize("kind", MODELS)
def test_visible_to_stays_strict_tenancy_for_the_admin_and_webhooks(requests, owner, kind):
    assert set(MODELS[kind].objects.visible_to(owner)) == {requests[kind]["mine"]}


@pytest.mark.parametrize("kind", MODELS)
def test_the_backup_team_follows_every_request_once(requests, backup_admin, kind):
    followed = list(MODELS[kind].objects.for_person(backup_admin))

    assert sorted(r.pk for r in followed) == sorted(r.pk for r in requests[kind].values())


@pytest.mark.parametrize("kind", MODELS)
def test_nobody_signed_in_follows_nothing(requests, kind):
    assert not MODELS[kind].objects.for_person(AnonymousUser()).exists()


@pytest.mark.parametrize("kind", MODELS)
def test_asked_by_is_the_persons_own_requests_wherever_they_are(requests, owner, other_owner, kind):
    rows = requests[kind]

    assert set(MODELS[kind].objects.asked_by(owner)) == {rows["mine"], rows["asked_elsewhere"]}
    assert set(MODELS[kind].objects.asked_by(other_owner)) == {rows["theirs"]}


@pytest.mark.parametrize("kind", MODELS)
def test_open_is_submitted_approved_or_running(requests, kind):
    model = MODELS[kind]
    for status, row in zip(
        (RequestStatus.APPROVED, RequestStatus.RUNNING, RequestStatus.CANCELLED),
        requests[kind].values(),
        strict=True,
    ):
        model.objects.filter(pk=row.pk).update(status=status)

    assert set(model.objects.open().values_list("status", flat=True)) == {
        RequestStatus.APPROVED,
        RequestStatus.RUNNING,
    }


def test_the_methods_chain_into_one_query(requests, owner):
    is_backup_team(owner)  # asked once per user and cached on it; not what this counts
    with CaptureQueriesContext(connection) as captured:
        rows = list(RestoreRequest.objects.open().for_person(owner).select_related("backup"))

    assert len(captured.captured_queries) == 1
    assert set(rows) == {requests["restore"]["mine"], requests["restore"]["asked_elsewhere"]}
