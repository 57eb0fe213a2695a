"""Signing in at the provider: the password in the people file; a person marked inactive cannot."""

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from provider.people import person


class FileUsersBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        found = person(username or "")
        if not found or found.get("password") != password or not found.get("active", True):
            return None
        user, _ = User.objects.get_or_create(username=username)
        return user
