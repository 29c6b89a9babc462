"""RPC benchmark: a bare health check vs authenticated, database-backed reads.

The reads are GetWorkspace and a read mix (ListWorkspaces, ListPrompts, GetRun), each run on
its own and reported with its throughput, latency and the server's CPU time per call (µs, from
the server processes' own user + system time over the measured calls). All run against the same `beacon serve` processes (PostgreSQL + Redis when reachable, else
SQLite), driven by h2load (HTTP/2, framed gRPC bodies) in a separate process, for one
server process and for two sharing the port (SO_REUSEPORT). Success is checked, not
assumed: h2load cannot read grpc-status, so the health run must return the expected
response bytes per call, and the servers' own Prometheus counters must show one OK call of
each authenticated RPC per request h2load completed.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from grpc_health.v1 import health_pb2
from sqlalchemy import select

from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from bench._common import CLOCK_TICKS
from bench._servers import BENCH_SECRET, Backend, ServerGroup, scratch_backend, serve
from service.auth.identity import ensure_user
from service.auth.tokens import Claims, mint_dev_token
from service.clock import new_id, utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Organization, OrganizationMember, Prompt, Run, Workspace

DURATION = 10
WARMUP = 2
CONNECTIONS = 32
STREAMS = 4
GET_WORKSPACE = "beacon.v1.WorkspaceService/GetWorkspace"
LIST_WORKSPACES = "beacon.v1.WorkspaceService/ListWorkspaces"
LIST_PROMPTS = "beacon.v1.PromptService/ListPrompts"
GET_RUN = "beacon.v1.RunService/GetRun"
PROMPTS = 20


@dataclass
class LoadResult:
    requests: int
    qps: float
    p50_ms: float
    p99_ms: float
    data_bytes: int
    cpu_us: float  # server CPU time per measured call, all processes together


@dataclass
class Seeded:
    token: str
    workspace_id: str
    run_id: str


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


async def _seed(database_url: str) -> Seeded:
    """A user owning one workspace with PROMPTS prompts and one finished run."""
    settings = Settings(database_url=database_url, auth_secret=BENCH_SECRET)
    db = Database(database_url)
    email = "bench@example.com"
    user_id = await ensure_user(
        db,
        Claims(settings.auth_dev_issuer, f"dev|{email}", email, True, "Bench"),
    )
    async with db.transaction() as session:
        existing = await session.scalar(select(Workspace.id).limit(1))
        if existing is None:
            now = utcnow()
            org = Organization(id=new_id("org"), name="Bench Org", slug=new_id("bench"))
            session.add(org)
            await session.flush()
            session.add(
                OrganizationMember(
                    organization_id=org.id, user_id=user_id, role="owner", create_time=now
                )
            )
            existing = new_id("ws")
            session.add(
                Workspace(
                    id=existing,
                    organization_id=org.id,
                    name="Bench Workspace",
                    slug="bench",
                    domain="bench.example",
                    enabled_providers=["openai"],
                )
            )
            await session.flush()
            now = utcnow()
            prompt_ids = []
            for index in range(PROMPTS):
                text = f"best tools for benchmark number {index}?"
                prompt_ids.append(new_id("prm"))
                session.add(
                    Prompt(
                        id=prompt_ids[-1],
                        workspace_id=existing,
                        text=text,
                        text_hash=hashlib.sha256(text.encode()).hexdigest(),
                        create_time=now,
                    )
                )
            session.add(
                Run(
                    id=new_id("run"),
                    workspace_id=existing,
                    trigger="manual",
                    status="succeeded",
                    prompt_ids=prompt_ids,
                    providers=["openai"],
                    prompt_count=PROMPTS,
                    create_time=now,
                    start_time=now,
                    end_time=now,
                )
            )
        run_id = await session.scalar(select(Run.id).where(Run.workspace_id == existing))
        assert run_id is not None
    await db.dispose()
    token = mint_dev_token(settings, email=email, name="Bench", ttl_seconds=3600)
    return Seeded(token, existing, run_id)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def h2load(
    port: int, path: str, body: bytes, headers: list[str], workdir: Path, pids: list[int]
) -> LoadResult:
    body_file = workdir / "body.bin"
    body_file.write_bytes(body)
    log_file = workdir / "requests.log"
    command = [
        "h2load",
        f"--duration={DURATION}",
        f"--warm-up-time={WARMUP}",
        f"--clients={CONNECTIONS}",
        f"--max-concurrent-streams={STREAMS}",
        "--threads=1",
        f"--data={body_file}",
        f"--log-file={log_file}",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ]
    for header in headers:
        command += ["-H", header]
    command.append(f"http://127.0.0.1:{port}/{path}")
    # The servers' CPU time is read when the warm-up ends and when h2load exits: the
    # measured calls are the ones h2load counts as done.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    marks: list[float] = []
    timer = threading.Timer(WARMUP, lambda: marks.append(cpu_seconds(pids)))
    timer.start()
    output, _ = process.communicate()
    timer.join()
    cpu_used = cpu_seconds(pids) - marks[0]
    if process.returncode != 0:
        raise RuntimeError(f"h2load failed ({process.returncode}):\n{output}")
    done = int(_search(r"requests: \d+ total, \d+ started, (\d+) done", output))
    seconds = float(_search(r"finished in ([\d.]+)s", output))
    data_bytes = _data_bytes(output)
    latencies = sorted(
        int(line.split("\t")[2]) / 1000.0
        for line in log_file.read_text().splitlines()
        if line.count("\t") >= 2
    )
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    cpu_us = cpu_used / done * 1e6 if done else 0.0
    return LoadResult(done, done / seconds, quantiles[49], quantiles[98], data_bytes, cpu_us)


def _search(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"h2load output lacks {pattern!r}:\n{text}")
    return match.group(1)


def _data_bytes(output: str) -> int:
    # "traffic: 1.2MB (1234567) total, 12KB (12345) headers (...), 1.1MB (1111111) data"
    return int(_search(r"\((\d+)\) data", output))


def ok_count(group: ServerGroup, method: str) -> int:
    """OK calls of `method` counted by the servers' own metrics."""
    total = 0.0
    for port in group.metrics_ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        for line in text.decode().splitlines():
            labels = line[line.find("{") + 1 : line.find("}")].split(",")
            if line.startswith("beacon_rpc_total{") and {
                f'method="{method}"',
                'code="OK"',
            } <= set(labels):
                total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _read_calls(seeded: Seeded) -> dict[str, tuple[str, bytes]]:
    """The authenticated reads: report name -> (method, framed request)."""
    return {
        "get_workspace": (
            GET_WORKSPACE,
            ws_pb.GetWorkspaceRequest(workspace_id=seeded.workspace_id).SerializeToString(),
        ),
        "list_workspaces": (LIST_WORKSPACES, ws_pb.ListWorkspacesRequest().SerializeToString()),
        "list_prompts": (
            LIST_PROMPTS,
            prompt_pb.ListPromptsRequest(workspace_id=seeded.workspace_id).SerializeToString(),
        ),
        "get_run": (GET_RUN, run_pb.GetRunRequest(run_id=seeded.run_id).SerializeToString()),
    }


