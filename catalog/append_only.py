"""Audit trails that can only grow: rows are added, never changed or removed, whatever code tries."""

from __future__ import annotations

from django.db import models

from catalog.tenancy import TenantQuerySet


def _refuse(model) -> PermissionError:
    return PermissionError(f"{str(model._meta.verbose_name_plural).capitalize()} are append-only.")


class AppendOnlyQuerySet(TenantQuerySet):
    def update(self, **kwargs):
        raise _refuse(self.model)

    def delete(self):
        raise _refuse(self.model)


class AppendOnlyModel(models.Model):
    """Saving an existing row or deleting one raises."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise _refuse(type(self))
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise _refuse(type(self))
