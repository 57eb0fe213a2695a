"""Backup Portal agent: enrols with the portal, polls for jobs, runs them.

Standard library only, so it installs on any server that has Python 3.11.
It imports nothing from the portal; the two speak the protocol described in
docs/agent-protocol.md.
"""

# The agent's release: MAJOR is PROTOCOL_VERSION below, MINOR.PATCH count releases of the agent
# that speak that protocol. The wheel, the zipapp and the .deb carry it (packaging/agent/, docs/agent.md).
__version__ = "4.0.0"

# The version of docs/agent-protocol.md this agent speaks, sent as "protocol"
# in the enrol, poll and complete bodies. 2: failed reports carry error_class.
# 3: a backup's index is uploaded (PUT jobs/<id>/index) before its report, which carries `index`.
# 4: incremental backups (job level/base, report level/base, restore chain; index format 2).
PROTOCOL_VERSION = 4
