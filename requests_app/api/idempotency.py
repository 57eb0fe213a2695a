"""Idempotent POSTs: every POST of the public API runs in one transaction and honours ``Idempotency-Key``.

A caller that sends ``Idempotency-Key: <up to 255 characters>`` with a POST
gets the first answer again for every repeat of the same request (same method,
path and body) — status and body, with ``Idempotent-Replayed: true`` — and a
422 if it reuses the key for a different request. Keys belong to the caller
(``api_key:<id>`` or ``user:<id>``), so two integrations never meet. A 4xx is
stored like a success, as Stripe does: retrying a refused request is refused
the same way. A 5xx is not stored (the transaction is rolled back), so a retry
runs again. Records are kept 48 hours (``purge_idempotency_records``; the
promise to callers is 24).

Concurrent duplicates: the record is inserted *first*, inside the request's
transaction, with a placeholder status. A duplicate's insert then waits — on
the unique index in PostgreSQL, on the write lock that ``BEGIN IMMEDIATE``
takes in SQLite — until the first request commits, fails on the constraint,
and replays the committed answer. If the first request rolls back, the
duplicate's insert goes through and it does the work itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from requests_app.models import ApiKey, IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
#: Callers may rely on 24 hours; twice that leaves room for a late retry and a late purge.
RETENTION = timedelta(hours=48)
#: ``status_code`` of a record until its request has its answer: only ever seen uncommitted, since
#: the answer is written in the same transaction (and a 5xx rolls the record back with the rest).
IN_PROGRESS = 0


class KeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was already used for a different request; use a new key."


class BodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is too large."


def owner_of(request) -> str:
    if isinstance(request.auth, ApiKey):
        return f"api_key:{request.auth.pk}"
    return f"user:{request.user.pk}"


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two requests hash alike
        digest.update(part)
    return digest.hexdigest()


def read_body(request) -> bytes:
    """The raw body, read before authentication: session auth's CSRF check parses (and consumes) it."""
    try:
        return request._request.body
    except RequestDataTooBig:
        raise BodyTooLarge() from None


def _valid_key(value: str) -> str:
    if not value.strip() or len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise exceptions.ValidationError(
            {HEADER: [f"Send 1 to {MAX_KEY_LENGTH} printable characters, e.g. a UUID."]}
        )
    return value


SHOWN_ONCE = (
    409,
    {
        "code": "shown_once",
        "detail": "That answer held a one-time secret and was not kept; ask for a new one.",
    },
)


def respond_once(
    request, body: bytes, respond: Callable[[], Response], *, replayable: bool = True
) -> Response:
    """Run ``respond`` in a transaction; with an Idempotency-Key, at most once per key and request.

    An answer that holds a secret shown once (``replayable=False``) is not kept:
    a replay gets 409 instead of the secret.
    """
    key = request.headers.get(HEADER)
    with transaction.atomic():
        if key is None:
            return _settled(respond())
        request_hash = fingerprint(request.method, request.path, body)
        record, created = _claim(owner_of(request), _valid_key(key), request_hash)
        if not created:
            return _replay(record, request_hash)
        response = _settled(respond())
        if response.status_code < 500:
            code, data = response.status_code, response.data
            if not replayable and code < 400:
                code, data = SHOWN_ONCE
            IdempotencyRecord.objects.filter(pk=record.pk).update(status_code=code, response=_stored(data))
        return response


def _settled(response: Response) -> Response:
    if response.status_code >= 500:
        # Nothing half-done stays behind, and no answer is stored: a retry runs again.
        transaction.set_rollback(True)
    return response


def _claim(owner: str, key: str, request_hash: str) -> tuple[IdempotencyRecord, bool]:
    try:
        with transaction.atomic():  # a savepoint: a duplicate key must not break the outer transaction
            record = IdempotencyRecord.objects.create(
                owner=owner, key=key, fingerprint=request_hash, status_code=IN_PROGRESS, response={}
            )
        return record, True
    except IntegrityError:
        # Reached only once the request that holds the key has committed (see the module docstring).
        return IdempotencyRecord.objects.get(owner=owner, key=key), False


def _replay(record: IdempotencyRecord, request_hash: str) -> Response:
    if record.fingerprint != request_hash:
        raise KeyReused()
    return Response(record.response, status=record.status_code, headers={REPLAYED_HEADER: "true"})


def _stored(data: object) -> object:
    text = json.dumps(data, cls=JSONEncoder)
    # jsonb cannot hold U+0000; the parser refuses it in bodies, this covers anything echoed back.
    return json.loads(text.replace("\\u0000", "\\ufffd"))


def purge_idempotency_records(now: datetime | None = None) -> int:
    """Delete records past the retention window; a periodic task. Returns how many went."""
    cutoff = (now or timezone.now()) - RETENTION
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


class IdempotentPostMixin:
    """For API views: each POST in one transaction, answered at most once per Idempotency-Key.

    DRF's own ``dispatch`` runs; for a POST, ``initial`` does two more things.
    It reads the body before authentication, and, once the caller is
    authenticated, permitted and within the rate limits, it puts the handler
    that ``dispatch`` is about to call (``dispatch`` looks it up after
    ``initial``) inside ``respond_once``. The handler's exceptions become
    responses *inside* the transaction, so a 4xx is stored; an unhandled one
    propagates, rolls back and becomes a 500. What fails before the handler
    (authentication, throttling, a body too large) or in ``respond_once``
    itself (an unusable key, a key reused) is answered by ``dispatch`` as
    usual and never stored.
    """

    def initial(self, request, *args, **kwargs) -> None:
        if request.method != "POST":
            super().initial(request, *args, **kwargs)
            return
        body = read_body(request)
        super().initial(request, *args, **kwargs)
        handler = getattr(self, "post", self.http_method_not_allowed)
        replayable = getattr(self, "action", None) not in getattr(self, "unreplayable_actions", ())

        def post(request, *args, **kwargs) -> Response:
            answer = partial(self._answer, handler, request, *args, **kwargs)
            return respond_once(request, body, answer, replayable=replayable)

        self.post = post

    def _answer(self, handler, request, *args, **kwargs) -> Response:
        try:
            return handler(request, *args, **kwargs)
        except Exception as exc:
            return self.handle_exception(exc)
