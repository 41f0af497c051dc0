"""The garbage collector's settings for the long-running processes that serve requests (the API and runners).

Both allocate many short-lived containers per request or attempt (models, dicts, spans), nearly all freed by
reference counting. With CPython's default young threshold (a collection every 700 net allocations) they collected
about a hundred times a second, each time scanning every container still in flight, and the full collections
those triggered scanned the whole heap, modules included. Measured with a GC callback over the lifecycle
benchmark's round of 4,000 rollouts: 742-932 ms of the API's CPU and 400-712 ms of each runner's (a third to a half
of the runner's) went to collections; with the settings below, 75-122 ms and 40-135 ms.
"""

from __future__ import annotations

import gc

#: Net container allocations between young collections (CPython's default: 700). Most of what a request or an
#: attempt allocates is gone by then, so a collection scans only what is in flight: some 10-30 ms on two busy
#: cores, a few times a second at most.
YOUNG_COLLECTION_EVERY = 20_000


def prepare_to_serve() -> None:
    """Freeze what the start built and collect the young generation less often; call once, just before serving.

    Frozen objects (modules, routes, models: ~150,000 in the API) are never scanned again, so full collections
    cost what requests left behind, not the size of the program (the API's took about 115 ms each before, 10 ms
    after). What is freed is unchanged: cycles made while serving are still collected, only in larger steps.
    """
    gc.collect()  # no garbage of the start goes into the permanent generation
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