def run_group(backend: Backend, processes: int, seeded: Seeded) -> dict[str, LoadResult]:
    health_body = grpc_frame(health_pb2.HealthCheckRequest().SerializeToString())
    health_reply = len(grpc_frame(health_pb2.HealthCheckResponse(status=1).SerializeToString()))
    results: dict[str, LoadResult] = {}
    with (
        serve(backend, processes, BEACON_RATE_LIMIT_SCALE="1000000") as group,
        tempfile.TemporaryDirectory() as tmp,
    ):
        workdir = Path(tmp)
        pids = [p.pid for p in group.processes]
        health = h2load(group.port, "grpc.health.v1.Health/Check", health_body, [], workdir, pids)
        # Warm-up requests are not in `done` but are in the traffic totals.
        if health.data_bytes < health.requests * health_reply:
            raise RuntimeError("health checks returned fewer response bytes than calls")
        results["health"] = health
        for name, (method, body) in _read_calls(seeded).items():
            before = ok_count(group, method)
            result = h2load(
                group.port,
                method,
                grpc_frame(body),
                [f"authorization: Bearer {seeded.token}"],
                workdir,
                pids,
            )
            succeeded = ok_count(group, method) - before
            if succeeded < result.requests:
                raise RuntimeError(
                    f"{method}: h2load completed {result.requests} but only {succeeded} were OK"
                )
            results[name] = result
    return results


def main() -> list[str]:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: install Debian's nghttp2-client")
    lines: list[str] = []
    with scratch_backend() as backend:
        seeded = asyncio.run(_seed(backend.database_url))
        by_processes = {n: run_group(backend, n, seeded) for n in (1, 2)}
    lines.append(
        f"RPC benchmark ({backend.name}; h2load {CONNECTIONS} connections x {STREAMS} "
        f"streams, {DURATION}s after {WARMUP}s warm-up)"
    )
    lines.append(
        f"{'processes':>9} {'rpc':<16} {'qps':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'vs health':>10} {'cpu µs':>8} {'cpu vs health':>14}"
    )
    for n, results in by_processes.items():
        health = results["health"]
        for name, result in results.items():
            ratio = result.qps / health.qps
            cpu_ratio = result.cpu_us / health.cpu_us if health.cpu_us else 0.0
            lines.append(
                f"{n:>9} {name:<16} {result.qps:>9.0f} {result.p50_ms:>8.2f} "
                f"{result.p99_ms:>8.2f} {ratio:>10.2f} {result.cpu_us:>8.0f} {cpu_ratio:>14.2f}"
            )
    one, two = by_processes[1], by_processes[2]
    for name in one:
        lines.append(f"scaling {name}: 2 processes / 1 = {two[name].qps / one[name].qps:.2f}x")
    lines.append(
        "targets (1 process): get_workspace vs health >= 0.50; cpu vs health <= 2.00;"
        " 2 processes >= 1.7x one"
    )
    return lines


if __name__ == "__main__":
    print("\n".join(main()))
