"""Verified tokens are cached, but never past their expiry."""

from __future__ import annotations

import time

import pytest

from service.auth.tokens import Claims, TokenVerifier, mint_dev_token
from service.config import Settings


async def test_a_cached_token_is_verified_again_once_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [time.monotonic()]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # what service.auth.cache reads
    settings = Settings(auth_secret="s" * 40)
    verifier = TokenVerifier(settings)
    checked: list[str] = []
    verify = verifier._verify

    async def counting(token: str) -> tuple[Claims, float]:
        checked.append(token)
        return await verify(token)

    monkeypatch.setattr(verifier, "_verify", counting)
    token = mint_dev_token(settings, email="a@example.com", ttl_seconds=60)

    for _ in range(3):
        assert (await verifier.verify(token)).email == "a@example.com"
    assert len(checked) == 1  # the signature was checked once

    now[0] += 61  # past the token's expiry: the cache no longer vouches for it
    assert (await verifier.verify(token)).email == "a@example.com"  # within jwt leeway
    assert len(checked) == 2
