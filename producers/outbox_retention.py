"""Outbox retention: published rows older than the retention are deleted, so the outbox does not grow for ever.

Every event passes through the outbox (``producers.outbox``). Once published, a row is read again only to answer a
retry: an Idempotency-Key's request answers the event ids and positions of its rows (``command_requests``), and
a re-enqueued rollout its event's position (``command_rollouts``). So pruning a row past the retention:

- copies an enqueued rollout's position into ``command_rollouts`` first: a rollout id answers its first event
  and position for ever;
- expires the Idempotency-Keys recorded as long ago (``command_requests`` and ``command_idempotency_keys``): a key
  reused after the retention is a new request, as with Stripe's 24-hour keys.

Rows not yet published are never deleted, whatever their age (the broker may have been down for days). The
relay that holds the relay lock prunes, once a minute, on a connection of its own: a prune never delays a
publication. Each statement deletes at most ``batch`` rows (a short transaction), walking the outbox in id order
from its oldest published row, until it meets a young one: ids follow creation times closely, and a row that
came out of order only waits for the young rows before it to age.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger(__name__)

#: How often the leading relay prunes, and at most how many outbox rows one statement deletes.
PRUNE_EVERY_S = 60.0
PRUNE_BATCH = 5_000

# From the oldest published row, `batch` ids on: the published rows past the retention. An enqueue's row is keyed by its
# rollout id (every outbox key is an entity id encoded as UTF-8), which finds its command_rollouts row by primary
# key; a command_rollouts row still pointing at it takes its position before the row goes.
_PRUNE_ROWS = """
WITH oldest AS (SELECT min(id) AS id FROM outbox WHERE published),
doomed AS (
    SELECT o.id, o.key, o.topic, o."partition", o."offset" FROM outbox o, oldest
    WHERE o.id >= oldest.id AND o.id < oldest.id + %(batch)s AND o.published
      AND o.created_at < %(cutoff)s
),
kept AS (
    UPDATE command_rollouts c SET topic = d.topic, "partition" = d."partition", "offset" = d."offset"
    FROM doomed d
    WHERE d.key IS NOT NULL AND c.rollout_id = convert_from(d.key, 'UTF8') AND c.outbox_id = d.id
),
gone AS (DELETE FROM outbox o USING doomed d WHERE o.id = d.id RETURNING o.id)
SELECT count(*) FROM gone
"""


async def prune_outbox(conn: AsyncConnection[Any], retention_s: float, *, batch: int = PRUNE_BATCH) -> int:
    """Delete the published outbox rows, and the Idempotency-Keys, older than ``retention_s``; how many rows.

    ``conn`` is in autocommit mode: each statement is a transaction of its own.
    """
    cur = await conn.execute("SELECT now() - make_interval(secs => %s)", (retention_s,))
    row = await cur.fetchone()
    assert row is not None
    cutoff = row[0]
    # The keys first, all statements with one cutoff: a key found by a retry (which holds it FOR SHARE while it
    # reads its rows) outlives the rows it answers with.
    for table in ("command_requests", "command_idempotency_keys"):
        query = sql.SQL("DELETE FROM {} WHERE created_at < %s")
        await conn.execute(query.format(sql.Identifier(table)), (cutoff,))
    deleted = 0
    while True:
        cur = await conn.execute(_PRUNE_ROWS, {"batch": batch, "cutoff": cutoff})
        row = await cur.fetchone()
        count = int(row[0]) if row else 0
        deleted += count
        # None: the oldest published rows are young (or there are none). Each round deletes a row or ends the loop.
        if count == 0:
            break
    if deleted:
        log.info("outbox: pruned %d published rows older than %.0f s", deleted, retention_s)
    return deleted
