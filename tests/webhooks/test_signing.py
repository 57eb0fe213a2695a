"""Webhook signatures: what the portal signs, the reference verifiers in docs/api.md accept; replays fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from requests_app.webhooks import signing

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
SECRET = "whsec_a-secret-only-the-receiver-knows"
BODY = json.dumps({"event": "job.changed", "object": {"id": 7, "error": "naïve ✓"}}).encode()
DELIVERY = "6f1c2d4e-8a0b-4c1e-9d2f-3b4a5c6d7e8f"
NOW = 1_795_668_740  # 2026-11-26T04:52:20Z


def documented_snippet(language: str) -> str:
    """The code block docs/api.md marks with <!-- verify-signature:LANGUAGE -->."""
    match = re.search(
        rf"<!-- verify-signature:{language} -->\s*```{language}\n(.*?)```", DOCS.read_text(), re.DOTALL
    )
    assert match, f"docs/api.md has no {language} signature snippet"
    return match.group(1)


@pytest.fixture(scope="module")
def reference() -> dict:
    namespace: dict = {}
    exec(documented_snippet("python"), namespace)  # noqa: S102 - our own documentation
    return namespace


def signed_headers(
    *, body: bytes = BODY, delivery_id: str = DELIVERY, timestamp: int = NOW
) -> dict[str, str]:
    return signing.headers(SECRET, body, delivery_id=delivery_id, timestamp=timestamp)


def receive(
    reference: dict, headers: dict, body: bytes, seen: set, *, secret: str = SECRET, now: float = NOW
):
    """What a receiver does with one request, through the documented function: True, False or "refused"."""
    try:
        return reference["verify_delivery"](
            secret,
            body,
            headers.get("X-Portal-Timestamp"),
            headers.get("X-Portal-Delivery"),
            headers.get("X-Portal-Signature"),
            seen,
            now=now,
        )
    except reference["Refused"]:
        return "refused"


def test_signature_is_hmac_sha256_of_timestamp_delivery_id_and_raw_body():
    headers = signed_headers()

    assert headers["X-Portal-Delivery"] == DELIVERY
    assert headers["X-Portal-Timestamp"] == str(NOW)
    expected = hmac.new(SECRET.encode(), f"{NOW}.{DELIVERY}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers["X-Portal-Signature"] == f"sha256={expected}"
    # The old scheme (the body alone) is gone: it let a captured request be replayed for ever.
    assert (
        headers["X-Portal-Signature"]
        != "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    )


def test_a_fresh_delivery_verifies_once_and_its_repeat_is_dropped(reference):
    seen: set = set()

    assert receive(reference, signed_headers(), BODY, seen) is True
    assert seen == {DELIVERY}
    # The same request again (a retry after a lost answer, or a replay within the tolerance).
    assert receive(reference, signed_headers(), BODY, seen) is False
    # A retry re-signed later under the same id: genuine, and still a repeat.
    assert receive(reference, signed_headers(timestamp=NOW + 120), BODY, seen, now=NOW + 121) is False
    assert signing.verify(
        SECRET,
        BODY,
        timestamp=str(NOW),
        delivery_id=DELIVERY,
        signature=signed_headers()["X-Portal-Signature"],
        now=NOW,
    )


def test_the_tolerance_is_five_minutes_either_way(reference):
    assert receive(reference, signed_headers(timestamp=NOW - 300), BODY, set()) is True
    assert receive(reference, signed_headers(timestamp=NOW - 301), BODY, set()) == "refused"
    assert receive(reference, signed_headers(timestamp=NOW + 301), BODY, set()) == "refused"
    assert reference["TOLERANCE_SECONDS"] == signing.TOLERANCE_SECONDS == 300


def tamper(what: str) -> tuple[dict, bytes, str]:
    """A request as an attacker could send it, from a captured genuine one."""
    headers, body, secret = signed_headers(), BODY, SECRET
    if what == "old timestamp":  # captured an hour ago, replayed now with its own signature
        headers = signed_headers(timestamp=NOW - 3600)
    elif what == "timestamp moved forward":  # the old signature under a current timestamp
        headers = {**signed_headers(timestamp=NOW - 3600), "X-Portal-Timestamp": str(NOW)}
    elif what == "changed delivery id":  # to slip past the receiver's dedupe
        headers = {**headers, "X-Portal-Delivery": str(uuid.uuid4())}
    elif what == "changed body":
        body = BODY.replace(b'"id": 7', b'"id": 8')
    elif what == "one byte more":
        body = BODY + b" "
    elif what == "re-serialised JSON":
        body = json.dumps(json.loads(BODY), indent=2).encode()
    elif what == "another secret":
        secret = SECRET + "x"
    elif what.startswith("no "):
        headers = {k: v for k, v in headers.items() if k != f"X-Portal-{what[3:].title()}"}
    elif what == "zeros":
        headers = {**headers, "X-Portal-Signature": "sha256=" + "0" * 64}
    elif what == "non-ASCII signature":  # refused, not a TypeError
        headers = {**headers, "X-Portal-Signature": "sha256=é"}
    elif what == "non-ASCII digits in the timestamp":
        headers = {**headers, "X-Portal-Timestamp": "١٧٩٥٦٦٨٧٤٠"}
    elif what == "a huge timestamp":
        headers = {**headers, "X-Portal-Timestamp": "9" * 5000}
    return headers, body, secret


ATTACKS = [
    "old timestamp",
    "timestamp moved forward",
    "changed delivery id",
    "changed body",
    "one byte more",
    "re-serialised JSON",
    "another secret",
    "no timestamp",
    "no delivery",
    "no signature",
    "zeros",
    "non-ASCII signature",
    "non-ASCII digits in the timestamp",
    "a huge timestamp",
]


@pytest.mark.parametrize("what", ATTACKS)
def test_anything_but_the_genuine_request_is_refused(reference, what):
    headers, body, secret = tamper(what)
    seen: set = set()

    assert receive(reference, headers, body, seen, secret=secret) == "refused"
    assert seen == set()  # a refused request never poisons the dedupe
    assert not signing.verify(
        secret,
        body,
        timestamp=headers.get("X-Portal-Timestamp"),
        delivery_id=headers.get("X-Portal-Delivery"),
        signature=headers.get("X-Portal-Signature"),
        now=NOW,
    )


def test_verification_uses_the_receivers_clock_by_default(reference):
    fresh = signed_headers(timestamp=int(time.time()))
    stale = signed_headers(timestamp=int(time.time()) - 3600)
    verify = reference["verify_delivery"]

    assert verify(SECRET, BODY, fresh["X-Portal-Timestamp"], DELIVERY, fresh["X-Portal-Signature"], set())
    with pytest.raises(reference["Refused"]):
        verify(SECRET, BODY, stale["X-Portal-Timestamp"], DELIVERY, stale["X-Portal-Signature"], set())


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_documented_javascript_snippet_agrees(tmp_path):
    cases = {}
    for what in (
        "genuine",
        "repeat",
        "old timestamp",
        "changed delivery id",
        "changed body",
        "another secret",
        "no signature",
    ):
        headers, body, secret = tamper(what)
        cases[what] = {**headers, "body": base64.b64encode(body).decode(), "secret": secret}
    script = tmp_path / "verify.js"
    script.write_text(
        documented_snippet("javascript")
        + "const cases = JSON.parse(process.argv[2]);\n"
        + "const seen = new Set(); const out = {};\n"
        + "for (const [name, c] of Object.entries(cases)) {\n"
        + "  try {\n"
        + "    out[name] = verifyDelivery(c.secret, Buffer.from(c.body, 'base64'), c['X-Portal-Timestamp'],"
        + f" c['X-Portal-Delivery'], c['X-Portal-Signature'], seen, {NOW});\n"
        + "  } catch (e) { out[name] = 'refused'; }\n"
        + "}\n"
        + "console.log(JSON.stringify(out));\n"
    )
    result = subprocess.run(
        ["node", str(script), json.dumps(cases)], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "genuine": True,
        "repeat": False,
        "old timestamp": "refused",
        "changed delivery id": "refused",
        "changed body": "refused",
        "another secret": "refused",
        "no signature": "refused",
    }
