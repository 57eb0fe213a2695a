#!/usr/bin/env python
"""Django's command-line utility for Backup Portal.

Nothing is assumed when nothing is configured: like the web server, every command
needs either ``DEBUG=true`` (development, with the built-in development key) or a
``SECRET_KEY`` (production). Otherwise it stops with a message saying so, instead of
quietly running a production host's commands with the public development key.

The one exception is a command that only reads the code (``makemigrations``,
``sqlmigrate``): it signs nothing and serves nothing, so it runs with a random key
that dies with the process, and a bare checkout can check its migrations.
"""

import os
import secrets
import sys

# Commands that read models and migration files only: no key is ever used for anything.
CODE_ONLY_COMMANDS = frozenset({"makemigrations", "sqlmigrate"})


def _unconfigured() -> bool:
    return not any(os.environ.get(name) for name in ("DEBUG", "SECRET_KEY", "SECRET_KEY_FILE"))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    if _unconfigured() and len(sys.argv) > 1 and sys.argv[1] in CODE_ONLY_COMMANDS:
        os.environ["SECRET_KEY"] = secrets.token_urlsafe(50)
    from django.core.management import execute_from_command_line

    from portal.env import ConfigError

    try:
        execute_from_command_line(sys.argv)
    except ConfigError as exc:
        # A configuration mistake, not a bug: the message, not a traceback.
        sys.exit(f"manage.py: configuration error: {exc}")


if __name__ == "__main__":
    main()
