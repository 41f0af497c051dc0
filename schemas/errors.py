"""Errors of the event language. A decode error is never retriable: the record is dead-lettered."""

from __future__ import annotations

from core.errors import LightningError


class DecodeError(LightningError):
    """A record could not be turned into an event; the message says what is wrong with it."""


class UnknownEventType(DecodeError):
    """The record names an event type (or a version) this code does not know."""


class MalformedEvent(DecodeError):
    """The record is not JSON, or its fields do not match the event's schema."""
