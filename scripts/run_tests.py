"""Run pytest and treat "no tests collected" (exit 5) as the failure of the setup it is.

Before pytest starts, the Apache Kafka jars are assembled from Maven Central (once per clone), so a slow first
download is not charged to the first test's timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

NO_TESTS_COLLECTED = 5
REPO = Path(__file__).resolve().parents[1]


def prefetch_kafka() -> None:
    if os.environ.get("AGL_KAFKA_BOOTSTRAP") or os.environ.get("AGL_TEST_BROKER") == "tansu":
        return
    if not (shutil.which("java") and shutil.which("mvn")):
        return
    sys.path.insert(0, str(REPO))
    from agl.config import KAFKA_VERSION
    from tests.fixtures.services import KAFKA_LIBS_CACHE

    subprocess.run(
        [str(REPO / "infra" / "kafka" / "fetch-jars.sh"), str(KAFKA_LIBS_CACHE / f"kafka-{KAFKA_VERSION}")], check=True
    )


def main() -> int:
    prefetch_kafka()
    code = subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]])
    if code == NO_TESTS_COLLECTED:
        print("run_tests: pytest collected no tests; the setup is broken", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
