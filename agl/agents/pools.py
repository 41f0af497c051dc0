"""The pools a config file asks for (``agents.toml``): agent type, instances, slots, extra capabilities."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agl.agents import AGENT_TYPES
from agl.agents.kinds import worker_capabilities
from agl.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).with_name("agents.toml")
#: Bounds that catch a typo (``instances = 100``) before it forks a hundred processes on a laptop.
MAX_INSTANCES, MAX_SLOTS = 32, 256


@dataclass(frozen=True)
class Pool:
    agent_type: str
    instances: int = 1
    slots: int = 1
    extra_capabilities: tuple[str, ...] = ()

    @property
    def agent_spec(self) -> str:
        """What ``agl runner --agent`` loads."""
        return f"agl.agents.{self.agent_type}:agent"

    def capabilities(self) -> tuple[str, ...]:
        from agl.agents import AGENTS_VERSION

        return worker_capabilities(self.agent_type, AGENTS_VERSION, self.extra_capabilities)


def _int(table: dict[str, Any], key: str, default: int, high: int, where: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
        raise ConfigError(f"{where}: {key} must be an integer from 1 to {high}, not {value!r}")
    return value


def parse_pools(data: dict[str, Any], where: str = "agents config") -> list[Pool]:
    pools = data.get("pools")
    if not isinstance(pools, dict) or not pools:
        raise ConfigError(f"{where}: no [pools.<agent type>] table")
    found = []
    for agent_type, table in pools.items():
        if agent_type not in AGENT_TYPES:
            raise ConfigError(f"{where}: unknown agent type {agent_type!r}; known: {', '.join(AGENT_TYPES)}")
        if not isinstance(table, dict) or set(table) - {"instances", "slots", "capabilities"}:
            raise ConfigError(f"{where}: [pools.{agent_type}] takes instances, slots and capabilities only")
        extra = table.get("capabilities", [])
        if not isinstance(extra, list) or not all(isinstance(c, str) and c for c in extra):
            raise ConfigError(f"{where}: [pools.{agent_type}] capabilities is a list of names")
        found.append(
            Pool(
                agent_type,
                instances=_int(table, "instances", 1, MAX_INSTANCES, f"{where} [pools.{agent_type}]"),
                slots=_int(table, "slots", 1, MAX_SLOTS, f"{where} [pools.{agent_type}]"),
                extra_capabilities=tuple(extra),
            )
        )
    return found


def load_pools(path: Path | None = None) -> list[Pool]:
    """The pools of ``path`` (the shipped ``agents.toml`` when None)."""
    path = path or DEFAULT_CONFIG
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the agents config {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    return parse_pools(data, str(path))
