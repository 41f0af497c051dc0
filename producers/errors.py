"""Errors of the producers room: publishing to Kafka and the command API."""

from __future__ import annotations

from core.errors import LightningError


class PublishError(LightningError):
    """An event could not be published, for a reason retrying will not fix (too large, not authorised...).

    ``http_status`` is what the command API answers when this error ends a request.
    """

    http_status = 500


class BrokerUnavailable(PublishError):
    """The broker stayed unreachable (or kept failing retriably) past the publisher's retry budget."""

    retriable = True
    http_status = 503


class PublisherClosed(PublishError):
    """``publish`` was called before ``start()`` or after ``stop()`` (in the API: it is shutting down)."""

    http_status = 503


class EventTooLarge(PublishError):
    """An encoded event exceeds the largest record the publisher sends."""

    http_status = 413


class IdempotencyConflict(LightningError):
    """A rollout id or an Idempotency-Key is reused for a different request."""

    http_status = 409


class CommandRejected(LightningError):
    """The command API refused a command (a 4xx answer); retrying the same request gives the same answer.

    ``status_code`` is the HTTP status; ``detail`` is the API's explanation (for 422, the failing fields).
    """

    def __init__(self, status_code: int, detail: object) -> None:
        super().__init__(f"the API rejected the command ({status_code}): {detail}")
        self.status_code = status_code
        self.detail = detail


class ApiUnavailable(LightningError):
    """The command API did not answer, or answered 5xx, through the client's whole retry budget."""

    retriable = True


class UnknownEntity(LightningError):
    """A command names a rollout or attempt the write model does not know."""

    http_status = 404


class NotYourAttempt(LightningError):
    """A runner reports about an attempt claimed by another worker."""

    http_status = 409


class NotPublishedYet(LightningError):
    """The decision is committed, but the relay has not published its events in time (the broker is down?)."""

    retriable = True
    http_status = 503
