"""X-Portal-Signature: ``sha256=`` and the hex HMAC-SHA256 of the raw body, keyed with the secret.

The signature covers the bytes on the wire, not a re-serialisation of the
JSON: a receiver must verify before it parses (docs/api.md has the snippet).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "sha256="


def new_secret() -> str:
    """A fresh subscription secret: 256 bits, URL-safe, easy to paste into a ticketing system."""
    return f"whsec_{secrets.token_urlsafe(32)}"


def sign(secret: str, body: bytes) -> str:
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does; constant-time, so the comparison leaks nothing about the expected value."""
    # Bytes, not str: compare_digest refuses non-ASCII text, and a header is untrusted input.
    return hmac.compare_digest(sign(secret, body).encode(), (header or "").encode())
