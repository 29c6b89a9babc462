"""Workspace fields: the rules every value a caller sends for a workspace must meet (brand
aliases, competitors, providers), and the stored form of competitors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from service.config import PROVIDERS
from service.domain.errors import InvalidArgument
from service.domain.hostnames import normalize_hostname
from service.domain.tenancy.names import clean_text

MAX_BRAND_ALIASES = 20
MAX_COMPETITORS = 50
COMPETITOR_NAME_MAX = 80


@dataclass(frozen=True, slots=True)
class Competitor:
    """A competitor: display name and optional normalized domain."""

    name: str
    domain: str = ""


def clean_brand_aliases(field_name: str, aliases: Sequence[str]) -> list[str]:
    """Trimmed aliases, 1-80 characters each, at most 20, case-insensitive duplicates dropped."""
    if len(aliases) > MAX_BRAND_ALIASES:
        raise InvalidArgument(field_name, f"at most {MAX_BRAND_ALIASES} aliases")
    seen: set[str] = set()
    result: list[str] = []
    for index, alias in enumerate(aliases):
        text = clean_text(f"{field_name}[{index}]", alias, minimum=1, maximum=COMPETITOR_NAME_MAX)
        if text.casefold() not in seen:
            seen.add(text.casefold())
            result.append(text)
    return result


def clean_competitors(field_name: str, competitors: Sequence[Competitor]) -> list[Competitor]:
    """Validated competitors: name 1-80 characters, optional domain normalized, at most 50,
    no two with the same name (case-insensitive)."""
    if len(competitors) > MAX_COMPETITORS:
        raise InvalidArgument(field_name, f"at most {MAX_COMPETITORS} competitors")
    seen: set[str] = set()
    result: list[Competitor] = []
    for index, competitor in enumerate(competitors):
        prefix = f"{field_name}[{index}]"
        name = clean_text(f"{prefix}.name", competitor.name, minimum=1, maximum=COMPETITOR_NAME_MAX)
        if name.casefold() in seen:
            raise InvalidArgument(f"{prefix}.name", f"duplicates another competitor ({name!r})")
        seen.add(name.casefold())
        result.append(Competitor(name, normalize_hostname(f"{prefix}.domain", competitor.domain)))
    return result


def clean_providers(field_name: str, providers: Sequence[str]) -> list[str]:
    """At least one known provider; duplicates dropped; stored in the canonical order."""
    if not providers:
        raise InvalidArgument(field_name, "enable at least one provider")
    for index, provider in enumerate(providers):
        if provider not in PROVIDERS:
            raise InvalidArgument(
                f"{field_name}[{index}]", f"must be one of {', '.join(PROVIDERS)}"
            )
    return [p for p in PROVIDERS if p in providers]


def competitors_json(competitors: Iterable[Competitor]) -> list[dict[str, Any]]:
    """The stored (JSON column) form of competitors."""
    return [{"name": c.name, "domain": c.domain} for c in competitors]


def competitors_from_json(raw: Iterable[dict[str, Any]]) -> list[Competitor]:
    """Competitors from their stored form."""
    return [Competitor(str(c.get("name", "")), str(c.get("domain", ""))) for c in raw]
