"""How long `agl up` takes to be ready: cold (new data directory) and warm (the same directory again).

The Kafka jar cache is shared with the repository's .agl/cache, so "cold" means a new broker log and a new
PostgreSQL cluster, not a new download. Usage: python bench/stack_startup.py [--broker kafka|tansu] [--runs N]
Last line: up_cold_s=<s> up_warm_s=<s>
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agl.config import KAFKA_VERSION
from agl.stack._process import free_ports

REPO = Path(__file__).resolve().parents[1]
READY = "Ctrl-C or `agl down`"


def time_up(env: dict[str, str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "agl", "up"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if READY in line:
            break
    elapsed = time.monotonic() - t0
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"agl up exited with {proc.returncode}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as data_dir:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AGL_")}
            kafka_port, controller_port, postgres_port, api_port = free_ports(4)
            env.update(
                AGL_DATA_DIR=data_dir,
                AGL_BROKER=args.broker,
                AGL_KAFKA_LIBS_DIR=str(REPO / ".agl" / "cache" / f"kafka-{KAFKA_VERSION}"),
                AGL_KAFKA_PORT=str(kafka_port),
                AGL_KAFKA_CONTROLLER_PORT=str(controller_port),
                AGL_POSTGRES_PORT=str(postgres_port),
                AGL_API_PORT=str(api_port),
            )
            cold.append(time_up(env))
            warm.append(time_up(env))
    print(
        f"broker={args.broker} runs={args.runs} cold={[round(x, 2) for x in cold]} warm={[round(x, 2) for x in warm]}"
    )
    print(f"up_cold_s={statistics.median(cold):.2f} up_warm_s={statistics.median(warm):.2f}")


if __name__ == "__main__":
    main()
