"""The App's exception tree, a branch of :class:`pipeline.errors.LabbotError`.

BotError
 ├── SettingsError      the App's settings are missing or invalid (refuse to start; exit 2)
 ├── WebhookError       a delivery is unsigned, wrongly signed, too large or malformed
 ├── GitHubError        GitHub answered with an error (``status``)
 │    ├── RateLimited   primary or secondary rate limit; ``retry_after`` seconds
 │    ├── NotFound      404
 │    └── Unprocessable 422: GitHub refused the request's content (never retried)
 ├── ValidatorFailed    (bot.isolation) a validation child gave no verdict
 └── Superseded         a newer push replaced a job's head SHA; its result is dropped
"""

from __future__ import annotations

from pipeline.errors import ExitCode, LabbotError


class BotError(LabbotError):
    """Base class of every error the App raises on purpose."""


class SettingsError(BotError):
    """The App cannot start with these settings.

    ``problems`` holds one line per missing or invalid variable (naming it, never echoing a
    secret); the message is the list under a heading, as ``labbot serve`` prints it.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("labbot cannot start:\n  - " + "\n  - ".join(self.problems))


class Superseded(BotError):
    """A newer push replaced this job's head SHA (``head_sha``); its result must not be
    posted."""

    def __init__(self, head_sha: str) -> None:
        super().__init__(f"superseded: {head_sha} is no longer the head of the pull request")
        self.head_sha = head_sha


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
