#!/usr/bin/env python
"""The tests' own OpenID Connect provider (django-oauth-toolkit): see provider/settings.py."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ["DJANGO_SETTINGS_MODULE"] = "provider.settings"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
