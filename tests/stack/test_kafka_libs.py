"""Where the Kafka jars go: a blank setting is no setting, and the fetch never replaces a folder it did not make.

Once, ``AGL_KAFKA_LIBS_DIR=`` (blank) was read as ``Path("")``, the working directory, and the fetch replaced it
with the jars: a user's checkout gone.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from agl.config import KAFKA_VERSION, Settings
from agl.errors import StackError
from agl.stack._process import free_port
from agl.stack.brokers import ApacheKafka


@pytest.mark.parametrize("blank", ["", "  "])
def test_blank_path_settings_are_unset(monkeypatch, tmp_path, blank):
    monkeypatch.chdir(tmp_path)
    for name in ("AGL_DATA_DIR", "AGL_KAFKA_LIBS_DIR", "AGL_LLM_CACHE_DIR"):
        monkeypatch.setenv(name, blank)
    settings = Settings()
    assert settings.data_dir == tmp_path / ".agl"
    assert settings.kafka_libs_dir is None and settings.llm_cache_dir is None
    assert settings.resolved_kafka_libs_dir() == tmp_path / ".agl" / "cache" / f"kafka-{KAFKA_VERSION}"


def _kafka(tmp_path: Path, libs_dir: Path) -> ApacheKafka:
    return ApacheKafka(data_dir=tmp_path / "kafka", libs_dir=libs_dir, port=free_port(), controller_port=free_port())


def test_the_jar_fetch_refuses_a_folder_that_is_not_its_cache(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "src").mkdir(parents=True)
    (checkout / "README.md").write_text("mine")
    with pytest.raises(StackError, match="refusing to replace it"):
        asyncio.run(_kafka(tmp_path, checkout).fetch())
    assert (checkout / "README.md").read_text() == "mine" and (checkout / "src").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkout"]  # no temporary folder left beside it


def test_a_file_in_place_of_the_cache_is_refused_too(tmp_path):
    in_the_way = tmp_path / "libs"
    in_the_way.write_text("mine")
    with pytest.raises(StackError, match="refusing to replace it"):
        asyncio.run(_kafka(tmp_path, in_the_way).fetch())
    assert in_the_way.read_text() == "mine"


@pytest.mark.skipif(shutil.which("mvn") is None, reason="the jars come from Maven Central through mvn")
def test_an_empty_folder_is_filled_and_two_fetches_at_once_both_end_with_one_cache(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    asyncio.run(_kafka(tmp_path, empty).fetch())
    assert (empty / ".complete").exists() and any(p.suffix == ".jar" for p in empty.iterdir())

    async def both(libs: Path) -> None:
        await asyncio.gather(_kafka(tmp_path, libs).fetch(), _kafka(tmp_path, libs).fetch())

    asyncio.run(both(tmp_path / "new"))
    assert (tmp_path / "new" / ".complete").exists()
    assert all(p.is_file() for p in (tmp_path / "new").iterdir())  # neither moved into the other's folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]
