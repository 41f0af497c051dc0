"""`make demo`: start the embedded stack, run the smoke round trip through it, then stop it.

Runs `agl up` as a child exactly as a user would, waits for it to print that it is ready, runs
`agl smoke` and `agl status`, and stops the stack with SIGINT (as Ctrl-C would).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 900  # the first run downloads Apache Kafka's jars from Maven Central


def main() -> int:
    up = subprocess.Popen([str(BIN / "agl"), "up"], stdout=subprocess.PIPE, text=True)
    assert up.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready = False
    for line in up.stdout:
        print(line, end="", flush=True)
        if "Ctrl-C or `agl down`" in line:
            ready = True
            break
        if time.monotonic() > deadline:
            break
    code = 1
    try:
        if ready:
            code = subprocess.call([str(BIN / "agl"), "smoke"]) or subprocess.call([str(BIN / "agl"), "status"])
        else:
            print("demo: the stack did not come up", file=sys.stderr)
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=120)
        print(rest, end="")
    return code or up.returncode


if __name__ == "__main__":
    sys.exit(main())
