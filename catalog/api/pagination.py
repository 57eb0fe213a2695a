"""The catalog's keyset-paged lists (core/api/pagination.py): backups and jobs grow without bound."""

from __future__ import annotations

from core.api.pagination import KeysetPagination


class BackupPagination(KeysetPagination):
    time_field = "taken_at"


class JobPagination(KeysetPagination):
    time_field = "created_at"
