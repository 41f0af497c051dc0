"""`bench/_service_cpu.py`: the CPU split by service that `bench/lifecycle.py` prints."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench._service_cpu import CpuSample, per_item_ms, report, sample


def test_each_name_gets_the_cpu_its_processes_spent_between_the_samples() -> None:
    before = CpuSample(at=0.0, processes={1: ("agl-api", 10.0), 2: ("agl-runner", 1.0), 3: ("gone", 5.0)})
    after = CpuSample(
        at=2.0,
        processes={1: ("agl-api", 12.0), 2: ("agl-runner", 1.5), 4: ("agl-runner", 0.5), 5: ("kafka", 1.0)},
    )
    # Per item, in ms: a process that started in between counts from zero; one that ended is left out.
    assert per_item_ms(before, after, 1000) == pytest.approx({"agl-api": 2.0, "agl-runner": 1.0, "kafka": 1.0})
    assert list(per_item_ms(before, after, 1000)) == ["agl-api", "agl-runner", "kafka"]  # largest first
    lines, total = report(before, after, 1000, "rollout")
    assert total == pytest.approx(4.0)
    assert lines[-1].split()[0] == "4.000" and "2.00 cores busy with ours" in lines[-1]


def test_a_busy_child_process_is_sampled_under_its_program() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\nwhile True: pass"])
    try:
        before = sample(None)
        time.sleep(0.5)
        after = sample(None)
    finally:
        child.kill()
        child.wait()
    name, _ = after.processes[child.pid]
    assert name.startswith("python")
    spent = per_item_ms(before, after, 1)[name]
    assert 100 < spent < 1000  # busy for about half a second, in milliseconds
