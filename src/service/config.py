"""Beacon's settings: one object, read from `BEACON_*` environment variables at start-up."""

from __future__ import annotations

import hashlib
import hmac
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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
# The webhook secret key only `beacon dev` may use: public, so the other commands refuse it.
DEV_WEBHOOK_SECRET_KEY = "beacon-dev-webhook-key-change-me-in-production"
GENERATE_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"


class ConfigError(ValueError):
    """The environment does not allow this process to start; the message says how to fix it."""


class ProviderSettings(BaseModel):
    """One AI provider's settings, read from `BEACON_<PROVIDER>_<FIELD>` (for OpenAI:
    BEACON_OPENAI_API_KEY, _BASE_URL, _MODEL, _RPM, _TPM and BEACON_OPENAI_API). An empty
    variable (a template left blank) is the default, never an empty URL or an unlimited budget.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str = Field(default="", description="API key; a provider without one cannot run.")
    base_url: str = Field(description="API root (default: the registry's, service.providers).")
    model: str = Field(description="Model asked (default: the registry's).")
    # Budgets per provider API key, shared by every worker (workers.budgets): requests and
    # tokens per minute. Requests default to a conservative DEFAULT_PROVIDER_RPM (raise it to
    # your provider tier), tokens to no budget; 0 is unlimited.
    rpm: NonNegativeInt = Field(
        default=DEFAULT_PROVIDER_RPM, description="Requests a minute, fleet-wide; 0: unlimited."
    )
    tpm: NonNegativeInt = Field(default=0, description="Tokens a minute, fleet-wide; 0: unlimited.")
    api: str = Field(
        default="", description='OpenAI only: "responses" (default) or "chat" (Chat Completions).'
    )


# What a provider variable left empty falls back to: every field but the key (empty anyway).
_DEFAULTED_WHEN_EMPTY = ("base_url", "model", "rpm", "tpm", "api")


def provider_defaults(name: str) -> dict[str, Any]:
    """Provider `name`'s settings when nothing is set (the registry's URL and model)."""
    spec = providers.spec(name)
    return {
        "base_url": spec.base_url,
        "model": spec.model,
        "api": "responses" if name == "openai" else "",
    }


def provider_table(given: Any) -> dict[str, Any]:
    """Every provider's settings: what `given` (provider name -> settings or field dict) sets,
    the defaults for the rest; ValueError for a provider the registry does not know."""
    if not isinstance(given, dict):
        return given  # type: ignore[no-any-return]  # pydantic says what is wrong
    unknown = sorted(set(given) - set(PROVIDERS))
    if unknown:
        raise ValueError(f"unknown providers {unknown}; expected some of {PROVIDERS}")
    table: dict[str, Any] = {}
    for name in PROVIDERS:
        values = dict(_as_dict(given.get(name, {})))
        for field in _DEFAULTED_WHEN_EMPTY:
            value = values.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                values.pop(field, None)
        table[name] = {**provider_defaults(name), **values}
    return table


def _as_dict(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


class ProviderVariables(PydanticBaseSettingsSource):
    """The provider settings from `BEACON_<PROVIDER>_<FIELD>` variables (case-insensitive, like
    the others): the names operators have always set, read into `Settings.providers`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read in __call__

    def __call__(self) -> dict[str, Any]:
        environ = {key.lower(): value for key, value in os.environ.items()}
        table: dict[str, dict[str, str]] = {}
        for name in PROVIDERS:
            for field in ProviderSettings.model_fields:
                value = environ.get(f"beacon_{name}_{field}")
                if value is not None:
                    table.setdefault(name, {})[field] = value
        return {"providers": table} if table else {}


