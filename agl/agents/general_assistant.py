"""The general assistant: short factual and arithmetic questions; its tool evaluates arithmetic."""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from typing import Any

from agl.agents.base import SpecialistAgent, Tool

_OPS: dict[type[ast.operator], Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}  # fmt: skip


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        result: float = _OPS[type(node.op)](_value(node.left), _value(node.right))
        return result
    raise ValueError("not arithmetic")


def calculator(task: Mapping[str, Any]) -> str | None:
    """The value of the task's ``data.expression`` (+ - * / on numbers only: no eval)."""
    expression = (task.get("data") or {}).get("expression")
    if not expression:
        return None
    try:
        return f"{expression} = {_value(ast.parse(str(expression), mode='eval').body):g}"
    except (ValueError, SyntaxError, ZeroDivisionError):
        return None


class GeneralAssistant(SpecialistAgent):
    agent_type = "general_assistant"
    system_prompt = "You are a helpful assistant. Answer in a few words."
    tools = (Tool("calculator", calculator),)


agent = GeneralAssistant()
