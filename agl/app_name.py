"""The ``application_name`` an ``agl`` process shows PostgreSQL, so ``pg_stat_activity`` says who is connected.

A careful operator reads ``pg_stat_activity`` (or its log lines with ``%a``) to tell the API's connections from a
projection's. Every ``agl`` command names its connections after its words (``agl projections run rollouts`` ->
``agl-projections-run-rollouts``) through ``PGAPPNAME``, which libpq reads at every connect. A ``PGAPPNAME`` set
by the user wins for a command run by hand; ``application_name`` in ``AGL_DATABASE_URL`` wins over both.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

#: PostgreSQL keeps NAMEDATALEN - 1 bytes of an application name.
MAX_BYTES = 63
#: Words after these many are left out (arguments, not the command's name).
MAX_WORDS = 4


def application_name(words: Sequence[str]) -> str:
    """``agl-`` and the command's leading words (up to the first option), in ASCII, at most 63 bytes."""
    leading = itertools.islice(itertools.takewhile(lambda w: not w.startswith("-"), words), MAX_WORDS)
    name = "-".join(["agl", *leading])
    # PostgreSQL replaces anything outside printable ASCII with '?': say so here, where the name is made.
    return "".join(c if " " <= c <= "~" else "?" for c in name)[:MAX_BYTES]


def service_application_name(argv: Sequence[str], fallback: str) -> str:
    """The name of a service started as ``python -m agl <words>``: the same as the command run by hand."""
    if len(argv) > 3 and list(argv[1:3]) == ["-m", "agl"]:
        return application_name(argv[3:])
    return application_name([fallback])


def connection_names(words: Sequence[str], projections: Sequence[str], pgappname: str | None) -> dict[str, str]:
    """By projection, the name its connections show when ``agl projections run <words>`` runs several at once:
    the name each would have run alone (``agl-projections-run-spans``), so ``pg_stat_activity`` still tells
    them apart. None (``{}``) for one projection, or when the process was given a ``PGAPPNAME`` of its own."""
    if len(projections) < 2 or pgappname not in (None, application_name(["projections", "run", *words])):
        return {}
    return {name: application_name(["projections", "run", name]) for name in projections}
