"""Bounds shared by events, requests and read routes: what PostgreSQL columns and URL paths can hold.

An event field bounded here carries the bound of the read model that stores it (an ``integer`` column, a btree
key), so a producer learns from the schema what a projection would otherwise dead-letter.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

#: Longest id (rollout, attempt, resources, document, worker): ids are btree keys and topic keys.
MAX_ID_LENGTH = 200
#: Ids a client chooses: a safe alphabet, bounded. No ``/``: a path route's ``{rollout_id}`` could never match
#: such an id, so it could never be read or cancelled; nor a leading ``.`` (``..`` is rewritten by clients).
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._:@-]{{0,{MAX_ID_LENGTH - 1}}}$"
#: A client-chosen id, in a body, a path or a query.
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
#: PostgreSQL ``integer`` and ``bigint``.
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1
BIGINT_MAX = 2**63 - 1
