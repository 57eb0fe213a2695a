"""Errors of the request workflow; web, admin and API map them to messages and status codes."""

from catalog.errors import CatalogError, InvalidTransition  # noqa: F401 - re-exported for callers


class FourEyesViolation(CatalogError):
    """Nobody approves their own request."""

    code = "four_eyes"
    http_status = 403


class NotPermitted(CatalogError):
    """The actor may not take this decision (only the backup team approves and rejects)."""

    code = "forbidden"
    http_status = 403


class ReasonRequired(CatalogError):
    code = "reason_required"
    http_status = 400


class InvalidRequest(CatalogError):
    """The request itself is not acceptable (bad target, backup not available…)."""

    code = "invalid"
    http_status = 400

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
