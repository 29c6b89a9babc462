"""Markets: the country (and region, city, language) a prompt is asked from.

A market is part of a prompt's identity: the same text in two markets is two prompts. A prompt
without one is asked from its workspace's default market, if any. Countries are ISO 3166-1
alpha-2 codes, checked against the list below (officially assigned codes, ISO 3166 Maintenance
Agency, as of 2024; no dependency of Beacon carries one); languages are BCP 47 tags, checked for
their syntax (RFC 5646 `langtag`: language, optional script, region and variants), not against
the IANA registry. Providers whose API takes a location get it (`APPLIES`); the others are
asked the prompt unchanged, and the answer records that the market was not applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.database import Reader
from service.db.models import Workspace
from service.domain import audit
from service.domain.actor import Actor
from service.domain.errors import InvalidArgument
from service.domain.tenancy.workspace_locks import lock_live_workspace

# ISO 3166-1 alpha-2, officially assigned codes (249).
COUNTRIES: Final = frozenset(
    [
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    ]
)
# RFC 5646 langtag without extensions and private use: language (2-3 letters, or 4-8),
# script (4 letters), region (2 letters or 3 digits), variants.
_LANGUAGE_TAG = re.compile(
    r"(?:[A-Za-z]{2,3}|[A-Za-z]{4,8})"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
)
MAX_PLACE_LENGTH = 100
MAX_LANGUAGE_LENGTH = 35
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f]")

# Providers whose API takes the market, and how (see docs/money.md).
APPLIES: Final[Mapping[str, str]] = {
    "openai": "web search tool user_location (Responses; web_search_options on Chat)",
    "anthropic": "web search tool user_location",
    "perplexity": "web_search_options.user_location",
}


@dataclass(frozen=True, slots=True)
class Market:
    """Where a prompt is asked from; every field empty means no market."""

    country: str = ""
    region: str = ""
    city: str = ""
    language: str = ""

    def __bool__(self) -> bool:
        return bool(self.country)

    def stored(self) -> dict[str, str]:
        """The market as stored in JSON columns (empty fields left out)."""
        return {
            key: value
            for key, value in (
                ("country", self.country),
                ("region", self.region),
                ("city", self.city),
                ("language", self.language),
            )
            if value
        }

    @classmethod
    def of(cls, stored: Mapping[str, object] | None) -> Market:
        """The market of a JSON column (missing or odd values read as empty)."""
        values = stored or {}

        def read(key: str) -> str:
            value = values.get(key)
            return value if isinstance(value, str) else ""

        return cls(read("country"), read("region"), read("city"), read("language"))

    @property
    def key(self) -> str:
        """The market's part of a prompt's identity ("" for no market)."""
        if not self:
            return ""
        return "\x00".join((self.country, self.region, self.city, self.language))


def validate_market(market: Market, field: str) -> Market:
    """The market trimmed, its country upper-cased; InvalidArgument naming `field.country`,
    `field.region`, `field.city` or `field.language` when a part is not valid. A region, city
    or language without a country is refused (`field.country`)."""
    country = market.country.strip().upper()
    region, city = market.region.strip(), market.city.strip()
    language = market.language.strip()
    if not country:
        if region or city or language:
            raise InvalidArgument(
                f"{field}.country", "is required when a region, city or language is given"
            )
        return Market()
    if country not in COUNTRIES:
        raise InvalidArgument(
            f"{field}.country", "must be an ISO 3166-1 alpha-2 country code, such as US or DE"
        )
    for name, value in (("region", region), ("city", city)):
        if len(value) > MAX_PLACE_LENGTH:
            raise InvalidArgument(
                f"{field}.{name}", f"must be at most {MAX_PLACE_LENGTH} characters"
            )
        if _FORBIDDEN.search(value):
            raise InvalidArgument(f"{field}.{name}", "must not contain control characters")
    if language and (len(language) > MAX_LANGUAGE_LENGTH or not _LANGUAGE_TAG.fullmatch(language)):
        raise InvalidArgument(
            f"{field}.language", "must be a BCP 47 language tag, such as de or en-GB"
        )
    return Market(country, region, city, language)


def effective_market(prompt_market: Mapping[str, object], default: Mapping[str, object]) -> Market:
    """The market a prompt is asked from: its own, else its workspace's default."""
    own = Market.of(prompt_market)
    return own if own else Market.of(default)


def applied(provider: str, market: Market) -> bool:
    """Whether `provider`'s API takes `market` (so that its answer reflects it)."""
    return bool(market) and provider in APPLIES


async def set_default_market(
    session: AsyncSession, call: Actor, workspace_id: str, market: Market, *, now: datetime
) -> Market:
    """Sets the workspace's default market (validated, InvalidArgument naming `market.*`);
    an empty market clears it. Returns it as stored."""
    checked = validate_market(market, "market")
    workspace = await lock_live_workspace(session, workspace_id)
    workspace.default_market = checked.stored()
    audit.record_workspace(session, call, workspace, now, target_ids=[workspace_id])
    return checked


async def default_market(session: Reader, workspace_id: str) -> Market:
    """The workspace's default market (empty when none)."""
    stored = await session.scalar(
        select(Workspace.default_market).where(Workspace.id == workspace_id)
    )
    return Market.of(stored)
