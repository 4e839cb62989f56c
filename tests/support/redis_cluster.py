"""A throw-away Redis Cluster: 3 primaries, 3 replicas, on loopback, with a password.

Six :class:`~support.redis_server.RedisServer` processes with ``--cluster-enabled yes``
(each in its own temporary directory, so ``nodes.conf`` stays apart), joined by
``redis-cli --cluster create ... --cluster-replicas 1``. A short ``cluster-node-timeout``
lets a replica take over within about a second of its primary being killed, so a failover
test waits for the promotion (polling, with a deadline) instead of for a fixed time.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import redis
from redis.crc import key_slot

from support.gates import make_certificates
from support.redis_server import RedisServer, free_port
from support.tls_redis import make_client_certificate

#: A password with every character a URL parser trips over (``,`` included: it separates seeds).
CLUSTER_PASSWORD = "p@ss/w:rd?#,x%zz'\"\\ ok"
#: Milliseconds a node may be unreachable before the cluster fails it over.
NODE_TIMEOUT_MS = 1000


def _cluster_port() -> int:
    """A free port P with P + 10000 free too (Redis's cluster bus; so P <= 55535)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports (P, P + 10000) for a cluster node")


class RedisCluster:
    """Six nodes; :attr:`url` is the ``redis+cluster://`` URL requeue takes (password raw).

    :param tls: a directory for a throw-away CA and server certificate: every node then also
        listens with TLS on :attr:`tls_ports`, and speaks TLS on the cluster bus and to its
        replicas (``--tls-cluster``, ``--tls-replication``). Clients on a TLS port are told
        TLS ports (``CLUSTER SLOTS``, ``MOVED``), clients on the plain port plain ones, so Node
        producers seed over the plain ports while requeue is proven over ``rediss+cluster://``.
        Needs a ``redis-server`` built with TLS (Debian's; the 6.2 wheel's is not).
    """

    def __init__(self, *, password: str = CLUSTER_PASSWORD, nodes: int = 6, tls: Path | None = None) -> None:
        self.password = password
        self.ca_pem: str | None = None
        self.tls_ports: list[int] = []
        auth = ["--masterauth", password, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        ports = [_cluster_port() for _ in range(nodes)]
        per_node: list[list[str]] = [[] for _ in ports]
        binary = None
        if tls is not None:
            binary = shutil.which("redis-server")
            if binary is None:
                raise RuntimeError("a redis-server built with TLS (Debian's) is needed on PATH")
            certs = make_certificates(tls)
            make_client_certificate(tls)  # the cluster bus checks the connecting node's certificate
            self.ca_pem = certs.ca_pem
            self.tls_ports = [free_port() for _ in ports]
            for port, tls_port, args in zip(ports, self.tls_ports, per_node, strict=True):
                args += [
                    *("--tls-port", str(tls_port), "--tls-cluster", "yes", "--tls-replication", "yes"),
                    *("--tls-cert-file", str(certs.cert_file), "--tls-key-file", str(certs.key_file)),
                    *(
                        "--tls-client-cert-file",
                        str(tls / "client.crt"),
                        "--tls-client-key-file",
                        str(tls / "client.key"),
                    ),
                    *("--tls-ca-cert-file", str(tls / "ca.crt"), "--tls-auth-clients", "no"),
                    *("--cluster-port", str(port + 10000)),  # the bus stays where _cluster_port found room
                ]
        self.nodes = [
            RedisServer(
                port=port,
                binary=binary,
                password=password,
                args=[
                    *auth,
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # the killed primary's replica must be allowed to take over at once
                    "--cluster-replica-validity-factor",
                    "0",
                    *extra,
                ],
            )
            for port, extra in zip(ports, per_node, strict=True)
        ]

    @property
    def tls_url(self) -> str:
        """The ``rediss+cluster://`` URL of two seeds' TLS ports, the password raw."""
        assert self.tls_ports, "this cluster was started without tls="
        seeds = ",".join(f"127.0.0.1:{p}" for p in self.tls_ports[:2])
        return f"rediss+cluster://:{self.password}@{seeds}"

    @property
    def url(self) -> str:
        """Two seeds and the raw password: requeue must cope with any character in it."""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        return f"redis+cluster://:{self.password}@{seeds}"

    @property
    def node_js_url(self) -> str:
        """The same URL with the password percent-encoded (for ioredis in the Node helpers)."""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        return f"redis+cluster://:{quote(self.password, safe='')}@{seeds}"

    def start(self, timeout: float = 30.0) -> RedisCluster:
        """Start every node and join them; a failure stops the nodes already started (a test that
        fails here leaves no redis-server behind) and says what redis-cli printed."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH (apt-get install redis-tools)")
        try:
            for node in self.nodes:
                node.start()
            created = subprocess.run(
                [
                    cli,
                    "-a",
                    self.password,
                    "--no-auth-warning",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
            self.wait_until(self.healthy, timeout, "every node to report cluster_state:ok with 3 replicas")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(
            host=node.host, port=node.port, password=self.password, socket_timeout=2, decode_responses=True
        )

    def _ask(self, node: RedisServer, *args: str) -> object:
        with self.client(node) as c:
            return c.execute_command(*args)

    def healthy(self) -> bool:
        """Every running node says cluster_state:ok, and half of them are replicas."""
        try:
            for node in self.nodes:
                if not node.running:
                    continue
                info = self._ask(node, "CLUSTER", "INFO")
                text = info if isinstance(info, str) else str(info)
                if "cluster_state:ok" not in text:
                    return False
            replicas = [n for n in self.nodes if n.running and self._role(n) == "slave"]
            if len(replicas) != sum(1 for n in self.nodes if n.running) // 2:
                return False
            # a replica promoted before its first sync finished would come up empty
            return all(self._replication(n).get("master_link_status") == "up" for n in replicas)
        except redis.RedisError:
            return False

    def _role(self, node: RedisServer) -> str:
        return str(self._replication(node)["role"])

    def _replication(self, node: RedisServer) -> dict[str, object]:
        with self.client(node) as c:
            return dict(c.info("replication"))

    def owner_of(self, key: str) -> RedisServer:
        """The running primary that serves ``key``'s slot, as the running nodes see it."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if not node.running:
                continue
            try:
                slots = self._ask(node, "CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for entry in slots if isinstance(slots, list) else []:
                if int(entry[0]) <= slot <= int(entry[1]):
                    port = int(entry[2][1])
                    found = next((n for n in self.nodes if n.port == port), None)
                    if found is not None and found.running:
                        return found
        raise LookupError(f"no running primary serves slot {slot}")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """The replica that follows ``primary``."""
        for node in self.nodes:
            if node is primary or not node.running:
                continue
            with self.client(node) as c:
                info = c.info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", -1)) == primary.port:
                return node
        raise LookupError(f"no replica follows 127.0.0.1:{primary.port}")

    def promoted(self, replica: RedisServer) -> bool:
        """Whether ``replica`` is a primary now and the cluster is whole again."""
        try:
            return self._role(replica) == "master" and "cluster_state:ok" in str(
                self._ask(replica, "CLUSTER", "INFO")
            )
        except redis.RedisError:
            return False

    @staticmethod
    def wait_until(check: object, timeout: float, what: str) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def flush(self) -> None:
        """Empty every primary (tests share one cluster per session)."""
        for node in self.nodes:
            if node.running and self._role(node) == "master":
                with self.client(node) as c:
                    c.flushall()


@contextmanager
def running_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
