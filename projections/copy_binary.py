"""Binary COPY rows built by hand: bodies go in as their bytes, with neither escaping in Python nor parsing in
PostgreSQL (a text COPY escapes every byte of a ``bytea`` value, and a psycopg dumper call per value costs more
than the whole row built here)."""

from __future__ import annotations

import struct

from projections.safe_text import safe_text

#: What starts a binary COPY stream: the signature, no flags, no header extension.
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
BINARY_TRAILER = struct.pack(">h", -1)
_NULL_FIELD = struct.pack(">i", -1)


def binary_row(*fields: bytes | None) -> bytes:
    """One row of a binary COPY: each field is its binary value (text as UTF-8, bytea as is) or ``None``."""
    out = [struct.pack(">h", len(fields))]
    for field in fields:
        if field is None:
            out.append(_NULL_FIELD)
        else:
            out.append(struct.pack(">i", len(field)))
            out.append(field)
    return b"".join(out)


def binary_text(value: str | None) -> bytes | None:
    return None if value is None else safe_text(value).encode()


def binary_bigint(value: int) -> bytes:
    return struct.pack(">q", value)
