"""Where an application's channel may POST: the documented hosts, over https, never the portal's own network.

An owner, not the backup team, types a channel's URL, and the portal's worker
POSTs to it: unchecked, that is a way to make the portal call an internal
service (SSRF). So a channel URL must be https; a Slack one must be Slack's
incoming-webhook endpoint; a Teams one (a Workflows trigger, whose host varies
by tenant and region: *.logic.azure.com, *.environment.api.powerplatform.com …)
any https URL whose host is not a private, loopback or link-local address. The
host is checked when the channel is saved (a literal address or a local name)
and again, resolved, before every send (``refusal``), because a name can be
pointed elsewhere after it was saved. A name that does not resolve at send time
is refused too (the send is retried later): letting it through would have urllib
resolve it again, to whatever the name points at by then. An address that carries
an IPv4 address inside it (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``,
Teredo) is judged by that IPv4 address as well; typed into a URL, a NAT64 or 6to4
address is refused outright (nobody types one for a chat service).

``PORTAL_WEBHOOK_ALLOW_PRIVATE`` (or DEBUG) lifts the network rule, for a
development set-up and the tests' local receiver. The backup team's own
subscriptions (no application) are configured in the admin and keep their rule:
http or https, anywhere (docs/api.md).

A channel URL is a credential (whoever has it can post into the channel): pages
and the admin show it masked (``masked_url``) and nothing logs it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

SLACK_HOST = "hooks.slack.com"
SLACK_PATH = "/services/"
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def allow_private() -> bool:
    return bool(settings.DEBUG or settings.PORTAL_WEBHOOK_ALLOW_PRIVATE)


def validate(url: str, fmt: str) -> None:
    """Raise ValidationError unless ``url`` is a place a channel of format ``fmt`` may POST to."""
    from requests_app.models import WebhookFormat

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError("Use the https:// URL the chat service gave you.")
    if parts.username or parts.password:
        raise ValidationError("A URL with a user name or password in it is not accepted.")
    private = _is_private_name(host)
    if private and not allow_private():
        raise ValidationError("This address is on a private or local network: the portal does not call it.")
    if private:
        return  # a development or test receiver, allowed by the setting: http is fine there
    if parts.scheme != "https":
        raise ValidationError("Use an https:// URL: the message travels over the internet.")
    if fmt == WebhookFormat.SLACK and (host != SLACK_HOST or not parts.path.startswith(SLACK_PATH)):
        raise ValidationError(f"A Slack incoming webhook URL starts with https://{SLACK_HOST}{SLACK_PATH}")


def refusal(url: str) -> str:
    """Why a send to ``url`` must not happen now (its host resolves to a private address), or ""."""
    if allow_private():
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _is_private_name(host.lower()):
        return "Refused: the URL's host is on a private or local network."
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        # Refused, not let through: urllib would resolve the name again, maybe to somewhere else.
        return "Refused: the URL's host could not be resolved (tried again at the next attempt)."
    if not infos:
        return "Refused: the URL's host could not be resolved (tried again at the next attempt)."
    if any(_is_private_address(info[4][0]) for info in infos):
        return "Refused: the URL's host resolves to a private or local address."
    return ""


def masked_url(url: str) -> str:
    """Scheme and host, and the last four characters: enough to recognise, too little to post with."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…{url[-4:]}"


#: IPv6 ranges that translate to IPv4 (NAT64, RFC 6052 and 8215; 6to4, RFC 3056): refused as literals.
TRANSLATED_NETWORKS = tuple(
    ipaddress.ip_network(net) for net in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16")
)


def _is_private_name(host: str) -> bool:
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        # A name: local by its suffix, or a single label, which resolves on the local network only.
        return host == "localhost" or host.endswith(LOCAL_SUFFIXES) or "." not in host
    if isinstance(address, ipaddress.IPv6Address) and any(address in net for net in TRANSLATED_NETWORKS):
        return True
    return _is_private_address(host)


def _is_private_address(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value.split("%")[0])
    except ValueError:
        return False  # a name: checked when resolved
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # judged as the IPv4 address it is
    return any(not each.is_global or each.is_multicast for each in (address, *_embedded_ipv4(address)))


def _embedded_ipv4(address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: NAT64, 6to4, Teredo (server and client)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = []
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:
        found += list(address.teredo)
    if any(address in net for net in TRANSLATED_NETWORKS[:2]):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found
