"""Audit: who may use the API. Keyed by key_id.

An API key's creation and revocation are facts worth keeping for ever, like every other change. These events
name the key (its id, name and scopes) and never carry its secret or the secret's hash: the log is read by every
consumer, and a hash of a key is as good as the key to anyone who can try it offline.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas._base import Event
from schemas.bounds import MAX_ID_LENGTH

#: What an API key may be allowed to do: the route families of ``producers/route_families.py`` (``health``
#: needs no key). ``admin`` allows everything.
ApiKeyScope = Literal["publish", "run", "traces", "llm", "read", "admin"]


class ApiKeyCreated(Event):
    key_field: ClassVar[str] = "key_id"
    type: Literal["apikey.created"] = "apikey.created"
    version: Literal[1] = 1
    key_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    name: str = Field(default="", max_length=200)
    scopes: tuple[ApiKeyScope, ...] = Field(min_length=1)
    created_by: str | None = Field(default=None, max_length=200, description="the login that created it, if known")


class ApiKeyRevoked(Event):
    key_field: ClassVar[str] = "key_id"
    type: Literal["apikey.revoked"] = "apikey.revoked"
    version: Literal[1] = 1
    key_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    revoked_by: str | None = Field(default=None, max_length=200, description="the login that revoked it, if known")
