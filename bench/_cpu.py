"""CPU seconds a benchmark reads: its own process's, and another process's (a PostgreSQL backend) from /proc."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """User plus system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process ``pid``; 0 when it does not run here (a server on another machine)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ


async def cost_per_call_us(
    call: Callable[[int], Awaitable[object]], *, n: int, warm: int, pid: int
) -> tuple[float, float, float]:
    """Microseconds per ``call(i)``, over ``n`` calls after ``warm`` unmeasured ones: wall time, this process's CPU
    and process ``pid``'s CPU (the PostgreSQL backend the calls talk to)."""
    for i in range(warm):  # statements prepared, caches filled
        await call(i)
    server0, client0, t0 = process_cpu_s(pid), own_cpu_s(), time.perf_counter()
    for i in range(n):
        await call(i)
    wall, client, server = time.perf_counter() - t0, own_cpu_s() - client0, process_cpu_s(pid) - server0
    return wall / n * 1e6, client / n * 1e6, server / n * 1e6
