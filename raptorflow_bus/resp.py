"""Commands as the bytes Redis reads (RESP), for the calls the bus packs itself
(``publish_call``, ``packed_script``) rather than through redis-py's client."""

from __future__ import annotations


def bulk(data: bytes) -> bytes:
    """``data`` as a RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def bulk_text(text: str) -> bytes:
    return bulk(text.encode())


def command(*args: bytes | str | int) -> bytes:
    """A whole command as RESP."""
    parts = [b"*%d\r\n" % len(args)]
    parts += [bulk(a if isinstance(a, bytes) else str(a).encode()) for a in args]
    return b"".join(parts)


def load_command(source: str) -> bytes:
    return command(b"SCRIPT", b"LOAD", source.encode())
