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
# What goes into the shell script, matched whole (fullmatch: `$` would let a trailing newline
# through, and a newline ends install.sh's comment lines): a plain URL, a SHA-256, a version.
SAFE_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:@%_~/]+")
SAFE_SHA256 = re.compile(r"[0-9a-f]{64}")
SAFE_VERSION = re.compile(r"[0-9A-Za-z.+~-]+")
UNIT_END = "BACKUP_AGENT_UNIT"  # the here-document's delimiter in install.sh.in
SHORT = cache_control(public=True, max_age=60, must_revalidate=True)
DEB_MISSING = (
    "The Debian package is not available on this portal (dpkg-deb is not installed here). "
    "Use /agent/install.sh or /agent/backup-agent.pyz instead.\n"
)


class UnsafeValue(ValueError):
    """A value that cannot go into install.sh as it is: the script is not served."""


def _checked(name: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value):
        raise UnsafeValue(f"{name} {value!r} cannot go into install.sh (expected {pattern.pattern})")
    return value


def portal_url() -> str:
    url = settings.PORTAL_BASE_URL.rstrip("/")
    if not SAFE_URL.fullmatch(url):
        raise UnsafeValue(f"PORTAL_BASE_URL {url!r} is not a plain http(s) URL")
    return url


def install_script() -> str:
    """install.sh with this portal's URL, the current zipapp's SHA-256 and version, and the unit.

    Every value is checked whole before it is written in (UnsafeValue otherwise): none can end
    a comment line, leave its quotes or end the unit's here-document.
    """
    app = artifacts.zipapp()
    url = portal_url()
    sha256 = _checked("the zipapp's SHA-256", app.sha256, SAFE_SHA256)
    version = _checked("the agent version", app.version, SAFE_VERSION)
    unit = build.unit_text().rstrip("\n")
    if UNIT_END in unit.splitlines():
        raise UnsafeValue(f"the systemd unit has a line {UNIT_END!r}: it would end install.sh's heredoc")
    text = INSTALL_TEMPLATE.read_text(encoding="utf-8")
    values = {
        "@PORTAL_HUMAN@": url,
        "@PORTAL@": shlex.quote(url),
        "@SHA256@": shlex.quote(sha256),
        "@VERSION@": shlex.quote(version),
        "@UNIT@": unit,
    }
    for key, value in values.items():
        text = text.replace(key, value)
    return text


@require_GET
@SHORT
def install_sh(request: HttpRequest) -> HttpResponse:
    try:
        script = install_script()
    except UnsafeValue as exc:
        log.error("install.sh is not served: %s; fix it (PORTAL_BASE_URL) and restart the portal", exc)
        return HttpResponse(
            "install.sh is not available: this portal's configuration is invalid (see its log).\n",
            status=500,
            content_type="text/plain",
        )
    response = HttpResponse(script, content_type="text/x-shellscript; charset=utf-8")
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
def deb_sha256(request: HttpRequest) -> HttpResponse:
    """The `sha256sum -c` line for the whole .deb (`backup-agent upgrade` checks it before dpkg -i)."""
    try:
        path, checksum = artifacts.deb_with_sha256()
    except build.BuildError as exc:
        log.warning("agent .deb unavailable: %s", exc)
        return HttpResponse(DEB_MISSING, status=404, content_type="text/plain")
    return HttpResponse(f"{checksum}  {path.name}\n", content_type="text/plain; charset=utf-8")


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
        return HttpResponse(DEB_MISSING, status=404, content_type="text/plain")
    response = FileResponse(path.open("rb"), content_type="application/vnd.debian.binary-package")
    response["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return response
