"""States of requests and the kinds of audit events."""

from django.db import models


class RequestStatus(models.TextChoices):
    """submitted → approved | rejected | cancelled
    approved → running → completed | failed          (restore requests)
    approved → provisioned                           (client requests, once the agent enrolled)
    approved → completed                             (retire requests: done at approval)
    approved → cancelled                             (before the work started)
    """

    SUBMITTED = "submitted", "Submitted"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    PROVISIONED = "provisioned", "Provisioned"

    @classmethod
    def open(cls) -> tuple[str, ...]:
        return (cls.SUBMITTED, cls.APPROVED, cls.RUNNING)

    @classmethod
    def terminal(cls) -> tuple[str, ...]:
        return (cls.REJECTED, cls.CANCELLED, cls.COMPLETED, cls.FAILED, cls.PROVISIONED)


class ClientAction(models.TextChoices):
    """What a client request asks for: protect a new workload, or retire one that is protected."""

    PROTECT = "protect", "Protect a new client"
    RETIRE = "retire", "Retire a client"


class ActorKind(models.TextChoices):
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"


class Channel(models.TextChoices):
    WEB = "web", "Web portal"
    ADMIN = "admin", "Admin"
    API = "api", "REST API"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"
