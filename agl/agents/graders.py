"""Deterministic graders: a task's ``check`` turns the LLM's reply into a reward in [0, 1].

- ``{"kind": "number", "answer": 12}``: 1.0 when the first number of the reply equals the answer, else 0.0;
- ``{"kind": "keywords", "all": ["injection"]}``: the share of the keywords the reply contains (case-insensitive);
- ``{"kind": "regex", "pattern": "..."}``: 1.0 when the pattern matches somewhere in the reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agl.agent import AgentError

#: The first number in a reply: an optional sign, digits (thousands separators allowed), an optional decimal part.
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def first_number(text: str) -> float | None:
    found = NUMBER.search(text)
    return float(found.group().replace(",", "")) if found else None


def grade(check: Mapping[str, Any], reply: str | None) -> float:
    """The reward of ``reply`` under ``check``; an unknown check kind is the task set's bug, not a zero reward."""
    text = reply or ""
    kind = check.get("kind")
    if kind == "number":
        number = first_number(text)
        return 1.0 if number is not None and abs(number - float(check["answer"])) < 1e-6 else 0.0
    if kind == "keywords":
        keywords = [str(k).lower() for k in check["all"]]
        if not keywords:
            raise AgentError("a keywords check names at least one keyword")
        lowered = text.lower()
        return sum(k in lowered for k in keywords) / len(keywords)
    if kind == "regex":
        return 1.0 if re.search(str(check["pattern"]), text, re.IGNORECASE) else 0.0
    raise AgentError(f"unknown check kind {kind!r} (number, keywords or regex)")
