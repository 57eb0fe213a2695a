"""GET /agent/…: the agent's zipapp, its SHA-256, the .deb and the one-paste installer.

Public on purpose: a new server has no portal session, and nothing here is secret (the
enrolment token is passed on the server's command line, never baked into a download).
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from agent_dist import artifacts, build

log = logging.getLogger(__name__)

INSTALL_TEMPLATE = Path(__file__).with_name("install.sh.in")
# The portal's URL goes into a shell script: refuse anything but a plain URL.
SAFE_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:@%_~/]+$")
SHORT = cache_control(public=True, max_age=60, must_revalidate=True)


def portal_url() -> str:
    url = settings.PORTAL_BASE_URL.rstrip("/")
    if not SAFE_URL.match(url):
        raise ValueError(f"PORTAL_BASE_URL {url!r} is not a plain http(s) URL")
    return url


def install_script() -> str:
    """install.sh with this portal's URL, the current zipapp's SHA-256 and version, and the unit."""
    app = artifacts.zipapp()
    url = portal_url()
    text = INSTALL_TEMPLATE.read_text(encoding="utf-8")
    values = {
        "@PORTAL_HUMAN@": url,
        "@PORTAL@": shlex.quote(url),
        "@SHA256@": shlex.quote(app.sha256),
        "@VERSION@": shlex.quote(app.version),
        "@UNIT@": build.unit_text().rstrip("\n"),
    }
    for key, value in values.items():
        text = text.replace(key, value)
    return text


@require_GET
@SHORT
def install_sh(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(install_script(), content_type="text/x-shellscript; charset=utf-8")
    response["Content-Disposition"] = 'inline; filename="install.sh"'
    return response


@require_GET
@SHORT
def zipapp(request: HttpRequest) -> FileResponse:
    app = artifacts.zipapp()
    response = FileResponse(app.path.open("rb"), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{build.PYZ_NAME}"'
    response["X-Checksum-SHA256"] = app.sha256
    response["X-Agent-Version"] = app.version
    return response


@require_GET
@SHORT
def zipapp_sha256(request: HttpRequest) -> HttpResponse:
    """The `sha256sum -c` line for backup-agent.pyz."""
    app = artifacts.zipapp()
    return HttpResponse(f"{app.sha256}  {build.PYZ_NAME}\n", content_type="text/plain; charset=utf-8")


@require_GET
@SHORT
def deb_latest(request: HttpRequest) -> HttpResponse:
    """/agent/backup-agent.deb: a redirect to the versioned file name apt and dpkg expect."""
    return HttpResponseRedirect(reverse("agent-dist:deb", args=[artifacts.zipapp().version]))


@require_GET
@SHORT
def deb(request: HttpRequest, version: str) -> HttpResponse:
    app = artifacts.zipapp()
    if version != app.version:
        message = f"this portal ships backup-agent {app.version}, not {version}\n"
        return HttpResponse(message, status=404, content_type="text/plain")
    try:
        path = artifacts.deb()
    except build.BuildError as exc:
        log.warning("agent .deb unavailable: %s", exc)
        return HttpResponse(
            "The Debian package is not available on this portal (dpkg-deb is not installed here). "
            "Use /agent/install.sh or /agent/backup-agent.pyz instead.\n",
            status=404,
            content_type="text/plain",
        )
    response = FileResponse(path.open("rb"), content_type="application/vnd.debian.binary-package")
    response["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return response
