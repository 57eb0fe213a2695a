#!/usr/bin/env python
"""Django's command-line utility for Backup Portal."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    # On a developer's checkout nothing is configured; management commands then run
    # with development settings instead of refusing. Anything configured (DEBUG or a
    # SECRET_KEY, as on every real server) is left alone, and the web server
    # (portal.wsgi) never takes this default.
    if not any(name in os.environ for name in ("DEBUG", "SECRET_KEY", "SECRET_KEY_FILE")):
        os.environ["DEBUG"] = "true"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
