"""Pagination of the public API (/api/v1/): page numbers for small lists, keysets for the big ones.

Backups and jobs grow without bound, so they are paged by keyset ("seek"): the
cursor carries the (time, id) of the last row seen and the next page is
``WHERE (time, id) < cursor ORDER BY time DESC, id DESC LIMIT n``. The
database walks the time index from the cursor on, so page 10,000 costs what
page 1 costs, no row is skipped or repeated when new rows arrive, and no
``COUNT(*)`` is ever run. The id breaks ties: an agent's poll claims up to ten
jobs at the same instant, so their backups share ``taken_at``.

Every app's lists use these; an app declares its keyset pagination by naming
the time field (catalog/api/pagination.py).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from django.db.models import QuerySet
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

#: The largest id a BigAutoField holds: a cursor naming a bigger one is refused, not sent to the database.
MAX_ID = 2**63 - 1


class PagePagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M`` with a count: for lists that stay small (applications, requests…)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class KeysetPagination(pagination.BasePagination):
    """Newest first by ``(time_field, id)``; ``next`` and ``previous`` are opaque cursor links.

    Why not DRF's ``CursorPagination``: its response (next, previous, results) and
    parameters (``cursor``, ``page_size``) would fit, its paging would not. It seeks
    on the first ordering field alone (``time < position``) and steps through rows
    that share a time with an OFFSET kept in the cursor, capped at ``offset_cutoff``
    (1000). Here ties are normal: every job of one scheduler run has the same
    ``created_at``, and an agent's poll gives its backups one ``taken_at``. With more
    tied rows than the cap, ``next`` returns the same page for ever; before that,
    each page through the ties costs an OFFSET scan; and ``previous`` from inside a
    run of ties comes back empty (DRF's own "paging artifacts"). The id in our key
    makes every position unique, so no offset is ever needed, in either direction.
    """

    time_field: str = ""
    page_size = 50
    max_page_size = 200
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        self.request = request
        self.base_url = request.build_absolute_uri()
        size = self._page_size(request)
        position = self._decode(request.query_params.get(self.cursor_query_param))
        t, desc = self.time_field, (f"-{self.time_field}", "-id")
        if position is None:
            rows = list(queryset.order_by(*desc)[: size + 1])
            self.has_next, self.has_previous = len(rows) > size, False
            rows = rows[:size]
        else:
            moment, pk, backwards = position
            if backwards:
                # The page before the cursor: read upwards from it, then turn the rows round.
                newer = queryset.filter(**{f"{t}__gte": moment}).exclude(**{t: moment, "id__lte": pk})
                rows = list(newer.order_by(t, "id")[: size + 1])
                self.has_previous, self.has_next = len(rows) > size, True
                rows = rows[:size][::-1]
            else:
                # "<=" on the time alone bounds the index scan; the exclude drops the ties already seen.
                older = queryset.filter(**{f"{t}__lte": moment}).exclude(**{t: moment, "id__gte": pk})
                rows = list(older.order_by(*desc)[: size + 1])
                self.has_next, self.has_previous = len(rows) > size, True
                rows = rows[:size]
        self.rows = rows
        return rows

    def get_paginated_response(self, data) -> Response:
        return Response({"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.rows:
            return None
        return self._link(self.rows[-1], backwards=False)

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if not self.rows:
            # Paged backwards past the newest row: the first page is what comes before.
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self._link(self.rows[0], backwards=True)

    # --- Cursors ------------------------------------------------------------------------------

    def _link(self, row, *, backwards: bool) -> str:
        moment = getattr(row, self.time_field).astimezone(UTC).isoformat()
        raw = json.dumps([moment, row.pk, backwards], separators=(",", ":")).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return replace_query_param(self.base_url, self.cursor_query_param, cursor)

    def _decode(self, cursor: str | None) -> tuple[datetime, int, bool] | None:
        if cursor is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            moment, pk, backwards = json.loads(raw)
            moment = datetime.fromisoformat(moment)
            if moment.tzinfo is None or type(pk) is not int or not 1 <= pk <= MAX_ID:
                raise ValueError
            if not isinstance(backwards, bool):
                raise ValueError
            moment = moment.astimezone(UTC)
        except (binascii.Error, ValueError, TypeError, OverflowError, UnicodeError):
            raise ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the next or previous link as given."]}
            ) from None
        return moment, pk, backwards

    def _page_size(self, request) -> int:
        try:
            size = int(request.query_params[self.page_size_query_param])
        except (KeyError, ValueError):
            return self.page_size
        return min(max(size, 1), self.max_page_size)

    # --- Schema -------------------------------------------------------------------------------

    def get_paginated_response_schema(self, schema: dict) -> dict:
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {"next": link, "previous": link, "results": schema},
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "The position to read from: take it from a next or previous link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page, 1 to {self.max_page_size} (default {self.page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]
