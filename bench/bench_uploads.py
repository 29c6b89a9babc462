"""Hostile uploads against a bystander: another tenant's icon download latency on one `beacon
serve` while clients post JPEGs of thousands of scans (each ~2.4 s of decoding when decoded
in full), again and again to unused upload URLs and replayed to a used one. The bystander
downloads from another address (127.0.0.2), as another tenant would.

    python -m bench.bench_uploads [SECONDS]

The baseline is the same bystander without the attack, measured in the same run.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import grpc
import httpx

from beacon.v1 import workspace_service_pb2 as ws_pb
from beacon.v1 import workspace_service_pb2_grpc as ws_grpc
from bench._common import table
from bench._servers import BENCH_SECRET, scratch_backend, serve
from service.auth.tokens import mint_dev_token
from service.config import Settings
from tests.support.builders import png_bytes
from tests.support.hostile_images import scan_bomb_jpeg

ATTACKERS = 6  # clients posting at once (the default thread pool has 6 threads on 2 cores)
SCANS = 1000
PACE_SECONDS = 0.5  # an attacker sends at most one request this often


def metadata(email: str) -> tuple[tuple[str, str], ...]:
    token = mint_dev_token(Settings(auth_secret=BENCH_SECRET), email=email, name="Bench")
    return (("authorization", f"Bearer {token}"),)


async def ticket(stub: ws_grpc.WorkspaceServiceStub, md: object) -> str:
    reply = await stub.GenerateWorkspaceIconUploadUrl(
        ws_pb.GenerateWorkspaceIconUploadUrlRequest(), metadata=md
    )
    return str(reply.upload_url)


async def latencies(http: httpx.AsyncClient, url: str, until: float) -> list[float]:
    """Seconds each GET of `url` took, one every 0.2 s (within the per-peer limit)."""
    seconds = []
    while time.monotonic() < until:
        started = time.perf_counter()
        response = await http.get(url)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        await asyncio.sleep(max(0.0, 0.2 - seconds[-1]))
    return seconds


async def run(port: int, duration: float) -> list[list[object]]:
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        # The bystander is another peer (127.0.0.2): the attackers' per-peer limit is not its.
        httpx.AsyncClient(
            timeout=300, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        ) as http,
        httpx.AsyncClient(timeout=300) as attacker_http,
    ):
        stub = ws_grpc.WorkspaceServiceStub(channel)
        bystander, attacker = metadata("bystander@example.com"), metadata("mallory@example.com")
        upload = await ticket(stub, bystander)
        assert (await http.post(upload, content=png_bytes(64))).status_code == 201
        storage_id = upload.split("/uploads/")[1].split("?")[0]
        created = await stub.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name="Bystander", icon_file_id=storage_id),
            metadata=bystander,
        )
        icon_url = created.workspace.icon_url
        baseline = await latencies(http, icon_url, time.monotonic() + duration)
        used = await ticket(stub, attacker)
        assert (await attacker_http.post(used, content=png_bytes())).status_code == 201
        bomb = scan_bomb_jpeg(SCANS)
        codes: dict[int, int] = {}
        until = time.monotonic() + duration

        async def attack(index: int) -> None:
            # Half post again and again to an unused URL (refusals leave it unused), half
            # replay the used one.
            url = await ticket(stub, attacker) if index % 2 else used
            while time.monotonic() < until:
                sent = time.monotonic()
                status = (await attacker_http.post(url, content=bomb)).status_code
                codes[status] = codes.get(status, 0) + 1
                await asyncio.sleep(max(0.0, sent + PACE_SECONDS - time.monotonic()))

        attackers = [asyncio.create_task(attack(i)) for i in range(ATTACKERS)]
        attacked = await latencies(http, icon_url, until)
        await asyncio.gather(*attackers)
    print(f"attack answers: {dict(sorted(codes.items()))} ({len(bomb)} bytes each)")
    return [summary("bystander alone", baseline), summary("under attack", attacked)]


def summary(name: str, seconds: list[float]) -> list[object]:
    ms = sorted(s * 1000 for s in seconds)
    return [
        name,
        len(ms),
        statistics.median(ms),
        ms[int(0.99 * (len(ms) - 1))],
        ms[-1],
    ]


def main(argv: list[str]) -> int:
    duration = float(argv[0]) if argv else 20.0
    with (
        scratch_backend() as backend,
        serve(backend, 1) as group,
    ):
        rows = asyncio.run(run(group.port, duration))
    print(
        f"Upload bench ({backend.name}; {ATTACKERS} clients, {SCANS}-scan JPEGs, at most one"
        f" each per {PACE_SECONDS:g} s, {duration:g} s)"
    )
    for line in table(["bystander GET", "n", "p50 ms", "p99 ms", "max ms"], rows):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
