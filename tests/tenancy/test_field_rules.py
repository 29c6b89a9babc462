"""Field rules of organizations and workspaces, as pure functions: names, slugs, domains,
aliases, competitors, providers, field masks and etags."""

from __future__ import annotations

import pytest

from service.clock import random_slug_suffix
from service.domain.errors import Aborted, InvalidArgument
from service.domain.hostnames import normalize_hostname, registrable_domain
from service.domain.tenancy.files import sniff_image_type
from service.domain.tenancy.names import derive_slug, display_name, suffixed_slug, validate_slug
from service.domain.tenancy.workspace_fields import (
    Competitor,
    clean_brand_aliases,
    clean_competitors,
    clean_providers,
)
from service.domain.tenancy.workspace_lifecycle import check_etag, update_paths


def violation(error: pytest.ExceptionInfo[InvalidArgument]) -> tuple[str, str]:
    first = error.value.violations[0]
    return first.field, first.description


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Acme Corporation", "acme-corporation"),
        ("  Production   Environment ", "production-environment"),
        ("Café Crème", "cafe-creme"),
        ("R&D / Labs!", "r-d-labs"),
        ("Ünïcödé 2024", "unicode-2024"),
        ("---", "fallback"),
        ("日本語", "fallback"),
        ("x", "fallback"),
        ("a" * 70, "a" * 50),
        ("word " * 20, ("word-" * 10).rstrip("-")),
    ],
)
def test_slug_derivation(name: str, slug: str) -> None:
    derived = derive_slug(name, fallback="fallback")
    assert derived == slug
    validate_slug("slug", derived)


def test_taken_slugs_get_a_random_suffix_that_fits() -> None:
    assert suffixed_slug("acme", "k3x9qz") == "acme-k3x9qz"
    long = "b" * 50
    assert suffixed_slug(long, "k3x9qz") == "b" * 43 + "-k3x9qz"
    assert suffixed_slug("ab-" + "c" * 40 + "-d", "k3x9qz") == "ab-" + "c" * 40 + "-k3x9qz"
    suffixes = {random_slug_suffix() for _ in range(50)}
    assert len(suffixes) == 50
    assert all(len(s) == 6 and s.isalnum() and s == s.lower() for s in suffixes)


