"""Beacon's settings: one object, read from `BEACON_*` environment variables at start-up."""

from __future__ import annotations

import hashlib
import hmac
from functools import cached_property
from pathlib import Path

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from service import providers

PROVIDERS = providers.NAMES
# The HS256 secret only `beacon dev` may use (and `beacon token` mints with when none is set):
# it is public, so `serve`, `worker` and `ticker` refuse to start on it.
DEV_AUTH_SECRET = "beacon-dev-secret-change-me-in-production"
MIN_SECRET_BYTES = 32
# Provider calls a minute per API key, fleet-wide, unless BEACON_<PROVIDER>_RPM says otherwise:
# one a second, below every provider's lowest paid tier, so that a new deployment cannot run
# up a bill: at most 60 calls a minute to each provider for the whole fleet, 21,600 an hour
# over six, where one workspace could make 540,000 an hour before.
DEFAULT_PROVIDER_RPM = 60
GENERATE_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"


class ConfigError(ValueError):
    """The environment does not allow this process to start; the message says how to fix it."""


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
    # Unary Beacon calls in flight per server process; beyond it a call is RESOURCE_EXHAUSTED
    # (SERVER_BUSY). Streams never count against it: they have their own budget below.
    max_concurrent_rpcs: PositiveInt = 1000
    # Streams (WatchRun) open per server process, per user and per workspace; beyond them a
    # new stream is RESOURCE_EXHAUSTED (TOO_MANY_STREAMS). A stream ends UNAVAILABLE
    # (STREAM_LIFETIME_ENDED) after `max_stream_seconds`: the client reopens it.
    max_concurrent_streams: PositiveInt = 1000
    max_streams_per_user: PositiveInt = 10
    max_streams_per_workspace: PositiveInt = 20
    max_stream_seconds: PositiveFloat = 1800.0
    shutdown_grace_seconds: float = 10.0
    uvloop: bool = True
    # gRPC connections: one that has not finished its HTTP/2 handshake in this time, has had
    # no call for this long, or is older than this (then allowed the grace for its calls to
    # end) is closed by the server; clients reconnect on their own.
    grpc_handshake_timeout_seconds: float = 10.0
    grpc_max_connection_idle_seconds: float = 30.0
    grpc_max_connection_age_seconds: float = 1800.0
    grpc_max_connection_age_grace_seconds: float = 300.0
    # The HTTP side: a request's headers must arrive within this time of the connection or of
    # the previous response, and an upload's body within the other; connections beyond the
    # caps are answered 503 and closed (0 disables a cap: only behind a proxy that caps).
    http_header_timeout_seconds: float = 10.0
    http_body_timeout_seconds: float = 30.0
    http_max_connections_per_peer: NonNegativeInt = 32
    http_max_connections: NonNegativeInt = 512
    # Requests a minute per peer address on the HTTP side (0 disables it: only behind a
    # proxy that limits per client itself).
    http_peer_rate_limit_per_minute: NonNegativeInt = 600

    # Authentication.
    auth_secret: str = ""  # HS256 secret (>= 32 bytes); empty disables HS256
    auth_dev_issuer: str = "beacon-dev"
    auth_jwks_url: str = ""
    auth_issuer: str = ""
    auth_audience: str = ""
    auth_jwks_cache_seconds: int = 300
    auth_leeway_seconds: int = 30
    signing_secret: str = ""  # signed URLs and page tokens (>= 32 bytes); required
    service_key_cache_seconds: float = 5.0  # a revoked key stops working within this time

    # Rate limits: every rule's request count is multiplied by this (load tests only).
    rate_limit_scale: float = 1.0
    rate_limit_strategy: str = "moving-window"
    rate_limit_key_prefix: str = "beacon"  # Redis key prefix of the counters
    # Calls per minute from one peer address over every RPC, counted before authentication
    # (0 disables it: only behind a proxy that limits per client itself).
    peer_rate_limit_per_minute: int = 6000

    # Tenancy.
    workspace_retention_days: int = 30
    join_code_ttl_hours: int = 24 * 7
    invitation_ttl_hours: int = 24 * 7  # pending invitations expire after this
    upload_url_ttl_seconds: int = 600
    icon_url_ttl_seconds: int = 3600
    icon_max_bytes: int = 1024 * 1024
    # POSTs one upload URL accepts over its life (each failed attempt counts).
    upload_attempts_per_url: int = 10
    # Each upload is decoded in a process of its own, killed past this time; at most this
    # many at once per server process (the others wait up to that time, then get 503).
    upload_decode_timeout_seconds: float = 10.0
    upload_decode_concurrency: int = 2
    # Live workspaces per organization, and organizations a user owns: creating one more is
    # FAILED_PRECONDITION (WORKSPACE_LIMIT_REACHED, ORGANIZATION_LIMIT_REACHED).
    max_workspaces_per_organization: PositiveInt = 100
    max_organizations_per_user: PositiveInt = 10

    # Collection.
    schedule_min_interval_minutes: int = 15
    # How often an open WatchRun stream re-checks its caller's credentials (an expired token,
    # a revoked key end it UNAUTHENTICATED) and that they may still see the run.
    watch_access_check_seconds: float = 3.0
    # Open (queued or running) runs per workspace: StartRun beyond it is FAILED_PRECONDITION
    # (RUN_ALREADY_OPEN) and the ticker skips the slot.
    max_open_runs_per_workspace: int = Field(default=1, ge=1, le=1000)
    ticker_interval_seconds: float = 5.0
    ticker_batch_size: int = 1000
    worker_concurrency: int = 100
    provider_concurrency: int = 50  # per provider, per worker process
    probe_max_attempts: int = 4
    probe_backoff_seconds: float = 2.0
    probe_backoff_max_seconds: float = 120.0
    # An open run on which nothing happened for this long has its messages sent again (lost
    # in a broker restart, say); 0 never does. Keep it well above a probe's longest attempt.
    run_stall_seconds: float = 600.0
    # CPU seconds one answer's analysis may take before the answer is stored unanalysed (FAILED,
    # with the reason). Analysis is linear: its longest answer costs a fraction of this.
    analysis_time_limit_seconds: PositiveFloat = 5.0

    # Providers: key, base URL and model each (defaults: the registry, service.providers); a
    # provider without a key cannot run.
    openai_api_key: str = ""
    openai_base_url: str = providers.OPENAI.base_url
    openai_model: str = providers.OPENAI.model
    openai_api: str = "responses"
    anthropic_api_key: str = ""
    anthropic_base_url: str = providers.ANTHROPIC.base_url
    anthropic_model: str = providers.ANTHROPIC.model
    google_api_key: str = ""
    google_base_url: str = providers.GOOGLE.base_url
    google_model: str = providers.GOOGLE.model
    perplexity_api_key: str = ""
    perplexity_base_url: str = providers.PERPLEXITY.base_url
    perplexity_model: str = providers.PERPLEXITY.model
    mistral_api_key: str = ""
    mistral_base_url: str = providers.MISTRAL.base_url
    mistral_model: str = providers.MISTRAL.model
    cohere_api_key: str = ""
    cohere_base_url: str = providers.COHERE.base_url
    cohere_model: str = providers.COHERE.model
    provider_timeout_seconds: float = 60.0
    # Budgets per provider API key, shared by every worker (workers.budgets): requests and
    # tokens per minute. Requests default to a conservative DEFAULT_PROVIDER_RPM (raise it
    # to your provider tier), tokens to no budget; 0 is unlimited, empty is the default.
    openai_rpm: NonNegativeInt = DEFAULT_PROVIDER_RPM
    openai_tpm: NonNegativeInt = 0
    anthropic_rpm: NonNegativeInt = DEFAULT_PROVIDER_RPM
    anthropic_tpm: NonNegativeInt = 0
    google_rpm: NonNegativeInt = DEFAULT_PROVIDER_RPM
    google_tpm: NonNegativeInt = 0
    perplexity_rpm: NonNegativeInt = DEFAULT_PROVIDER_RPM
    perplexity_tpm: NonNegativeInt = 0
    mistral_rpm: NonNegativeInt = DEFAULT_PROVIDER_RPM
    mistral_tpm: NonNegativeInt = 0
    cohere_rpm: NonNegativeInt = DEFAULT_PROVIDER_RPM
    cohere_tpm: NonNegativeInt = 0

    log_level: str = "INFO"
    log_json: bool = True
    metrics_enabled: bool = True
    # Prometheus endpoints (host:port; empty = none). `beacon serve` serves /metrics on its
    # own address, never on the public HTTP side that serves uploads.
    metrics_addr: str = "127.0.0.1:9464"
    worker_metrics_addr: str = ""
    ticker_metrics_addr: str = ""
    # Allocation tracing for soak runs (service.memtrace): frames kept per allocation, 0 = off
    # (production); snapshots go to the directory (default <data_dir>/tracemalloc) on SIGUSR2.
    tracemalloc_frames: NonNegativeInt = 0
    tracemalloc_dir: Path | None = None
    # glibc malloc arenas of serve, worker and ticker (0 = glibc's default of 8 per core).
    # Every thread that allocates may otherwise get an arena of its own (grpc's, the
    # executors'), and memory freed in one stays reserved there: RSS grows in steps with
    # bursts of threads that a few shared arenas absorb.
    malloc_arena_max: NonNegativeInt = 2
    # Markets and money (docs/money.md). The price table's shipped defaults are overridden by
    # a JSON file and then by a JSON value ({"<provider>": {"<model>": {"input_per_mtok":
    # "1.25", "output_per_mtok": "10", "per_search": "0.01"}}}, dollars as decimal strings).
    prices_file: str = ""
    prices: str = ""

    @field_validator(*(f"{p}_{unit}" for p in PROVIDERS for unit in ("rpm", "tpm")), mode="before")
    @classmethod
    def _empty_is_the_default(cls, value: object) -> object:
        # An empty variable (a template left blank) must not lift the conservative default.
        if value is None or (isinstance(value, str) and not value.strip()):
            raise PydanticUseDefault()
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @cached_property
    def effective_signing_secret(self) -> bytes:
        """The key of signed URLs; there is no fallback (a missing one is a start-up error)."""
        if not self.signing_secret:
            raise ConfigError(f"BEACON_SIGNING_SECRET is not set; {GENERATE_HINT}")
        return self.signing_secret.encode()

    @cached_property
    def page_token_key(self) -> bytes:
        """The key of page tokens, derived from the signing secret (one secret, two uses)."""
        return hmac.new(
            self.effective_signing_secret, b"beacon page tokens", hashlib.sha256
        ).digest()

    def check_secrets(self, *, dev: bool = False) -> None:
        """Raises ConfigError naming the variable when the secrets do not allow a start.

        Outside `dev` (serve, worker, ticker): BEACON_AUTH_SECRET must be set (unless a JWKS
        URL is), must not be the built-in development value and must have >= 32 bytes;
        BEACON_SIGNING_SECRET must be set, >= 32 bytes, and differ from the auth secret. A
        JWKS URL needs BEACON_AUTH_ISSUER and BEACON_AUTH_AUDIENCE, in every command.
        """
        if self.auth_jwks_url and not (self.auth_issuer and self.auth_audience):
            raise ConfigError(
                "BEACON_AUTH_JWKS_URL is set without BEACON_AUTH_ISSUER and BEACON_AUTH_AUDIENCE:"
                " tokens of any issuer or audience signed by that key set would be accepted"
            )
        if dev:
            return
        if self.auth_secret == DEV_AUTH_SECRET:
            raise ConfigError(
                "BEACON_AUTH_SECRET is the public development secret (only `beacon dev` may use"
                f" it); {GENERATE_HINT}"
            )
        if not self.auth_secret and not self.auth_jwks_url:
            raise ConfigError(
                f"BEACON_AUTH_SECRET is not set (and no BEACON_AUTH_JWKS_URL); {GENERATE_HINT}"
            )
        _require_strong("BEACON_AUTH_SECRET", self.auth_secret, optional=True)
        _require_strong("BEACON_SIGNING_SECRET", self.signing_secret, optional=False)
        if self.signing_secret == self.auth_secret:
            raise ConfigError(
                f"BEACON_SIGNING_SECRET must differ from BEACON_AUTH_SECRET; {GENERATE_HINT}"
            )

    @cached_property
    def effective_public_http_url(self) -> str:
        return (self.public_http_url or f"http://{self.http_addr}").rstrip("/")

    def provider_key(self, provider: str) -> str:
        return str(getattr(self, f"{provider}_api_key"))

    def configured_providers(self) -> frozenset[str]:
        """Providers that have credentials."""
        return frozenset(p for p in PROVIDERS if self.provider_key(p))


def _require_strong(variable: str, value: str, *, optional: bool) -> None:
    if not value and optional:
        return
    if not value:
        raise ConfigError(f"{variable} is not set; {GENERATE_HINT}")
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"{variable} is shorter than {MIN_SECRET_BYTES} bytes; {GENERATE_HINT}")
