"""Cheap requests that cost the server: a bystander's latency while other tenants send them.

One `beacon serve` process (PostgreSQL + Redis when reachable, else SQLite), rate limits
scaled up so that nothing is refused for its rate. A bystander calls GetWorkspace in a loop
and its latency percentiles are printed alone (baseline) and while each attack runs:
SetEnabledProviders with ~4M enum entries, SetSchedule `*/15 * * * *` in a zone with DST,
StorePrompts of ~4 MB, and undecodable request bytes. Each attack runs from ATTACKERS
tenants at once. Also printed: how the server answered the attack (status codes seen).

  .venv/bin/python -m bench inputs   (or: make bench runs it with the others)
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import schedule_service_pb2 as sched_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from beacon.v1.prompt_service_pb2_grpc import PromptServiceStub
from beacon.v1.schedule_service_pb2_grpc import ScheduleServiceStub
from beacon.v1.workspace_service_pb2_grpc import WorkspaceServiceStub
from bench._servers import BENCH_SECRET, scratch_backend, serve
from service.auth.tokens import mint_dev_token
from service.config import Settings

ATTACKERS = 4
SECONDS = 6.0
PROVIDERS_ENTRIES = 4_000_000
Metadata = tuple[tuple[str, str], ...]


def _metadata(settings: Settings, email: str) -> Metadata:
    return (("authorization", f"Bearer {mint_dev_token(settings, email=email, name='Bench')}"),)


async def _workspace(channel: grpc.aio.Channel, md: Metadata, name: str) -> str:
    created = await WorkspaceServiceStub(channel).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(name=name, organization_name=f"{name} Org"), metadata=md
    )
    return str(created.workspace.id)


async def _bystander(
    channel: grpc.aio.Channel, md: Metadata, ws: str, stop: asyncio.Event
) -> list[float]:
    stub = WorkspaceServiceStub(channel)
    latencies: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        await stub.GetWorkspace(ws_pb.GetWorkspaceRequest(workspace_id=ws), metadata=md)
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)
    return latencies


def _percentiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {cuts[49]:8.1f}  p90 {cuts[89]:8.1f}  p99 {cuts[98]:8.1f}  max {max(values):8.1f}"


async def _attack_loop(
    call: Callable[[], Awaitable[Any]], stop: asyncio.Event, codes: Counter[str]
) -> None:
    while not stop.is_set():
        try:
            await call()
            codes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1


async def _measure(
    by_channel: grpc.aio.Channel,
    by_md: Metadata,
    by_ws: str,
    attacks: list[Callable[[], Awaitable[Any]]],
) -> tuple[str, Counter[str]]:
    stop = asyncio.Event()
    codes: Counter[str] = Counter()
    tasks = [asyncio.create_task(_attack_loop(a, stop, codes)) for a in attacks]
    watcher = asyncio.create_task(_bystander(by_channel, by_md, by_ws, stop))
    await asyncio.sleep(SECONDS)
    stop.set()
    latencies = await watcher
    await asyncio.gather(*tasks)
    return _percentiles(latencies), codes


async def _run(target: str) -> None:
    settings = Settings(auth_secret=BENCH_SECRET)
    options = [("grpc.max_send_message_length", 8 << 20)]
    # Separate channels (connections): the attackers' bytes do not queue the bystander's.
    by_channel = grpc.aio.insecure_channel(target)
    attack_channel = grpc.aio.insecure_channel(target, options=options)
    by_md = _metadata(settings, "bystander@example.com")
    by_ws = await _workspace(by_channel, by_md, "Bystander")
    attackers = []
    for index in range(ATTACKERS):
        md = _metadata(settings, f"attacker{index}@example.com")
        attackers.append((md, await _workspace(attack_channel, md, f"Attacker {index}")))
    workspaces = WorkspaceServiceStub(attack_channel)
    schedules = ScheduleServiceStub(attack_channel)
    prompts = PromptServiceStub(attack_channel)
    providers = [ws_pb.PROVIDER_OPENAI] * PROVIDERS_ENTRIES
    big_prompts = [f"{i} " + "x" * 1990 for i in range(2000)]
    raw = attack_channel.unary_unary(
        "/beacon.v1.WorkspaceService/SetEnabledProviders",
        request_serializer=None,
        response_deserializer=None,
    )

    def set_providers(md: Metadata, ws: str) -> Callable[[], Awaitable[Any]]:
        request = ws_pb.SetEnabledProvidersRequest(workspace_id=ws, providers=providers)
        return lambda: workspaces.SetEnabledProviders(request, metadata=md)

    def set_schedule(md: Metadata, ws: str) -> Callable[[], Awaitable[Any]]:
        request = sched_pb.SetScheduleRequest(
            workspace_id=ws, cron="*/15 * * * *", time_zone="America/New_York"
        )
        return lambda: schedules.SetSchedule(request, metadata=md)

    def store_prompts(md: Metadata, ws: str) -> Callable[[], Awaitable[Any]]:
        request = prompt_pb.StorePromptsRequest(workspace_id=ws, prompts=big_prompts)
        return lambda: prompts.StorePrompts(request, metadata=md)

    def garbage(md: Metadata, ws: str) -> Callable[[], Awaitable[Any]]:
        return lambda: raw(b"\xff" * 1_000_000, metadata=md)

    line, _ = await _measure(by_channel, by_md, by_ws, [])
    print(f"{'attack':<36} bystander GetWorkspace (ms)")
    print(f"{'none (baseline)':<36} {line}")
    for label, make in [
        (f"SetEnabledProviders {PROVIDERS_ENTRIES:,} entries", set_providers),
        ("SetSchedule */15 America/New_York", set_schedule),
        ("StorePrompts ~4 MB", store_prompts),
        ("undecodable 1 MB", garbage),
    ]:
        line, codes = await _measure(
            by_channel, by_md, by_ws, [make(md, ws) for md, ws in attackers]
        )
        print(f"{label:<36} {line}   attack answered {dict(codes)}")
    await by_channel.close()
    await attack_channel.close()


def main() -> None:
    with scratch_backend() as backend:
        print(f"backend: {backend.name}, {ATTACKERS} attacking tenants, {SECONDS:.0f} s each")
        with serve(backend, 1, BEACON_RATE_LIMIT_SCALE="100000") as group:
            asyncio.run(_run(f"127.0.0.1:{group.port}"))


if __name__ == "__main__":
    main()
