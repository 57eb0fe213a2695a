"""In a real browser: the approved request's page, the one-paste command and its "Copy" button."""

from __future__ import annotations

import pytest

from catalog.choices import Plugin
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel
from tests import factories
from tests.helpers import log_in

pytestmark = pytest.mark.browser


def test_the_copy_button_copies_the_install_command(browser, live_server, settings, screenshot):
    settings.PORTAL_BASE_URL = live_server.url
    owner = factories.UserFactory(username="carol")
    app = factories.ApplicationFactory(slug="shop", name="Shop", owners=[owner])
    policy = factories.ProtectionPolicyFactory(name="Silver", auto_approve_clients=True)
    request = services.submit_client(
        actor=Actor.person(owner, Channel.WEB),
        application=app,
        hostname="web01.example.com",
        name="web-files",
        plugin=Plugin.FILES,
        options={"paths": ["/srv/www"]},
        policy=policy,
    )
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    try:
        log_in(page, live_server.url, "carol")
        page.goto(f"{live_server.url}{request.get_absolute_url()}")
        page.click("text=Show the enrol command")
        page.wait_for_load_state("networkidle")
        command = page.inner_text("#install-command").strip()
        assert command.startswith(f"curl -fsSL {live_server.url}/agent/install.sh | sudo sh -s -- --token ")
        button = page.locator('button[data-copy="#install-command"]')
        assert button.is_visible()  # shown by copy.js; hidden without JavaScript
        screenshot(page, "agent-install-command")
        button.click()
        changed = "document.querySelector('[data-copy=\"#install-command\"]').textContent !== 'Copy'"
        page.wait_for_function(changed)
        assert button.inner_text() == "Copied"
        assert page.evaluate("navigator.clipboard.readText()") == command
    finally:
        context.close()
