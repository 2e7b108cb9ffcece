"""Page sizes and opaque page tokens shared by the List RPCs."""

from __future__ import annotations

import base64
import binascii

from stad.server.errors import InvalidArgumentError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """The size of a page for a request's page_size (0: the default)."""
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgumentError(f"page_size must be in 0..{MAX_PAGE_SIZE}, got {requested}")
    return requested or DEFAULT_PAGE_SIZE


def encode_token(prefix: str, value: object) -> str:
    return base64.urlsafe_b64encode(f"{prefix}{value}".encode()).decode()


def decode_token(token: str, prefix: str) -> str:
    """The value a token made by encode_token(prefix, ...) carries; InvalidArgument for any other."""
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_token(token) from None
    if not text.startswith(prefix):
        raise bad_token(token)
    return text.removeprefix(prefix)


def bad_token(token: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"bad page_token {token!r}")
