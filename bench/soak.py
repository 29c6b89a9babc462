"""`make soak`: minutes of mixed load on a production-shaped fleet, with Redis and PostgreSQL
restarted in the middle, then the invariants that must survive it.

The fleet is the fault suite's (`tests/support/fleet.py`): two `beacon serve`, one `beacon
worker` and two `beacon ticker` subprocesses on a private PostgreSQL cluster (`initdb` as the
postgres user; without root, a private database on the shared server and no PostgreSQL
restart) and a private `redis-server` without persistence, asking the fake providers
(`tests/support/fakes/provider_server.py`) in this process. Nothing the machine shares is restarted.

Virtual users, each the owner of a workspace with fixed prompts and two providers, call both
`serve` processes in a loop: reads (workspaces, prompts, runs, answers, reports, schedules,
members, navigation), writes (workspace fields, prompts of a second workspace), StartRun
followed by a WatchRun stream to the run's end, join codes (get, sometimes rotate, join as
another user) and icon uploads (signed URL, POST, UpdateWorkspace, download). Every workspace
is scheduled every minute (BEACON_SCHEDULE_MIN_INTERVAL_MINUTES=1), so the tickers fire a slot
per workspace each minute; the schedules are cleared when the load stops. At 40% of the time Redis is
killed and started empty on its port; at 60% PostgreSQL is stopped (`-m fast`) for a few
seconds and started again.

Printed: calls by status code per RPC, p50/p99 latency per RPC (successful calls), runs
started and ended by trigger and status, probe rows vs expected, ticker slots vs runs, WatchRun
streams, RSS of every process after warm-up, in the middle and at the end. Exits 1 when an
invariant fails: any INTERNAL or UNKNOWN, an HTTP 500, a run that did not end (or ended twice),
a run whose probe rows are not exactly prompts x providers (all terminal), a slot without
exactly one run, a StartRun run missing, a WatchRun stream that ended before its run, a process
that died or did not exit cleanly on SIGTERM, RSS growth of 5% or more after warm-up.

  SOAK_MINUTES=3 make soak       (default 30)
  SOAK_USERS=8                   virtual users (default 8)
  SOAK_PG_DOWN_SECONDS=5         how long PostgreSQL stays down (default 5)
  SOAK_TRACEMALLOC_FRAMES=10     frames of each allocation the processes trace (0: no tracing)

Every process traces its allocations (`service.memtrace`, off in production): after warm-up
and at the end the soak has each write a tracemalloc snapshot and a census of its objects by
type, and prints the allocation sites and object types that grew most in between (the top 25
when the RSS invariant fails, 8 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import (
    membership_service_pb2_grpc,
    organization_service_pb2_grpc,
    prompt_service_pb2_grpc,
    run_service_pb2_grpc,
    schedule_service_pb2_grpc,
    workspace_service_pb2_grpc,
)
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import schedule_service_pb2 as schedule_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from bench import _memtrace as memtrace
from bench._common import rss_mb, table
from bench._servers import BENCH_SECRET, BENCH_SIGNING_SECRET, PG_ADMIN_URL
from service.clock import utcnow
from service.config import Settings
from service.db.models import Probe
from tests.support import processes
from tests.support.builders import png_bytes
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.fleet import (
    PROVIDER_NAMES,
    PROVIDERS,
    Fleet,
    PostgresCluster,
    fault_database,
    fleet_settings,
)
from tests.support.processes import RedisProcess

PROMPTS = ["which crm suits a small team", "best crm for startups", "crm with email sync"]
PROBES_PER_RUN = len(PROMPTS) * len(PROVIDERS)
EVERY_MINUTE = "* * * * *"
# A slot this close to the schedule's clearing may or may not have fired before it.
SLOT_MARGIN = 3.0
TERMINAL_RUNS = {"succeeded", "partial", "failed", "canceled"}
TERMINAL_PROBES = {"succeeded", "failed", "skipped"}
WATCH_TERMINAL = {
    run_pb.RUN_STATUS_SUCCEEDED,
    run_pb.RUN_STATUS_PARTIAL,
    run_pb.RUN_STATUS_FAILED,
    run_pb.RUN_STATUS_CANCELED,
}
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
DB_ERRORS = (DBAPIError, OperationalError, OSError)
RSS_GROWTH_LIMIT = 0.05  # issue 26: under 5% after warm-up, every process
CALL_TIMEOUT = 20.0  # seconds, every unary call
Metadata = tuple[tuple[str, str], ...]


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


@dataclass
class Plan:
    """When things happen, in seconds from the start of the load."""

    duration: float
    users: int
    pg_down: float
    trace_frames: int = 10

    @classmethod
    def from_env(cls) -> Plan:
        return cls(
            duration=env_float("SOAK_MINUTES", 30.0) * 60,
            users=int(env_float("SOAK_USERS", 8)),
            pg_down=env_float("SOAK_PG_DOWN_SECONDS", 5.0),
            trace_frames=int(env_float("SOAK_TRACEMALLOC_FRAMES", 10)),
        )

    @property
    def warm_up(self) -> float:
        return min(max(30.0, 0.1 * self.duration), 0.3 * self.duration)

    @property
    def rss_every(self) -> float:
        """Seconds between the RSS samples of the series printed at the end."""
        return min(max(15.0, self.duration / 30), 120.0)

    @property
    def redis_restart(self) -> float:
        return 0.4 * self.duration

    @property
    def pg_restart(self) -> float:
        return 0.6 * self.duration

    @property
    def run_every(self) -> float:
        """Seconds between a user's StartRun calls (the worker is one process on 2 shared
        cores: this keeps the probes it must answer within what it can)."""
        return 8.0


@dataclass
class Stats:
    """Every call's outcome: status codes and latencies per RPC, HTTP statuses, events."""

    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    forbidden: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    watch: Counter[str] = field(default_factory=Counter)
    started_runs: set[str] = field(default_factory=set)
    t0: float = field(default_factory=time.monotonic)

    def record(self, rpc: str, code: str, seconds: float | None, detail: str = "") -> None:
        self.codes[(rpc, code)] += 1
        if seconds is not None:
            self.latencies[rpc].append(seconds)
        forbidden = code in {c.name for c in FORBIDDEN} or code == "HTTP 500"
        if forbidden and len(self.forbidden) < 20:
            self.forbidden.append(f"{self.now():7.1f}s {rpc}: {code} {detail[:300]}")

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, what: str) -> None:
        line = f"{self.now():7.1f}s {what}"
        self.events.append(line)
        print(f"soak: {line}", flush=True)


