"""The error root, for users of the facade: ``import agl.errors`` (defined in ``core.errors``)."""

from core.errors import (
    AlreadyRunningError,
    ConfigError,
    DataDirError,
    LightningError,
    LLMError,
    LLMUnavailable,
    LogResetError,
    PortInUseError,
    StackError,
    StartupTimeoutError,
)

__all__ = [
    "AlreadyRunningError",
    "ConfigError",
    "DataDirError",
    "LLMError",
    "LLMUnavailable",
    "LightningError",
    "LogResetError",
    "PortInUseError",
    "StackError",
    "StartupTimeoutError",
]
