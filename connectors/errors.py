"""Errors classified by the action they require.

Connectors raise these; the pipeline catches the classes and never matches message strings::

    DocrelayError
    ├── TransientError        retry with backoff until max attempts, then `dead`
    │   └── RateLimited       retry after the vendor's Retry-After (capped)
    ├── NotReady              the vendor is still working: poll again later, not a failure
    ├── TerminalError         permanent: the submission becomes `rejected`, reason kept
    ├── AuthFailed            credentials refused: pause this profile, alert, keep the queue
    └── WebhookRejected       a webhook call failed verification: answer 4xx, store nothing

Messages must never contain secrets: connectors build them from status codes and vendor
error bodies, never from request headers.
"""

from __future__ import annotations


class DocrelayError(Exception):
    """Base of every classified error."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        """A longer diagnostic (a vendor response body, truncated); never holds secrets."""

    def __str__(self) -> str:
        return self.message


class TransientError(DocrelayError):
    """Worth retrying: timeouts, connection errors, 5xx, a locked database."""


class StoreUnavailable(TransientError):
    """The store cannot take a write now (another process holds its lock, or it is
    unreachable): a source leaves the item where it is and offers it again later."""


class RateLimited(TransientError):
    """The vendor asked us to slow down; `retry_after` is in seconds when it said so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(DocrelayError):
    """The vendor has not finished; ask again later (`retry_after` seconds if known)."""

    def __init__(self, message: str = "not ready", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TerminalError(DocrelayError):
    """Retrying cannot help: bad input, or the vendor refused the document."""


class AuthFailed(DocrelayError):
    """Credentials were refused; the profile needs re-authentication by a person."""


class WebhookRejected(DocrelayError):
    """A webhook call failed verification (signature, size, replay)."""

    def __init__(self, message: str, *, status_code: int = 401) -> None:
        super().__init__(message)
        self.status_code = status_code
