"""Quoting user input in error messages, shortened so that no message grows with the input.

gRPC carries an error's message in a trailer that must fit its 16 KiB metadata limit
(percent-encoded, so up to three bytes a character); past it the caller sees
"RESOURCE_EXHAUSTED: Stream removed" instead of the error. Every message that quotes
input goes through these.
"""

from __future__ import annotations

from collections.abc import Iterable

# Characters of one quoted value, names of one quoted list, characters of a whole message.
MAX_QUOTED_CHARS = 80
MAX_QUOTED_NAMES = 8
MAX_MESSAGE_CHARS = 2000


def quote(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """repr(value), cut to about `limit` characters with a count of what was left out."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def quote_names(names: Iterable[object], limit: int = MAX_QUOTED_NAMES) -> str:
    """A list of names as '[a, b, ...]', the first `limit` shown and the rest counted."""
    items = list(names)
    shown = ", ".join(quote(name) for name in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return f"[{shown}]"


def shorten(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A whole message cut to `limit` characters, saying so."""
    if len(message) <= limit:
        return message
    marker = f"... (message cut: {len(message)} characters)"
    return message[: max(0, limit - len(marker))] + marker
