"""infra/compose.yaml is documentation here (no Docker engine), so a test keeps it honest."""

from __future__ import annotations

from pathlib import Path

import yaml

from agl.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "compose.yaml"


def test_compose_service_settings_are_real_settings():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {"kafka", "postgres", "agl"}
    env = services["agl"]["environment"]
    fields = {f"AGL_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = Settings(**{k.removeprefix("AGL_").lower(): v for k, v in env.items()})
    assert settings.kafka_bootstrap == "kafka:19092"
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "INTERNAL://kafka:19092" in advertised


def test_compose_uses_postgres_18_with_pgvector_and_durable_volumes():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg18")
    assert any(v.endswith(":/var/lib/kafka/data") for v in services["kafka"]["volumes"])
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