@pytest.mark.parametrize("slug", ["a", "A-b", "ab_c", "-ab", "ab-", "a--b", "a b", "x" * 51, "é1"])
def test_invalid_slugs_are_refused_naming_the_field(slug: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_slug("workspace.slug", slug)
    assert violation(error)[0] == "workspace.slug"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("acme.com", "acme.com"),
        ("ACME.COM", "acme.com"),
        ("  Acme.Com.  ", "acme.com"),
        ("https://www.Acme.com/pricing?x=1#top", "www.acme.com"),
        ("http://user:pw@shop.acme.co.uk:8443/a", "shop.acme.co.uk"),
        ("acme.com:443", "acme.com"),
        ("acme.com/path/only", "acme.com"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("日本.jp", "xn--wgv71a.jp"),
        ("acme.co.uk", "acme.co.uk"),
        ("shop.acme.github.io", "shop.acme.github.io"),
        ("\uff21\uff23\uff2d\uff25.com", "acme.com"),  # fullwidth letters
        ("", ""),
        ("   ", ""),
    ],
)
def test_domain_normalization(given: str, expected: str) -> None:
    assert normalize_hostname("domain", given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "localhost",
        "1.2.3.4",
        "http://10.0.0.1/x",
        "[::1]",
        "exa mple.com",
        "under_score.com",
        "-lead.com",
        "trail-.com",
        "a..b.com",
        "acme.123",
        "xn--zz.com",
        "http://",
        "acme.com:99999",
        f"{'a' * 64}.com",
        ".".join(["abcdefghi"] * 30) + ".com",
        # Public suffixes: registrable by anyone, so no brand's domain.
        "co.uk",
        "https://CO.UK/x",
        "github.io",
        "com.au",
    ],
)
def test_invalid_domains_are_refused_naming_the_field(given: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        normalize_hostname("workspace.domain", given)
    field, description = violation(error)
    assert field == "workspace.domain"
    assert description


def test_registrable_domain_groups_hosts_under_their_owner() -> None:
    assert registrable_domain("www.shop.acme.co.uk") == "acme.co.uk"
    assert registrable_domain("docs.acme.github.io") == "acme.github.io"
    assert registrable_domain("blog.acme.com") == "acme.com"
    assert registrable_domain("bücher.de") == "bücher.de"
    assert registrable_domain("co.uk") is None
    assert registrable_domain("") is None


def test_names_are_trimmed_and_bounded() -> None:
    assert display_name("name", "  Acme  ") == "Acme"
    assert display_name("name", "Zoë") == "Zoë"
    assert display_name("name", "x" * 80) == "x" * 80
    for bad, reason in [
        ("", "is required"),
        ("   ", "is required"),
        (" a ", "at least 2"),
        ("x" * 81, "at most 80"),
        ("Tab\there", "control characters"),
        ("Line\nbreak", "control characters"),
        ("Null\x00", "control characters"),
    ]:
        with pytest.raises(InvalidArgument) as error:
            display_name("workspace.name", bad)
        field, description = violation(error)
        assert field == "workspace.name"
        assert reason in description, (bad, description)


def test_brand_aliases_are_trimmed_deduplicated_and_limited() -> None:
    assert clean_brand_aliases("brand_aliases", [" Acme ", "ACME", "Acme Inc"]) == [
        "Acme",
        "Acme Inc",
    ]
    with pytest.raises(InvalidArgument) as error:
        clean_brand_aliases("brand_aliases", ["ok", "  "])
    assert violation(error)[0] == "brand_aliases[1]"
    with pytest.raises(InvalidArgument) as error:
        clean_brand_aliases("brand_aliases", [f"a{i}" for i in range(21)])
    assert violation(error)[0] == "brand_aliases"


def test_competitors_are_validated_per_item() -> None:
    clean = clean_competitors(
        "competitors", [Competitor(" Globex ", "https://Globex.com/"), Competitor("Initech")]
    )
    assert clean == [Competitor("Globex", "globex.com"), Competitor("Initech", "")]
    with pytest.raises(InvalidArgument) as error:
        clean_competitors("workspace.competitors", [Competitor("A"), Competitor("B", "not a host")])
    assert violation(error)[0] == "workspace.competitors[1].domain"
    with pytest.raises(InvalidArgument) as error:
        clean_competitors("competitors", [Competitor("Globex"), Competitor("globex")])
    assert violation(error)[0] == "competitors[1].name"
    with pytest.raises(InvalidArgument) as error:
        clean_competitors("competitors", [Competitor(f"c{i}") for i in range(51)])
    assert violation(error)[0] == "competitors"


def test_providers_need_one_known_provider() -> None:
    assert clean_providers("providers", ["cohere", "openai", "openai"]) == ["openai", "cohere"]
    with pytest.raises(InvalidArgument) as error:
        clean_providers("providers", [])
    assert violation(error)[0] == "providers"
    with pytest.raises(InvalidArgument) as error:
        clean_providers("providers", ["openai", ""])
    assert violation(error)[0] == "providers[1]"


def test_field_masks() -> None:
    assert update_paths(["name", "domain", "name"]) == ["name", "domain"]
    assert update_paths(["*"]) == [
        "name",
        "slug",
        "domain",
        "icon_file_id",
        "brand_aliases",
        "competitors",
    ]
    for bad in ([], ["etag"], ["name", "organization_id"]):
        with pytest.raises(InvalidArgument) as error:
            update_paths(bad)
        assert violation(error)[0] == "update_mask"


def test_etags() -> None:
    check_etag("workspace.etag", "", 7)
    check_etag("workspace.etag", "7", 7)
    with pytest.raises(Aborted) as error:
        check_etag("workspace.etag", "6", 7)
    assert "stale" in error.value.message


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 8, "image/jpeg"),
        (b"GIF89a" + b"\x00" * 8, "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_image_types_are_recognised_by_content(data: bytes, content_type: str | None) -> None:
    assert sniff_image_type(data) == content_type
