"""Position tokens: where a command's events landed, so a reader can wait until a projection has applied them.

The command API answers with a token; read routes accept it as ``?after=<token>`` and wait (bounded) until the
projection's stored position in every named partition has passed the offset. A token is the highest offset per
(topic, partition), written ``topic:partition:offset`` and joined with commas.
"""

from __future__ import annotations

from pydantic import Field, ValidationError

from schemas._base import Frozen
from schemas.errors import MalformedEvent

#: Kafka's own rule for topic names.
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"


class Position(Frozen):
    topic: str = Field(pattern=TOPIC_PATTERN)
    partition: int = Field(ge=0, le=2**31 - 1, description="Kafka partitions are int32")
    offset: int = Field(ge=0, le=2**63 - 1, description="Kafka offsets are int64")


class InvalidPositionToken(MalformedEvent):
    """A position token that does not parse."""


def to_token(positions: list[Position]) -> str:
    """The compact token of ``positions``, keeping only the highest offset of each partition."""
    highest: dict[tuple[str, int], int] = {}
    for p in positions:
        key = (p.topic, p.partition)
        highest[key] = max(highest.get(key, -1), p.offset)
    return ",".join(f"{t}:{part}:{off}" for (t, part), off in sorted(highest.items()))


def parse_token(token: str) -> list[Position]:
    """Positions named by ``token``. Raises InvalidPositionToken with the offending part."""
    positions: list[Position] = []
    for part in filter(None, token.split(",")):
        topic, _, rest = part.rpartition(":")
        topic, _, partition = topic.rpartition(":")
        # ASCII digits only: str.isdigit() also accepts digits int() refuses, such as "²".
        if not topic or not _is_number(partition) or not _is_number(rest):
            raise InvalidPositionToken(f"position {part!r} is not topic:partition:offset")
        try:
            positions.append(Position(topic=topic, partition=int(partition), offset=int(rest)))
        except ValidationError as e:
            reasons = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise InvalidPositionToken(f"position {part!r} is out of range ({reasons})") from None
    if not positions:
        raise InvalidPositionToken("the position token is empty")
    return positions


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 19
