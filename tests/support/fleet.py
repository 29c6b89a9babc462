"""A Beacon fleet of real processes for the fault tests, and what every fault must leave intact.

`Fleet` is `beacon serve`, two `beacon worker` and two `beacon ticker` subprocesses (how many
serve and worker processes is settable) on a database and a private `redis-server` of the
test's own, asking the in-process fake providers. `collect`
starts a collection through `serve` (workspaces, prompts, schedules, manual runs) and a ticker
slot per workspace; `assert_collected` checks the invariants: every run ended, exactly once
(a trigger records each end), with exactly one terminal response row per (run, prompt,
provider), and the ticker made exactly one run for the slot.

`PostgresCluster` is a private PostgreSQL (`initdb` as the postgres user) that a test may stop
and start; the machine's shared server is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import (
    prompt_service_pb2_grpc,
    run_service_pb2_grpc,
    schedule_service_pb2_grpc,
    workspace_service_pb2_grpc,
)
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.auth.tokens import mint_dev_token
from service.clock import utcnow
from service.config import Settings
from service.db.database import Database
from service.db.migrate import upgrade_async
from service.db.models import Probe, Run, Schedule
from tests.support import processes, unique
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.pipeline import derive_settings, provider_settings
from tests.support.processes import (
    Beacon,
    BeaconProcess,
    RedisProcess,
    beacon_env,
    free_port,
)

T = TypeVar("T")

PROVIDERS = (ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC)
PROVIDER_NAMES = ("openai", "anthropic")
CRON = "0 6 * * *"
TERMINAL = {"succeeded", "failed", "skipped"}
# Every run of a collection: SetSchedule's immediate one, StartRun's, and the ticker slot's.
TRIGGERS = ["manual", "schedule", "schedule_set"]

RUN_ENDS = (
    "CREATE TABLE fault_run_ends (run_id text NOT NULL, status text NOT NULL)",
    "CREATE FUNCTION fault_note_run_end() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO fault_run_ends VALUES (NEW.id, NEW.status); RETURN NEW; END $$",
    "CREATE TRIGGER fault_run_ends AFTER UPDATE OF end_time ON runs FOR EACH ROW "
    "WHEN (NEW.end_time IS NOT NULL AND OLD.end_time IS DISTINCT FROM NEW.end_time) "
    "EXECUTE FUNCTION fault_note_run_end()",
)


async def admin_execute(admin_url: str, *statements: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def fault_database(admin_url: str) -> AsyncIterator[str]:
    """A migrated database of its own on the server of `admin_url` (dropped afterwards), with
    the trigger that records every run end."""
    name = f"beacon_faults_{uuid.uuid4().hex[:10]}"
    await admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await upgrade_async(url)
        await admin_execute(url, *RUN_ENDS)
        yield url
    finally:
        await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("a private PostgreSQL needs root, runuser and /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


@dataclass
class PostgresCluster:
    """A private PostgreSQL cluster, run as the postgres user, that tests stop and start."""

    bin: Path
    data: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    async def create(cls) -> PostgresCluster:
        binaries = _postgres_bin()
        # Under /tmp itself: pytest's directories are private to root.
        root = Path(tempfile.mkdtemp(prefix="beacon-faults-pg-"))
        shutil.chown(root, "postgres", "postgres")
        cluster = cls(binaries, root / "data", free_port())
        await cluster._as_postgres(
            "initdb", "-D", str(cluster.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        await cluster.start()
        return cluster

    async def start(self) -> None:
        options = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data.parent / "postgres.log")
        await self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start"
        )

    async def stop(self) -> None:
        """A fast shutdown: every client connection is cut, as in a crash or failover."""
        await self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    async def destroy(self) -> None:
        with contextlib.suppress(AssertionError):
            await self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.data.parent, ignore_errors=True)

    async def _as_postgres(self, program: str, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            "runuser",
            "-u",
            "postgres",
            "--",
            str(self.bin / program),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise AssertionError(f"{program} failed ({process.returncode}): {output.decode()}")


def fleet_settings(
    base: Settings, database_url: str, redis: RedisProcess, fake: FakeProviderServer, **over: Any
) -> Settings:
    """Settings of every process of a fleet: small, fast, on the test's database and Redis."""
    namespace = f"beacon-faults-{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis.url,
        "broker_url": f"{redis.url}?namespace={namespace}",
        "rate_limit_scale": 1000.0,
        "ticker_interval_seconds": 0.3,
        "worker_concurrency": 4,
        "provider_concurrency": 4,
        "probe_max_attempts": 3,
        "probe_backoff_seconds": 0.2,
        "probe_backoff_max_seconds": 1.0,
        "provider_timeout_seconds": 5.0,
        "shutdown_grace_seconds": 2.0,
        "run_stall_seconds": 0.0,
        # A collection opens a run of each trigger at once in every workspace.
        "max_open_runs_per_workspace": len(TRIGGERS),
        "log_level": "INFO",
        **provider_settings(fake),
        **over,
    }
    return derive_settings(base, **values)


