"""Open WatchRun streams are bounded (issue 26): each keeps a little state for as long as it
is open (the run's last fingerprint, when access was last checked), and a server holds at most
`max_concurrent_streams` of them open; one more is refused, not queued."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from beacon.v1 import run_service_pb2 as pb
from beacon.v1 import run_service_pb2_grpc
from service.app import App
from service.server import start_server
from tests.support.app import NewUser
from tests.support.builders import insert_run, make_workspace

BOUND = 3


async def test_watch_run_streams_past_max_concurrent_streams_are_refused(
    app: App, new_user: NewUser
) -> None:
    owner = await new_user()
    tenant = await make_workspace(app, owner.user_id, enabled=["openai"])
    run_id = await insert_run(app, tenant.workspace_id)  # running: its streams stay open
    bounded = App(
        settings=app.settings.model_copy(update={"max_concurrent_streams": BOUND}), db=app.db
    )
    server = await start_server(bounded, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            runs = run_service_pb2_grpc.RunServiceStub(channel)
            request = pb.WatchRunRequest(run_id=run_id)
            open_streams = [runs.WatchRun(request, metadata=owner.metadata) for _ in range(BOUND)]
            for stream in open_streams:  # each has its first message: all are open
                first = await asyncio.wait_for(stream.read(), timeout=30)
                assert first is not grpc.aio.EOF and first.id == run_id
            extra = runs.WatchRun(request, metadata=owner.metadata)
            assert await asyncio.wait_for(extra.code(), timeout=30) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            for stream in open_streams:
                stream.cancel()
            # Closed streams free their places (as soon as the server has seen them close).
            assert await reopened(runs, request, owner.metadata) == run_id
    finally:
        await server.stop(grace=1.0)


async def reopened(runs: Any, request: pb.WatchRunRequest, metadata: Any) -> str:
    """The run id of the first message of a new stream, retried while the server still counts
    the cancelled ones."""
    for _ in range(100):
        stream = runs.WatchRun(request, metadata=metadata)
        try:
            message = await asyncio.wait_for(stream.read(), timeout=30)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await asyncio.sleep(0.1)
            continue
        stream.cancel()
        assert message is not grpc.aio.EOF
        return str(message.id)
    raise AssertionError("no place freed after the streams were cancelled")