class Client:
    """Stubs on a channel to every `serve`; each call picks one at random and is recorded."""

    def __init__(self, targets: list[str], stats: Stats) -> None:
        self.stats = stats
        self.channels = [grpc.aio.insecure_channel(t) for t in targets]
        self.stubs: list[dict[str, Any]] = [
            {
                "workspace": workspace_service_pb2_grpc.WorkspaceServiceStub(ch),
                "prompt": prompt_service_pb2_grpc.PromptServiceStub(ch),
                "schedule": schedule_service_pb2_grpc.ScheduleServiceStub(ch),
                "run": run_service_pb2_grpc.RunServiceStub(ch),
                "member": membership_service_pb2_grpc.MembershipServiceStub(ch),
                "org": organization_service_pb2_grpc.OrganizationServiceStub(ch),
            }
            for ch in self.channels
        ]
        self.http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        if self.http is not None:
            await self.http.close()

    async def call(self, service: str, method: str, request: Any, md: Metadata) -> Any | None:
        """The reply, or None when the call failed (recorded either way)."""
        stub = random.choice(self.stubs)[service]
        started = time.perf_counter()
        try:
            reply = await getattr(stub, method)(request, metadata=md, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            self.stats.record(method, error.code().name, None, error.details() or "")
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                await asyncio.sleep(0.5)  # an outage: do not spin
            return None
        self.stats.record(method, "OK", time.perf_counter() - started)
        return reply

    async def must(self, service: str, method: str, request: Any, md: Metadata) -> Any:
        """A set-up call: retried until it succeeds (there is no fault during set-up)."""
        for _ in range(20):
            reply = await self.call(service, method, request, md)
            if reply is not None:
                return reply
            await asyncio.sleep(0.5)
        raise RuntimeError(f"set-up call {method} kept failing")

    async def watch(self, run_id: str, md: Metadata) -> None:
        """WatchRun until the stream ends; the last message must show the run ended."""
        stub = random.choice(self.stubs)["run"]
        started = time.perf_counter()
        last: Any = None
        try:
            stream = stub.WatchRun(run_pb.WatchRunRequest(run_id=run_id), metadata=md, timeout=180)
            async for message in stream:
                if last is None:
                    self.stats.latencies["WatchRun (first message)"].append(
                        time.perf_counter() - started
                    )
                last = message
        except grpc.aio.AioRpcError as error:
            self.stats.record("WatchRun", error.code().name, None, error.details() or "")
            self.stats.watch[f"ended {error.code().name}"] += 1
            return
        self.stats.record("WatchRun", "OK", time.perf_counter() - started)
        if last is not None and last.status in WATCH_TERMINAL:
            self.stats.watch["saw the run end"] += 1
        else:
            self.stats.watch["ended OK before the run ended"] += 1

    async def http_request(self, label: str, method: str, url: str, data: bytes = b"") -> int:
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        started = time.perf_counter()
        try:
            async with self.http.request(method, url, data=data or None) as reply:
                await reply.read()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError) as error:
            self.stats.record(label, type(error).__name__, None)
            return 0
        ok = status < 300
        self.stats.record(label, f"HTTP {status}", time.perf_counter() - started if ok else None)
        return status


