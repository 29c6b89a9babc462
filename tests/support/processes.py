"""Real processes for tests: `beacon serve`, a private `redis-server` and `rabbitmq-server`.

Output goes to files (never to pipes nobody reads), shown when a process misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pika
import pika.exceptions
import pytest
import redis.asyncio as redis_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import Settings
from tests.support import REDIS_URL

BEACON = Path(sys.executable).parent / "beacon"
BEACON_SERVICES = frozenset(
    f"beacon.v1.{name}Service"
    for name in ("Organization", "Workspace", "Membership", "Schedule", "Prompt", "Run")
)
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # the script, not the wrapper
T = TypeVar("T")


def _ports_below_ephemeral() -> range:
    """Ports below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), which it
    never hands to an outgoing connection."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12000), low)


PORTS = _ports_below_ephemeral()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the ephemeral range:
    a server stopped and restarted on it (the fault tests) finds it free again, where a port
    the kernel picked could meanwhile be the local end of some outgoing connection."""
    for _ in range(200):
        port = random.choice(PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, within: float = 30.0
) -> T:
    """Polls `check` until it returns a value other than None/False, or fails after `within` s.

    The one poller of the suites: a test waits for what another process or task does with it."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def health_status(target: str, service: str = "") -> int | None:
    """The health status a server reports, or None when it does not answer."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return None
    return int(reply.status)


def serve_env(settings: Settings, **extra: str) -> dict[str, str]:
    """BEACON_* variables for a `beacon serve` on the same database, Redis and secret."""
    return {
        "BEACON_DATABASE_URL": settings.database_url,
        "BEACON_REDIS_URL": settings.redis_url,
        "BEACON_RATE_LIMIT_KEY_PREFIX": settings.rate_limit_key_prefix,
        "BEACON_AUTH_SECRET": settings.auth_secret,
        "BEACON_SIGNING_SECRET": settings.signing_secret,
        "BEACON_METRICS_ADDR": "",
        **extra,
    }


@dataclass
class BeaconProcess:
    """A `beacon serve` subprocess on its own gRPC port."""

    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @classmethod
    async def start(cls, tmp: Path, env: Mapping[str, str]) -> BeaconProcess:
        """Starts `beacon serve` with `env` (BEACON_* settings) and waits until it is SERVING."""
        pytest.importorskip("service.http.server", reason="`beacon serve` needs the HTTP side")
        port = free_port()
        log_path = tmp / f"beacon-serve-{port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
        full_env.update(
            {
                "BEACON_GRPC_ADDR": f"127.0.0.1:{port}",
                "BEACON_HTTP_ADDR": "127.0.0.1:0",
                "BEACON_DATA_DIR": str(tmp),
                "BEACON_LOG_LEVEL": "WARNING",
                **env,
            }
        )
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                str(BEACON), "serve", env=full_env, stdout=log, stderr=log
            )
        server = cls(process, port, log_path)
        await server.wait_serving()
        return server

    async def wait_serving(self) -> None:
        """Until health is SERVING and the start-up banner is out: only then does the process
        handle SIGTERM (it installs its signal handlers after printing the banner)."""

        async def serving() -> bool:
            if self.process.returncode is not None:
                raise AssertionError(f"beacon serve exited early:\n{self.log()}")
            if "beacon: gRPC on" not in self.log():
                return False
            status = await health_status(self.target)
            return status == int(health_pb2.HealthCheckResponse.SERVING)

        await eventually(serving, what=f"beacon serve on {self.target} to be SERVING", within=30)

    async def stop(self) -> int:
        """SIGTERM, then the exit code (killed if it does not exit within 20 s)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                raise AssertionError(f"beacon serve ignored SIGTERM:\n{self.log()}") from None
        assert self.process.returncode is not None
        return self.process.returncode


