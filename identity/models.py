"""What the portal keeps of the company directory: which groups it manages, whose account it is."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone


class Source(models.TextChoices):
    OIDC = "oidc", "OpenID Connect"
    LDAP = "ldap", "LDAP / Active Directory"


class DirectoryGroup(models.Model):
    """A Django group whose members the directory decides: mirrored at every sign-in and re-check.

    Groups without this row are the portal's own (given by hand in the admin); the mirror
    never touches them.
    """

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="directory")
    directory_name = models.CharField(
        max_length=256, help_text="The group's name in the directory (a mapped name may differ)."
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.group.name} ← {self.directory_name}"


class DirectoryAccount(models.Model):
    """A user who signs in through the directory, and when the directory last vouched for them."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="directory")
    source = models.CharField(max_length=8, choices=Source)
    subject = models.CharField(
        max_length=512, help_text="Who the directory says this is: the OIDC 'sub' or the LDAP DN."
    )
    checked_at = models.DateTimeField(
        default=timezone.now, help_text="The last sign-in or re-check that read the user's groups."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "subject"], name="directoryaccount_unique_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_source_display()})"