@dataclass
class User:
    """A virtual user: the owner of a collected workspace and of a scratch one."""

    n: int
    md: Metadata
    workspace: str = ""
    organization: str = ""
    scratch: str = ""
    runs: list[str] = field(default_factory=list)
    last_run: float = 0.0
    # When the every-minute schedule was set and cleared (epoch seconds).
    scheduled: float = 0.0
    unscheduled: float = 0.0

    def slots(self) -> tuple[set[float], float, float]:
        """The minute slots the tickers must have run (each exactly once), and the range in
        which a slot's run may exist (a slot at the edges may or may not have fired)."""
        first = (int(self.scheduled) // 60 + 1) * 60
        last = self.unscheduled - SLOT_MARGIN
        return set(range(first, int(last) + 1, 60)), self.scheduled, self.unscheduled + 1


@dataclass
class Soak:
    fleet: Fleet
    client: Client
    plan: Plan
    stats: Stats
    users: list[User] = field(default_factory=list)
    joiners: list[Metadata] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    redis: RedisProcess | None = None  # the fleet's, replaced when it is restarted
    cluster: PostgresCluster | None = None

    # --- set-up -------------------------------------------------------------------------------

    async def set_up(self) -> None:
        self.joiners = [self.fleet.metadata(f"joiner-{n}@soak.example") for n in range(16)]
        self.users = [
            User(n, self.fleet.metadata(f"soak-{n}-{uuid.uuid4().hex[:6]}@soak.example"))
            for n in range(self.plan.users)
        ]
        await asyncio.gather(*(self.set_up_user(u) for u in self.users))

    async def set_up_user(self, user: User) -> None:
        c, md = self.client, user.md
        created = await c.must(
            "workspace",
            "CreateWorkspace",
            ws_pb.CreateWorkspaceRequest(
                name=f"Soak brand {user.n}",
                domain=f"soak{user.n}.example.com",
                organization_name=f"Soak org {user.n} {uuid.uuid4().hex[:6]}",
            ),
            md,
        )
        user.workspace, user.organization = created.workspace.id, created.organization.id
        scratch = await c.must(
            "workspace",
            "CreateWorkspace",
            ws_pb.CreateWorkspaceRequest(
                name=f"Scratch {user.n}", organization_id=user.organization
            ),
            md,
        )
        user.scratch = scratch.workspace.id
        await c.must(
            "workspace",
            "SetEnabledProviders",
            ws_pb.SetEnabledProvidersRequest(workspace_id=user.workspace, providers=PROVIDERS),
            md,
        )
        await c.must(
            "prompt",
            "StorePrompts",
            prompt_pb.StorePromptsRequest(workspace_id=user.workspace, prompts=PROMPTS),
            md,
        )
        await c.must(
            "schedule",
            "SetSchedule",
            schedule_pb.SetScheduleRequest(workspace_id=user.workspace, cron=EVERY_MINUTE),
            md,
        )
        user.scheduled = time.time()

    async def unschedule(self) -> None:
        """Clears every schedule: no run starts after the load."""

        async def clear(user: User) -> None:
            request = schedule_pb.SetScheduleRequest(workspace_id=user.workspace, cron="")
            await self.client.must("schedule", "SetSchedule", request, user.md)
            user.unscheduled = time.time()

        await asyncio.gather(*(clear(u) for u in self.users))

    # --- load ---------------------------------------------------------------------------------

    async def user_loop(self, user: User) -> None:
        actions: list[tuple[Callable[[User], Awaitable[None]], float]] = [
            (self.read, 0.5),
            (self.write, 0.15),
            (self.prompts, 0.1),
            (self.join, 0.1),
            (self.icon, 0.08),
        ]
        funcs, weights = zip(*actions, strict=True)
        while not self.stop.is_set():
            if time.monotonic() - user.last_run >= self.plan.run_every * random.uniform(0.7, 1.3):
                user.last_run = time.monotonic()
                await self.start_and_watch(user)
            else:
                await random.choices(funcs, weights)[0](user)
            await asyncio.sleep(random.uniform(0.0, 0.2))

    async def read(self, user: User) -> None:
        ws, md = user.workspace, user.md
        now = utcnow()
        week_ago = timestamp_pb2.Timestamp(seconds=int((now - timedelta(days=7)).timestamp()))
        soon = timestamp_pb2.Timestamp(seconds=int(now.timestamp()) + 60)
        reads: list[tuple[str, str, Any]] = [
            ("workspace", "GetWorkspace", ws_pb.GetWorkspaceRequest(workspace_id=ws)),
            ("workspace", "ListWorkspaces", ws_pb.ListWorkspacesRequest(page_size=20)),
            ("workspace", "GetEnabledProviders", ws_pb.GetEnabledProvidersRequest(workspace_id=ws)),
            ("prompt", "ListPrompts", prompt_pb.ListPromptsRequest(workspace_id=ws)),
            ("run", "ListRuns", run_pb.ListRunsRequest(workspace_id=ws, page_size=10)),
            ("run", "ListResponses", run_pb.ListResponsesRequest(workspace_id=ws, page_size=10)),
            (
                "run",
                "GetVisibilityReport",
                run_pb.GetVisibilityReportRequest(
                    workspace_id=ws,
                    granularity=run_pb.GRANULARITY_DAY,
                    start_time=week_ago,
                    end_time=soon,
                ),
            ),
            ("schedule", "GetSchedule", schedule_pb.GetScheduleRequest(workspace_id=ws)),
            ("schedule", "GetCronTiming", schedule_pb.GetCronTimingRequest(workspace_id=ws)),
            ("member", "ListMembers", member_pb.ListMembersRequest(workspace_id=ws)),
            ("org", "GetNavigationState", org_pb.GetNavigationStateRequest()),
        ]
        if user.runs:
            reads.append(("run", "GetRun", run_pb.GetRunRequest(run_id=user.runs[-1])))
        service, method, request = random.choice(reads)
        await self.client.call(service, method, request, md)

    async def write(self, user: User) -> None:
        n = random.randrange(1000)
        workspace = ws_pb.Workspace(
            id=user.workspace,
            name=f"Soak brand {user.n} v{n}",
            brand_aliases=[f"SoakBrand{user.n}", f"SB{n}"],
            competitors=[ws_pb.Competitor(name=f"Rival {n % 7}", domain=f"rival{n % 7}.com")],
        )
        mask = field_mask_pb2.FieldMask(paths=["name", "brand_aliases", "competitors"])
        await self.client.call(
            "workspace",
            "UpdateWorkspace",
            ws_pb.UpdateWorkspaceRequest(workspace=workspace, update_mask=mask),
            user.md,
        )

    async def prompts(self, user: User) -> None:
        """Adds a prompt to the scratch workspace and deletes it again (the collected
        workspace's prompts stay fixed, so every run's probe count is known)."""
        added = await self.client.call(
            "prompt",
            "AddPrompts",
            prompt_pb.AddPromptsRequest(
                workspace_id=user.scratch, prompts=[f"scratch prompt {uuid.uuid4().hex[:8]}"]
            ),
            user.md,
        )
        if added is not None and added.added:
            await self.client.call(
                "prompt",
                "DeletePrompt",
                prompt_pb.DeletePromptRequest(prompt_id=added.added[0].id),
                user.md,
            )

    async def join(self, user: User) -> None:
        request: Any = member_pb.GetJoinInfoRequest(workspace_id=user.workspace)
        method = "GetJoinInfo"
        if random.random() < 0.2:
            method = "RotateJoinCode"
            request = member_pb.RotateJoinCodeRequest(
                workspace_id=user.workspace, ttl=duration_pb2.Duration(seconds=3600)
            )
        info = await self.client.call("member", method, request, user.md)
        if info is None:
            return
        joiner = random.choice(self.joiners)
        joined = await self.client.call(
            "member",
            "JoinWorkspaceByCode",
            member_pb.JoinWorkspaceByCodeRequest(code=info.code.replace("-", "").lower()),
            joiner,
        )
        if joined is not None:
            await self.client.call(
                "workspace",
                "GetWorkspace",
                ws_pb.GetWorkspaceRequest(workspace_id=user.workspace),
                joiner,
            )

    async def icon(self, user: User) -> None:
        c = self.client
        url = await c.call(
            "workspace",
            "GenerateWorkspaceIconUploadUrl",
            ws_pb.GenerateWorkspaceIconUploadUrlRequest(),
            user.md,
        )
        if url is None:
            return
        color = random.choice(["red", "green", "blue", "white"])
        image = png_bytes(size=random.randint(8, 64), color=color)
        if await c.http_request("POST /uploads", "POST", url.upload_url, image) != 201:
            return
        updated = await c.call(
            "workspace",
            "UpdateWorkspace",
            ws_pb.UpdateWorkspaceRequest(
                workspace=ws_pb.Workspace(id=user.workspace, icon_file_id=url.storage_id),
                update_mask=field_mask_pb2.FieldMask(paths=["icon_file_id"]),
            ),
            user.md,
        )
        if updated is not None and updated.icon_url:
            await c.http_request("GET /files", "GET", updated.icon_url)

    async def start_and_watch(self, user: User) -> None:
        started = await self.client.call(
            "run", "StartRun", run_pb.StartRunRequest(workspace_id=user.workspace), user.md
        )
        if started is None:
            return
        if started.status != run_pb.START_RUN_STATUS_QUEUED:
            self.stats.record(
                "StartRun (not QUEUED)", run_pb.StartRunStatus.Name(started.status), None
            )
            return
        user.runs.append(started.run.id)
        self.stats.started_runs.add(started.run.id)
        await self.client.watch(started.run.id, user.md)

    # --- the ticker's slots, faults, RSS ---------------------------------------------------------

    async def faults(self) -> None:
        assert self.redis is not None
        await self.until(self.plan.redis_restart)
        self.stats.event("Redis killed (its data is lost) and started again, empty")
        await self.redis.kill()
        self.redis = await RedisProcess.start(port=self.redis.port)
        if self.cluster is None:
            self.stats.event("PostgreSQL restart skipped: a private cluster needs root")
            return
        await self.until(self.plan.pg_restart)
        self.stats.event(f"PostgreSQL stopped (fast) for {self.plan.pg_down:g}s")
        await self.cluster.stop()
        await asyncio.sleep(self.plan.pg_down)
        await self.cluster.start()
        self.stats.event("PostgreSQL started again")

    async def until(self, at: float) -> None:
        await asyncio.sleep(max(0.0, at - self.stats.now()))

    def processes(self) -> list[tuple[str, asyncio.subprocess.Process]]:
        fleet = self.fleet
        named = [(f"serve-{i + 1}", s.process) for i, s in enumerate(fleet.serves)]
        named += [(f"worker-{i + 1}", w.process) for i, w in enumerate(fleet.workers)]
        named += [(f"ticker-{i + 1}", t.process) for i, t in enumerate(fleet.tickers)]
        return named

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes() if p.returncode is None}

    def rss(self) -> dict[str, float]:
        return {name: rss_mb(p.pid) for name, p in self.processes() if p.returncode is None}

    def dead(self) -> list[str]:
        return [
            f"{name} (exit {p.returncode})"
            for name, p in self.processes()
            if p.returncode is not None
        ]


