"""RPC benchmark: a bare health check vs an authenticated, database-backed GetWorkspace.

Both run against the same `beacon serve` processes (PostgreSQL + Redis when reachable, else
SQLite), driven by h2load (HTTP/2, framed gRPC bodies) in a separate process, for one
server process and for two sharing the port (SO_REUSEPORT). Success is checked, not
assumed: h2load cannot read grpc-status, so the health run must return the expected
response bytes per call, and the servers' own Prometheus counters must show one OK
GetWorkspace per request h2load completed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from grpc_health.v1 import health_pb2
from sqlalchemy import select

from beacon.v1 import workspace_service_pb2 as ws_pb
from bench._servers import BENCH_SECRET, Backend, ServerGroup, scratch_backend, serve
from service.auth.identity import ensure_user
from service.auth.tokens import Claims, mint_dev_token
from service.clock import new_id, utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Organization, OrganizationMember, Workspace

DURATION = 10
WARMUP = 2
CONNECTIONS = 32
STREAMS = 4
GET_WORKSPACE = "beacon.v1.WorkspaceService/GetWorkspace"


@dataclass
class LoadResult:
    requests: int
    qps: float
    p50_ms: float
    p99_ms: float
    data_bytes: int


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


async def _seed(database_url: str) -> tuple[str, str]:
    """A user owning one workspace; returns (token, workspace id)."""
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
    await db.dispose()
    token = mint_dev_token(settings, email=email, name="Bench", ttl_seconds=3600)
    return token, existing


def h2load(port: int, path: str, body: bytes, headers: list[str], workdir: Path) -> LoadResult:
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
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    done = int(_search(r"requests: \d+ total, \d+ started, (\d+) done", output))
    seconds = float(_search(r"finished in ([\d.]+)s", output))
    data_bytes = _data_bytes(output)
    latencies = sorted(
        int(line.split("\t")[2]) / 1000.0
        for line in log_file.read_text().splitlines()
        if line.count("\t") >= 2
    )
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return LoadResult(done, done / seconds, quantiles[49], quantiles[98], data_bytes)


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


def run_group(
    backend: Backend, processes: int, token: str, workspace_id: str
) -> dict[str, LoadResult]:
    health_body = grpc_frame(health_pb2.HealthCheckRequest().SerializeToString())
    health_reply = len(grpc_frame(health_pb2.HealthCheckResponse(status=1).SerializeToString()))
    get_body = grpc_frame(ws_pb.GetWorkspaceRequest(workspace_id=workspace_id).SerializeToString())
    results: dict[str, LoadResult] = {}
    with (
        serve(backend, processes, BEACON_RATE_LIMIT_SCALE="1000000") as group,
        tempfile.TemporaryDirectory() as tmp,
    ):
        workdir = Path(tmp)
        health = h2load(group.port, "grpc.health.v1.Health/Check", health_body, [], workdir)
        # Warm-up requests are not in `done` but are in the traffic totals.
        if health.data_bytes < health.requests * health_reply:
            raise RuntimeError("health checks returned fewer response bytes than calls")
        results["health"] = health
        before = ok_count(group, GET_WORKSPACE)
        get = h2load(
            group.port,
            GET_WORKSPACE,
            get_body,
            [f"authorization: Bearer {token}"],
            workdir,
        )
        succeeded = ok_count(group, GET_WORKSPACE) - before
        if succeeded < get.requests:
            raise RuntimeError(
                f"GetWorkspace: h2load completed {get.requests} but only {succeeded} were OK"
            )
        results["get_workspace"] = get
    return results


def main() -> list[str]:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: install Debian's nghttp2-client")
    lines: list[str] = []
    with scratch_backend() as backend:
        token, workspace_id = asyncio.run(_seed(backend.database_url))
        by_processes = {n: run_group(backend, n, token, workspace_id) for n in (1, 2)}
    lines.append(
        f"RPC benchmark ({backend.name}; h2load {CONNECTIONS} connections x {STREAMS} "
        f"streams, {DURATION}s after {WARMUP}s warm-up)"
    )
    lines.append(
        f"{'processes':>9} {'rpc':<24} {'qps':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs health':>10}"
    )
    for n, results in by_processes.items():
        health = results["health"]
        for name, result in results.items():
            ratio = result.qps / health.qps
            lines.append(
                f"{n:>9} {name:<24} {result.qps:>9.0f} {result.p50_ms:>8.2f} "
                f"{result.p99_ms:>8.2f} {ratio:>10.2f}"
            )
    one, two = by_processes[1], by_processes[2]
    for name in ("health", "get_workspace"):
        lines.append(f"scaling {name}: 2 processes / 1 = {two[name].qps / one[name].qps:.2f}x")
    lines.append("targets: get_workspace/health >= 0.50 (ratio column); 2 processes >= 1.7x one")
    return lines


if __name__ == "__main__":
    print("\n".join(main()))
