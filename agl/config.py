"""The settings, for users of the facade and the CLI (defined in ``core.config``)."""

from core.config import (
    EMBEDDED_LLM_MODEL,
    KAFKA_JVM_OPTIONS,
    KAFKA_VERSION,
    BrokerChoice,
    Settings,
)

__all__ = [
    "EMBEDDED_LLM_MODEL",
    "KAFKA_JVM_OPTIONS",
    "KAFKA_VERSION",
    "BrokerChoice",
    "Settings",
]
