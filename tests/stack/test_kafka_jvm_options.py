"""The embedded Apache Kafka runs with the JVM options it is given (``AGL_KAFKA_JVM_OPTIONS``), and serves."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from agl.config import KAFKA_JVM_OPTIONS, KAFKA_VERSION, Settings
from agl.stack._process import free_port
from agl.stack.brokers import ApacheKafka, java_available
from tests.fixtures.kafka import requested_broker
from tests.fixtures.services import KAFKA_LIBS_CACHE


def test_the_default_stops_the_jit_at_c1_and_a_blank_setting_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KAFKA_JVM_OPTIONS == "-XX:TieredStopAtLevel=1"
    monkeypatch.setenv("AGL_KAFKA_JVM_OPTIONS", " ")
    assert Settings().kafka_jvm_options == KAFKA_JVM_OPTIONS
    monkeypatch.setenv("AGL_KAFKA_JVM_OPTIONS", "-XX:TieredStopAtLevel=4")  # how to have C2 back
    assert Settings().kafka_jvm_options == "-XX:TieredStopAtLevel=4"


@pytest.mark.kafka
async def test_the_broker_s_jvm_gets_each_option_as_a_word_and_serves(tmp_path: Path) -> None:
    if requested_broker() != "kafka" or not java_available():
        pytest.skip("starts an Apache Kafka broker of its own")
    kafka = ApacheKafka(
        data_dir=tmp_path / "kafka",
        libs_dir=KAFKA_LIBS_CACHE / f"kafka-{KAFKA_VERSION}",
        port=free_port(),
        controller_port=free_port(),
        jvm_options="-XX:TieredStopAtLevel=1  -Dagl.probe=yes",
    )
    await kafka.start(120)
    try:
        assert kafka.process is not None and kafka.process.pid is not None
        argv = psutil.Process(kafka.process.pid).cmdline()  # start.sh execs the JVM: the same process
        assert "-XX:TieredStopAtLevel=1" in argv and "-Dagl.probe=yes" in argv, argv
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.info.bootstrap)
        await admin.start()
        try:
            assert isinstance(await admin.list_topics(), list)
        finally:
            await admin.close()
    finally:
        await kafka.stop()
