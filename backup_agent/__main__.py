"""Allow `python -m backup_agent` where the console script is not installed."""

from backup_agent.cli import main

raise SystemExit(main())
