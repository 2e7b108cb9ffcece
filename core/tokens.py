"""Bearer tokens kept in a file, one a line, so that they stay out of `ps` and shell history."""

from __future__ import annotations

import os
from pathlib import Path


def read_tokens(path: str | os.PathLike[str]) -> list[str]:
    """The tokens in a file: one a line, blank lines and '#' comments skipped.

    Several lines allow rotation: the server accepts each, a client sends the first.
    Raises ValueError naming the file when it is unreadable, empty, or has a token with
    whitespace in it.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read the token file {str(path)!r}: {reason}") from exc
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if any(ch.isspace() for ch in token):
            raise ValueError(f"the token file {str(path)!r} has whitespace inside the token on line {number}")
        tokens.append(token)
    if not tokens:
        raise ValueError(f"the token file {str(path)!r} has no token")
    return tokens
