"""Where a webhook may go: the URL checked when it is set, every address checked when it is
resolved at delivery (server-side request forgery: a user must not make Beacon's workers call
the cloud's metadata service, a database on the private network, or Beacon itself)."""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from service.domain.errors import InvalidArgument

MAX_URL_LENGTH = 2000
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# NAT64 (RFC 6052) embeds an IPv4 address that the translator then reaches.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_endpoint_url(url: str, *, allow_http: bool, field: str = "url") -> str:
    """The URL, stripped, when it may be an endpoint: https:// (http:// when `allow_http`),
    a host, no credentials, at most 2000 characters; InvalidArgument naming `field` otherwise.
    Addresses are checked at each delivery (`address_refusal`), not here: a name's addresses
    change."""
    url = url.strip()
    if not url:
        raise InvalidArgument(field, "is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidArgument(field, "is not a valid URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidArgument(field, "must start with https://")
    if not parts.hostname:
        raise InvalidArgument(field, "has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(field, "must not hold credentials (user:password@)")
    if port == 0:
        raise InvalidArgument(field, "has port 0")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidArgument(field, "must not contain spaces or control characters")
    return url


def split_target(url: str) -> tuple[SplitResult, str, int]:
    """The URL's parts, host (IDNA-encoded, brackets removed) and port (default per scheme)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ascii_host = host.encode("idna").decode() if not _is_literal(host) else host
    except UnicodeError:
        ascii_host = host
    return parts, ascii_host, parts.port or (443 if parts.scheme == "https" else 80)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def address_refusal(address: IPAddress) -> str:
    """Why a delivery may not connect to `address` ("" when it is a public unicast address):
    loopback, private, link-local (169.254.169.254, the cloud metadata service), multicast,
    unspecified, reserved and other special-purpose ranges, in IPv4 and IPv6, including IPv6
    forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_refusal(embedded)
            return f"{inner} (embedded in {address})" if inner else ""
    for label, flagged in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flagged:
            return f"{label} address {address}"
    if not address.is_global:
        return f"non-public address {address}"
    return ""
