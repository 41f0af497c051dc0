"""Errors of the consumer loop, and the one rule that decides retry versus dead letter."""

from __future__ import annotations

import psycopg
import psycopg.errors

from core.errors import LightningError


class ConsumerError(LightningError):
    """Base of the consumer loop's errors."""


class GenerationChanged(ConsumerError):
    """The generation this worker writes was switched (a rebuild finished): reload the active one."""

    retriable = True


#: Database failures that say nothing about the event: the connection broke, or a concurrent transaction won.
_RETRIABLE_DB = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
)


def is_retriable(error: BaseException) -> bool:
    """Retry (with backoff) rather than dead-letter: a retriable LightningError, or a transient database failure.

    Anything else an ``apply`` raises (a constraint violation, a bug on one event's data) is the event's fault,
    so retrying cannot help and the event is dead-lettered.
    """
    if isinstance(error, LightningError):
        return error.retriable
    return isinstance(error, _RETRIABLE_DB)


class TopicsNotCoPartitioned(ConsumerError):
    """A projection's topics have different partition counts, so one entity's events would have two owners."""

    exit_code = 2


class ProjectionVersionMismatch(ConsumerError):
    """The active generation was built by a newer version of the projection than this code: this worker stops."""


class ChecksumMismatch(ConsumerError):
    """A rebuilt generation's table differs from the live one built by the same version: readers are not switched."""