@dataclass
class RedisProcess:
    """A private, non-persistent redis-server that a test may kill (never the shared one)."""

    process: asyncio.subprocess.Process
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    async def start(cls, port: int | None = None) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        port = port or free_port()
        process = await asyncio.create_subprocess_exec(
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        server = cls(process, port)

        async def answers() -> bool:
            client = redis_async.from_url(server.url)
            try:
                return bool(await client.ping())
            except OSError:
                return False
            except redis_async.RedisError:
                return False
            finally:
                await client.aclose()

        await eventually(answers, what=f"redis-server on port {port}")
        return server

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def shutdown(self) -> None:
        """`SHUTDOWN NOSAVE`: the server exits and everything it counted is lost."""
        client = redis_async.from_url(self.url)
        try:
            await client.shutdown(nosave=True)
        except redis_async.ConnectionError:
            pass  # the connection drops as the server exits
        finally:
            await client.aclose()
        await self.process.wait()


@dataclass
class RabbitmqNode:
    """A private `rabbitmq-server` node (own name, ports and data directory) that a test may
    kill and start again on the same data: never the machine's own server."""

    directory: Path
    name: str
    port: int
    dist_port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @classmethod
    async def start(cls, directory: Path) -> RabbitmqNode:
        node = cls.prepare(directory)
        await node.boot()
        return node

    @classmethod
    def prepare(cls, directory: Path) -> RabbitmqNode:
        """A node on free ports whose files live in `directory` (not started)."""
        if shutil.which("rabbitmq-server") is None or not RABBITMQ_SERVER.exists():
            pytest.skip("rabbitmq-server is not installed")
        directory.mkdir(parents=True, exist_ok=True)
        node = cls(directory, f"beacon-test-{directory.name}@localhost", free_port(), free_port())
        # Our own configuration files, so the machine's (listeners on 5672) do not apply.
        (directory / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{node.port}\n")
        (directory / "rabbitmq-env.conf").write_text("")
        (directory / "enabled_plugins").write_text("[].\n")
        return node

    def _env(self) -> dict[str, str]:
        d = self.directory
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(d),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_SCHEMA_DIR": str(d / "schema"),
            "RABBITMQ_GENERATED_CONFIG_DIR": str(d / "config"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
        }

    async def boot(self) -> None:
        """Starts the node (again, on the same data) and waits until it accepts clients."""
        log = (self.directory / "server.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            str(RABBITMQ_SERVER),
            env=self._env(),
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group: the script, erl and beam
        )
        log.close()

        async def answers() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"rabbitmq-server exited:\n{self.log()}")
            try:
                connection = await asyncio.to_thread(pika.BlockingConnection, self._parameters())
            except pika.exceptions.AMQPError:
                return False
            connection.close()
            return True

        await eventually(answers, what=f"rabbitmq node {self.name}", within=90)

    def _parameters(self) -> pika.URLParameters:
        return pika.URLParameters(f"{self.url}?connection_attempts=1&socket_timeout=1")

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")[-4000:]

    async def kill(self) -> None:
        """SIGKILL to the whole node, as a crash or a power cut would stop it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        self.process = None


def beacon_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a `beacon` process `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    values = settings.model_dump()
    for name, value in values.pop("providers").items():
        env.update({f"BEACON_{name}_{field}".upper(): str(v) for field, v in value.items()})
    for name, value in values.items():
        if value is not None and name != "data_dir":
            env[f"BEACON_{name.upper()}"] = str(value)
    env["BEACON_LOG_JSON"] = "false"
    return env


@dataclass
class Beacon:
    """A `beacon` subprocess whose output goes to a log file."""

    process: asyncio.subprocess.Process
    log: Path

    @classmethod
    async def start(cls, command: str, env: dict[str, str], log: Path) -> Beacon:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                str(BEACON), command, env=env, stdout=out, stderr=out
            )
        return cls(process, log)

    async def stop(self) -> None:
        """SIGTERM; the process must exit cleanly within 15 seconds."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                code = await self.process.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"{self.log.name} ignored SIGTERM:\n{self.log.read_text()}"
            ) from None
        assert code == 0, f"{self.log.name} exited with {code}:\n{self.log.read_text()}"

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def delete_namespace(namespace: str) -> None:
    client = redis_async.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def run_beacon(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Runs `beacon ARGS` with only `env` as its BEACON_* settings: (exit code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    process = await asyncio.create_subprocess_exec(
        str(BEACON),
        *args,
        env={**full_env, "BEACON_LOG_LEVEL": "WARNING", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
