"""The one error root of the project.

Every error the project raises on purpose derives from :class:`LightningError`. The ``retriable`` flag
decides what a caller does with it: a worker loop retries a retriable error with backoff and dead-letters
the rest; the CLI prints the message on one line and exits non-zero; the API answers 4xx or 503.
Each room adds its own subclasses in its own ``errors.py`` when it first needs one.
"""

from __future__ import annotations


class LightningError(Exception):
    """Root of every error raised on purpose by Agent Lightning ES."""

    retriable: bool = False
    #: The process exit code the CLI uses when this error ends a command.
    exit_code: int = 1


class ConfigError(LightningError):
    """A setting is missing, malformed or contradicts another one."""

    exit_code = 2


class StackError(LightningError):
    """The embedded stack (broker, PostgreSQL, API) could not be started, reached or stopped."""

    exit_code = 3


class PortInUseError(StackError):
    """A port the stack wants to listen on is already taken by another process."""


class StartupTimeoutError(StackError):
    """A component did not come up within its start-up budget."""

    retriable = True


class DataDirError(StackError):
    """The data directory cannot be created, read or written."""


class AlreadyRunningError(StackError):
    """A stack already runs on this data directory."""


class LogResetError(StackError):
    """The broker's log no longer holds the history PostgreSQL has consumed.

    Raised when stored consumer positions refer to a log epoch the broker no longer has (Tansu keeps its log in
    memory and forgets it on restart). Resuming would stall or silently skip events, so the stack refuses.
    """

    exit_code = 4


class LLMError(LightningError):
    """An LLM endpoint refused a request (4xx, or 500) or answered something that is not a chat completion."""


class LLMUnavailable(LLMError):
    """An LLM endpoint did not answer, or answered 5xx, through the client's whole retry budget."""

    retriable = True