class Settings(BaseSettings):
    """Every knob of every Beacon process. Field `x` is read from `BEACON_X`; the providers'
    settings from `BEACON_<PROVIDER>_<FIELD>` (`ProviderSettings`)."""

    model_config = SettingsConfigDict(env_prefix="BEACON_", extra="ignore")

    # Storage and messaging.
    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/beacon.db",
        description="The database: `postgresql+asyncpg://user@host/db` in production.",
    )
    redis_url: str = Field(
        default="",
        description="Redis for rate limits and the Dramatiq broker; empty: in-memory rate"
        " limits and the in-process broker.",
    )
    broker_url: str = Field(
        default="",
        description="The Dramatiq broker: `redis://` or `amqp://`/`amqps://` (RabbitMQ);"
        ' empty: `BEACON_REDIS_URL`. Options in operations.md, "Choosing a broker"; a'
        " malformed URL stops every process at start-up naming the variable.",
    )
    data_dir: Path = Field(default=Path("./var"), description="Local file storage (icons).")

    # Network.
    grpc_addr: str = Field(default="127.0.0.1:50051", description="gRPC listen address.")
    http_addr: str = Field(default="127.0.0.1:8080", description="HTTP side listen address.")
    public_http_url: str = Field(
        default="",
        description="Base of signed upload/download URLs; empty: `http://<BEACON_HTTP_ADDR>`.",
    )
    max_message_bytes: int = Field(
        default=4 * 1024 * 1024,
        description="gRPC transport message size limit; each RPC's own request limit is lower"
        " (64 KiB, 2 MiB for StorePrompts/AddPrompts; api.md).",
    )
    max_concurrent_rpcs: PositiveInt = Field(
        default=1000,
        description="Unary Beacon calls in flight per server process; beyond it a call is"
        " RESOURCE_EXHAUSTED `SERVER_BUSY`. Streams never count against it: they have their"
        " own budget.",
    )
    max_concurrent_streams: PositiveInt = Field(
        default=1000,
        description="Streams (WatchRun) open per server process, a budget of their own; one"
        " more is RESOURCE_EXHAUSTED `TOO_MANY_STREAMS`.",
    )
    max_streams_per_user: PositiveInt = Field(
        default=10,
        description="Open streams of one caller per server process; one more is"
        " RESOURCE_EXHAUSTED `TOO_MANY_STREAMS`.",
    )
    max_streams_per_workspace: PositiveInt = Field(
        default=20,
        description="Open streams on one workspace per server process; one more is"
        " RESOURCE_EXHAUSTED `TOO_MANY_STREAMS`.",
    )
    max_stream_seconds: PositiveFloat = Field(
        default=1800.0,
        description="A stream's longest life; then it ends UNAVAILABLE `STREAM_LIFETIME_ENDED`"
        " and the client reopens it.",
    )
    shutdown_grace_seconds: float = Field(default=10.0, description="Drain time on SIGTERM.")
    uvloop: bool = Field(default=True, description="Runs the event loop on uvloop.")
    grpc_handshake_timeout_seconds: float = Field(
        default=10.0,
        description="A gRPC connection that has not finished its HTTP/2 handshake by then is"
        " closed.",
    )
    grpc_max_connection_idle_seconds: float = Field(
        default=30.0,
        description="The server closes (GOAWAY) a gRPC connection without calls for this long;"
        " clients reconnect on their own.",
    )
    grpc_max_connection_age_seconds: float = Field(
        default=1800.0,
        description="The server closes (GOAWAY) a gRPC connection older than this once its"
        " calls end or the grace passes; clients reconnect on their own.",
    )
    grpc_max_connection_age_grace_seconds: float = Field(
        default=300.0,
        description="How long calls of a connection past its age may take to end.",
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        description="HTTP side: a request's headers must arrive within this time of the"
        " connection or of the previous response (408).",
    )
    http_body_timeout_seconds: float = Field(
        default=30.0, description="HTTP side: an upload's body must arrive within this time (408)."
    )
    http_max_connections_per_peer: NonNegativeInt = Field(
        default=32,
        description="HTTP side: open connections per peer address; beyond, 503 and closed"
        " (0: no cap; behind a proxy set it to 0).",
    )
    http_max_connections: NonNegativeInt = Field(
        default=512,
        description="HTTP side: open connections in all; beyond, 503 and closed (0: no cap,"
        " only behind a proxy that caps).",
    )
    http_peer_rate_limit_per_minute: NonNegativeInt = Field(
        default=600,
        description="HTTP side: requests a minute per peer address (429 with Retry-After;"
        " 0 disables it: only behind a proxy that limits per client itself).",
    )

    # Authentication.
    auth_secret: str = Field(
        default="",
        description="HS256 token secret, >= 32 bytes; required by serve/worker/ticker unless a"
        " JWKS URL is set (then HS256 tokens are refused unless it is set too); the public"
        " development value is refused outside `beacon dev`.",
    )
    auth_dev_issuer: str = Field(
        default="beacon-dev", description="`iss` of the HS256 tokens `beacon token` mints."
    )
    auth_jwks_url: str = Field(
        default="",
        description="OIDC JWKS URL for RS256/ES256 tokens (WorkOS, Auth0, Keycloak...).",
    )
    auth_issuer: str = Field(
        default="", description="`iss` of JWKS tokens; required with a JWKS URL."
    )
    auth_audience: str = Field(
        default="", description="`aud` of JWKS tokens; required with a JWKS URL."
    )
    auth_jwks_cache_seconds: int = Field(
        default=300,
        description="How long fetched JWKS keys are kept (a rotated-out key is trusted this"
        " long at most).",
    )
    auth_leeway_seconds: int = Field(default=30, description="Clock skew allowed on `exp` / `nbf`.")
    signing_secret: str = Field(
        default="",
        description="Signs upload/download URLs and (through a derived key) page tokens;"
        " >= 32 bytes, different from the auth secret; required outside `beacon dev`.",
    )
    service_key_cache_seconds: float = Field(
        default=5.0,
        description="Longest time a revoked key, a deleted user, or a user who left the key's"
        " organizations still works.",
    )

    # Rate limits.
    rate_limit_scale: float = Field(
        default=1.0,
        description="Multiplies every rule's request count (load tests only).",
    )
    rate_limit_strategy: str = Field(
        default="moving-window", description="Or `fixed-window`, `sliding-window-counter`."
    )
    rate_limit_key_prefix: str = Field(
        default="beacon", description="Redis key prefix of the rate-limit counters."
    )
    peer_rate_limit_per_minute: int = Field(
        default=6000,
        description="Calls a minute per peer address over every RPC, counted before"
        " authentication (0 disables it: only behind an L7 proxy that limits per client"
        " itself; raise it behind one).",
    )

    # Tenancy.
    workspace_retention_days: int = Field(
        default=30,
        description="How long a deleted workspace can be restored (UndeleteWorkspace) before"
        " the ticker purges it.",
    )
    join_code_ttl_hours: int = Field(
        default=24 * 7,
        description="Lifetime of a workspace's join code (RotateJoinCode may set another,"
        " 1 hour to 90 days).",
    )
    invitation_ttl_hours: int = Field(
        default=24 * 7,
        description="Lifetime of a pending invitation (inviting again renews it).",
    )
    upload_url_ttl_seconds: int = Field(default=600, description="Lifetime of a signed upload URL.")
    icon_url_ttl_seconds: int = Field(default=3600, description="Lifetime of a signed icon URL.")
    icon_max_bytes: int = Field(
        default=1024 * 1024,
        description="Largest upload, and largest stored icon (413 / 415 `IMAGE_TOO_LARGE`).",
    )
    upload_attempts_per_url: int = Field(
        default=10,
        description="POSTs one upload URL accepts over its life, refused ones included (then 429).",
    )
    upload_decode_timeout_seconds: float = Field(
        default=10.0,
        description="Each upload is decoded in a process of its own, killed past this time"
        " (415 `IMAGE_TOO_COMPLEX`).",
    )
    upload_decode_concurrency: int = Field(
        default=2,
        description="Uploads decoded at once per server process (the others wait up to the"
        " decode timeout, then get 503).",
    )
    max_workspaces_per_organization: PositiveInt = Field(
        default=100,
        description="Live workspaces of an organization; creating one more is"
        " FAILED_PRECONDITION `WORKSPACE_LIMIT_REACHED`.",
    )
    max_organizations_per_user: PositiveInt = Field(
        default=10,
        description="Organizations a user owns; creating one more is FAILED_PRECONDITION"
        " `ORGANIZATION_LIMIT_REACHED`.",
    )

    # Collection.
    schedule_min_interval_minutes: int = Field(
        default=15, description="Schedules may not fire more often."
    )
    watch_access_check_seconds: float = Field(
        default=3.0,
        description="How often an open WatchRun stream re-checks its caller's credentials (an"
        " expired token, a revoked key end it UNAUTHENTICATED) and that they may still see"
        " the run.",
    )
    max_open_runs_per_workspace: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Open (queued or running) runs a workspace may have: StartRun beyond it is"
        " FAILED_PRECONDITION `RUN_ALREADY_OPEN` and the ticker skips the slot.",
    )
    ticker_interval_seconds: float = Field(
        default=5.0,
        description="How often `beacon ticker` looks for due schedules and stalled runs.",
    )
    ticker_batch_size: int = Field(
        default=1000,
        description="Schedules one tick claims per batch, and runs one outbox sweep or stall"
        " check sends at most.",
    )
    worker_concurrency: int = Field(
        default=100, description="Provider calls in flight per worker process."
    )
    provider_concurrency: int = Field(
        default=50, description="Provider calls in flight per provider, per worker process."
    )
    probe_max_attempts: int = Field(
        default=4,
        description="Attempts of one probe at a retryable provider failure before it is stored"
        " failed.",
    )
    probe_backoff_seconds: float = Field(
        default=2.0,
        description="Wait before a probe's second attempt, doubled at each next one, with"
        " jitter (a provider's Retry-After wins).",
    )
    probe_backoff_max_seconds: float = Field(
        default=120.0, description="Longest wait between two attempts of a probe."
    )
    run_stall_seconds: float = Field(
        default=600.0,
        description="An open run on which nothing happened for this long has its messages sent"
        " again from the database (lost in a broker restart, say); 0 never does. Keep it well"
        " above a probe's longest attempt.",
    )
    analysis_time_limit_seconds: PositiveFloat = Field(
        default=5.0,
        description="CPU seconds one answer's analysis may take before the answer is stored"
        ' unanalysed (FAILED, with the reason; security.md, "Answers a tenant chooses").'
        " Analysis is linear: its longest answer costs a fraction of this.",
    )

    # Providers: one `ProviderSettings` each, keyed by the registry's names (service.providers).
    # Read from BEACON_<PROVIDER>_<FIELD> (BEACON_OPENAI_API_KEY, BEACON_ANTHROPIC_RPM, ...):
    # see `ProviderSettings` and `ProviderVariables`.
    providers: dict[str, ProviderSettings] = Field(
        default_factory=lambda: provider_table({}),
        description="Per provider: API key, base URL, model, RPM and TPM budgets, API variant"
        " (BEACON_<PROVIDER>_API_KEY, _BASE_URL, _MODEL, _RPM, _TPM; BEACON_OPENAI_API).",
    )
    provider_timeout_seconds: float = Field(
        default=60.0, description="A provider call's longest time, per attempt."
    )

    # Webhooks (docs/webhooks.md).
    webhook_secret_key: str = Field(
        default="",
        description=(
            "The key that encrypts webhook endpoints' signing secrets at rest (>= 32 bytes, "
            "distinct from the other secrets); without it endpoints cannot be created "
            "(FAILED_PRECONDITION WEBHOOKS_NOT_CONFIGURED) and none is delivered. `beacon dev` "
            "uses a public development key that serve, worker and ticker refuse."
        ),
    )
    webhook_allow_http: bool = Field(
        default=False,
        description=(
            "Endpoint URLs may be http:// (`beacon dev` and tests; otherwise https:// only)."
        ),
    )
    webhook_allow_private: bool = Field(
        default=False,
        description=(
            "Deliveries may reach loopback, private, link-local and other non-public addresses "
            "(tests and on-premise receivers only: it opens the fleet's network to the API's "
            "users)."
        ),
    )
    webhook_timeout_seconds: PositiveFloat = Field(
        default=15.0,
        description=("One delivery attempt's time limit."),
    )
    webhook_max_response_bytes: PositiveInt = Field(
        default=4096,
        description=("The most of a receiver's response body that is read."),
    )
    webhook_retry_hours: PositiveFloat = Field(
        default=72.0,
        description=(
            "Failed attempts are retried until this long after the event; then the delivery is "
            "FAILED."
        ),
    )
    webhook_backoff_seconds: PositiveFloat = Field(
        default=5.0,
        description=(
            "First delay before a failed delivery is retried, doubled at each attempt up to the "
            "cap, with jitter."
        ),
    )
    webhook_backoff_max_seconds: PositiveFloat = Field(
        default=6 * 3600.0,
        description=("Longest delay between two attempts of a delivery."),
    )
    webhook_disable_after_hours: PositiveFloat = Field(
        default=96.0,
        description=(
            "An endpoint that has failed every attempt for this long is disabled (an audit event "
            "and an `endpoint.disabled` event to the workspace's other endpoints say so)."
        ),
    )
    webhook_rotation_hours: NonNegativeInt = Field(
        default=24,
        description=(
            "After a rotation the previous secret signs beside the new one for this long."
        ),
    )
    webhook_batch_size: PositiveInt = Field(
        default=500,
        description=("Deliveries the ticker hands to the workers per tick at most."),
    )

    # Observability.
    log_level: str = Field(default="INFO", description="Level of Beacon's own loggers.")
    log_json: bool = Field(
        default=True,
        description="One JSON object per line on stderr; a request line per call (method,"
        " principal, service key, code, duration, request id, correlation id; never tokens or"
        " bodies). `beacon dev` writes readable lines instead unless this is set explicitly.",
    )
    metrics_enabled: bool = Field(
        default=True, description="Serves Prometheus `/metrics` on the metrics addresses."
    )
    metrics_addr: str = Field(
        default="127.0.0.1:9464",
        description="`host:port` of `beacon serve`'s Prometheus `/metrics`, on its own address,"
        " never on the public HTTP side that serves uploads (empty: none).",
    )
    worker_metrics_addr: str = Field(
        default="", description="`host:port` where `beacon worker` serves `/metrics` (empty: none)."
    )
    ticker_metrics_addr: str = Field(
        default="", description="`host:port` where `beacon ticker` serves `/metrics` (empty: none)."
    )
    tracemalloc_frames: NonNegativeInt = Field(
        default=0,
        description="Allocation tracing for soak runs (service.memtrace): > 0, SIGUSR2 starts"
        " tracemalloc keeping that many frames per allocation, then writes snapshots to"
        " `BEACON_TRACEMALLOC_DIR`; for `make soak`, never in production (0: off).",
    )
    tracemalloc_dir: Path | None = Field(
        default=None, description="Where snapshots go; empty: `<BEACON_DATA_DIR>/tracemalloc`."
    )
    malloc_arena_max: NonNegativeInt = Field(
        default=2,
        description="glibc malloc arenas of serve, worker and ticker (0: glibc's default, 8"
        " per core). Every thread that allocates may otherwise get an arena of its own (grpc's,"
        " the executors'), and memory freed in one stays reserved there: RSS grows in steps"
        " with bursts of threads that a few shared arenas absorb.",
    )
    prices_file: str = Field(
        default="",
        description="A JSON price table overriding the shipped defaults (docs/money.md):"
        ' `{"<provider>": {"<model>": {"input_per_mtok": "1.25", "output_per_mtok": "10",'
        ' "per_search": "0.01"}}}`, dollars as decimal strings.',
    )
    prices: str = Field(
        default="",
        description="The same JSON as `BEACON_PRICES_FILE`, as a value; applied after the file.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The provider variables come after the arguments, before the other variables.
        return (
            init_settings,
            ProviderVariables(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="before")
    @classmethod
    def _provider_fields(cls, data: Any) -> Any:
        """Takes the flat `<provider>_<field>` names (the variables' names, which arguments
        may use too: `Settings(openai_api_key=...)`) into `providers`."""
        if not isinstance(data, dict):
            return data
        flat = {
            (name, field): data.pop(f"{name}_{field}")
            for name in PROVIDERS
            for field in ProviderSettings.model_fields
            if f"{name}_{field}" in data
        }
        if flat:
            table = {
                name: dict(_as_dict(value)) for name, value in data.get("providers", {}).items()
            }
            for (name, field), value in flat.items():
                table.setdefault(name, {})[field] = value
            data["providers"] = table
        return data

    @field_validator("providers", mode="before")
    @classmethod
    def _every_provider(cls, value: Any) -> Any:
        return provider_table(value)

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
        BEACON_WEBHOOK_SECRET_KEY is optional, but when set it must be >= 32 bytes, differ
        from both and not be the development key.
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
        self._check_webhook_secret_key()

    def _check_webhook_secret_key(self) -> None:
        key = self.webhook_secret_key
        if key == DEV_WEBHOOK_SECRET_KEY:
            raise ConfigError(
                "BEACON_WEBHOOK_SECRET_KEY is the public development key (only `beacon dev` may"
                f" use it); {GENERATE_HINT}"
            )
        _require_strong("BEACON_WEBHOOK_SECRET_KEY", key, optional=True)
        if key and key in (self.auth_secret, self.signing_secret):
            raise ConfigError(
                "BEACON_WEBHOOK_SECRET_KEY must differ from BEACON_AUTH_SECRET and"
                f" BEACON_SIGNING_SECRET; {GENERATE_HINT}"
            )

    @cached_property
    def effective_public_http_url(self) -> str:
        return (self.public_http_url or f"http://{self.http_addr}").rstrip("/")

    def provider(self, name: str) -> ProviderSettings:
        """Provider `name`'s settings (KeyError for an unknown name)."""
        return self.providers[name]

    def configured_providers(self) -> frozenset[str]:
        """Providers that have credentials."""
        return frozenset(p for p in PROVIDERS if self.providers[p].api_key)


def _require_strong(variable: str, value: str, *, optional: bool) -> None:
    if not value and optional:
        return
    if not value:
        raise ConfigError(f"{variable} is not set; {GENERATE_HINT}")
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"{variable} is shorter than {MIN_SECRET_BYTES} bytes; {GENERATE_HINT}")
