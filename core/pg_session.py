"""What the long-lived connections that run our queries set for their sessions: the projection workers' (a
rebuild's too), the API's pool, the outbox relay's publishing connection and the watchdog's. Short-lived ones and
those that only LISTEN are left as they are.

``plan_cache_mode = force_custom_plan``. psycopg prepares a statement from its fifth execution, and PostgreSQL
then keeps one generic plan for it once that plan costs no more than the custom plans made so far. On a table
that starts empty (a fresh install, a rebuild's new generation, the minute after ``agl up``) every early plan is
cheap, so the plan kept is a sequential scan; it stays until an ANALYZE of the table invalidates it, and
autovacuum comes by a minute or more later. Meanwhile a lookup by key (``rollout_id = ANY(ids)``) reads the whole
table at every batch: in ``bench/lifecycle.py`` (a fresh stack) the rollouts projection's loads were such scans,
3-22 ms each, until the end of the run. Planning each execution with its values costs tens of microseconds per
statement, and a statement of ours serves a batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import AsyncConnection

SESSION_SETTINGS = "SET plan_cache_mode = force_custom_plan"


async def configure_session(conn: AsyncConnection[Any]) -> None:
    """Apply :data:`SESSION_SETTINGS` to ``conn`` (in autocommit mode, as our long-lived connections are)."""
    await conn.execute(SESSION_SETTINGS)
