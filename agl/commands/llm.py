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
    up.set_defaults(func=cmd_llm_up)


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
    port = args.port or settings.llm_port
    if port is None:
        port = free_port(avoid=settings.stack_ports())
    else:
        require_free_port(port, "llm", "--port or AGL_LLM_PORT")
    model = args.model or settings.llm_model or EMBEDDED_LLM_MODEL

    def ready(endpoint: str) -> None:
        print(f"agl llm: {model} at {endpoint} (OpenAI-compatible); Ctrl-C stops it", flush=True)

    replicas = replica_count(args.replicas or settings.llm_replicas)
    return serve(
        port, alias=model, replicas=replicas, cache_dir=settings.llm_cache_dir, avoid_ports=settings.stack_ports(),
        on_ready=ready,
    )  # fmt: skip
