"""Tracked domains: user input (a hostname or a URL) normalized to an ASCII hostname.

Normalization: surrounding whitespace, scheme, credentials, port, path, query and a
trailing dot are dropped; the name is mapped with IDNA 2008 / UTS #46 (so `Bücher.Example`
becomes `xn--bcher-kva.example`) and lowercased. A domain needs at least two labels and a
non-numeric top-level label: IP addresses and single names like `localhost` are refused,
since a brand is known by its domain name, not by an address.

A tracked domain must also be a registrable domain (`acme.co.uk`) or a host under one
(`shop.acme.co.uk`), never a public suffix (`co.uk`, `github.io`), under which every site of
every owner would count as the brand's. Public suffixes come from the list bundled with the
`publicsuffixlist` package (read offline, never fetched); a name under a suffix the list does
not know (`acme.test`) counts as registrable, as the list's default rule says.
"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

import idna
from publicsuffixlist import PublicSuffixList

from service.domain.errors import InvalidArgument

HOSTNAME_MAX = 253


def normalize_hostname(field: str, value: str) -> str:
    """The normalized hostname of `value`, or "" when `value` is blank."""
    text = value.strip()
    if not text:
        return ""
    if len(text) > 2048:
        raise InvalidArgument(field, "is too long")
    host = _host_part(field, text)
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        raise InvalidArgument(field, "must be a domain name, not an IP address")
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidArgument(field, f"is not a valid domain name ({str(exc)[:100]})") from None
    labels = ascii_host.split(".")
    if len(labels) < 2:
        raise InvalidArgument(field, "must be a full domain name such as example.com")
    if labels[-1].isdigit():
        raise InvalidArgument(field, "must end in a top-level domain such as .com")
    if len(ascii_host) > HOSTNAME_MAX:
        raise InvalidArgument(field, f"must be at most {HOSTNAME_MAX} characters once encoded")
    if registrable_domain(ascii_host) is None:
        raise InvalidArgument(
            field,
            f"{ascii_host!r} is a public suffix shared by many owners: give a registrable "
            "domain under it, such as example." + ascii_host,
        )
    return ascii_host


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # Built once, from the file bundled with the package (a few ms).
    return PublicSuffixList()


def registrable_domain(host: str) -> str | None:
    """The registrable domain holding `host` (`www.acme.co.uk` -> `acme.co.uk`), or None when
    `host` is itself a public suffix (`co.uk`, `github.io`) or empty."""
    if not host:
        return None
    found = _public_suffixes().privatesuffix(host.lower())
    return str(found) if found else None


def _host_part(field: str, text: str) -> str:
    if any(c.isspace() for c in text):
        raise InvalidArgument(field, "must not contain spaces")
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        host = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise InvalidArgument(field, f"is not a valid domain or URL ({str(exc)[:100]})") from None
    if not host:
        raise InvalidArgument(field, "is not a valid domain or URL")
    host = host.rstrip(".")
    if not host:
        raise InvalidArgument(field, "is not a valid domain name")
    return host
