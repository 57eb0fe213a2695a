"""Domain errors the catalog raises; each says its code and HTTP status (core/api/errors.py answers them)."""

from core.errors import DomainError


class CatalogError(DomainError):
    code = "error"


class InvalidTransition(CatalogError):
    """The object is not in a state that allows this action."""

    code = "invalid_transition"


class LeaseLost(CatalogError):
    """The job is no longer this agent's to report on (its lease expired and it moved on)."""

    code = "lease_lost"


class InvalidEnrolment(CatalogError):
    code = "invalid_token"
    http_status = 400


class InvalidPath(CatalogError):
    """A path that is malformed or not in the recovery point's file list."""

    code = "invalid_path"
    http_status = 400


class NoFileList(CatalogError):
    """The recovery point has no file list: it can only be restored whole."""

    code = "no_file_list"
    http_status = 404


class InvalidReport(CatalogError):
    """An agent's report that contradicts its job (an incremental not planned, another base): an agent bug."""

    code = "invalid"
    http_status = 400

    def __init__(self, field: str, message: str) -> None:
        self.errors = {field: message}
        super().__init__(message)
