"""Time and randomness in one place, so tests can control them."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (microseconds kept)."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A new opaque id: `<prefix>_` and 16 lowercase base32 characters (80 random bits)."""
    token = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return f"{prefix}_{token}"


SLUG_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def random_slug_suffix(length: int = 6) -> str:
    """Random lowercase letters and digits that make a taken slug unique (`acme-k3x9qz`):
    unlike `-2`, `-3`, they do not count how many others chose the name."""
    return "".join(secrets.choice(SLUG_SUFFIX_ALPHABET) for _ in range(length))
