"""URL clean-up shared by the provider adapters and the answer analysis."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import idna


@lru_cache(maxsize=8192)  # answers repeat the same few hosts; IDNA checks are slow
def normalize_domain(url_or_host: str) -> str:
    """Return the lowercase hostname of a URL or bare host, without a leading ``www.``.

    Accepts ``https://www.Acme.com/x``, ``www.acme.com``, ``acme.com:8080``, ``sales@acme.com``
    and internationalised names in either form (``xn--bcher-kva.de`` and ``bücher.de`` both give
    ``bücher.de``). Returns ``""`` when there is no host.
    """
    value = url_or_host.strip()
    if not value:
        return ""
    if "://" not in value and not value.startswith("//"):
        value = "//" + value
    try:
        host = urlsplit(value).hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".")
    if not host or any(char.isspace() for char in host):
        return ""
    host = _unicode_host(host)
    return host.removeprefix("www.")


def _unicode_host(host: str) -> str:
    try:
        return idna.decode(idna.encode(host, uts46=True))
    except (idna.IDNAError, UnicodeError):
        # Hosts idna rejects (underscores, bare IPs, ...) are still usable as lowercase text.
        return unicodedata.normalize("NFKC", host).casefold()


def strip_tracking(url: str) -> str:
    """Remove ``utm_*`` query parameters, which providers add to citation URLs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "utm_" not in parts.query.lower():
        return url
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not key.lower().startswith("utm_")
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def host_within(host: str, domain: str) -> bool:
    """True when ``host`` is ``domain`` or one of its subdomains (both already normalised)."""
    return bool(domain) and (host == domain or host.endswith("." + domain))
