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
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids like `new_id(prefix)`, from one draw of random bytes (a batch of runs)."""
    # 10 random bytes are 16 base32 characters, without padding.
    token = base64.b32encode(secrets.token_bytes(10 * count)).decode().lower()
    return [f"{prefix}_{token[i : i + 16]}" for i in range(0, 16 * count, 16)]


SLUG_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def random_slug_suffix(length: int = 6) -> str:
    """Random lowercase letters and digits that make a taken slug unique (`acme-k3x9qz`):
    unlike `-2`, `-3`, they do not count how many others chose the name."""
    return "".join(secrets.choice(SLUG_SUFFIX_ALPHABET) for _ in range(length))
