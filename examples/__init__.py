"""Example agents (run one with ``agl runner --agent examples.math_agent:math_agent``)."""
