"""Hooks for apps that build on the catalog (requests, webhooks). Sent after commit only.

The catalog never imports ``requests_app``; it announces what happened and
lets it react. Receivers get ids, not objects, and load what they need.
"""

from django.dispatch import Signal

#: A job changed state. kwargs: job_id, previous_state, state.
job_changed = Signal()

#: An agent enrolled or was re-keyed. kwargs: agent_id, enrolment_token_id,
#: client_ids (the clients that went live with it).
agent_enrolled = Signal()

#: An alert was raised. kwargs: alert_id.
alert_raised = Signal()
