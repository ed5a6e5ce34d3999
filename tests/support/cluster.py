"""A 3-node nats-server cluster with JetStream on loopback ports, for HA tests and benches."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

from gcl.coordinator.nats_auth import write_private
from gcl.coordinator.nats_server import (
    HOST,
    free_port,
    kill_process,
    nats_server_binary,
    port_in_use,
    spawn,
    stop_process,
)


class ClusterNode:
    """One node: its client port, its route port, its process."""

    def __init__(self, folder: Path, name: str, routes: list[int], route_port: int) -> None:
        self.folder = folder
        self.name = name
        self.port = free_port()
        self.route_port = route_port
        self.routes = routes
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self, config: str | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        routes = ",".join(f"nats://{HOST}:{p}" for p in self.routes if p != self.route_port)
        args = [
            nats_server_binary(),
            "-a", HOST, "-p", str(self.port),
            "-n", self.name, "--cluster_name", "gcl-test",
            "--cluster", f"nats://{HOST}:{self.route_port}", "--routes", routes,
            "-js", "-sd", str(self.folder / "js"),
        ]  # fmt: skip
        if config is not None:
            args += ["-c", str(write_private(self.folder / "nats-server.conf", config))]
        # Its own session, and SIGTERM if the test process dies: a node never outlives its run.
        self.process = spawn(args, self.folder / "nats-server.log")

    def listening(self) -> bool:
        return port_in_use(self.port)

    def kill(self) -> None:
        if self.process is not None:
            kill_process(self.process)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


class NatsCluster:
    """Three nodes routed to each other; `url` lists them all, as clients are configured."""

    def __init__(self, folder: Path, size: int = 3, config: str | None = None) -> None:
        route_ports = [free_port() for _ in range(size)]
        self.config = config
        self.nodes = [
            ClusterNode(folder / f"n{i + 1}", f"n{i + 1}", route_ports, route_ports[i])
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 20.0) -> NatsCluster:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # whatever failed, no node is left running
            raise

    def _start(self, timeout: float) -> NatsCluster:
        for node in self.nodes:
            node.start(self.config)
        deadline = time.monotonic() + timeout
        while not all(node.listening() for node in self.nodes):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the NATS cluster did not come up")
            time.sleep(0.05)
        if not self._meshed(deadline):
            self.stop()
            raise RuntimeError("the NATS cluster's routes did not form")
        return self

    def _meshed(self, deadline: float) -> bool:
        """Until a message published on each node reaches a subscriber on every other one:
        listening ports alone do not mean the routes are up."""
        import threading

        result: list[bool] = []

        async def check() -> bool:
            import nats

            conns = [await nats.connect(node.url) for node in self.nodes]
            try:
                while time.monotonic() < deadline:
                    got: set[tuple[int, int]] = set()
                    subs = []
                    for i, nc in enumerate(conns):

                        async def seen(
                            msg: Any, i: int = i, got: set[tuple[int, int]] = got
                        ) -> None:
                            got.add((int(msg.data), i))

                        subs.append(await nc.subscribe("_gcl.mesh.check", cb=seen))
                        await nc.flush()
                    await asyncio.sleep(0.1)
                    for i, nc in enumerate(conns):
                        await nc.publish("_gcl.mesh.check", str(i).encode())
                        await nc.flush()
                    await asyncio.sleep(0.2)
                    for sub in subs:
                        await sub.unsubscribe()
                    if len(got) == len(conns) ** 2:
                        return True
                return False
            finally:
                for nc in conns:
                    await nc.close()

        thread = threading.Thread(target=lambda: result.append(asyncio.run(check())))
        thread.start()
        thread.join(max(1.0, deadline - time.monotonic() + 5))
        return bool(result and result[0])

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
