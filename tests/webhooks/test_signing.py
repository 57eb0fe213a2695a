"""X-Portal-Signature: what the portal signs, docs/api.md's snippets verify; nothing else passes."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from requests_app.webhooks import signing

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
SECRET = "whsec_a-secret-only-the-receiver-knows"
BODY = json.dumps({"event": "job.changed", "object": {"id": 7, "error": "naïve ✓"}}).encode()


def documented_snippet(language: str) -> str:
    """The code block docs/api.md marks with <!-- verify-signature:LANGUAGE -->."""
    match = re.search(
        rf"<!-- verify-signature:{language} -->\s*```{language}\n(.*?)```", DOCS.read_text(), re.DOTALL
    )
    assert match, f"docs/api.md has no {language} signature snippet"
    return match.group(1)


@pytest.fixture(scope="module")
def verify_signature():
    namespace: dict = {}
    exec(documented_snippet("python"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify_signature"]


def test_signature_is_sha256_hmac_of_the_raw_body_in_hex():
    signature = signing.sign(SECRET, BODY)
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", signature)
    # RFC 4231 test case 2: the construction is plain HMAC-SHA256.
    assert signing.sign("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_documented_python_snippet_accepts_what_the_portal_signs(verify_signature):
    assert verify_signature(SECRET, BODY, signing.sign(SECRET, BODY))
    assert signing.verify(SECRET, BODY, signing.sign(SECRET, BODY))


@pytest.mark.parametrize(
    "body, secret, header",
    [
        (BODY + b" ", SECRET, None),  # one byte more in the body
        (json.dumps(json.loads(BODY), indent=2).encode(), SECRET, None),  # the same JSON, re-serialised
        (BODY, SECRET + "x", None),  # another secret
        (BODY, SECRET, ""),  # no header
        (BODY, SECRET, "sha256=" + "0" * 64),
        (BODY, SECRET, "sha256=é"),  # non-ASCII: refused, not a TypeError
    ],
)
def test_documented_python_snippet_refuses_anything_else(verify_signature, body, secret, header):
    if header is None:
        header = signing.sign(SECRET, BODY)
    assert not verify_signature(secret, body, header)
    assert not signing.verify(secret, body, header)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_documented_javascript_snippet_agrees(tmp_path):
    good = signing.sign(SECRET, BODY)
    script = tmp_path / "verify.js"
    script.write_text(
        documented_snippet("javascript")
        + "const body = Buffer.from(process.argv[2], 'base64');\n"
        + f"console.log(JSON.stringify([verifySignature({SECRET!r}, body, {good!r}),"
        + f" verifySignature({SECRET!r}, Buffer.concat([body, Buffer.from(' ')]), {good!r}),"
        + f" verifySignature('other', body, {good!r}), verifySignature({SECRET!r}, body, undefined)]));\n"
    )
    result = subprocess.run(
        ["node", str(script), base64.b64encode(BODY).decode()], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, False, False, False]