# --- invariants ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.lines.append(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures.append(what)


async def collected(soak: Soak) -> dict[str, Any]:
    """What the database holds about the soak's runs, probes, run ends and slots."""
    workspaces = [u.workspace for u in soak.users]
    runs = await soak.fleet.runs_of(workspaces)
    async with soak.fleet.database.transaction(write=False) as session:
        probes = (
            await session.execute(
                select(Probe.run_id, Probe.status, func.count())
                .where(Probe.workspace_id.in_(workspaces))
                .group_by(Probe.run_id, Probe.status)
            )
        ).all()
        ends = Counter((await session.scalars(text("SELECT run_id FROM fault_run_ends"))).all())
    return {"runs": runs, "probes": probes, "ends": ends}


async def drain(soak: Soak, within: float) -> dict[str, Any]:
    """Waits until every run has ended and every slot has its run; the last state either way."""
    deadline = time.monotonic() + within
    wanted = {(u.workspace, slot) for u in soak.users for slot in u.slots()[0]}
    state: dict[str, Any] = {}
    while True:
        try:
            state = await collected(soak)
        except DB_ERRORS:
            state = state or {"runs": [], "probes": [], "ends": Counter()}
        runs = state["runs"]
        have = {(r.workspace_id, epoch(r.scheduled_time)) for r in runs if r.trigger == "schedule"}
        if runs and all(r.end_time is not None for r in runs) and wanted <= have:
            return state
        if time.monotonic() > deadline:
            return state
        await asyncio.sleep(1.0)


