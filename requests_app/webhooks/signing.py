"""Webhook signatures: an HMAC-SHA256 over the send time, the delivery id and the raw body.

Three headers travel with every attempt::

    X-Portal-Delivery:  6f1c2d4e-8a0b-4c1e-9d2f-3b4a5c6d7e8f   (the same for every retry)
    X-Portal-Timestamp: 1795668740                              (Unix seconds, when this attempt was signed)
    X-Portal-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{delivery id}.{raw body}">

keyed with the subscription's secret. The signature covers the bytes on the
wire, not a re-serialisation of the JSON: a receiver verifies before it parses.
Binding the timestamp and the delivery id into it lets a receiver refuse a
captured request replayed later (too old) or under another id (no longer
matches), and drop a repeat of an id it has seen. Each attempt is signed
afresh, so a retry hours after the event still carries a current timestamp.
``verify`` is the receiver's side, as docs/api.md gives it to integrators.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

PREFIX = "sha256="
#: A receiver refuses a timestamp further than this from its own clock (either way).
TOLERANCE_SECONDS = 5 * 60

DELIVERY_HEADER = "X-Portal-Delivery"
TIMESTAMP_HEADER = "X-Portal-Timestamp"
SIGNATURE_HEADER = "X-Portal-Signature"

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def new_secret() -> str:
    """A fresh subscription secret: 256 bits, URL-safe, easy to paste into a ticketing system."""
    return f"whsec_{secrets.token_urlsafe(32)}"


def signed_content(timestamp: int | str, delivery_id: str, body: bytes) -> bytes:
    """What the HMAC covers: ``{timestamp}.{delivery id}.`` then the raw body, byte for byte."""
    return f"{timestamp}.{delivery_id}.".encode() + body


def sign(secret: str, body: bytes, *, timestamp: int | str, delivery_id: str) -> str:
    """The X-Portal-Signature value for one attempt."""
    digest = hmac.new(secret.encode(), signed_content(timestamp, delivery_id, body), hashlib.sha256)
    return PREFIX + digest.hexdigest()


def headers(secret: str, body: bytes, *, delivery_id: str, timestamp: int) -> dict[str, str]:
    """The three headers that authenticate one attempt of a delivery."""
    return {
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, body, timestamp=timestamp, delivery_id=delivery_id),
    }


def verify(
    secret: str,
    body: bytes,
    *,
    timestamp: str,
    delivery_id: str,
    signature: str,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does: the signature matches (in constant time) and the timestamp is current.

    Dropping a repeated delivery id is the receiver's memory, not this function's.
    """
    timestamp, delivery_id, signature = timestamp or "", delivery_id or "", signature or ""
    if not _TIMESTAMP.fullmatch(timestamp):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, body, timestamp=timestamp, delivery_id=delivery_id)
    # Bytes, not str: compare_digest refuses non-ASCII text, and a header is untrusted input.
    return hmac.compare_digest(expected.encode(), signature.encode())
