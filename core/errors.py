"""The base of every domain error: a machine-readable ``code`` and the HTTP status an API answers with.

Each app's errors (catalog/errors.py, requests_app/errors.py) subclass it and
say their own status, so the API's exception handler (core/api/errors.py)
needs to know none of them.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "error"
    #: What an API answers; most domain refusals are "not in a state that allows this".
    http_status = 409
    #: Field name → message, when the error is about particular fields (answered as a 400's ``errors``).
    errors: dict[str, str] | None = None


class MfaRequired(DomainError):
    """A four-eyes decision from a session that has not passed multi-factor authentication.

    ``url`` is where the person proves it (identity.mfa builds the message and the link).
    """

    code = "mfa_required"
    http_status = 403

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(message)