def judge(soak: Soak, state: dict[str, Any], rss: dict[str, dict[str, float]]) -> Outcome:
    out = Outcome()
    stats = soak.stats

    # Calls by status code.
    rpcs = sorted({rpc for rpc, _ in stats.codes})
    codes = sorted({code for _, code in stats.codes}, key=lambda c: (c != "OK", c))
    out.lines.append("Calls by status code:")
    rows = [[rpc, *(stats.codes.get((rpc, c), 0) for c in codes)] for rpc in rpcs]
    totals = [sum(stats.codes.get((rpc, c), 0) for rpc in rpcs) for c in codes]
    out.lines += table(["rpc", *codes], [*rows, ["TOTAL", *totals]])
    bad = {
        c: sum(n for (_, code), n in stats.codes.items() if code == c)
        for c in ("INTERNAL", "UNKNOWN", "HTTP 500")
    }
    out.lines.append("")
    out.lines.append("p50 / p99 latency per RPC (successful calls, ms):")
    lat_rows = []
    for rpc, values in sorted(stats.latencies.items()):
        ordered = sorted(values)
        lat_rows.append(
            [
                rpc,
                len(ordered),
                percentile(ordered, 0.5) * 1000,
                percentile(ordered, 0.99) * 1000,
                ordered[-1] * 1000,
            ]
        )
    out.lines += table(["rpc", "ok calls", "p50 ms", "p99 ms", "max ms"], lat_rows)

    # Runs.
    runs, ends = state["runs"], state["ends"]
    by_trigger = Counter(r.trigger for r in runs)
    ended = [r for r in runs if r.end_time is not None]
    status_of = Counter(f"{r.trigger}:{r.status}" for r in ended)
    out.lines.append("")
    out.lines.append(
        f"Runs: {len(runs)} started ({', '.join(f'{k} {v}' for k, v in sorted(by_trigger.items()))}),"
        f" {len(ended)} ended ({', '.join(f'{k} {v}' for k, v in sorted(status_of.items()))})"
    )
    probe_rows: Counter[str] = Counter()
    probe_status: Counter[str] = Counter()
    for run_id, status, count in state["probes"]:
        probe_rows[run_id] += int(count)
        probe_status[status] += int(count)
    expected_rows = len(runs) * PROBES_PER_RUN
    out.lines.append(
        f"Probe rows: {sum(probe_rows.values())} vs expected {expected_rows}"
        f" ({len(runs)} runs x {len(PROMPTS)} prompts x {len(PROVIDER_NAMES)} providers);"
        f" by status {dict(sorted(probe_status.items()))}"
    )
    wanted = {(u.workspace, slot) for u in soak.users for slot in u.slots()[0]}
    ranges = {u.workspace: u.slots()[1:] for u in soak.users}
    slot_runs = Counter(
        (r.workspace_id, epoch(r.scheduled_time)) for r in runs if r.trigger == "schedule"
    )
    stray = [key for key in slot_runs if not ranges[key[0]][0] < key[1] <= ranges[key[0]][1]]
    out.lines.append(
        f"Ticker slots: {len(wanted)} due while scheduled, {sum(slot_runs.values())} scheduled runs"
    )
    out.lines.append(f"WatchRun streams: {dict(sorted(stats.watch.items()))}")
    out.lines.append("")
    out.lines.append("RSS (MiB) after warm-up / middle / end:")
    rss_rows = []
    growth: dict[str, float] = {}
    for name in rss.get("start", {}):
        start, middle, end = (rss.get(k, {}).get(name, 0.0) for k in ("start", "middle", "end"))
        growth[name] = (end - start) / start if start else 0.0
        rss_rows.append([name, start, middle, end, f"{growth[name] * 100:+.1f}%"])
    out.lines += table(["process", "start", "middle", "end", "growth"], rss_rows)
    if stats.events:
        out.lines.append("")
        out.lines.append("Events:")
        out.lines += [f"  {e}" for e in stats.events]
    if stats.forbidden:
        out.lines.append("First INTERNAL / UNKNOWN / HTTP 500 calls:")
        out.lines += [f"  {f}" for f in stats.forbidden]

    out.lines.append("")
    out.lines.append("Invariants:")
    out.check(bad["INTERNAL"] == 0, f"0 INTERNAL (got {bad['INTERNAL']})")
    out.check(bad["UNKNOWN"] == 0, f"0 UNKNOWN (got {bad['UNKNOWN']})")
    out.check(bad["HTTP 500"] == 0, f"0 HTTP 500 from the upload side (got {bad['HTTP 500']})")
    out.check(bool(runs) and len(ended) == len(runs), f"every run ended ({len(ended)}/{len(runs)})")
    twice = [r.id for r in runs if ends.get(r.id, 0) > 1]
    out.check(not twice, f"no run ended twice ({len(twice)} did)")
    not_once = [r.id for r in ended if ends.get(r.id, 0) != 1]
    out.check(not not_once, f"every ended run recorded exactly one end ({len(not_once)} not)")
    out.check(
        all(r.status in TERMINAL_RUNS for r in ended),
        f"every ended run has a terminal status ({dict(Counter(r.status for r in ended))})",
    )
    wrong_rows = [r.id for r in runs if probe_rows.get(r.id, 0) != PROBES_PER_RUN]
    out.check(
        not wrong_rows, f"each run has exactly {PROBES_PER_RUN} probe rows ({len(wrong_rows)} not)"
    )
    open_probes = sum(n for s, n in probe_status.items() if s not in TERMINAL_PROBES)
    out.check(open_probes == 0, f"every probe row is terminal ({open_probes} not)")
    missing_slots = [s for s in wanted if slot_runs.get(s, 0) != 1]
    out.check(
        bool(wanted) and not missing_slots and not stray,
        f"the tickers made exactly one run per slot ({len(wanted) - len(missing_slots)}/"
        f"{len(wanted)}; {len(stray)} runs for slots outside the schedules' lifetime)",
    )
    lost = stats.started_runs - {r.id for r in runs}
    out.check(
        bool(stats.started_runs) and not lost,
        f"every run StartRun queued exists ({len(stats.started_runs)} queued, {len(lost)} missing)",
    )
    early = stats.watch.get("ended OK before the run ended", 0)
    out.check(
        stats.watch.get("saw the run end", 0) > 0 and early == 0,
        f"WatchRun streams end only when their run ends ({early} ended early)",
    )
    grown = {n: g for n, g in growth.items() if g >= RSS_GROWTH_LIMIT}
    out.check(
        bool(growth) and not grown,
        f"RSS flat after warm-up: < {RSS_GROWTH_LIMIT:.0%} growth"
        + (f" (grew: {', '.join(f'{n} {g:+.1%}' for n, g in grown.items())})" if grown else ""),
    )
    return out


