"""Endpoint signing secrets: made, shown once, stored encrypted (AES-GCM).

The key is derived from BEACON_WEBHOOK_SECRET_KEY, so a database dump alone reveals no
secret. A ciphertext is `v1.` and the base64 of nonce || AES-GCM(secret), bound to its
endpoint id (associated data): a ciphertext copied to another row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.config import Settings
from service.domain.errors import FailedPrecondition

PREFIX = "whsec_"
SECRET_BYTES = 32
NONCE_BYTES = 12
VERSION = "v1."


def new_secret() -> str:
    """A new signing secret, `whsec_` and the base64 of 32 random bytes (the spec's form)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretDecryptionError(ValueError):
    """A stored secret does not decrypt with this key (the key changed, or the row was
    tampered with)."""


@dataclass(frozen=True, slots=True)
class SecretBox:
    """Encrypts and decrypts endpoint secrets with the key from the environment."""

    key: bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of BEACON_WEBHOOK_SECRET_KEY; FailedPrecondition when it is not set."""
        if not settings.webhook_secret_key:
            raise FailedPrecondition(
                "webhooks are not configured on this server (BEACON_WEBHOOK_SECRET_KEY)",
                reason="WEBHOOKS_NOT_CONFIGURED",
            )
        material = b"beacon webhook secrets\0" + settings.webhook_secret_key.encode()
        return cls(hashlib.sha256(material).digest())

    def encrypt(self, secret: str, endpoint_id: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, secret.encode(), endpoint_id.encode())
        return VERSION + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, ciphertext: str, endpoint_id: str) -> str:
        if not ciphertext.startswith(VERSION):
            raise SecretDecryptionError("unknown secret format")
        raw = base64.b64decode(ciphertext[len(VERSION) :])
        try:
            plain = AESGCM(self.key).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], endpoint_id.encode()
            )
        except InvalidTag:
            raise SecretDecryptionError("the secret does not decrypt with this key") from None
        return plain.decode()