@dataclass
class Collection:
    """What `Fleet.collect` started: workspaces, their prompts, and the ticker slot."""

    workspaces: list[str]
    prompts: list[str]
    slot: datetime
    # Call metadata of each workspace's owner, in the order of `workspaces`.
    owners: list[tuple[tuple[str, str], ...]] = field(default_factory=list)

    @property
    def probes(self) -> int:
        return len(self.workspaces) * len(TRIGGERS) * len(self.prompts) * len(PROVIDERS)


@dataclass
class Fleet:
    """`beacon serve`, two workers and two tickers; see the module docstring."""

    settings: Settings
    tmp: Path
    # How many of each process `start` starts (`make soak` runs 2 serve and 1 worker).
    serve_count: int = 1
    worker_count: int = 2
    serve: BeaconProcess | None = None
    # The `serve` processes after the first (same database, Redis and data directory).
    more_serves: list[BeaconProcess] = field(default_factory=list)
    workers: list[Beacon] = field(default_factory=list)
    tickers: list[Beacon] = field(default_factory=list)
    db: Database | None = None
    channel: grpc.aio.Channel | None = None

    @property
    def database(self) -> Database:
        assert self.db is not None
        return self.db

    def env(self) -> dict[str, str]:
        return beacon_env(self.settings)

    async def start(self) -> None:
        self.db = Database(self.settings.database_url)
        serve_env = {
            k: v
            for k, v in self.env().items()
            if k not in ("BEACON_GRPC_ADDR", "BEACON_HTTP_ADDR", "BEACON_DATA_DIR")
        }
        counts = {"worker": self.worker_count, "ticker": 2}
        # All at once: each spends its first seconds importing.
        outcomes = await asyncio.gather(
            *(BeaconProcess.start(self.tmp, serve_env) for _ in range(self.serve_count)),
            *(
                self.start_process(command, n)
                for command, count in counts.items()
                for n in range(1, count + 1)
            ),
            return_exceptions=True,
        )
        serves, others = outcomes[: self.serve_count], outcomes[self.serve_count :]
        # Whatever did start is stopped by `close`, even when another process failed to.
        started = [p for p in serves if isinstance(p, BeaconProcess)]
        if started:
            self.serve, *self.more_serves = started
        self.workers = [p for p in others[: self.worker_count] if isinstance(p, Beacon)]
        self.tickers = [p for p in others[self.worker_count :] if isinstance(p, Beacon)]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        assert self.serve is not None
        self.channel = grpc.aio.insecure_channel(self.serve.target)

    async def start_process(self, command: str, index: int) -> Beacon:
        """Starts `beacon worker|ticker` and waits until it says so (its signal handlers are
        installed by then)."""
        process = await Beacon.start(command, self.env(), self.tmp / f"{command}-{index}.log")

        async def started() -> bool:
            if process.process.returncode is not None:
                raise AssertionError(f"{command} exited early:\n{process.log.read_text()}")
            return f"{command} started" in process.log.read_text(errors="replace")

        try:
            await processes.eventually(started, f"{command} {index} to start", 60)
        except BaseException:
            await process.kill()
            raise
        return process

    async def close(self) -> None:
        try:
            for process in [*self.workers, *self.tickers]:
                await process.kill()
            for serve in self.serves:
                await serve.stop()
        finally:
            if self.channel is not None:
                await self.channel.close()
            if self.db is not None:
                await self.db.dispose()

    async def stop_all(self) -> None:
        """SIGTERM to every process: each must exit cleanly (exit code 0)."""
        for process in [*self.workers, *self.tickers]:
            await process.stop()
        assert self.serve is not None
        for serve in self.serves:
            assert await serve.stop() == 0, serve.log()

    def logs(self) -> str:
        parts = [
            f"--- {p.log.name}\n{p.log.read_text(errors='replace')[-4000:]}"
            for p in [*self.workers, *self.tickers]
        ]
        parts.extend(f"--- serve {s.port}\n{s.log()[-4000:]}" for s in self.serves)
        return "\n".join(parts)

    @property
    def serves(self) -> list[BeaconProcess]:
        return [*([self.serve] if self.serve is not None else []), *self.more_serves]

    def metadata(self, email: str) -> tuple[tuple[str, str], ...]:
        token = mint_dev_token(self.settings, email=email)
        return (("authorization", f"Bearer {token}"),)

    def stubs(self) -> tuple[Any, Any, Any, Any]:
        assert self.channel is not None
        return (
            workspace_service_pb2_grpc.WorkspaceServiceStub(self.channel),
            prompt_service_pb2_grpc.PromptServiceStub(self.channel),
            schedule_service_pb2_grpc.ScheduleServiceStub(self.channel),
            run_service_pb2_grpc.RunServiceStub(self.channel),
        )

    async def collect(self, workspaces: int = 4, prompts: int = 3) -> Collection:
        """Through `serve`: workspaces with prompts and two providers, a schedule (whose
        immediate run starts at once) and a manual run each; then the schedule's next slot is
        made due, for the tickers to fire."""
        spaces, texts, schedules, runs = self.stubs()
        asked = [f"which crm suits team {n}" for n in range(prompts)]
        ids: list[str] = []
        owners = []
        for n in range(workspaces):
            md = self.metadata(f"faults-{uuid.uuid4().hex[:8]}@example.com")
            created = await spaces.CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(
                    name=f"Brand {n}", domain=f"brand{n}.com", organization_name=unique("Org ")
                ),
                metadata=md,
            )
            ws = created.workspace.id
            await spaces.SetEnabledProviders(
                ws_pb.SetEnabledProvidersRequest(workspace_id=ws, providers=PROVIDERS), metadata=md
            )
            await texts.StorePrompts(
                prompt_pb.StorePromptsRequest(workspace_id=ws, prompts=asked), metadata=md
            )
            reply = await schedules.SetSchedule(
                schedule_pb.SetScheduleRequest(workspace_id=ws, cron=CRON), metadata=md
            )
            assert reply.immediate_run.status == schedule_pb.IMMEDIATE_RUN_STATUS_QUEUED
            started = await runs.StartRun(run_pb.StartRunRequest(workspace_id=ws), metadata=md)
            assert started.status == run_pb.START_RUN_STATUS_QUEUED
            ids.append(ws)
            owners.append(md)
        now = utcnow()
        slot = now.replace(hour=6, minute=0, second=0, microsecond=0)  # the latest 06:00 UTC
        if slot > now:
            slot -= timedelta(days=1)
        async with self.database.transaction() as session:
            await session.execute(
                update(Schedule).where(Schedule.workspace_id.in_(ids)).values(next_run_time=slot)
            )
        return Collection(ids, asked, slot, owners)

    async def wait_until_ended(self, collection: Collection, within: float) -> None:
        """Until every run of the collection (the slot's included) has ended."""

        async def ended() -> bool:
            try:
                rows = await self._runs(collection)
            except DBAPIError:  # this process's connections, cut by a database restart
                return False
            return len(rows) == len(collection.workspaces) * len(TRIGGERS) and all(
                end is not None for *_, end in rows
            )

        try:
            await processes.eventually(ended, "every run to end", within)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{await self.describe(collection)}\n{self.logs()}"
            ) from None

    async def describe(self, collection: Collection) -> str:
        rows = await self._runs(collection)
        return "runs: " + ", ".join(f"{r[0]}:{r[2]}:{r[3]}" for r in rows)

    async def _runs(self, collection: Collection) -> list[Any]:
        return await self.runs_of(collection.workspaces)

    async def runs_of(self, workspaces: list[str]) -> list[Any]:
        """Every run of these workspaces: id, workspace_id, trigger, status, scheduled_time,
        end_time."""
        async with self.database.transaction(write=False) as session:
            return list(
                (
                    await session.execute(
                        select(
                            Run.id,
                            Run.workspace_id,
                            Run.trigger,
                            Run.status,
                            Run.scheduled_time,
                            Run.end_time,
                        ).where(Run.workspace_id.in_(workspaces))
                    )
                ).all()
            )

    async def assert_collected(
        self, collection: Collection, statuses: frozenset[str] = frozenset({"succeeded"})
    ) -> None:
        """The invariants of the module docstring; each run ended with one of `statuses`."""
        rows = await self._runs(collection)
        by_workspace: dict[str, list[Any]] = {}
        for row in rows:
            by_workspace.setdefault(row.workspace_id, []).append(row)
        assert set(by_workspace) == set(collection.workspaces)
        for ws, runs in by_workspace.items():
            assert sorted(r.trigger for r in runs) == TRIGGERS, (ws, runs)
            [slot_run] = [r for r in runs if r.trigger == "schedule"]
            assert slot_run.scheduled_time == collection.slot  # one run for the slot
        assert all(r.end_time is not None for r in rows), rows
        assert {r.status for r in rows} <= statuses, [(r.id, r.status) for r in rows]
        run_ids = [r.id for r in rows]
        async with self.database.transaction(write=False) as session:
            probes = (
                await session.execute(
                    select(Probe.run_id, Probe.prompt_text, Probe.provider, Probe.status).where(
                        Probe.run_id.in_(run_ids)
                    )
                )
            ).all()
            ends = Counter((await session.scalars(text("SELECT run_id FROM fault_run_ends"))).all())
        expected = {
            (run_id, prompt, provider)
            for run_id in run_ids
            for prompt in collection.prompts
            for provider in PROVIDER_NAMES
        }
        keys = [(run_id, prompt, provider) for run_id, prompt, provider, _ in probes]
        assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
        assert {status for *_, status in probes} <= TERMINAL
        assert {run_id: ends[run_id] for run_id in run_ids} == dict.fromkeys(run_ids, 1)

    async def probe_statuses(self, collection: Collection) -> Counter[str]:
        async with self.database.transaction(write=False) as session:
            rows = await session.execute(
                select(Probe.status, func.count())
                .where(Probe.workspace_id.in_(collection.workspaces))
                .group_by(Probe.status)
            )
            return Counter({status: int(count) for status, count in rows})


@contextlib.asynccontextmanager
async def running_fleet(settings: Settings, tmp: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(settings, tmp)
    try:
        await fleet.start()
        yield fleet
    finally:
        await fleet.close()