def rss_series(series: list[tuple[float, dict[str, float]]]) -> list[str]:
    """RSS of every process over the load, a row per sample."""
    names = sorted({name for _, sample in series for name in sample})
    rows = [[f"{at:.0f}", *(sample.get(n, 0.0) for n in names)] for at, sample in series]
    return ["", "RSS (MiB) over the load:", *table(["s", *names], rows)]


def logged_errors(fleet: Fleet) -> list[str]:
    """ERROR records of every process's log, counted by message and the exception that
    ended their traceback (the processes recover from these; they are shown, not judged)."""
    lines: list[str] = []
    for log in sorted(fleet.tmp.glob("*.log")):
        found: Counter[str] = Counter()
        header, cause = "", ""
        for line in [*log.read_text(errors="replace").splitlines(), "INFO end"]:
            level = line.split(" ", 1)[0]
            if level in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
                if header:
                    found[f"{header[:110]}{' <- ' + cause[:130] if cause else ''}"] += 1
                header, cause = (line, "") if level in {"ERROR", "CRITICAL"} else ("", "")
            elif header and line and not line.startswith((" ", "Traceback", "The above", "[")):
                cause = cause or line  # the first is the root cause
        if found:
            lines.append(f"ERROR records in {log.name}:")
            lines += [f"  {n} x {what}" for what, n in found.most_common(10)]
    return ["", *lines] if lines else ["", "No ERROR records in any process's log."]


