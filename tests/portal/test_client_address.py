"""The client's address: one NUM_PROXIES for the REST framework's throttles and the sign-in lockout.

With NUM_PROXIES=0 a client-supplied X-Forwarded-For is ignored everywhere; with n, the
n-th entry from the right (the one the outermost trusted proxy appended) is the client.
"""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.throttling import BaseThrottle

from portal.auth import client_ip

ENROL_LIMIT = 30  # catalog.agent_api.views.EnrolThrottle: PORTAL_AGENT_ENROL_RATE, 30/minute by default


@pytest.fixture
def num_proxies(settings):
    def set_to(count: int) -> None:
        settings.NUM_PROXIES = count
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}

    set_to(0)
    return set_to


@pytest.fixture(autouse=True)
def _fresh_throttles(fresh_cache):
    """The REST framework counts requests in the default cache, which outlives a test."""


def request_from(remote_addr: str, forwarded_for: str | None = None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for is not None else {}
    return RequestFactory().post("/accounts/login/", REMOTE_ADDR=remote_addr, **headers)


@pytest.mark.parametrize(
    ("count", "forwarded_for", "expected"),
    [
        (0, None, "127.0.0.1"),
        (0, "203.0.113.5", "127.0.0.1"),
        (0, "198.51.100.1, 203.0.113.5", "127.0.0.1"),
        (1, None, "127.0.0.1"),  # a proxy that set no header: its own address
        (1, "203.0.113.5", "203.0.113.5"),
        (1, "198.51.100.1, 203.0.113.5", "203.0.113.5"),
        (1, "garbage, 203.0.113.5", "203.0.113.5"),
        (1, " 2001:db8::7 ", "2001:db8::7"),
        (2, "198.51.100.1, 203.0.113.5, 10.0.0.2", "203.0.113.5"),
        (2, "not-an-address, 10.0.0.2", "127.0.0.1"),  # axes stores an IP field: never a forged string
    ],
)
def test_client_address_follows_num_proxies(num_proxies, count, forwarded_for, expected):
    num_proxies(count)
    assert client_ip(request_from("127.0.0.1", forwarded_for)) == expected


@pytest.mark.parametrize("count", [0, 1, 2])
def test_sign_in_and_the_api_agree_on_who_the_client_is(num_proxies, count):
    num_proxies(count)
    for forwarded_for in (
        None,
        "203.0.113.5",
        "198.51.100.1, 203.0.113.5",
        "192.0.2.1, 198.51.100.1, 10.0.0.2",
    ):
        request = request_from("127.0.0.1", forwarded_for)
        assert client_ip(request) == BaseThrottle().get_ident(request)


def enrol(api_client, address: str, forwarded_for: str):
    return api_client.post(
        reverse("agent-api:enrol"), {}, content_type="application/json",
        REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=forwarded_for,
    )  # fmt: skip


@pytest.mark.django_db
def test_enrol_throttle_ignores_a_forged_forwarded_for_without_trusted_proxies(client, num_proxies):
    num_proxies(0)
    for n in range(ENROL_LIMIT):
        response = enrol(client, "10.0.0.1", f"198.51.100.{n}")
        assert response.status_code != 429, n
    response = enrol(client, "10.0.0.1", "198.51.100.250")
    assert response.status_code == 429


@pytest.mark.django_db
def test_enrol_throttle_behind_one_proxy_counts_the_address_it_appended(client, num_proxies):
    num_proxies(1)
    proxy = "127.0.0.1"
    for n in range(ENROL_LIMIT):
        assert enrol(client, proxy, f"198.51.100.{n}, 203.0.113.5").status_code != 429, n
    # The same client, whatever it forges in front of nginx's entry, is throttled ...
    assert enrol(client, proxy, "192.0.2.99, 203.0.113.5").status_code == 429
    # ... another client behind the same proxy is not.
    assert enrol(client, proxy, "203.0.113.6").status_code != 429
