"""``agl llm up``: just the embedded LLM, in the foreground (the stack runs the same command as its child)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    llm = subparsers.add_parser("llm", help="the embedded LLM (llama.cpp serving SmolLM2-135M-Instruct)")
    commands = llm.add_subparsers(dest="llm_command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="serve the embedded LLM in the foreground until Ctrl-C")
    up.add_argument("--port", type=int, default=None, help="default $AGL_LLM_PORT, else a free port")
    up.add_argument("--model", default=None, help="the name it answers to (default $AGL_LLM_MODEL or SmolLM2's)")
    up.add_argument(
        "--replicas",
        type=_replicas,
        default=None,
        help="single-threaded servers behind the port, 1-64 (default $AGL_LLM_REPLICAS, else one per core)",
    )
    up.add_argument(
        "--avoid-ports",
        type=_ports,
        default=None,
        metavar="P,P,...",
        help="keep the automatic ports off these, which other servers are about to bind "
        "(default: the ports $AGL_KAFKA_PORT, $AGL_KAFKA_CONTROLLER_PORT, $AGL_POSTGRES_PORT and $AGL_API_PORT name)",
    )
    up.set_defaults(func=cmd_llm_up)


def _ports(text: str) -> frozenset[int]:
    try:
        ports = frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ports") from None
    if not all(1 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"{text!r}: ports are 1-65535")
    return ports


def _replicas(text: str) -> int:
    # The same bounds as AGL_LLM_REPLICAS: each replica holds its own KV cache (~800 MB).
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 64")
    return value


def cmd_llm_up(args: argparse.Namespace) -> int:
    from agl.config import EMBEDDED_LLM_MODEL, Settings
    from agl.stack._process import free_port, require_free_port
    from agl.stack.llm import replica_count, serve

    settings = Settings()
    avoid = settings.stack_ports() if args.avoid_ports is None else args.avoid_ports
    port = args.port or settings.llm_port
    if port is None:
        port = free_port(avoid=avoid)
    else:
        require_free_port(port, "llm", "--port or AGL_LLM_PORT")
    model = args.model or settings.llm_model or EMBEDDED_LLM_MODEL

    def ready(endpoint: str) -> None:
        print(f"agl llm: {model} at {endpoint} (OpenAI-compatible); Ctrl-C stops it", flush=True)

    replicas = replica_count(args.replicas or settings.llm_replicas)
    return serve(
        port, alias=model, replicas=replicas, cache_dir=settings.llm_cache_dir, avoid_ports=avoid,
        on_ready=ready,
    )  # fmt: skip
