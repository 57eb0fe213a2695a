"""Bad input is a 4xx with the error shape — never a 500, whatever arrives."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db

RESTORES = "/api/v1/restore-requests/"
CLIENTS = "/api/v1/client-requests/"


def assert_refused(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    data = response.json()
    assert set(data) <= {"code", "detail", "errors"} and data["code"] and data["detail"]
    return data


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{", "parse_error"),
        ('{"backup": 1,}', "parse_error"),
        ("[1, 2, 3]", "invalid"),
        ('"just a string"', "invalid"),
        ("null", "invalid"),
        ("NaN", "parse_error"),
        ('{"backup": "abc"}', "invalid"),
        ('{"backup": 123456789012345678901234567890}', "invalid"),
        ('{"backup": 9223372036854775808}', "invalid"),  # one past bigint
        ('{"backup": 1e23}', "invalid"),
        ('{"backup": 2.5}', "invalid"),
        ('{"backup": 1e400}', "invalid"),
        ('{"backup": true}', "invalid"),
        ('{"backup": -1}', "invalid"),
        ('{"overwrite": "maybe"}', "invalid"),
        ('{"target_location": {"a": 1}}', "invalid"),
        ('{"target_agent": ["a", "b"]}', "invalid"),
        ('{"target_location": "/srv/\\u0000x"}', "parse_error"),
        ('{"reason": "' + "x" * 20_000 + '"}', "invalid"),
        ('{"external_ref": "' + "x" * 101 + '"}', "invalid"),
        ('{"a": ' + deep(100_000) + "}", "parse_error"),
        ('{"a": ' + deep(40) + "}", "parse_error"),
    ],
)
def test_malformed_restore_requests(owner_api, mine, raw, code):
    response = owner_api.generic("POST", RESTORES, raw, content_type="application/json")

    assert assert_refused(response, 400)["code"] == code


@pytest.mark.parametrize(
    "fields",
    [
        {"options": "paths=/srv"},
        {"options": None},
        {"options": {"paths": "/srv"}},
        {"options": {"paths": [1, 2]}},
        {"options": {"paths": ["/srv"], "exclude": [{"x": 1}]}},
        {
            "plugin": "command",
            "options": {"backup_argv": ["/bin/x", "{target!x}"], "restore_argv": ["/bin/y"]},
        },
        {"plugin": "postgresql", "options": {"database": "db", "port": 10**40}},
        {"plugin": "postgresql", "options": {"database": "db", "port": 2**63}},
        {"plugin": "postgresql", "options": {"database": "db", "port": 5432.0}},
        {"plugin": "postgresql", "options": {"database": "db", "port": 1e23}},
        {"plugin": "postgresql", "options": {"database": "db", "port": True}},
        {"plugin": ["files"]},
        {"application": {"slug": "orders"}},
        {"policy": 12},
        {"hostname": "x" * 300},
        {"name": "a" * 101},
        {"justification": ["a"]},
    ],
)
def test_malformed_client_requests(owner_api, app, auto_policy, fields):
    body = {
        "application": app.slug,
        "hostname": "web01.example.com",
        "plugin": "files",
        "options": {"paths": ["/srv"]},
        "policy": auto_policy.name,
        **fields,
    }

    response = owner_api.post(CLIENTS, body, format="json")

    assert assert_refused(response, 400)["code"] == "invalid"


def test_nul_deep_inside_options_is_refused(owner_api, app, auto_policy):
    raw = json.dumps(
        {
            "application": app.slug,
            "hostname": "web01.example.com",
            "plugin": "command",
            "options": {"backup_argv": ["/bin/dump", "a\x00b"], "restore_argv": ["/bin/load"]},
            "policy": auto_policy.name,
        }
    )

    response = owner_api.generic("POST", CLIENTS, raw, content_type="application/json")

    assert assert_refused(response, 400)["code"] == "parse_error"


@pytest.mark.parametrize(
    "content_type, raw",
    [("application/x-www-form-urlencoded", "backup=1"), ("text/plain", "hello"), ("application/xml", "<a/>")],
)
def test_only_json_is_read(owner_api, mine, content_type, raw):
    response = owner_api.generic("POST", RESTORES, raw, content_type=content_type)

    assert assert_refused(response, 415)["code"] == "unsupported_media_type"


def test_a_body_over_the_limit_is_413(owner_api, mine, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = owner_api.post(RESTORES, {"reason": "x" * 2000}, format="json")

    assert assert_refused(response, 413)["code"] == "too_large"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/backups/?client=123456789012345678901234567890",
        "/api/v1/backups/?client=9223372036854775808",
        "/api/v1/jobs/?client=1e23",
        "/api/v1/alerts/?client=9223372036854775808",
        "/api/v1/backups/?client=abc",
        "/api/v1/backups/?taken_after=yesterday",
        "/api/v1/backups/?taken_after=0001-01-01T00:00:00%2B05:00",
        "/api/v1/backups/?status=vanished",
        "/api/v1/backups/?cursor=garbage",
        "/api/v1/backups/?cursor=WzEsMiwzXQ",
        "/api/v1/jobs/?since=9999-12-31T23:59:59-05:00",
        "/api/v1/jobs/?state=%00",
    ],
)
def test_malformed_filters_are_400(owner_api, mine, url):
    assert_refused(owner_api.get(url), 400)


@pytest.mark.parametrize("size", ["99999999999999999999999", "-5", "1e23", "many"])
@pytest.mark.parametrize("path", ["/api/v1/jobs/", "/api/v1/backups/", "/api/v1/applications/"])
def test_any_page_size_is_a_page_never_a_500(owner_api, mine, path, size):
    response = owner_api.get(path, {"page_size": size})

    assert response.status_code == 200
    assert len(response.json()["results"]) <= 200


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/restore-requests/123456789012345678901234567890/",
        "/api/v1/restore-requests/abc/",
        "/api/v1/restore-requests/-1/",
        "/api/v1/backups/%00/",
        "/api/v1/applications/?page=0",
        "/api/v1/applications/?page=abc",
        "/api/v1/applications/?page=99999999999999999999",
    ],
)
def test_unknown_objects_and_pages_are_404(owner_api, mine, url):
    assert_refused(owner_api.get(url), 404)


@pytest.mark.parametrize("action", ["approve", "cancel", "reject"])
def test_actions_on_impossible_ids_are_404(admin_api, action):
    response = admin_api.post(f"{RESTORES}99999999999999999999999/{action}/", {"reason": "x"}, format="json")

    assert_refused(response, 404)


def test_backup_now_on_an_impossible_id_is_404(owner_api):
    assert_refused(owner_api.post("/api/v1/clients/99999999999999999999999/backup-now/"), 404)


def test_a_wrong_method_is_405(owner_api, mine):
    assert_refused(owner_api.delete(f"/api/v1/backups/{mine.backup.pk}/"), 405)
    assert_refused(owner_api.put(RESTORES, {}, format="json"), 405)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/jobs/1.5/",
        "/api/v1/reports/x/download/y/",
        "/api/v1/nothing/here/",
        "/api/v1/clients/1.5/backup-now/",
    ],
)
def test_unknown_urls_under_the_api_are_json_404s(owner_api, url):
    response = owner_api.get(url) if "backup-now" not in url else owner_api.post(url)

    assert_refused(response, 404)


def test_a_missing_trailing_slash_still_redirects(owner_api):
    response = owner_api.get("/api/v1/jobs")

    assert response.status_code == 301
    assert response["Location"] == "/api/v1/jobs/"
