"""CPU time per service of a stack a benchmark started: where the work of one item goes.

A sample reads the user plus system CPU seconds of every process below the benchmark's (the stack's services,
their broker and PostgreSQL, the runners it started) and names each: an ``agl`` process by its command
(``agl-api``, ``agl-projections-run-spans``; runners of one command add up), a PostgreSQL backend by the
``application_name`` of its client (``postgres for agl-api``; the stack's services name themselves, see
``agl.app_name``), the rest by program. Two samples around a measured round give each name's CPU milliseconds
per item. The machine's busy time in the same interval shows how much of it went to processes not ours (another
job on the host, which makes a round slower without costing ours anything).

A process that ends within the round is not counted (a backend of a connection closed in between); one that
starts within it counts from zero.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from agl.app_name import application_name

#: The sampler's own PostgreSQL connection, left out of the figures.
SAMPLER = "bench-cpu-sampler"


@dataclass(frozen=True)
class CpuSample:
    at: float
    #: pid -> (name, CPU seconds)
    processes: dict[int, tuple[str, float]] = field(default_factory=dict)
    #: busy CPU seconds of the whole machine (every process, ours or not)
    machine_busy_s: float = 0.0


def _backend_names(database_url: str | None) -> dict[int, str]:
    if database_url is None:
        return {}
    try:
        with psycopg.connect(database_url, autocommit=True, application_name=SAMPLER, connect_timeout=5) as conn:
            rows = conn.execute("SELECT pid, application_name FROM pg_stat_activity").fetchall()
    except psycopg.Error:
        return {}
    return {pid: name for pid, name in rows if name != SAMPLER}


def _name(process: psutil.Process, backends: dict[int, str]) -> str:
    words = process.cmdline()
    if process.pid in backends:
        client = backends[process.pid]
        return f"postgres for {client}" if client else "postgres (server)"
    if words[1:3] == ["-m", "agl"]:
        return application_name(words[3:])
    program = Path(words[0]).name if words else process.name()
    if program.startswith("postgres") or process.name() == "postgres":
        return "postgres (server)"
    if program == "java" and any("kafka" in w for w in words):
        return "kafka"
    return program


def sample(database_url: str | None) -> CpuSample:
    """CPU seconds of every process below this one, named; ``database_url`` names PostgreSQL's backends."""
    backends = _backend_names(database_url)
    processes: dict[int, tuple[str, float]] = {}
    for process in psutil.Process(os.getpid()).children(recursive=True):
        try:
            with process.oneshot():
                times = process.cpu_times()
                processes[process.pid] = (_name(process, backends), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    machine = psutil.cpu_times()
    busy = machine.user + machine.system + getattr(machine, "nice", 0.0) + getattr(machine, "irq", 0.0)
    busy += getattr(machine, "softirq", 0.0) + getattr(machine, "steal", 0.0)
    return CpuSample(at=time.monotonic(), processes=processes, machine_busy_s=busy)


def per_item_ms(before: CpuSample, after: CpuSample, items: int) -> dict[str, float]:
    """CPU milliseconds per item by name, between two samples, largest first (processes gone by ``after`` left out)."""
    totals: dict[str, float] = {}
    for pid, (name, seconds) in after.processes.items():
        previous = before.processes.get(pid)
        spent = seconds - (previous[1] if previous is not None else 0.0)
        totals[name] = totals.get(name, 0.0) + max(spent, 0.0)
    return dict(sorted(((n, s * 1000 / items) for n, s in totals.items()), key=lambda kv: -kv[1]))


def report(before: CpuSample, after: CpuSample, items: int, what: str) -> tuple[list[str], float]:
    """Lines naming each service's CPU per item, and the total of ours in milliseconds per item."""
    shares = per_item_ms(before, after, items)
    ours_ms = sum(shares.values())
    elapsed = after.at - before.at
    machine_cores = (after.machine_busy_s - before.machine_busy_s) / elapsed if elapsed > 0 else 0.0
    ours_cores = ours_ms * items / 1000 / elapsed if elapsed > 0 else 0.0
    lines = [f"cpu per {what} (ms), {psutil.cpu_count()} cores:"]
    lines += [f"  {ms:6.3f}  {name}" for name, ms in shares.items() if ms >= 0.005]
    lines.append(f"  {ours_ms:6.3f}  in all: {ours_cores:.2f} cores busy with ours, {machine_cores:.2f} with anything")
    return lines, ours_ms
