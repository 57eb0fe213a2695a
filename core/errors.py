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
