"""Redis servers that a test starts itself: one standalone server to stop, pause or kill, and a
Redis Cluster of three masters (``redis-server --cluster-enabled yes`` + ``redis-cli --cluster
create``) on free ports. Without ``redis-server`` they skip, except under ``CI=true`` where they
fail. Nodes are always stopped by their own port, never by process name."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too (and exists)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required under CI=true (.ci/run installs redis-server)")
        pytest.skip(f"{name} not found")
    return path


def _wait_ping(port: int, timeout: float = 10.0) -> None:
    import redis

    client = redis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=0.5
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


class Server:
    """One private redis-server process."""

    def __init__(self, port: int | None = None, *extra: str, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.extra = extra
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--loglevel", "warning", *self.extra]
        self.proc = subprocess.Popen(
            args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ping(self.port)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def _cluster_ok(info: object) -> bool:
    if isinstance(info, dict):  # redis-py parses the reply
        return str(info.get("cluster_state")) == "ok"
    if isinstance(info, bytes):
        info = info.decode()
    return "cluster_state:ok" in str(info)


class Cluster:
    """Three masters, no replicas, on free ports (or the three ``ports`` given), in a temporary
    directory."""

    def __init__(self, ports: list[int] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kgcluster"))
        self.nodes: list[Server] = []
        self.ports = ports

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        binary("redis-cli")
        for i in range(3):
            port = free_cluster_port() if self.ports is None else self.ports[i]
            workdir = self.dir / str(port)
            workdir.mkdir()
            node = Server(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                workdir=workdir,
            )
            node.start()
            self.nodes.append(node)
        subprocess.run(
            [
                binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        import redis

        deadline = time.monotonic() + 30
        for node in self.nodes:
            client = redis.Redis(host="127.0.0.1", port=node.port)
            try:
                while not _cluster_ok(client.execute_command("CLUSTER INFO")):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the cluster did not reach cluster_state:ok")
                    time.sleep(0.1)
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()  # the nodes that did start
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
