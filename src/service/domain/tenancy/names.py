"""Display names and URL slugs of organizations and workspaces: validation and derivation."""

from __future__ import annotations

import re
import unicodedata

from service.domain.errors import InvalidArgument

NAME_MIN = 2
NAME_MAX = 80
SLUG_MIN = 2
SLUG_MAX = 50
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# Control characters, line and paragraph separators: never part of a display name.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
# Format characters (Cf: bidi overrides and isolates, zero-width spaces, soft hyphens, ...)
# make a name render unlike its text, or look like another name. Only the zero-width
# (non-)joiners are kept, between two visible characters, where scripts (Persian, Indic) and
# emoji sequences need them.
_JOINERS = frozenset("\u200c\u200d")


def _visible(char: str) -> bool:
    return not char.isspace() and unicodedata.category(char) not in ("Cf", "Cc", "Zl", "Zp")


def clean_text(field: str, value: str, *, minimum: int, maximum: int) -> str:
    """`value` trimmed, checked to be `minimum`..`maximum` characters without control or
    format characters (but for a joiner between two visible characters)."""
    text = value.strip()
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES:
            raise InvalidArgument(field, f"must not contain control characters (U+{ord(char):04X})")
        if category == "Cf" and not (
            char in _JOINERS
            and 0 < index < len(text) - 1
            and _visible(text[index - 1])
            and _visible(text[index + 1])
        ):
            raise InvalidArgument(
                field,
                f"must not contain invisible formatting characters such as bidi overrides or "
                f"zero-width spaces (U+{ord(char):04X})",
            )
    if len(text) < minimum:
        if not text:
            raise InvalidArgument(field, "is required")
        raise InvalidArgument(field, f"must be at least {minimum} characters after trimming")
    if len(text) > maximum:
        raise InvalidArgument(field, f"must be at most {maximum} characters")
    return text


def display_name(field: str, value: str) -> str:
    """A validated organization or workspace name: trimmed, 2-80 characters."""
    return clean_text(field, value, minimum=NAME_MIN, maximum=NAME_MAX)


def validate_slug(field: str, value: str) -> str:
    """An explicit slug: `[a-z0-9-]`, 2-50 characters, no leading, trailing or double hyphen."""
    if not SLUG_MIN <= len(value) <= SLUG_MAX:
        raise InvalidArgument(field, f"must be {SLUG_MIN}-{SLUG_MAX} characters")
    if not SLUG_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field,
            "may contain only lowercase letters, digits and single hyphens between them",
        )
    return value


def derive_slug(name: str, *, fallback: str) -> str:
    """A slug made from a name: accents folded, other characters turned into hyphens.

    Names with too few Latin letters or digits (e.g. only CJK characters) get `fallback`.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:SLUG_MAX].rstrip("-")
    return slug if len(slug) >= SLUG_MIN else fallback


def suffixed_slug(base: str, suffix: str) -> str:
    """`base-<suffix>`, `base` shortened so the whole is at most 50 characters."""
    tail = f"-{suffix}"
    return base[: SLUG_MAX - len(tail)].rstrip("-") + tail
