"""Beacon's settings: one object, read from `BEACON_*` environment variables at start-up."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import NonNegativeInt, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROVIDERS = ("openai", "anthropic", "google", "perplexity", "mistral", "cohere")


class Settings(BaseSettings):
    """Every knob of every Beacon process. Field `x` is read from `BEACON_X`."""

    model_config = SettingsConfigDict(env_prefix="BEACON_", extra="ignore")

    # Storage and messaging.
    database_url: str = "sqlite+aiosqlite:///./var/beacon.db"
    redis_url: str = ""  # empty: in-memory rate limits and the in-process broker
    broker_url: str = ""  # defaults to redis_url; amqp://... selects RabbitMQ
    data_dir: Path = Path("./var")

    # Network.
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    public_http_url: str = ""  # base of signed URLs; defaults to http://<http_addr>
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 1000
    shutdown_grace_seconds: float = 10.0
    uvloop: bool = True

    # Authentication.
    auth_secret: str = (
        "beacon-dev-secret-change-me-in-production"  # HS256 secret; empty disables HS256
    )
    auth_dev_issuer: str = "beacon-dev"
    auth_jwks_url: str = ""
    auth_issuer: str = ""
    auth_audience: str = ""
    auth_jwks_cache_seconds: int = 300
    auth_leeway_seconds: int = 30
    signing_secret: str = ""  # for signed URLs; defaults to auth_secret
    service_key_cache_seconds: float = 5.0  # a revoked key stops working within this time

    # Rate limits: every rule's request count is multiplied by this (load tests only).
    rate_limit_scale: float = 1.0
    rate_limit_strategy: str = "moving-window"
    rate_limit_key_prefix: str = "beacon"  # Redis key prefix of the counters

    # Tenancy.
    workspace_retention_days: int = 30
    join_code_ttl_hours: int = 24 * 7
    upload_url_ttl_seconds: int = 600
    icon_url_ttl_seconds: int = 3600
    icon_max_bytes: int = 1024 * 1024

    # Collection.
    schedule_min_interval_minutes: int = 15
    ticker_interval_seconds: float = 5.0
    ticker_batch_size: int = 1000
    worker_concurrency: int = 100
    provider_concurrency: int = 50  # per provider, per worker process
    probe_max_attempts: int = 4
    probe_backoff_seconds: float = 2.0
    probe_backoff_max_seconds: float = 120.0

    # Providers: key, base URL and model each; a provider without a key cannot run.
    openai_api_key: str = ""
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-5"
    openai_api: str = "responses"
    anthropic_api_key: str = ""
    anthropic_base_url: str = "https://api.anthropic.com/v1"
    anthropic_model: str = "claude-haiku-4-5"
    google_api_key: str = ""
    google_base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    google_model: str = "gemini-2.5-flash"
    perplexity_api_key: str = ""
    perplexity_base_url: str = "https://api.perplexity.ai"
    perplexity_model: str = "sonar-pro"
    mistral_api_key: str = ""
    mistral_base_url: str = "https://api.mistral.ai/v1"
    mistral_model: str = "mistral-medium-latest"
    cohere_api_key: str = ""
    cohere_base_url: str = "https://api.cohere.com/v2"
    cohere_model: str = "command-a-03-2025"
    provider_timeout_seconds: float = 60.0
    # Budgets per provider API key, shared by every worker (workers.budgets): requests and
    # tokens per minute; 0 or empty is unlimited.
    openai_rpm: NonNegativeInt = 0
    openai_tpm: NonNegativeInt = 0
    anthropic_rpm: NonNegativeInt = 0
    anthropic_tpm: NonNegativeInt = 0
    google_rpm: NonNegativeInt = 0
    google_tpm: NonNegativeInt = 0
    perplexity_rpm: NonNegativeInt = 0
    perplexity_tpm: NonNegativeInt = 0
    mistral_rpm: NonNegativeInt = 0
    mistral_tpm: NonNegativeInt = 0
    cohere_rpm: NonNegativeInt = 0
    cohere_tpm: NonNegativeInt = 0

    log_level: str = "INFO"
    log_json: bool = True
    metrics_enabled: bool = True
    # Prometheus endpoints of `beacon worker` / `beacon ticker` (host:port; empty = none).
    # `beacon serve` serves /metrics on its HTTP side.
    worker_metrics_addr: str = ""
    ticker_metrics_addr: str = ""

    @field_validator(*(f"{p}_{unit}" for p in PROVIDERS for unit in ("rpm", "tpm")), mode="before")
    @classmethod
    def _empty_is_unlimited(cls, value: object) -> object:
        return 0 if value is None or (isinstance(value, str) and not value.strip()) else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @cached_property
    def effective_signing_secret(self) -> bytes:
        return (self.signing_secret or self.auth_secret or "beacon-signing").encode()

    @cached_property
    def effective_public_http_url(self) -> str:
        return (self.public_http_url or f"http://{self.http_addr}").rstrip("/")

    def provider_key(self, provider: str) -> str:
        return str(getattr(self, f"{provider}_api_key"))

    def configured_providers(self) -> frozenset[str]:
        """Providers that have credentials."""
        return frozenset(p for p in PROVIDERS if self.provider_key(p))
