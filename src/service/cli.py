"""The `beacon` command: serve, worker, ticker, dev, migrate, token, service-key."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from service import memtrace, tracing
from service.config import DEV_AUTH_SECRET, DEV_WEBHOOK_SECRET_KEY, Settings
from service.domain.errors import DomainError
from service.logs import access_log, configure_logging

log = logging.getLogger("beacon")


def _install_loop(settings: Settings) -> None:
    if settings.uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()


async def serve(settings: Settings, *, embedded_workers: bool = False) -> None:
    """Runs the gRPC server and the HTTP side until SIGTERM/SIGINT, then drains."""
    from service.app import App
    from service.broker import broker_of
    from service.http.server import start_http, start_metrics
    from service.server import start_server

    # Handlers first: a signal during start-up still leads to an orderly stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if embedded_workers:
        from workers.actors import worker_broker

        # One broker for the API and the embedded worker: the in-process one is in memory.
        broker = worker_broker(settings)
    else:
        broker = broker_of(settings)
    app = App.from_settings(settings, broker=broker)
    embedded = None
    grpc_server = http_server = metrics_server = None
    try:
        if embedded_workers:
            from workers.runtime import start_embedded

            embedded = start_embedded(settings, broker=broker)
        grpc_server = await start_server(app)
        http_server = await start_http(app)
        metrics_server = await start_metrics(app)
        metrics = f", metrics on port {metrics_server.port}" if metrics_server else ""
        # Everything built so far lives as long as the process: keep the collector from
        # walking it on every full collection (a pause of every call in flight, ~0.2 s).
        gc.freeze()
        print(
            f"beacon: gRPC on {settings.grpc_addr.rsplit(':', 1)[0]}:{grpc_server.port}, "
            f"HTTP on port {http_server.port}{metrics}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        log.info("shutting down: draining in-flight calls")
    finally:
        if grpc_server is not None:
            await grpc_server.stop()
        if http_server is not None:
            await http_server.stop()
        if metrics_server is not None:
            await metrics_server.stop()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        await app.close()
        access_log.flush()


def _run(settings: Settings, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    _install_loop(settings)
    return asyncio.run(main())


def cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    settings.check_secrets()
    tracing.configure_from_env("serve")
    _run(settings, lambda: serve(settings))
    return 0


def dev_secrets(settings: Settings) -> list[str]:
    """Fills in the secrets `beacon dev` may run without; returns what the banner must say.

    Only `dev` gets the public development auth secret (so that `beacon token` works with
    no configuration) and a random, per-process signing secret (signed URLs of a previous
    run stop working, which a development server can afford).
    """
    settings.check_secrets(dev=True)
    notes = []
    if not settings.auth_secret and not settings.auth_jwks_url:
        settings.auth_secret = DEV_AUTH_SECRET
        notes.append(
            "Auth: the PUBLIC development secret (anyone can mint tokens). `beacon serve`"
            " refuses it: set BEACON_AUTH_SECRET in production."
        )
    if not settings.signing_secret:
        settings.signing_secret = secrets.token_urlsafe(48)
        notes.append(
            "Signed URLs: a random secret for this process only (set BEACON_SIGNING_SECRET"
            " to keep URLs valid across restarts)."
        )
    if not settings.webhook_secret_key:
        settings.webhook_secret_key = DEV_WEBHOOK_SECRET_KEY
        notes.append(
            "Webhooks: the PUBLIC development key encrypts signing secrets, and http:// URLs"
            " are allowed. Set BEACON_WEBHOOK_SECRET_KEY in production."
        )
    settings.webhook_allow_http = True
    return notes


def cmd_dev(settings: Settings, _args: argparse.Namespace) -> int:
    from service.db.migrate import upgrade

    notes = dev_secrets(settings)
    upgrade(settings.database_url)
    banner = DEV_BANNER.format(addr=settings.grpc_addr, http=settings.http_addr)
    print(banner + "".join(f"  {note}\n" for note in notes), file=sys.stderr)
    tracing.configure_from_env("dev")
    _run(settings, lambda: serve(settings, embedded_workers=True))
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    from workers.runtime import run_worker

    settings.check_secrets()
    tracing.configure_from_env("worker")
    run_worker(settings)
    return 0


def cmd_ticker(settings: Settings, _args: argparse.Namespace) -> int:
    from workers.ticker import run_ticker

    settings.check_secrets()
    tracing.configure_from_env("ticker")
    run_ticker(settings)
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from service.db.migrate import upgrade

    upgrade(settings.database_url, args.revision)
    print(f"database at revision {args.revision}", file=sys.stderr)
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from service.auth.tokens import mint_dev_token

    # Without BEACON_AUTH_SECRET this mints with the development secret, which only
    # `beacon dev` accepts.
    if not settings.auth_secret:
        settings.auth_secret = DEV_AUTH_SECRET
    print(
        mint_dev_token(
            settings,
            email=args.email,
            name=args.name,
            ttl_seconds=args.ttl,
            email_verified=not args.unverified,
        )
    )
    return 0


def cmd_service_key(settings: Settings, args: argparse.Namespace) -> int:
    from service.application.service_keys import ServiceKeyService
    from service.db.database import Database

    async def main() -> int:
        db = Database(settings.database_url)
        keys = ServiceKeyService(db=db, settings=settings)
        try:
            if args.action == "create":
                secret, info = await keys.create(
                    args.name,
                    args.scope or [],
                    organization_ids=args.organization or [],
                    all_organizations=args.all_organizations,
                )
                print(secret)
                print(
                    f"created {info.id} scopes={','.join(info.scopes)}"
                    f" organizations={info.describe_organizations()}",
                    file=sys.stderr,
                )
            elif args.action == "list":
                for key in await keys.list_keys():
                    state = f"revoked {key.revoke_time:%Y-%m-%d}" if key.revoke_time else "active"
                    print(
                        f"{key.id}\t{key.name}\t{','.join(key.scopes)}"
                        f"\t{key.describe_organizations()}\t{state}"
                    )
            else:
                await keys.revoke(args.key_id)
                print(f"revoked {args.key_id}", file=sys.stderr)
        finally:
            await db.dispose()
        return 0

    result: int = asyncio.run(main())
    return result


DEV_BANNER = """
Beacon dev: everything in one process on the embedded defaults (SQLite under ./var/,
in-process broker). gRPC on {addr}, HTTP on {http}.

  Mint a token:   .venv/bin/beacon token --email you@example.com
  Call it:        TOKEN=$(.venv/bin/beacon token --email you@example.com)
                  .venv/bin/buf curl --protocol grpc --http2-prior-knowledge \\
                    -H "authorization: Bearer $TOKEN" -d '{{"name": "Acme", "domain": "acme.com"}}' \\
                    http://{addr}/beacon.v1.WorkspaceService/CreateWorkspace
  grpcurl:        grpcurl -plaintext -H "authorization: Bearer $TOKEN" \\
                    -d '{{"name": "Acme"}}' {addr} beacon.v1.WorkspaceService/CreateWorkspace
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beacon", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC server and HTTP side").set_defaults(fn=cmd_serve)
    sub.add_parser("worker", help="run Dramatiq workers").set_defaults(fn=cmd_worker)
    sub.add_parser("ticker", help="turn cron schedules into runs").set_defaults(fn=cmd_ticker)
    sub.add_parser("dev", help="everything in one process, embedded defaults").set_defaults(
        fn=cmd_dev
    )
    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(fn=cmd_migrate)
    token = sub.add_parser("token", help="mint a development bearer token")
    token.add_argument("--email", required=True)
    token.add_argument("--name", default="")
    token.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds")
    token.add_argument(
        "--unverified",
        action="store_true",
        help="mark the email unverified (email_verified: false): such a user cannot see or "
        "accept invitations; by default development tokens carry the email verified",
    )
    token.set_defaults(fn=cmd_token)
    keys = sub.add_parser("service-key", help="manage service keys")
    key_sub = keys.add_subparsers(dest="action", required=True)
    create = key_sub.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", help="act_as, workos (repeatable)")
    bound = create.add_mutually_exclusive_group(required=True)
    bound.add_argument(
        "--organization",
        action="append",
        metavar="ORG_ID",
        help="an organization the key may touch (repeatable)",
    )
    bound.add_argument(
        "--all-organizations",
        action="store_true",
        help="the key may touch every organization (platform-internal keys only)",
    )
    key_sub.add_parser("list")
    revoke = key_sub.add_parser("revoke")
    revoke.add_argument("key_id")
    keys.set_defaults(fn=cmd_service_key)
    return p


def configure_logging_for(command: str, settings: Settings) -> None:
    """`beacon dev` is read by a person: readable lines and quiet dependencies, unless
    BEACON_LOG_JSON is set; every other command writes JSON lines unless it is false."""
    dev = command == "dev"
    json_lines = settings.log_json if "log_json" in settings.model_fields_set else not dev
    configure_logging(settings.log_level, json_lines, quiet_dependencies=dev)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    configure_logging_for(args.command, settings)
    if args.command in {"serve", "worker", "ticker", "dev"}:
        memtrace.limit_arenas(settings)
        memtrace.install(settings)
    try:
        code: int = args.fn(settings, args)
    except (ValueError, DomainError) as exc:  # bad input on the command line or environment
        print(f"beacon: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
