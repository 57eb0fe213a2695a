"""The backup team's shared mailbox in the automation tests; conftest.py points the settings at it.

A plain module, not a conftest: test modules import from here.
"""

TEAM_ADDRESS = "backup-team@example.com"
