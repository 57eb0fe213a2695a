"""An application's notification channels, managed by its owners: Slack, Microsoft Teams or e-mail.

A channel is a WebhookSubscription with an ``application`` (requests_app/models.py): its deliveries,
retries and admin pages are the signed webhooks' (requests_app/webhooks/). docs/notifications.md.
"""
