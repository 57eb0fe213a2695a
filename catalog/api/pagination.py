"""The catalog's keyset-paged lists (core/api/pagination.py): backups and jobs grow without bound;
and pages of sequences read from a file list (``SequencePage``)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import NotFound
from rest_framework.utils.urls import remove_query_param, replace_query_param

from core.api.pagination import KeysetPagination, PagePagination


class BackupPagination(KeysetPagination):
    time_field = "taken_at"


class JobPagination(KeysetPagination):
    time_field = "created_at"


class SequencePage:
    """A page of a sequence that is not a queryset (a folder read from a file list, search matches).

    The envelope of the page-numbered lists (``PagePagination``: ``?page=N&page_size=M``,
    ``count``, ``next``, ``previous``, ``results``), computed from a total, so the caller
    reads only the page it shows: ``offset``/``limit`` say which entries.
    """

    page_size = PagePagination.page_size
    max_page_size = PagePagination.max_page_size

    def __init__(self, request) -> None:
        self.request = request
        # As DRF's page numbers: a page that is not a number from 1 is a 404, a bad size the default.
        try:
            self.number = int(request.query_params.get("page") or 1)
        except ValueError:
            raise NotFound("Invalid page.") from None
        if self.number < 1:
            raise NotFound("Invalid page.")
        try:
            size = int(request.query_params["page_size"])
        except (KeyError, ValueError):
            size = self.page_size
        self.limit = min(size, self.max_page_size) if size > 0 else self.page_size
        self.offset = (self.number - 1) * self.limit

    def envelope(self, total: int, results: list, **extra) -> dict:
        """The answer: count, links, ``extra`` keys, then the results. NotFound past the last page."""
        if self.number > 1 and self.offset >= total:
            raise NotFound("Invalid page.")
        url = self.request.build_absolute_uri()
        following = None
        if self.offset + self.limit < total:
            following = replace_query_param(url, "page", self.number + 1)
        previous = None
        if self.number > 1:
            previous = (
                remove_query_param(url, "page")
                if self.number == 2
                else replace_query_param(url, "page", self.number - 1)
            )
        return {"count": total, "next": following, "previous": previous, **extra, "results": results}

    @classmethod
    def parameters(cls) -> list:
        return [
            OpenApiParameter("page", int, description="The page, from 1."),
            OpenApiParameter(
                "page_size",
                int,
                description=f"Entries per page, 1 to {cls.max_page_size} (default {cls.page_size}).",
            ),
        ]
