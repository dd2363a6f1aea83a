"""The App's exception tree.

BotError
 ├── SettingsError      the App's settings are missing or invalid (refuse to start)
 ├── WebhookError       a delivery is unsigned, wrongly signed, too large or malformed
 └── GitHubError        GitHub answered with an error (``status``)
      ├── RateLimited   primary or secondary rate limit; ``retry_after`` seconds
      ├── NotFound      404
      └── Unprocessable 422: GitHub refused the request's content (never retried)
"""

from __future__ import annotations


class BotError(Exception):
    """Base class of every error the App raises on purpose."""


class SettingsError(BotError):
    """The App cannot start with these settings; the message lists every problem."""


class WebhookError(BotError):
    """A webhook delivery is refused; ``status`` is the HTTP answer to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GitHubError(BotError):
    """GitHub answered with an error status."""

    def __init__(self, status: int, message: str, retryable: bool | None = None) -> None:
        super().__init__(f"GitHub answered {status}: {message}")
        self.status = status
        self.retryable = status >= 500 if retryable is None else retryable


class RateLimited(GitHubError):
    """A rate limit; try again after ``retry_after`` seconds."""

    def __init__(self, status: int, message: str, retry_after: float) -> None:
        super().__init__(status, message, retryable=True)
        self.retry_after = retry_after


class NotFound(GitHubError):
    def __init__(self, message: str) -> None:
        super().__init__(404, message, retryable=False)


class Unprocessable(GitHubError):
    def __init__(self, message: str) -> None:
        super().__init__(422, message, retryable=False)
