"""CLI subcommands: each module has ``register(subparsers)``; ``agl.cli`` lists the modules."""