def epoch(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the run ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[tuple[str, PostgresCluster | None]]:
    """A migrated database on a private cluster (or, without root, on the shared server)."""
    cluster: PostgresCluster | None = None
    try:
        cluster = await PostgresCluster.create()
    except pytest.skip.Exception as why:
        print(f"soak: no private PostgreSQL ({why}); using {PG_ADMIN_URL}", flush=True)
    try:
        async with fault_database(cluster.admin_url if cluster else PG_ADMIN_URL) as url:
            yield url, cluster
    finally:
        if cluster is not None:
            await cluster.destroy()


async def soak(plan: Plan, tmp: Path) -> int:
    base = Settings(
        auth_secret=BENCH_SECRET, signing_secret=BENCH_SIGNING_SECRET, metrics_addr="", data_dir=tmp
    )
    print(f"soak: {plan.duration / 60:g} min, {plan.users} users; logs in {tmp}", flush=True)
    fake = FakeProviderServer(latency=0.2)
    await fake.start()
    redis = await RedisProcess.start()
    restarted: list[RedisProcess] = []
    try:
        async with private_postgres() as (url, cluster):
            settings = fleet_settings(
                base,
                url,
                redis,
                fake,
                worker_concurrency=16,
                provider_concurrency=16,
                # Messages lost with Redis are sent again after this long without progress.
                run_stall_seconds=20.0,
                shutdown_grace_seconds=5.0,
                schedule_min_interval_minutes=1,
                # The soak checks one run per ticker slot, so slots must not be skipped
                # while a run is open (the cap: tests/collection/test_open_run_cap.py).
                max_open_runs_per_workspace=1000,
                peer_rate_limit_per_minute=1_000_000,
                tracemalloc_frames=plan.trace_frames,
                tracemalloc_dir=tmp / "tracemalloc",
            )
            fleet = await start_fleet(settings, tmp)
            client: Client | None = None
            try:
                stats = Stats()
                client = Client([s.target for s in fleet.serves], stats)
                run = Soak(fleet, client, plan, stats, redis=redis, cluster=cluster)
                try:
                    return await drive(run)
                finally:
                    if run.redis is not None and run.redis is not redis:
                        restarted.append(run.redis)
            finally:
                if client is not None:
                    await client.close()
                await fleet.close()
    finally:
        for server in (redis, *restarted):
            await server.kill()
        await fake.close()


async def start_fleet(settings: Settings, tmp: Path, attempts: int = 3) -> Fleet:
    """The fleet, started again when a process was not up in time (the machine is shared:
    five processes importing at once on two busy cores take longer than the fleet's 30 s, so
    the soak gives `serve` START_SECONDS)."""
    processes.eventually = _patient  # the fleet's too: it calls processes.eventually
    for attempt in range(1, attempts + 1):
        fleet = Fleet(settings, tmp, serve_count=2, worker_count=1)
        try:
            await fleet.start()
            return fleet
        except AssertionError as exc:
            await fleet.close()
            stray = kill_children()  # a `serve` that was still starting is not in the fleet
            if attempt == attempts:
                raise
            print(f"soak: fleet start failed ({str(exc)[:200]}); killed {stray}, again", flush=True)
    raise AssertionError("unreachable")


START_SECONDS = 180.0
_eventually = processes.eventually


async def _patient(check: Callable[[], Awaitable[Any]], what: str, within: float = 15.0) -> Any:
    return await _eventually(check, what=what, within=max(within, START_SECONDS))


def kill_children() -> list[int]:
    """SIGKILLs this process's `beacon` children; their pids."""
    killed = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = stat.with_name("cmdline").read_bytes()
            if int(fields[1]) == os.getpid() and b"beacon" in cmdline:
                os.kill(int(stat.parent.name), signal.SIGKILL)
                killed.append(int(stat.parent.name))
    return killed


async def drive(run: Soak) -> int:
    """The load, the faults and the RSS samples; then the drain, the verdict and the stop."""
    fleet, plan, stats = run.fleet, run.plan, run.stats
    rss: dict[str, dict[str, float]] = {}
    snapshots: dict[str, dict[str, Path]] = {}
    trace_dir = fleet.tmp / "tracemalloc"
    if plan.trace_frames:
        memtrace.start(run.pids())
    await run.set_up()
    stats.t0 = time.monotonic()
    stats.event(f"load started: {plan.users} users on {len(fleet.serves)} serve processes")
    tasks = [asyncio.create_task(run.user_loop(u)) for u in run.users]
    faults = asyncio.create_task(run.faults())
    dead: list[str] = []
    samples = (("start", plan.warm_up), ("middle", plan.duration / 2), ("end", plan.duration))
    series: list[tuple[float, dict[str, float]]] = []  # RSS every SERIES_SECONDS, printed
    for label, at in samples:
        while stats.now() < at:
            await asyncio.sleep(min(5.0, max(0.0, at - stats.now())))
            if stats.now() >= len(series) * plan.rss_every:
                series.append((stats.now(), run.rss()))
            dead = dead or run.dead()
            if faults.done():
                faults.result()  # raises what went wrong restarting a server
        rss[label] = run.rss()
        stats.event(f"RSS {label}: " + ", ".join(f"{k} {v:.0f}" for k, v in rss[label].items()))
        if plan.trace_frames and label in ("start", "end"):
            snapshots[label] = await memtrace.dump(trace_dir, run.pids())
            stats.event(f"tracemalloc snapshots ({label}): {len(snapshots[label])}")
    run.stop.set()
    await faults
    _, pending = await asyncio.wait(tasks, timeout=60)
    for task in pending:
        task.cancel()
    crashed = [
        repr(t.exception()) for t in tasks if t.done() and not t.cancelled() and t.exception()
    ]
    await run.unschedule()
    stats.event("load stopped, schedules cleared; waiting for every run to end")
    state = await drain(run, within=240)
    dead = dead or run.dead()
    outcome = judge(run, state, rss)
    outcome.lines += rss_series(series)
    if snapshots.get("end"):
        top = 25 if any("RSS flat" in f for f in outcome.failures) else 8
        outcome.lines += memtrace.report(snapshots["start"], snapshots["end"], top)
    outcome.check(not dead, f"every process stayed up ({', '.join(dead) or 'all did'})")
    outcome.check(not crashed, f"no virtual user crashed ({'; '.join(crashed)[:500]})")
    try:
        await fleet.stop_all()
        clean = True
    except AssertionError as exc:
        clean = False
        outcome.lines.append(str(exc)[-2000:])
    outcome.check(clean, "every process exited cleanly on SIGTERM")
    outcome.lines += logged_errors(fleet)
    print("\n".join(outcome.lines), flush=True)
    if outcome.failures:
        print(f"\nsoak FAILED: {len(outcome.failures)} invariant(s); logs in {fleet.tmp}")
        return 1
    print("\nsoak passed")
    return 0


def main() -> int:
    plan = Plan.from_env()
    if shutil.which("redis-server") is None:
        print("soak: redis-server is not installed", file=sys.stderr)
        return 2
    # Under /tmp itself, readable by the postgres user if it must be.
    tmp = Path(tempfile.mkdtemp(prefix="beacon-soak-"))
    code = asyncio.run(soak(plan, tmp))
    if code == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
