#!/usr/bin/env python
"""Django's command-line utility for Backup Portal.

Nothing is assumed when nothing is configured: like the web server, every command
needs either ``DEBUG=true`` (development, with the built-in development key) or a
``SECRET_KEY`` (production). Otherwise it stops with a message saying so, instead of
quietly running a production host's commands with the public development key.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    from portal.env import ConfigError

    try:
        execute_from_command_line(sys.argv)
    except ConfigError as exc:
        # A configuration mistake, not a bug: the message, not a traceback.
        sys.exit(f"manage.py: configuration error: {exc}")


if __name__ == "__main__":
    main()
